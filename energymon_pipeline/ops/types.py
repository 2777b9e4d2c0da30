"""What the poll ops hand each other, in a module of its own so that `write_readings` does not
import the ops that produce its inputs."""

import warnings
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type

from energymon_pipeline.modbus.types import MeterSpec
from energymon_pipeline.readings import ReadingsModel, frame_problem

with warnings.catch_warnings():  # dagster-pandera marks itself beta; the pin keeps it stable
    warnings.simplefilter("ignore", dg.BetaWarning)
    _PANDERA_TYPE = pandera_schema_to_dagster_type(ReadingsModel)


def _is_validated_frame(_context, value: object) -> dg.TypeCheck:
    problem = frame_problem(value)
    return dg.TypeCheck(success=problem is None, description=problem)


#: The readings frame as Dagster shows it: the pandera model's name, description and column
#: schema (dagster-pandera's metadata), but a type check that only makes sure the value is the
#: frame `readings.validate` built and checked against that model. dagster-pandera's own check
#: would validate every row a second time (lazily, its slowest mode) in every run process.
ReadingsFrame = dg.DagsterType(
    type_check_fn=_is_validated_frame,
    name=_PANDERA_TYPE.unique_name,
    description=_PANDERA_TYPE.description,
    metadata=_PANDERA_TYPE.metadata,
    typing_type=pd.DataFrame,
)


@dataclass
class PollPlan:
    """What `load_definitions` hands on: the meters, when to sample them, how to write."""

    meters: list[MeterSpec]
    sample_times: list[float]
    dry_run: bool
    read_concurrency: int
    #: How long the read waits for a link another run holds (ops/link_pools.py).
    link_wait_s: float = 50.0
    #: A scheduled run's first configured sample time (epoch seconds), even when the run
    #: started after it; None for a run without sample seconds (manual: "now").
    due: float | None = None
