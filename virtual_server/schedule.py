"""When the virtual server refreshes its values: the original's three cron fields, with seconds.

The fields are read by `energymon_pipeline.cron`, the same rules, messages and firing
times as the pipeline's schedules. Times are local to TZ (default UTC), as the original's
schedules were, so an `HOUR` field means the hour on the wall clock of the site.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from energymon_pipeline.cron import FIELD_RANGES, expand_field, next_firing
from energymon_pipeline.settings import timezone
from virtual_server.settings import update_trigger

__all__ = ["UpdateSchedule"]


@dataclass(frozen=True)
class UpdateSchedule:
    """Hour, minute and second cron fields (`*`, `*/n`, `a`, `a-b`, `a-b/n`, lists of those)
    and the time zone they are read in."""

    hour: str = "*"
    minute: str = "*/1"
    second: str = "50"
    timezone: str = "UTC"
    #: The hours, minutes and seconds the fields select.
    _selected: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        selected = tuple(
            tuple(expand_field(f"update schedule {name.lower()}", value, *FIELD_RANGES[name]))
            for name, value in (
                ("HOUR", self.hour),
                ("MINUTE", self.minute),
                ("SECOND", self.second),
            )
        )
        ZoneInfo(self.timezone)  # an unknown zone fails here, not at the first tick
        object.__setattr__(self, "_selected", selected)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> UpdateSchedule:
        """VIRTUAL_SERVER_UPDATE_CRON_{HOUR,MINUTE,SECOND}_TRIGGER and TZ; SettingsError
        naming the variable when one is not a valid field."""
        env = os.environ if env is None else env
        trigger = update_trigger(env)
        return cls(trigger.hour, trigger.minute, trigger.second, timezone(env))

    @classmethod
    def every_second(cls) -> UpdateSchedule:
        """For tests and demos: a refresh every second."""
        return cls(hour="*", minute="*", second="*")

    def next_after(self, moment: float) -> float:
        """The first firing strictly after `moment` (epoch seconds)."""
        return next_firing(*self._selected, moment, self.timezone)

    def __str__(self) -> str:
        return f"hour {self.hour} minute {self.minute} second {self.second} ({self.timezone})"
