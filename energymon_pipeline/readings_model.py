"""The readings frame as a pandera model: the schema of record that `readings.validate`
builds to (tests check every shape of its frames against it) and that readings_schema.py
describes without pandera, for the code location a run imports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from energymon_pipeline import readings_schema

_DESCRIPTIONS = {column.name: column.description for column in readings_schema.COLUMNS}


class ReadingsModel(pa.DataFrameModel):
    """One row per decoded value that passed validation."""

    time: Series[pd.DatetimeTZDtype] = pa.Field(
        dtype_kwargs={"unit": "ns", "tz": "UTC"}, description=_DESCRIPTIONS["time"]
    )
    meter_id: Series[int] = pa.Field(ge=0, description=_DESCRIPTIONS["meter_id"])
    description: Series[str] = pa.Field(nullable=True, description=_DESCRIPTIONS["description"])
    meter_type: Series[str] = pa.Field(description=_DESCRIPTIONS["meter_type"])
    measurement: Series[str] = pa.Field(description=_DESCRIPTIONS["measurement"])
    unit: Series[str] = pa.Field(nullable=True, description=_DESCRIPTIONS["unit"])
    value: Series[float] = pa.Field(description=_DESCRIPTIONS["value"])

    @pa.check("value", name="finite")
    @classmethod
    def finite(cls, value: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(value.to_numpy(dtype=float)), index=value.index)

    class Config:
        strict = True
        ordered = True
