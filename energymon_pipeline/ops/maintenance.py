"""Housekeeping: Dagster keeps every run forever, and a poll run per minute makes the run
history (and the UI that lists it) slower every month. This op deletes old runs."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

#: Upper bounds so one purge never holds the instance for long; the next day continues.
PURGE_BATCH = 500
PURGE_MAX_SECONDS = 300


class PurgeConfig(dg.Config):
    retention_days: int = 14


@dg.op(description="Delete runs (and their event logs) older than the retention period.")
def purge_old_runs(context: dg.OpExecutionContext, config: PurgeConfig) -> int:
    if config.retention_days < 1:
        raise dg.Failure(
            f"retention_days={config.retention_days} would delete every run; allowed: 1 or more"
        )
    cutoff = datetime.now(UTC) - timedelta(days=config.retention_days)
    deadline = time.monotonic() + PURGE_MAX_SECONDS
    deleted = 0
    while time.monotonic() < deadline:
        records = context.instance.get_run_records(
            filters=dg.RunsFilter(created_before=cutoff), limit=PURGE_BATCH
        )
        records = [r for r in records if r.dagster_run.run_id != context.run_id]
        if not records:
            break
        for record in records:
            context.instance.delete_run(record.dagster_run.run_id)
            deleted += 1
    context.log.info(f"deleted {deleted} run(s) created before {cutoff.isoformat()}")
    context.add_output_metadata(
        {
            "deleted runs": deleted,
            "cutoff": cutoff.isoformat(),
            "retention days": config.retention_days,
        }
    )
    return deleted
