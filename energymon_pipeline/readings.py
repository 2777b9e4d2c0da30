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

from energymon_pipeline.modbus.reader import MeterResult
from energymon_pipeline.readings_schema import COLUMNS


@dataclass
class Validated:
    frame: pd.DataFrame
    #: Dropped values per meter id and reason ("not finite", "below min_value", ...).
    dropped: Counter = field(default_factory=Counter)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


_COLUMNS = tuple(column.name for column in COLUMNS)


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


class _RegisterColumns:
    """The register-derived columns of one registers tuple (a plan's request, shared by every
    meter of a type): built once per tuple per call, then taken whole for each block."""

    __slots__ = ("names", "units", "lows", "highs")

    def __init__(self, registers: tuple) -> None:
        self.names = np.array([r.measurement for r in registers], dtype=object)
        self.units = np.array([r.unit for r in registers], dtype=object)
        self.lows = np.array(
            [np.nan if r.min_value is None else r.min_value for r in registers], dtype=float
        )
        self.highs = np.array(
            [np.nan if r.max_value is None else r.max_value for r in registers], dtype=float
        )


def validate(results: Iterable[MeterResult]) -> Validated:
    """Build the readings frame from every meter's answered blocks and drop what must not be
    written, counting each drop by meter and reason. Works on whole arrays: the values stay
    in the decoder's arrays, and register and meter columns are repeated, not built per
    value."""
    columns: dict[int, _RegisterColumns] = {}
    times, values, names, units, lows, highs = ([] for _ in range(6))
    per_meter, meter_ids, descriptions, types = [], [], [], []
    for result in results:
        if not result.blocks:
            continue
        meter = result.meter
        count = 0
        for block in result.blocks:
            registers = columns.get(id(block.registers))
            if registers is None:
                registers = columns[id(block.registers)] = _RegisterColumns(block.registers)
            n = len(block.values)
            times.append(np.full(n, block.time))
            values.append(block.values)
            names.append(registers.names)
            units.append(registers.units)
            lows.append(registers.lows)
            highs.append(registers.highs)
            count += n
        per_meter.append(count)
        meter_ids.append(meter.meter_id)
        descriptions.append(meter.description)
        types.append(meter.meter_type)
    if not values:
        return Validated(empty_frame())
    value = np.concatenate(values).astype(float, copy=False)
    low, high = np.concatenate(lows), np.concatenate(highs)
    finite = np.isfinite(value)
    below = finite & ~np.isnan(low) & (value < low)
    above = finite & ~np.isnan(high) & (value > high)
    keep = finite & ~below & ~above
    ids = np.repeat(np.asarray(meter_ids, dtype=np.int64), per_meter)
    dropped: Counter = Counter()
    for mask, reason in ((~finite, "not finite"), (below, "below min_value"),
                         (above, "above max_value")):  # fmt: skip
        if mask.any():
            for meter_id, count in zip(*np.unique(ids[mask], return_counts=True), strict=True):
                dropped[(int(meter_id), reason)] += int(count)
    everything = keep.all()

    def kept(column: np.ndarray) -> np.ndarray:
        return column if everything else column[keep]

    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(kept(np.concatenate(times)), unit="s", utc=True),
            "meter_id": kept(ids),
            "description": kept(np.repeat(np.array(descriptions, dtype=object), per_meter)),
            "meter_type": kept(np.repeat(np.array(types, dtype=object), per_meter)),
            "measurement": kept(np.concatenate(names)),
            "unit": kept(np.concatenate(units)),
            "value": kept(value),
        }
    )
    frame["time"] = frame["time"].astype("datetime64[ns, UTC]")
    # Built to the schema column by column (tests check every shape of it against the pandera
    # model, readings_model.py): pandera re-checking each row's type here cost a run process
    # 0.05-0.2 s a minute, and importing pandera 0.1 s more.
    return Validated(frame, dropped)
