"""What the poll ops hand each other, in a module of its own so that `write_readings` does not
import the ops that produce its inputs. Nothing here imports pandas or pandera: a run's
process imports this before it reads, and pandas after (ops/run_process.py)."""

from dataclasses import dataclass

import dagster as dg

from energymon_pipeline import readings_schema
from energymon_pipeline.modbus.types import MeterSpec


def _is_validated_frame(_context, value: object) -> dg.TypeCheck:
    from energymon_pipeline.readings import frame_problem  # pandas: loaded by the op

    problem = frame_problem(value)
    return dg.TypeCheck(success=problem is None, description=problem)


def _table_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column.dtype,
                description=column.description,
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable, unique=False, other=list(column.checks)
                ),
            )
            for column in readings_schema.COLUMNS
        ]
    )


#: The readings frame as Dagster shows it: the pandera model's name, description and column
#: schema (what dagster-pandera would derive from readings_model.ReadingsModel: a test keeps
#: them equal), but a type check that only makes sure the value is the frame
#: `readings.validate` built and checked against that model. dagster-pandera's own check
#: would validate every row a second time in every run process, and importing it costs the
#: run's start 0.1 s.
ReadingsFrame = dg.DagsterType(
    type_check_fn=_is_validated_frame,
    name=readings_schema.NAME,
    description=readings_schema.DESCRIPTION,
    metadata={"schema": dg.MetadataValue.table_schema(_table_schema())},
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
    #: Failed polls in a row before a meter counts as down, when the run's config set it
    #: (the schedule does); None: the run's AlertsResource.
    down_after: int | None = None
    #: A scheduled run's first configured sample time (epoch seconds), even when the run
    #: started after it; None for a run without sample seconds (manual: "now").
    due: float | None = None
