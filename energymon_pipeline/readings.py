"""Decoded readings -> a validated pandas DataFrame, the unit a poll run writes.

Values that are not finite (a meter's NaN, a decoding of an unmapped register as inf) or that
fall outside a register's optional min/max are dropped and counted here, never written, and
never replaced by 0: the original wrote 0.0 on errors, which corrupted energy totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from energymon_pipeline.modbus.reader import MeterResult


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


_COLUMNS = tuple(ReadingsModel.to_schema().columns)


def frame_problem(value: object) -> str | None:
    """None if `value` is a readings frame as `validate` returns it (the model's columns in
    order, a UTC time column, float values), else what is wrong. Structure only: the rows were
    validated once, in `validate`."""
    if not isinstance(value, pd.DataFrame):
        return f"expected a pandas DataFrame of readings, got {type(value).__name__}"
    if tuple(value.columns) != _COLUMNS:
        return f"readings columns are {list(value.columns)}, expected {list(_COLUMNS)}"
    if not isinstance(value["time"].dtype, pd.DatetimeTZDtype) or value["value"].dtype != float:
        return "readings need a timezone-aware 'time' column and a float 'value' column"
    return None


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
