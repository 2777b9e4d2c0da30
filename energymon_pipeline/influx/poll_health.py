"""What became of each meter in a poll run, as the `energymon_poll` points Grafana shows.

The write op, its per-meter table and the benchmark all count a meter's values the same way
(`meter_counts`) and call a meter ok by the same rule (`meter_ok`), so the table in the UI and
the health point in InfluxDB never disagree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from energymon_pipeline.influx.points import PointError, encode_readings, poll_health_line

if TYPE_CHECKING:
    import pandas as pd

    from energymon_pipeline.modbus.reader import MeterResult


@dataclass
class MeterCounts:
    """What became of one meter's values in a run: written, or dropped and why."""

    written: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def describe_drops(self) -> list[str]:
        return [f"dropped {n} value(s): {reason}" for reason, n in sorted(self.dropped.items())]


def meter_counts(lines_per_meter: Counter, dropped: Counter) -> dict[int, MeterCounts]:
    """Per meter id: the values written (`lines_per_meter`) and the drops (`dropped`, keyed
    by (meter id, reason), from validation and encoding together)."""
    counts: dict[int, MeterCounts] = {}
    for meter_id, written in lines_per_meter.items():
        counts.setdefault(int(meter_id), MeterCounts()).written = int(written)
    for (meter_id, reason), n in dropped.items():
        counts.setdefault(int(meter_id), MeterCounts()).dropped[reason] += int(n)
    return counts


def meter_ok(result: MeterResult, counts: MeterCounts) -> bool:
    """Every configured value was read and every value read is written."""
    return result.ok and not counts.dropped


def health_lines(
    results: list[MeterResult],
    counts: dict[int, MeterCounts],
    now: datetime,
    due: float | None = None,
) -> list[str]:
    """One `energymon_poll` point per meter of a run: ok, latency, requests, the values
    written, the values dropped, errors (failed requests plus reasons for dropped values),
    and for a scheduled run (`due`: when its first sample was due, epoch seconds) how late
    the meter's first request went out.

    A meter whose description or type line protocol cannot hold (a row written past
    validation) still gets its point, identified by its id alone."""
    lines = []
    for r in results:
        meter, count = r.meter, counts.get(r.meter.meter_id, MeterCounts())
        fields = {
            "time": now,
            "meter_id": meter.meter_id,
            "ok": meter_ok(r, count),
            "latency_ms": r.mean_latency_ms,
            "requests": r.requests,
            "values": count.written,
            "dropped": count.dropped_total,
            "errors": len(r.errors) + len(count.dropped),
            "late_s": late_s(r, due),
        }
        try:
            line = poll_health_line(
                description=meter.description, meter_type=meter.meter_type, **fields
            )
        except PointError:
            line = poll_health_line(description=None, meter_type=None, **fields)
        lines.append(line)
    return lines


def late_s(result: MeterResult, due: float | None) -> float | None:
    """Seconds between when a scheduled sample was due and the meter's first request (None
    for an unscheduled run or a meter never asked)."""
    if due is None or result.first_request_at is None:
        return None
    return round(result.first_request_at - due, 3)


@dataclass
class PollBatch:
    """What one poll run appends to the write path: its readings as line protocol, one
    `energymon_poll` point per meter, and the per-meter counts both were built from."""

    lines: list[str]
    health: list[str]
    counts: dict[int, MeterCounts]
    #: Values dropped while encoding (text line protocol cannot hold), per (meter id, reason).
    unencodable: Counter


def poll_batch(
    results: list[MeterResult],
    frame: pd.DataFrame,
    dropped: Counter,
    now: datetime,
    due: float | None = None,
) -> PollBatch:
    """The batch of a run whose validated readings are `frame` and whose validation dropped
    `dropped` (per (meter id, reason)): the write op and the benchmark build it the same way.
    `due`: when a scheduled run's first sample was due (epoch seconds), for `late_s`."""
    encoded = encode_readings(frame)
    counts = meter_counts(encoded.written, Counter(dropped) + encoded.dropped)
    health = health_lines(results, counts, now, due)
    return PollBatch(encoded.lines, health, counts, encoded.dropped)
