"""Line protocol from readings: the original point shape, escaping, tag omission, timestamps,
and no NaN/inf ever written. The round trip through a real influxd is in test_writer.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from energymon_pipeline.influx.points import (
    PRECISION,
    PointError,
    encode_readings,
    escape_measurement,
    escape_tag,
    poll_health_line,
    reading_lines,
    timestamp_ms,
)

T0 = datetime(2024, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
T0_MS = 1717243200123


def readings(*rows: dict) -> pd.DataFrame:
    defaults = {
        "time": T0,
        "meter_id": 1,
        "description": "main",
        "meter_type": "sdm630",
        "measurement": "voltageL1",
        "unit": "V",
        "value": 230.5,
    }
    frame = pd.DataFrame([defaults | row for row in rows])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def test_precision_is_milliseconds():
    assert PRECISION == "ms"


def test_the_original_point_shape_plus_type():
    lines = reading_lines(
        readings(
            {},
            {
                "meter_id": 2,
                "description": "garage",
                "measurement": "totalEnergy",
                "unit": "kWh",
                "value": 1234.0,
            },
        )
    )
    assert lines == [
        f"voltageL1,dataunit=V,description=main,id=1,type=sdm630 value=230.5 {T0_MS}",
        f"totalEnergy,dataunit=kWh,description=garage,id=2,type=sdm630 value=1234.0 {T0_MS}",
    ]


@pytest.mark.parametrize("missing", [None, "", np.nan])
def test_a_missing_tag_is_left_out(missing):
    lines = reading_lines(readings({"unit": missing}, {"description": missing, "value": 1.0}))
    assert lines == [
        f"voltageL1,description=main,id=1,type=sdm630 value=230.5 {T0_MS}",
        f"voltageL1,dataunit=V,id=1,type=sdm630 value=1.0 {T0_MS}",
    ]


def test_escaping_of_measurements_and_tags():
    lines = reading_lines(
        readings(
            {
                "measurement": "active power,L1 sum=x",
                "description": r"hall A, north=1 C:\data",
                "meter_type": "type with space",
                "unit": "m³",
            }
        )
    )
    assert lines == [
        r"active\ power\,L1\ sum=x,dataunit=m³,description=hall\ A\,\ north\=1\ C:\data,id=1,"
        rf"type=type\ with\ space value=230.5 {T0_MS}"
    ]


def test_escape_helpers():
    assert escape_measurement("a b,c=d") == r"a\ b\,c=d"
    assert escape_tag("a b,c=d") == r"a\ b\,c\=d"
    assert escape_tag(r"a\,b") == r"a\\,b"  # InfluxDB reads this back as a\,b


def test_a_trailing_backslash_is_dropped_with_a_warning(caplog):
    # InfluxDB 1.x cannot parse a tag value ending in a backslash ("invalid tag format").
    with caplog.at_level(logging.WARNING):
        lines = reading_lines(readings({"description": "C:\\"}, {"description": "\\\\"}))
    assert lines == [
        f"voltageL1,dataunit=V,description=C:,id=1,type=sdm630 value=230.5 {T0_MS}",
        f"voltageL1,dataunit=V,id=1,type=sdm630 value=230.5 {T0_MS}",
    ]
    assert "ends in a backslash" in caplog.text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"measurement": "a\nb"}, "line break"),
        ({"description": "a\r\nb"}, "line break"),
        ({"measurement": ""}, "empty"),
        ({"measurement": None}, "empty"),
        ({"measurement": "#comment"}, "comment"),
    ],
)
def test_unwritable_text_costs_only_its_values(row, message):
    # One meter's bad text must not stop the others' points (a poison row in the registry).
    encoded = encode_readings(
        readings({"meter_id": 7, **row}, {"meter_id": 7, "measurement": "ok"}, {"meter_id": 2})
    )
    assert encoded.lines == [
        f"ok,dataunit=V,description=main,id=7,type=sdm630 value=230.5 {T0_MS}",
        f"voltageL1,dataunit=V,description=main,id=2,type=sdm630 value=230.5 {T0_MS}",
    ]
    ((meter_id, reason), count), *rest = encoded.dropped.items()
    assert (meter_id, count, rest) == (7, 1, [])
    assert message in reason


def test_a_bad_description_drops_that_meters_points_only():
    encoded = encode_readings(
        readings(
            {"meter_id": 7, "description": "a\nb"},
            {"meter_id": 7, "description": "a\nb", "measurement": "x"},
            {"meter_id": 2},
        )
    )
    assert encoded.lines == [
        f"voltageL1,dataunit=V,description=main,id=2,type=sdm630 value=230.5 {T0_MS}"
    ]
    assert list(encoded.dropped.values()) == [2]
    assert [key[0] for key in encoded.dropped] == [7]


def test_missing_columns_are_named():
    with pytest.raises(PointError, match="unit, value"):
        reading_lines(readings({}).drop(columns=["unit", "value"]))


def test_timestamps_are_utc_milliseconds_whatever_the_zone_and_resolution():
    warsaw = datetime(2024, 6, 1, 14, 0, 0, 123999, tzinfo=ZoneInfo("Europe/Warsaw"))
    frame = readings({})
    frame["time"] = pd.Series([warsaw]).dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    assert reading_lines(frame)[0].endswith(f" {T0_MS}")  # truncated, not rounded
    frame["time"] = pd.Series([pd.Timestamp(warsaw)])  # Europe/Warsaw, ns
    assert reading_lines(frame)[0].endswith(f" {T0_MS}")
    assert timestamp_ms(T0) == T0_MS


def test_naive_timestamps_are_refused():
    frame = readings({})
    frame["time"] = frame["time"].dt.tz_localize(None)
    with pytest.raises(PointError, match="timezone"):
        reading_lines(frame)
    with pytest.raises(PointError, match="timezone"):
        timestamp_ms(datetime(2024, 1, 1))


def test_nan_and_inf_are_never_written(caplog):
    with caplog.at_level(logging.WARNING):
        lines = reading_lines(
            readings(
                {"value": np.nan},
                {"value": 1.0},
                {"value": np.inf},
                {"value": -np.inf},
                {"value": None},
            )
        )
    assert lines == [f"voltageL1,dataunit=V,description=main,id=1,type=sdm630 value=1.0 {T0_MS}"]
    assert "meter 1: 4 value(s) not written: not finite" in caplog.text
    assert reading_lines(readings({"value": np.nan})) == []


def test_values_are_written_exactly():
    values = [0.1 + 0.2, -0.0, 1e-7, 3.4028234663852886e38, 230, -12345]
    lines = reading_lines(readings(*({"value": v} for v in values)))
    written = [float(line.split(" value=")[1].split(" ")[0]) for line in lines]
    assert written == [float(v) for v in values]
    assert "value=230.0 " in lines[4]  # integers stay floats: the field type never changes


def test_an_empty_frame_gives_no_lines():
    assert reading_lines(readings({}).iloc[0:0]) == []


def test_fifteen_thousand_readings_of_five_hundred_meters():
    n = 15_000
    start = pd.Timestamp(T0)
    frame = pd.DataFrame(
        {
            "time": pd.date_range(start, periods=n, freq="100ms"),
            "meter_id": np.arange(n) % 500,
            "description": [f"meter {i % 500}" for i in range(n)],
            "meter_type": "sdm630",
            "measurement": [f"m{i % 30}" for i in range(n)],
            "unit": "V",
            "value": np.random.default_rng(1).normal(230, 5, n),
        }
    )
    # Speed is the benchmark's to measure (bench/micro.py), never a timed test.
    encoded = encode_readings(frame)
    assert len(encoded.lines) == n
    assert encoded.written == {meter: n // 500 for meter in range(500)}


def test_health_point():
    line = poll_health_line(
        time=T0,
        meter_id=3,
        description="inverter roof",
        meter_type="virtual-tlc10000",
        ok=True,
        latency_ms=12.5,
        requests=2,
        values=27,
        errors=0,
    )
    assert line == (
        r"energymon_poll,description=inverter\ roof,id=3,type=virtual-tlc10000 "
        f"ok=true,latency_ms=12.5,requests=2i,values=27i,dropped=0i,errors=0i {T0_MS}"
    )


def test_health_point_of_a_failed_meter():
    line = poll_health_line(
        time=T0 + timedelta(seconds=1),
        meter_id=4,
        description=None,
        meter_type="sdm630",
        ok=False,
        latency_ms=None,
        requests=1,
        values=0,
        errors=1,
    )
    assert line == (
        f"energymon_poll,id=4,type=sdm630 ok=false,requests=1i,values=0i,dropped=0i,errors=1i "
        f"{T0_MS + 1000}"
    )
    with pytest.raises(PointError, match="latency_ms"):
        poll_health_line(
            time=T0, meter_id=4, description=None, meter_type="x", ok=False,
            latency_ms=float("nan"), requests=0, values=0, errors=0,
        )  # fmt: skip
