"""Hourly and daily rollups of the raw readings, computed from what InfluxDB holds.

Live registers cannot be re-read for the past, so backfills work on stored history: a rollup
of a window reads the raw points, aggregates each series (meter id x measurement) and writes
one point per series, stamped with the window's start. Writing the same window again writes
the same series at the same timestamp, so a re-run or a backfill never doubles anything.

Counters (registers marked `cumulative`) also get `consumption`: the sum of the non-negative
increments between consecutive readings, including the increment from the last reading before
the window (within one window's length) to the first one inside it. A negative increment is a
counter reset or a replaced meter: it is skipped and counted, never subtracted. A gap in the
readings is not filled: consumption is what the counter says across it, nothing invented.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from energymon_pipeline.influx.points import escape_measurement, tag_set, timestamp_ms
from energymon_pipeline.influx.writer import InfluxWriter

HOURLY = "energymon_rollup_1h"
DAILY = "energymon_rollup_1d"
SERIES_TAGS = ("id", "description", "dataunit")


@dataclass
class RollupResult:
    lines: list[str] = field(default_factory=list)
    series: int = 0
    points_read: int = 0
    counters: int = 0
    counters_with_resets: int = 0


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(measurement: str, tags: dict, fields: dict, start: datetime) -> str:
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        if name == "count":
            parts.append(f"count={int(value)}i")
        else:
            parts.append(f"{name}={float(value)!r}")
    return (
        f"{escape_measurement(measurement)}{tag_set(tags)} {','.join(parts)} {timestamp_ms(start)}"
    )


def consumption(values: Iterable[float]) -> tuple[float, int]:
    """(sum of non-negative increments, number of negative ones) of a counter's readings."""
    array = np.asarray(list(values), dtype=float)
    array = array[np.isfinite(array)]
    if array.size < 2:
        return 0.0, 0
    steps = np.diff(array)
    return float(steps[steps >= 0].sum()), int((steps < 0).sum())


def hourly(
    writer: InfluxWriter,
    start: datetime,
    end: datetime,
    cumulative: set[tuple[str, str]],
    source_policy: str | None = None,
) -> RollupResult:
    """Roll up raw points in [start, end). `cumulative` holds (meter id, measurement) of the
    counters, from the registry; `source_policy` is the raw readings' retention policy
    (None: the default one). Rollups are written to the default policy."""
    prefix = f"{_quote(source_policy)}." if source_policy else ""
    window = f"time >= '{_rfc3339(start)}' AND time < '{_rfc3339(end)}'"
    by_tags = ", ".join(_quote(t) for t in SERIES_TAGS)
    aggregates = writer.query(
        'SELECT count("value"), mean("value"), min("value"), max("value"), last("value") '
        f"FROM {prefix}/.*/ WHERE {window} GROUP BY {by_tags}"
    )
    result = RollupResult()
    counter_values = _counter_readings(writer, start, end, cumulative, aggregates, prefix)
    for measurement, tags, rows in aggregates:
        if measurement.startswith("energymon_") or not rows:
            continue
        row = rows[0]
        if not row.get("count"):
            continue
        fields = {
            "count": row["count"],
            "mean": row["mean"],
            "min": row["min"],
            "max": row["max"],
            "last": row["last"],
        }
        meter_id = tags.get("id", "")
        if (meter_id, measurement) in cumulative:
            used, resets = consumption(counter_values.get((meter_id, measurement), []))
            fields["consumption"] = used
            result.counters += 1
            result.counters_with_resets += bool(resets)
        result.series += 1
        result.points_read += int(row["count"])
        rollup_tags = {**{k: tags.get(k) for k in SERIES_TAGS}, "measurement": measurement}
        result.lines.append(_line(HOURLY, rollup_tags, fields, start))
    return result


def _counter_readings(writer, start, end, cumulative, aggregates, prefix: str) -> dict:
    """The counters' readings in the window, preceded by the last one within one window's
    length before it (so the increment across the window's start is counted once, here)."""
    present = {(tags.get("id", ""), m) for m, tags, _ in aggregates} & cumulative
    measurements = sorted({m for _, m in present})
    lookback = start - (end - start)
    readings: dict[tuple[str, str], list[float]] = defaultdict(list)
    for measurement in measurements:
        before = writer.query(
            f'SELECT last("value") FROM {prefix}{_quote(measurement)} WHERE '
            f"time >= '{_rfc3339(lookback)}' AND time < '{_rfc3339(start)}' GROUP BY \"id\""
        )
        for _, tags, rows in before:
            if rows and rows[0].get("last") is not None:
                readings[(tags.get("id", ""), measurement)].append(rows[0]["last"])
        inside = writer.query(
            f'SELECT "value" FROM {prefix}{_quote(measurement)} WHERE '
            f"time >= '{_rfc3339(start)}' AND time < '{_rfc3339(end)}' GROUP BY \"id\""
        )
        for _, tags, rows in inside:
            readings[(tags.get("id", ""), measurement)].extend(r["value"] for r in rows)
    return readings


def daily(writer: InfluxWriter, start: datetime, end: datetime) -> RollupResult:
    """Roll the hourly rollups in [start, end) up into one point per series."""
    rows = writer.query(
        f"SELECT * FROM {_quote(HOURLY)} WHERE time >= '{_rfc3339(start)}' "
        f'AND time < \'{_rfc3339(end)}\' GROUP BY "id", "description", "measurement", '
        '"dataunit"'
    )
    result = RollupResult()
    for _, tags, hours in rows:
        hours = sorted((h for h in hours if h.get("count")), key=lambda h: h["time"])
        if not hours:
            continue
        counts = np.array([h["count"] for h in hours], dtype=float)
        means = np.array([h["mean"] for h in hours], dtype=float)
        fields = {
            "count": int(counts.sum()),
            "mean": float((counts * means).sum() / counts.sum()),
            "min": min(h["min"] for h in hours),
            "max": max(h["max"] for h in hours),
            "last": hours[-1]["last"],
        }
        used = [h["consumption"] for h in hours if h.get("consumption") is not None]
        if used:
            fields["consumption"] = float(sum(used))
            result.counters += 1
        result.series += 1
        result.points_read += len(hours)
        keep = {k: tags.get(k) for k in ("id", "description", "measurement", "dataunit")}
        result.lines.append(_line(DAILY, keep, fields, start))
    return result
