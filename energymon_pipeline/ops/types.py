"""What the poll ops hand each other, in a module of its own so that `write_readings` does not
import the ops that produce its inputs."""

import warnings
from dataclasses import dataclass

import dagster as dg
from dagster_pandera import pandera_schema_to_dagster_type

from energymon_pipeline.modbus.types import MeterSpec
from energymon_pipeline.readings import ReadingsModel

with warnings.catch_warnings():  # dagster-pandera marks itself beta; the pin keeps it stable
    warnings.simplefilter("ignore", dg.BetaWarning)
    ReadingsFrame = pandera_schema_to_dagster_type(ReadingsModel)


@dataclass
class PollPlan:
    """What `load_definitions` hands on: the meters, when to sample them, how to write."""

    meters: list[MeterSpec]
    sample_times: list[float]
    dry_run: bool
    read_concurrency: int
    #: How long the read waits for a link another run holds (ops/link_pools.py).
    link_wait_s: float = 50.0
