"""The readings frame's columns, as plain data: what the Dagster type shows in the UI and what
`readings.frame_problem` checks, importable without pandas or pandera.

A poll run's process imports the code location before it reads a meter; pandas and pandera
cost it about 0.3 s there, so pandas is imported where the frame is built (readings.py, after
the read or in a scheduled run's wait for its second: ops/run_process.py). The pandera model
(readings_model.py) is the schema of record; a test keeps these columns equal to what
dagster-pandera derives from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    description: str
    nullable: bool = False
    #: Checks besides the dtype, as dagster-pandera names them (">= 0", "finite").
    checks: tuple[str, ...] = ()


NAME = "ReadingsModel"
DESCRIPTION = "One row per decoded value that passed validation."
COLUMNS = (
    Column("time", "datetime64[ns, UTC]", "when the response arrived (UTC)"),
    Column("meter_id", "int64", "energy_meters.id", checks=(">= 0",)),
    Column("description", "str", "energy_meters.description", nullable=True),
    Column("meter_type", "str", "energy_meters.type"),
    Column("measurement", "str", "registers.measurement_name"),
    Column("unit", "str", "registers.data_unit", nullable=True),
    Column("value", "float64", "raw * scale + offset, always finite", checks=("finite",)),
)
