"""The original's per-field cron variables, validated and turned into what Dagster runs.

The original system took one cron field per variable (hour, minute, second; day, month and
weekday were always `*`). Dagster schedules have minute resolution, so the hour and minute
fields make the schedule's cron string and the second field becomes the list of seconds a run
samples at within its minute. Validation is strict: a field that a cron library would accept
but read differently from what the user meant (`*/90` for minutes fires once an hour) is an
error that names the variable, its value and what is allowed.

This is the only reader of cron fields in the project: the virtual server's update schedule,
which has second resolution, takes its firing times from `next_firing`.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from energymon_pipeline.errors import SettingsError

FIELD_RANGES = {"HOUR": (0, 23), "MINUTE": (0, 59), "SECOND": (0, 59)}
_TERM = re.compile(r"^(?:(?P<star>\*)|(?P<low>\d+)(?:-(?P<high>\d+))?)(?:/(?P<step>\d+))?$")
ALLOWED = "`*`, `*/n`, `a`, `a-b`, `a-b/n` or a comma-separated list of those"


def expand_field(variable: str, value: str, low: int, high: int) -> list[int]:
    """The sorted values a cron field selects; SettingsError when it is not a valid field."""
    text = value.strip()

    def refuse(reason: str) -> SettingsError:
        return SettingsError(
            f"{variable}={value!r} {reason}; allowed: {ALLOWED}, with values {low}-{high}"
        )

    if not text:
        raise refuse("is empty")
    selected: set[int] = set()
    for term in text.split(","):
        match = _TERM.match(term.strip())
        if not match:
            raise refuse(f"has an unreadable term {term.strip()!r}")
        step = int(match["step"]) if match["step"] is not None else 1
        if match["star"]:
            start, stop = low, high
        else:
            start = int(match["low"])
            stop = int(match["high"]) if match["high"] is not None else start
            if match["step"] is not None and match["high"] is None:
                stop = high  # `a/n`: from a to the end of the range
        for bound in (start, stop):
            if not low <= bound <= high:
                raise refuse(f"selects {bound}, outside {low}-{high}")
        if start > stop:
            raise refuse(f"has the range {start}-{stop} running backwards")
        if not 1 <= step <= high - low:
            raise refuse(
                f"has the step {step}, which must be 1-{high - low} (a larger step would "
                f"select only {start} and silently change the schedule)"
            )
        selected.update(range(start, stop + 1, step))
    return sorted(selected)


def _ranges(values: list[int], size: int) -> str:
    """`0-5,7,9-11` for sorted whole numbers of 0..size-1; `*` for all of them."""
    if values == list(range(size)):
        return "*"
    parts, start = [], values[0]
    for previous, value in zip(values, [*values[1:], None], strict=True):
        if value is None or value != previous + 1:  # `previous` ends a run of values
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = value
    return ",".join(parts)


def _dagster_field(value: str) -> str:
    return ",".join(term.strip() for term in value.strip().split(","))


@dataclass(frozen=True)
class CronTrigger:
    """One schedule from a HOUR/MINUTE/SECOND variable triple."""

    prefix: str
    hour: str
    minute: str
    second: str
    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]

    @property
    def cron_schedule(self) -> str:
        """The five-field cron string Dagster schedules with (minute resolution)."""
        return f"{_dagster_field(self.minute)} {_dagster_field(self.hour)} * * *"

    @property
    def ahead_cron_schedules(self) -> list[str]:
        """Cron strings that fire one minute before each minute `cron_schedule` selects: a
        poll run is launched a minute ahead and waits for its sample seconds, so its process
        start, imports and queueing happen before the minute, not in it. Minute 0 of an hour
        moves to minute 59 of the hour before (day fields are always `*`, so this wraps across
        midnight too). Minutes that end up with the same hours share one string."""
        hours_of: dict[int, set[int]] = {}
        for hour in self.hours:
            for minute in self.minutes:
                before = (hour * 60 + minute - 1) % 1440
                hours_of.setdefault(before % 60, set()).add(before // 60)
        minutes_of: dict[tuple[int, ...], list[int]] = {}
        for minute, hours in sorted(hours_of.items()):
            minutes_of.setdefault(tuple(sorted(hours)), []).append(minute)
        return [
            f"{_ranges(minutes, 60)} {_ranges(list(hours), 24)} * * *"
            for hours, minutes in sorted(minutes_of.items(), key=lambda item: item[1][0])
        ]

    @property
    def period_s(self) -> int:
        """The shortest interval between two firings, in seconds (for sensor intervals)."""
        times = sorted(h * 3600 + m * 60 + s for h in self.hours for m in self.minutes
                       for s in self.seconds)  # fmt: skip
        if len(times) == 1:
            return 86400
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        gaps.append(times[0] + 86400 - times[-1])
        return min(gaps)


def cron_trigger(env, prefix: str, defaults: tuple[str, str, str]) -> CronTrigger:
    """Read `<prefix>_{HOUR,MINUTE,SECOND}_TRIGGER`; unset or empty means the default."""
    values = {}
    expanded = {}
    for field, default in zip(("HOUR", "MINUTE", "SECOND"), defaults, strict=True):
        variable = f"{prefix}_{field}_TRIGGER"
        raw = env.get(variable)
        value = default if raw is None or not raw.strip() else raw.strip()
        low, high = FIELD_RANGES[field]
        expanded[field] = tuple(expand_field(variable, value, low, high))
        values[field] = value
    return CronTrigger(
        prefix=prefix,
        hour=values["HOUR"],
        minute=values["MINUTE"],
        second=values["SECOND"],
        hours=expanded["HOUR"],
        minutes=expanded["MINUTE"],
        seconds=expanded["SECOND"],
    )


def next_firing(
    hours: Sequence[int],
    minutes: Sequence[int],
    seconds: Sequence[int],
    after: float,
    timezone: str,
) -> float:
    """The first whole second strictly after `after` (epoch seconds) whose wall-clock time in
    `timezone` has its hour in `hours`, its minute in `minutes` and its second in `seconds`
    (each as `expand_field` returns them: sorted, not empty).

    It walks forward in real time, a minute at a time past the minutes that do not fire
    (every UTC offset in use is whole minutes). Daylight saving: wall-clock times that the
    change repeats fire at each pass; selected times that it skips fire once, in the first
    minute after the change at its first selected second, so a daily firing in the skipped
    hour still happens that day.
    """
    zone = ZoneInfo(timezone)
    hour_set, minute_set = frozenset(hours), frozenset(minutes)

    def selected(wall: datetime) -> bool:
        return wall.hour in hour_set and wall.minute in minute_set

    def wall_clock(moment: int) -> datetime:
        return datetime.fromtimestamp(moment, zone).replace(tzinfo=None)

    previous = math.floor(after)
    previous_wall = wall_clock(previous)
    moment = previous + 1
    # Every day has a firing, unless a daylight-saving change skips all of its selected times.
    give_up = moment + 3 * 86400
    while moment < give_up:
        wall = wall_clock(moment)
        skipped = previous_wall + timedelta(seconds=moment - previous)
        while skipped < wall:  # the clock jumped forward past [skipped, wall)
            if selected(skipped):
                return float(moment + seconds[0] - wall.second)
            skipped += timedelta(minutes=1)
        if selected(wall):
            position = bisect.bisect_left(seconds, wall.second)
            if position < len(seconds):
                return float(moment + seconds[position] - wall.second)
        previous, previous_wall = moment, wall
        moment += 60 - wall.second
    raise ValueError(
        f"no firing within 3 days after {after} for hours {list(hours)}, minutes "
        f"{list(minutes)}, seconds {list(seconds)} in {timezone}"
    )
