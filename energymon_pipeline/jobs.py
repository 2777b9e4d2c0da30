"""The jobs. The poll job runs every minute: in-process executor (no subprocess per op) and
the in-memory IO manager bound in definitions.py (no pickles on disk)."""

from __future__ import annotations

import dagster as dg

from energymon_pipeline.ops.connectivity import check_meter_connectivity
from energymon_pipeline.ops.maintenance import purge_old_runs
from energymon_pipeline.ops.poll import load_definitions, read_meters, validate_readings
from energymon_pipeline.ops.write import write_readings

POLL_JOB = "poll_meters_job"


@dg.job(
    name=POLL_JOB,
    description="Read every enabled meter, validate the readings and write them to InfluxDB.",
    executor_def=dg.in_process_executor,
    tags={"energymon/kind": "poll"},
)
def poll_meters_job() -> None:
    plan = load_definitions()
    results = read_meters(plan)
    write_readings(plan, results, validate_readings(results))


@dg.job(
    description="Delete Dagster runs older than DAGSTER_RUN_RETENTION_DAYS.",
    executor_def=dg.in_process_executor,
)
def purge_old_runs_job() -> None:
    purge_old_runs()


@dg.job(
    description="Check that one meter answers: TCP connect, then a read of its first register.",
    executor_def=dg.in_process_executor,
    tags={"energymon/kind": "connectivity"},
)
def connectivity_check_job() -> None:
    check_meter_connectivity()
