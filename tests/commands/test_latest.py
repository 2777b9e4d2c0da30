"""`energymon latest` against a real influxd: points written in the pipeline's own shape (by
points.py's encoder and the real writer), read back as a table, as JSON and for one meter; the
pipeline's `energymon_*` measurements never show; unreachable InfluxDB, an unknown meter and
an empty database each give one line."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner

from energymon_pipeline.cli import cli
from energymon_pipeline.influx.points import connectivity_line, poll_health_line, reading_lines
from energymon_pipeline.influx.write_path import RAW_RETENTION_POLICY
from energymon_pipeline.influx.writer import InfluxWriter

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)
ODD_NAME = "voltage L1,N"  # a space and a comma: escaped in line protocol


def readings(*rows: tuple) -> pd.DataFrame:
    """(time, meter_id, description, meter_type, measurement, unit, value) rows."""
    frame = pd.DataFrame(
        rows,
        columns=["time", "meter_id", "description", "meter_type", "measurement", "unit", "value"],
    )
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def run(*args: str):
    return CliRunner().invoke(cli, ["latest", *args], catch_exceptions=False)


@pytest.fixture
def influx_env(influxd, influx_db, monkeypatch):
    monkeypatch.setenv("INFLUXDB_HOSTNAME", influxd.host)
    monkeypatch.setenv("INFLUXDB_PORT", str(influxd.port))
    monkeypatch.setenv("INFLUXDB_DB", influx_db)
    for name in ("INFLUXDB_RAW_RETENTION", "INFLUXDB_WRITE_USER", "INFLUXDB_ADMIN_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INFLUXDB_HTTP_AUTH_ENABLED", "false")
    return influxd.target(influx_db)


@pytest.fixture
def stored(influx_env):
    """Three meters' readings, older values under newer ones, plus the pipeline's own points."""
    lines = reading_lines(
        readings(
            (T0, 1, "main hall", "sdm630", ODD_NAME, "V", 229.5),
            (T1, 1, "main hall", "sdm630", ODD_NAME, "V", 230.25),
            (T0, 1, "main hall", "sdm630", "importEnergy", "kWh", 12345.678),
            (T0, 2, "pv, roof", "zeversolar", "power", "W", 1500.0),
            (T2, 2, "pv, roof", "zeversolar", "power", "W", 1499.5),
            (T1, 10, "heat pump", "sdm120", "power", "W", -3.0),
            # Whatever the pipeline stores under energymon_* is not a reading, even with a
            # `value` field: only the name keeps this one out.
            (T2, 1, "main hall", "sdm630", "energymon_selftest", "", 99.0),
        )
    )
    lines.append(
        poll_health_line(
            time=T2,
            meter_id=1,
            description="main hall",
            meter_type="sdm630",
            ok=True,
            latency_ms=12.5,
            requests=2,
            values=27,
            errors=0,
        )
    )
    lines.append(
        connectivity_line(
            time=T2,
            meter_id=2,
            description="pv, roof",
            meter_type="zeversolar",
            result="ok",
            ok=True,
            latency_ms=3.0,
        )
    )
    with InfluxWriter(influx_env) as writer:
        writer.write(lines)
    return influx_env


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


EXPECTED = [
    {
        "meter_id": 1,
        "description": "main hall",
        "measurement": "importEnergy",
        "value": 12345.678,
        "unit": "kWh",
        "time": stamp(T0),
    },
    {
        "meter_id": 1,
        "description": "main hall",
        "measurement": ODD_NAME,
        "value": 230.25,
        "unit": "V",
        "time": stamp(T1),
    },
    {
        "meter_id": 2,
        "description": "pv, roof",
        "measurement": "power",
        "value": 1499.5,
        "unit": "W",
        "time": stamp(T2),
    },
    {
        "meter_id": 10,
        "description": "heat pump",
        "measurement": "power",
        "value": -3.0,
        "unit": "W",
        "time": stamp(T1),
    },
]


def table_rows(text: str) -> list[list[str]]:
    """The cells of an aligned table, cut at the columns where the headings start."""
    header, *lines = text.splitlines()
    headings = ["METER", "DESCRIPTION", "MEASUREMENT", "VALUE", "UNIT", "TIME (UTC)"]
    assert re.split(r" {2,}", header) == headings
    starts = [header.index(h) for h in headings]
    for line in lines:  # aligned: each cell starts in its heading's column, after a gap
        assert all(line[start - 2 : start] == "  " for start in starts[1:]), line
    ends = [*starts[1:], None]
    return [[line[a:b].strip() for a, b in zip(starts, ends, strict=True)] for line in lines]


def test_table_shows_the_newest_value_per_meter_and_measurement(stored):
    result = run()
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert table_rows(result.stdout) == [
        ["1", "main hall", "importEnergy", "12345.678", "kWh", stamp(T0)],
        ["1", "main hall", ODD_NAME, "230.25", "V", stamp(T1)],
        ["2", "pv, roof", "power", "1499.5", "W", stamp(T2)],
        ["10", "heat pump", "power", "-3.0", "W", stamp(T1)],
    ]
    assert "energymon_" not in result.stdout
    assert stamp(T1) == "2026-01-02T03:05:05.678Z"


def test_json_is_a_list_of_objects(stored):
    result = run("--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == EXPECTED


def test_meter_option_keeps_one_meter(stored):
    result = run("--meter", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [EXPECTED[2]]
    table = run("--meter", "1")
    assert table.exit_code == 0, table.stderr
    assert [row[:3] for row in table_rows(table.stdout)] == [
        ["1", "main hall", "importEnergy"],
        ["1", "main hall", ODD_NAME],
    ]


def test_unknown_meter_is_one_line_naming_the_meters_with_readings(stored):
    result = run("--meter", "7")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: meter 7 has no readings in InfluxDB at {stored.where}; "
        "meters with readings: 1, 10, 2\n"
    )


def test_no_data_is_a_message_not_an_error(influx_env):
    result = run()  # the database does not even exist yet
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"no readings in InfluxDB at {influx_env.where} yet (poll runs write them: under "
        "`make run` every minute)\n"
    )
    as_json = run("--json")
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, [])
    meter = run("--meter", "1")
    assert meter.exit_code == 1
    assert meter.stderr == f"error: meter 1 has no readings in InfluxDB at {influx_env.where}\n"


def test_unreachable_influxdb_is_one_line(refused_port, monkeypatch):
    monkeypatch.setenv("INFLUXDB_HOSTNAME", "127.0.0.1")
    monkeypatch.setenv("INFLUXDB_PORT", str(refused_port))
    monkeypatch.setenv("INFLUXDB_DB", "influx_default")
    monkeypatch.delenv("INFLUXDB_RAW_RETENTION", raising=False)
    result = run()
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: InfluxDB at http://127.0.0.1:{refused_port}/influx_default is unreachable: "
        "connection refused\n"
    )


def test_raw_retention_policy_is_read_too(stored, influxd, influx_db, monkeypatch):
    # Long enough for the fixed 2026 timestamps to stay inside it.
    monkeypatch.setenv("INFLUXDB_RAW_RETENTION", "5200w")
    # Set, but no run has created the policy yet: the default policy's readings still show.
    before = run("--json")
    assert (before.exit_code, json.loads(before.stdout)) == (0, EXPECTED), before.stderr
    later = T2 + timedelta(minutes=1)
    with InfluxWriter(influxd.target(influx_db, retention_policy=RAW_RETENTION_POLICY)) as writer:
        writer.ensure_retention_policy(RAW_RETENTION_POLICY, "5200w")
        writer.write(
            reading_lines(
                readings(
                    (later, 10, "heat pump", "sdm120", "power", "W", 4.5),
                    # Older than the default policy's newest for meter 2: that one stays.
                    (T0, 2, "pv, roof", "zeversolar", "power", "W", 1.0),
                )
            )
        )
    result = run("--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [
        *EXPECTED[:3],
        EXPECTED[3] | {"value": 4.5, "time": stamp(later)},
    ]
