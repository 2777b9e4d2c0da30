"""Housekeeping: Dagster keeps every run forever, and a poll run per minute makes the run
history (and the UI that lists it) slower every month. These ops delete old runs, and the
alert history past its own (longer) retention."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from energymon_pipeline.alerts.config import HISTORY_DAYS_MAX
from energymon_pipeline.errors import EnergymonError, SettingsError
from energymon_pipeline.resources import RegistryResource
from energymon_pipeline.settings import in_range

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


class AlertHistoryConfig(dg.Config):
    #: Set by the purge schedule from the code server's ENERGYMON_ALERT_HISTORY_DAYS (a run
    #: in a container of its own does not get the alert settings).
    history_days: int = 365


@dg.op(
    description="Delete alerts (and their deliveries) raised before the alert history's "
    "retention; an alert still queued on a channel is kept until it is sent."
)
def purge_alert_history(
    context: dg.OpExecutionContext, config: AlertHistoryConfig, registry: RegistryResource
) -> int:
    from energymon_pipeline.alerts.outbox import prune_history

    try:
        in_range("history_days", config.history_days, 1, HISTORY_DAYS_MAX)
    except SettingsError as error:
        raise dg.Failure(f"{error} (days of alert history kept)") from None
    cutoff = datetime.now(UTC) - timedelta(days=config.history_days)
    try:
        deleted = prune_history(registry.engine(), cutoff)
    except (EnergymonError, SQLAlchemyError) as error:  # the registry down: one line, no trace
        raise dg.Failure(description=f"alert history not pruned: {error}") from None
    context.add_output_metadata(
        {
            "deleted alerts": deleted,
            "cutoff": cutoff.isoformat(),
            "history days": config.history_days,
        }
    )
    return deleted
