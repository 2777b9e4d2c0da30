"""The original's per-field cron variables: validation with named errors, the Dagster cron
string, the sample seconds."""

from __future__ import annotations

import pytest

from energymon_pipeline import settings
from energymon_pipeline.cron import cron_trigger, expand_field
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
