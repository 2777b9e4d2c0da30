"""Retention durations: what INFLUXDB_RAW_RETENTION accepts, and a stored policy's duration
compared with the configured one."""

from __future__ import annotations

import pytest

from energymon_pipeline import settings
from energymon_pipeline.errors import SettingsError
from energymon_pipeline.influx.retention import is_retention_period, retention_hours


@pytest.mark.parametrize(
    ("duration", "hours"),
    [("2160h", 2160), ("90d", 2160), ("12w", 2016), ("2160h0m0s", 2160), ("1h30m0s", 1.5)],
)
def test_hours_of_written_and_reported_durations(duration, hours):
    assert retention_hours(duration) == hours


@pytest.mark.parametrize("duration", ["", "forever", "90", "90 d", "1y", "1.5d", "INF"])
def test_anything_else_has_no_hours(duration):
    assert retention_hours(duration) is None


@pytest.mark.parametrize(("text", "allowed"), [
    ("90d", True), ("12w", True), ("1h", True),
    ("0h", False), ("0d", False), ("2160h0m0s", False), ("forever", False), ("", False),
])  # fmt: skip
def test_what_a_user_may_configure(text, allowed):
    assert is_retention_period(text) is allowed


def test_the_setting_names_the_variable_and_what_is_allowed():
    assert settings.influx({"INFLUXDB_RAW_RETENTION": " 90d "}).raw_retention == "90d"
    with pytest.raises(SettingsError) as error:
        settings.influx({"INFLUXDB_RAW_RETENTION": "0d"})
    assert str(error.value) == (
        "INFLUXDB_RAW_RETENTION='0d' is not a retention period; allowed: a whole number of "
        "hours, days or weeks, at least 1h (e.g. 90d, 12w, 2160h)"
    )
