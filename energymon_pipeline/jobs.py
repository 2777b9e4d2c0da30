"""The jobs. The poll job runs every minute: the in-process executor (no subprocess per op)
and the in-memory IO manager (no pickles on disk) are set once, for every job, in
definitions.py."""

from __future__ import annotations

import dagster as dg

from energymon_pipeline.assets import Rollups
from energymon_pipeline.ops.connectivity import check_meter_connectivity
from energymon_pipeline.ops.maintenance import purge_alert_history, purge_old_runs
from energymon_pipeline.ops.poll import load_definitions, read_meters, validate_readings
from energymon_pipeline.ops.write import write_readings

POLL_JOB = "poll_meters_job"


@dg.job(
    name=POLL_JOB,
    description="Read every enabled meter, validate the readings and write them to InfluxDB.",
    tags={"energymon/kind": "poll"},
)
def poll_meters_job() -> None:
    plan = load_definitions()
    results = read_meters(plan)
    frame, dropped = validate_readings(results)
    write_readings(plan, results, frame, dropped)


@dg.job(
    description="Delete Dagster runs older than DAGSTER_RUN_RETENTION_DAYS and alerts older "
    "than ENERGYMON_ALERT_HISTORY_DAYS.",
)
def purge_old_runs_job() -> None:
    purge_old_runs()
    purge_alert_history()


@dg.job(
    description="Check that one meter answers: TCP connect, then a read of its first register.",
    tags={"energymon/kind": "connectivity"},
)
def connectivity_check_job() -> None:
    check_meter_connectivity()


def build_rollup_jobs(
    rollups: Rollups,
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.UnresolvedAssetJobDefinition]:
    """`energy_rollup_job` and `energy_rollup_daily_job`: the names users know, now asset jobs
    that materialize one partition of the hourly (or daily) rollup asset and run its check."""
    hourly = dg.define_asset_job(
        name="energy_rollup_job",
        selection=dg.AssetSelection.assets(rollups.hourly),
        description="Per meter and measurement: count, mean, min, max, last and (counters) "
        "consumption of one hour of readings. Backfill energymon_rollup_1h from the asset "
        "catalog after an outage.",
        tags={"energymon/kind": "rollup"},
    )
    daily = dg.define_asset_job(
        name="energy_rollup_daily_job",
        selection=dg.AssetSelection.assets(rollups.daily),
        description="One day of hourly rollups rolled up again.",
        tags={"energymon/kind": "rollup"},
    )
    return hourly, daily
