"""Decoded readings -> a validated pandas DataFrame, the unit a poll run writes.

Values that are not finite (a meter's NaN, a decoding of an unmapped register as inf) or that
fall outside a register's optional min/max are dropped and counted here, never written, and
never replaced by 0: the original wrote 0.0 on errors, which corrupted energy totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from energymon_pipeline.influx.points import PointError, poll_health_line
from energymon_pipeline.modbus.reader import MeterResult

COLUMNS = ["time", "meter_id", "description", "meter_type", "measurement", "unit", "value"]


class ReadingsModel(pa.DataFrameModel):
    """One row per decoded value that passed validation."""

    time: Series[pd.DatetimeTZDtype] = pa.Field(
        dtype_kwargs={"unit": "ns", "tz": "UTC"}, description="when the response arrived (UTC)"
    )
    meter_id: Series[int] = pa.Field(ge=0, description="energy_meters.id")
    description: Series[str] = pa.Field(nullable=True, description="energy_meters.description")
    meter_type: Series[str] = pa.Field(description="energy_meters.type")
    measurement: Series[str] = pa.Field(description="registers.measurement_name")
    unit: Series[str] = pa.Field(nullable=True, description="registers.data_unit")
    value: Series[float] = pa.Field(description="raw * scale + offset, always finite")

    @pa.check("value", name="finite")
    @classmethod
    def finite(cls, value: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(value.to_numpy(dtype=float)), index=value.index)

    class Config:
        strict = True
        ordered = True


@dataclass
class Validated:
    frame: pd.DataFrame
    #: Dropped values per meter id and reason ("not finite", "below min_value", ...).
    dropped: Counter = field(default_factory=Counter)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def dropped_for(self, meter_id: int) -> int:
        return sum(n for (mid, _), n in self.dropped.items() if mid == meter_id)


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.Series([], dtype="datetime64[ns, UTC]"),
            "meter_id": pd.Series([], dtype="int64"),
            "description": pd.Series([], dtype="object"),
            "meter_type": pd.Series([], dtype="object"),
            "measurement": pd.Series([], dtype="object"),
            "unit": pd.Series([], dtype="object"),
            "value": pd.Series([], dtype="float64"),
        }
    )


def validate(results: Iterable[MeterResult]) -> Validated:
    """Build the readings frame from every meter's readings and drop what must not be
    written, counting each drop by meter and reason."""
    times, ids, descriptions, types, names, units, values, lows, highs = ([] for _ in range(9))
    for result in results:
        meter = result.meter
        for reading in result.readings:
            register = reading.register
            times.append(reading.time)
            ids.append(meter.meter_id)
            descriptions.append(meter.description)
            types.append(meter.meter_type)
            names.append(register.measurement)
            units.append(register.unit)
            values.append(reading.value)
            lows.append(np.nan if register.min_value is None else register.min_value)
            highs.append(np.nan if register.max_value is None else register.max_value)
    if not values:
        return Validated(empty_frame())
    value = np.asarray(values, dtype=float)
    low, high = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)
    finite = np.isfinite(value)
    below = finite & ~np.isnan(low) & (value < low)
    above = finite & ~np.isnan(high) & (value > high)
    keep = finite & ~below & ~above
    dropped: Counter = Counter()
    meter_ids = np.asarray(ids, dtype=np.int64)
    for mask, reason in ((~finite, "not finite"), (below, "below min_value"),
                         (above, "above max_value")):  # fmt: skip
        for meter_id, count in zip(*np.unique(meter_ids[mask], return_counts=True), strict=True):
            dropped[(int(meter_id), reason)] += int(count)
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(np.asarray(times, dtype=float)[keep], unit="s", utc=True),
            "meter_id": meter_ids[keep],
            "description": pd.Series(descriptions, dtype="object")[keep].to_numpy(),
            "meter_type": pd.Series(types, dtype="object")[keep].to_numpy(),
            "measurement": pd.Series(names, dtype="object")[keep].to_numpy(),
            "unit": pd.Series(units, dtype="object")[keep].to_numpy(),
            "value": value[keep],
        }
    )
    frame["time"] = frame["time"].astype("datetime64[ns, UTC]")
    return Validated(ReadingsModel.validate(frame), dropped)


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
    results: list[MeterResult], counts: dict[int, MeterCounts], now: datetime
) -> list[str]:
    """One `energymon_poll` point per meter of a run: ok, latency, requests, the values
    written, the values dropped, errors (failed requests plus reasons for dropped values).

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
        }
        try:
            line = poll_health_line(
                description=meter.description, meter_type=meter.meter_type, **fields
            )
        except PointError:
            line = poll_health_line(description=None, meter_type=None, **fields)
        lines.append(line)
    return lines
