"""The `energymon_poll` points of a run: counts per meter, the ok rule, and a point for every
meter even when its text cannot be written."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from energymon_pipeline.influx.poll_health import (
    MeterCounts,
    health_lines,
    meter_counts,
    meter_ok,
)
from energymon_pipeline.modbus.reader import MeterResult
from energymon_pipeline.modbus.types import Endpoint, MeterSpec

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def result(meter_id: int, description: str | None = "main", **fields) -> MeterResult:
    meter = MeterSpec(meter_id, Endpoint("127.0.0.1", 502, 1), "sdm630", description, ())
    return MeterResult(meter, **fields)


def test_counts_join_written_values_and_drops_per_meter():
    counts = meter_counts(
        Counter({1: 3, 2: 5}),
        Counter({(1, "not finite"): 2, (3, "above max_value"): 1, (1, "below min_value"): 1}),
    )
    assert counts[1].written == 3 and counts[1].dropped_total == 3
    assert counts[1].describe_drops() == [
        "dropped 1 value(s): below min_value",
        "dropped 2 value(s): not finite",
    ]
    assert (counts[2].written, counts[2].dropped_total) == (5, 0)
    assert (counts[3].written, counts[3].dropped_total) == (0, 1)


def test_a_meter_is_ok_only_when_everything_read_was_written():
    assert meter_ok(result(1), MeterCounts(written=2))
    assert not meter_ok(result(1), MeterCounts(written=1, dropped=Counter({"not finite": 1})))
    assert not meter_ok(result(1, errors=["timeout"]), MeterCounts())


def test_one_point_per_meter_with_errors_counting_drop_reasons():
    counts = {1: MeterCounts(written=2, dropped=Counter({"not finite": 4}))}
    lines = health_lines(
        [result(1, requests=2, latency_s=[0.01], errors=["timeout"]), result(2)], counts, T0
    )
    assert lines == [
        "energymon_poll,description=main,id=1,type=sdm630 ok=false,latency_ms=10.0,"
        "requests=2i,values=2i,dropped=4i,errors=2i 1717243200000",
        "energymon_poll,description=main,id=2,type=sdm630 ok=true,requests=0i,values=0i,"
        "dropped=0i,errors=0i 1717243200000",
    ]


def test_a_description_line_protocol_cannot_hold_still_gets_its_point():
    (line,) = health_lines([result(7, description="two\nlines")], {}, T0)
    assert line.startswith("energymon_poll,id=7 ok=true,")
