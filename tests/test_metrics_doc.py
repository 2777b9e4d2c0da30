"""docs/metrics.md, the reference of everything written to InfluxDB, says what the code
writes: each example line has exactly the tags and fields (with their types) of a line the
code builds."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from energymon_pipeline.influx import rollup
from energymon_pipeline.influx.points import (
    connectivity_line,
    poll_health_line,
    reading_lines,
    spool_health_line,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
T = datetime(2026, 1, 1, tzinfo=UTC)


def shape(line: str) -> tuple[str, set[str], dict[str, str]]:
    """(measurement, tag keys, field key -> type) of a line protocol line."""
    head, fields, _ = re.split(r"(?<!\\) ", line)
    measurement, *tags = re.split(r"(?<!\\),", head)
    types = {}
    for field in re.split(r",(?=[a-z_]+=)", fields):
        key, value = field.split("=", 1)
        kind = (
            "integer" if re.fullmatch(r"-?\d+i", value)
            else "boolean" if value in ("true", "false")
            else "string" if value.startswith('"')
            else "float"
        )  # fmt: skip
        types[key] = kind
    return measurement, {t.split("=")[0] for t in tags}, types


def documented() -> dict[str, tuple[str, set[str], dict[str, str]]]:
    lines = re.findall(r"```\n(.+?)\n```", DOC.read_text(encoding="utf-8"))
    return {shape(line)[0]: shape(line) for line in lines}


def built() -> list[str]:
    reading = pd.DataFrame(
        [{"time": T, "meter_id": 1, "description": "main hall", "meter_type": "sdm630",
          "measurement": "voltageL1", "unit": "V", "value": 230.25}]
    )  # fmt: skip
    reading["time"] = pd.to_datetime(reading["time"], utc=True)
    return [
        *reading_lines(reading),
        poll_health_line(time=T, meter_id=1, description="main hall", meter_type="sdm630",
                         ok=True, latency_ms=12.5, requests=2, values=27, errors=0,
                         late_s=0.004),
        spool_health_line(time=T, batches=0, points=0, bytes_=0),
        connectivity_line(time=T, meter_id=1, description="main hall", meter_type="sdm630",
                          result="reachable", ok=True, latency_ms=8.1),
        rollup._line(rollup.HOURLY, {"id": "1", "description": "main hall", "dataunit": "kWh",
                     "measurement": "importEnergy"}, {"count": 60, "mean": 1.0, "min": 1.0,
                     "max": 1.0, "last": 1.0, "consumption": 0.7}, T),
    ]  # fmt: skip


@pytest.mark.parametrize("line", built(), ids=lambda line: shape(line)[0])
def test_every_line_the_code_writes_is_documented_as_it_is(line):
    measurement, tags, fields = shape(line)
    docs = documented()
    key = measurement if measurement in docs else "voltageL1"
    assert docs[key] == (key, tags, fields)


def test_every_documented_measurement_is_written():
    written = {shape(line)[0] for line in built()}
    assert set(documented()) == written
