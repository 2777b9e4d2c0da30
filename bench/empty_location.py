"""The bench's own code location: a job with one op that does nothing, launched on the same
instance as the cold poll runs (bench/cold.py), so its run time is Dagster's own floor for a
run: a new process, the instance, the event writes, no energymon code at all."""

import dagster as dg


@dg.op
def do_nothing() -> None:
    """Nothing: the run's cost is Dagster's alone."""


@dg.job(executor_def=dg.in_process_executor)
def empty_job() -> None:
    do_nothing()


defs = dg.Definitions(jobs=[empty_job])
