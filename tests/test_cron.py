"""The original's per-field cron variables: validation with named errors, the Dagster cron
string, the sample seconds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from energymon_pipeline import settings
from energymon_pipeline.cron import FIELD_RANGES, cron_trigger, expand_field, next_firing
from energymon_pipeline.errors import SettingsError

ALLOWED = "allowed: `*`, `*/n`, `a`, `a-b`, `a-b/n` or a comma-separated list of those"


def test_original_defaults():
    pipeline = settings.pipeline({})
    assert pipeline.poll.cron_schedule == "*/1 * * * *"
    assert pipeline.poll.seconds == (0,)
    assert pipeline.discovery.seconds == (50,)
    assert pipeline.discovery.period_s == 60
    assert pipeline.timezone == "UTC"
    assert (pipeline.read_concurrency, pipeline.run_retention_days) == (64, 14)


@pytest.mark.parametrize(
    ("hour", "minute", "second", "cron", "seconds", "period"),
    [
        ("*", "*/1", "*/10", "*/1 * * * *", (0, 10, 20, 30, 40, 50), 10),
        ("6-18", "0,30", "0", "0,30 6-18 * * *", (0,), 1800),
        ("*", "*/15", "5,35", "*/15 * * * *", (5, 35), 30),
        ("2", "0", "0", "0 2 * * *", (0,), 86400),
        ("*", "10-50/20", "0", "10-50/20 * * * *", (0,), 1200),
    ],
)
def test_custom_values(hour, minute, second, cron, seconds, period):
    env = {
        "INFLUX_UPDATER_CRON_HOUR_TRIGGER": hour,
        "INFLUX_UPDATER_CRON_MINUTE_TRIGGER": minute,
        "INFLUX_UPDATER_CRON_SECOND_TRIGGER": second,
    }
    trigger = cron_trigger(env, "INFLUX_UPDATER_CRON", ("*", "*/1", "0"))
    assert trigger.cron_schedule == cron
    assert trigger.seconds == seconds
    assert trigger.period_s == period


def test_unset_or_empty_means_default():
    env = {"INFLUX_UPDATER_CRON_SECOND_TRIGGER": "  "}
    assert cron_trigger(env, "INFLUX_UPDATER_CRON", ("*", "*/1", "0")).seconds == (0,)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("INFLUX_UPDATER_CRON_MINUTE_TRIGGER", "*/90", "has the step 90, which must be 1-59"),
        ("INFLUX_UPDATER_CRON_MINUTE_TRIGGER", "60", "selects 60, outside 0-59"),
        ("INFLUX_UPDATER_CRON_HOUR_TRIGGER", "24", "selects 24, outside 0-23"),
        ("INFLUX_UPDATER_CRON_HOUR_TRIGGER", "*/0", "has the step 0, which must be 1-23"),
        ("INFLUX_UPDATER_CRON_SECOND_TRIGGER", "30-10", "has the range 30-10 running backwards"),
        ("INFLUX_UPDATER_CRON_SECOND_TRIGGER", "every", "has an unreadable term 'every'"),
        ("SCHEDULER_CRON_MINUTE_TRIGGER", "1,,2", "has an unreadable term ''"),
        ("SCHEDULER_CRON_SECOND_TRIGGER", "?", "has an unreadable term '?'"),
    ],
)
def test_bad_values_name_variable_value_and_what_is_allowed(variable, value, reason):
    with pytest.raises(SettingsError) as error:
        settings.pipeline({variable: value})
    message = str(error.value)
    assert message.startswith(f"{variable}={value!r} {reason}")
    assert ALLOWED in message
    assert "\n" not in message


def test_expand_field_forms():
    assert expand_field("X", "*/20", 0, 59) == [0, 20, 40]
    assert expand_field("X", "5/20", 0, 59) == [5, 25, 45]
    assert expand_field("X", "1-3,7, 9", 0, 59) == [1, 2, 3, 7, 9]


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def firings(hour: str, minute: str, second: str, start: str, count: int, zone: str) -> list[str]:
    """The next `count` firings after `start` (UTC), each as UTC time of day."""
    fields = [expand_field("X", v, *FIELD_RANGES[n]) for n, v in
              (("HOUR", hour), ("MINUTE", minute), ("SECOND", second))]  # fmt: skip
    moment, out = utc(start), []
    for _ in range(count):
        moment = next_firing(*fields, moment, zone)
        out.append(datetime.fromtimestamp(moment, UTC).strftime("%m-%d %H:%M:%S"))
    return out


def test_next_firing_is_strictly_after_and_keeps_to_the_fields():
    assert firings("*", "*", "*/20", "2024-01-10 12:00:00", 4, "UTC") == [
        "01-10 12:00:20", "01-10 12:00:40", "01-10 12:01:00", "01-10 12:01:20"
    ]  # fmt: skip
    assert firings("6-7", "0,30", "5", "2024-01-10 12:00:00", 3, "UTC") == [
        "01-11 06:00:05", "01-11 06:30:05", "01-11 07:00:05"
    ]  # fmt: skip
    midnight = utc("2024-01-10 00:00:00")
    assert next_firing([0], [0], [0], midnight, "UTC") == midnight + 86400
    assert next_firing(range(24), range(60), [0], midnight - 0.5, "UTC") == midnight


def test_next_firing_reads_the_fields_on_the_wall_clock_of_the_zone():
    # 01:00 in Warsaw is 00:00 UTC in winter and 23:00 UTC the day before in summer.
    assert firings("1", "0", "0", "2024-01-10 12:00:00", 1, "Europe/Warsaw") == ["01-11 00:00:00"]
    assert firings("1", "0", "0", "2024-07-10 12:00:00", 1, "Europe/Warsaw") == ["07-10 23:00:00"]


def test_next_firing_across_daylight_saving_changes():
    # Warsaw, 2024-03-31: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 does not exist that
    # day: it fires once at the change instead, then at 02:30 CEST the day after.
    assert firings("2", "30", "0", "2024-03-30 12:00:00", 2, "Europe/Warsaw") == [
        "03-31 01:00:00", "04-01 00:30:00"
    ]  # fmt: skip
    # Every 20 minutes from 01:00 to 03:59: the firings of the skipped hour do not add one to
    # 03:00:07 CEST, which fires anyway.
    assert firings("1-3", "*/20", "7", "2024-03-30 23:30:00", 6, "Europe/Warsaw") == [
        "03-31 00:00:07", "03-31 00:20:07", "03-31 00:40:07",
        "03-31 01:00:07", "03-31 01:20:07", "03-31 01:40:07",
    ]  # fmt: skip
    # 2024-10-27: 03:00 CEST falls back to 02:00 CET (01:00 UTC). 02:30 happens twice: it
    # fires at each.
    assert firings("2", "30", "0", "2024-10-26 12:00:00", 3, "Europe/Warsaw") == [
        "10-27 00:30:00", "10-27 01:30:00", "10-28 01:30:00"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TZ": "Mars/Olympus"}, "TZ='Mars/Olympus' is not a known time zone"),
        (
            {"ENERGYMON_READ_CONCURRENCY": "0"},
            "ENERGYMON_READ_CONCURRENCY=0 is out of range; allowed: 1 to 4096",
        ),
        (
            {"DAGSTER_RUN_RETENTION_DAYS": "two"},
            "DAGSTER_RUN_RETENTION_DAYS='two' is not an integer",
        ),
    ],
)
def test_other_pipeline_settings(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.pipeline(env)


def test_time_zone_from_tz():
    assert settings.pipeline({"TZ": "Europe/Warsaw"}).timezone == "Europe/Warsaw"
    assert settings.pipeline({"TZ": ":Europe/Warsaw"}).timezone == "Europe/Warsaw"


def test_influx_and_spool_settings(tmp_path):
    original = {
        "INFLUXDB_HOSTNAME": "influx",
        "INFLUXDB_PORT": "8086",
        "INFLUXDB_DB": "influx_default",
        "INFLUXDB_HTTP_AUTH_ENABLED": "true",
        "INFLUXDB_ADMIN_USER": "admin",
        "INFLUXDB_ADMIN_PASSWORD": "admin",
    }
    influx = settings.influx(original)
    assert (influx.host, influx.port, influx.database, influx.username) == (
        "influx", 8086, "influx_default", "admin"
    )  # fmt: skip
    writer = settings.influx({**original, "INFLUXDB_WRITE_USER": "energymon",
                              "INFLUXDB_WRITE_USER_PASSWORD": "w"})  # fmt: skip
    assert (writer.username, writer.password) == ("energymon", "w")
    with pytest.raises(SettingsError, match="INFLUXDB_WRITE_USER_PASSWORD is not set"):
        settings.influx({**original, "INFLUXDB_WRITE_USER": "energymon"})
    local = settings.influx({})
    assert (local.host, local.port, local.username) == ("localhost", 8086, None)

    spool = settings.spool({"ENERGYMON_DATA_DIR": str(tmp_path)})
    assert spool.path == tmp_path / "spool"
    assert (spool.max_bytes, spool.max_age_s) == (512 * 1024**2, 30 * 86400)
    custom = settings.spool({"ENERGYMON_SPOOL_MAX_BYTES": "2G", "ENERGYMON_SPOOL_MAX_AGE": "7d"})
    assert (custom.max_bytes, custom.max_age_s) == (2 * 1024**3, 7 * 86400)
    with pytest.raises(SettingsError, match="ENERGYMON_SPOOL_MAX_AGE='soon' is not a duration"):
        settings.spool({"ENERGYMON_SPOOL_MAX_AGE": "soon"})
    with pytest.raises(SettingsError, match="ENERGYMON_SPOOL_MAX_BYTES='12' is too small"):
        settings.spool({"ENERGYMON_SPOOL_MAX_BYTES": "12"})
