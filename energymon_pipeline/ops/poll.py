"""The ops of one poll run: load definitions -> read meters -> validate -> write.

Concurrency lives inside `read_meters` (asyncio), not in a dynamic fan-out: one op per meter
would multiply event-log rows by the meter count every minute.
"""

import asyncio
import time
from datetime import UTC, datetime

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from energymon_pipeline.alerts.config import DOWN_AFTER_MAX
from energymon_pipeline.errors import EnergymonError, SettingsError
from energymon_pipeline.modbus.links import group_links
from energymon_pipeline.modbus.reader import DEFAULT_CONCURRENCY, MeterResult
from energymon_pipeline.modbus.reader import read_meters as read_all
from energymon_pipeline.ops import run_process
from energymon_pipeline.ops.alerts import AlertsResource, record_meter_states
from energymon_pipeline.ops.link_pools import LinkPools
from energymon_pipeline.ops.types import PollPlan, ReadingsFrame
from energymon_pipeline.registry.definitions import load_definitions as load_registry
from energymon_pipeline.registry.learnt_splits import save_learnt_splits
from energymon_pipeline.resources import RegistryResource
from energymon_pipeline.settings import in_range


class PollConfig(dg.Config):
    """A poll run's options. From the launchpad: leave everything empty to read every
    enabled meter once, now, and write the readings."""

    meter_ids: list[int] | None = None
    dry_run: bool = False
    #: Only the meters of this poll group (`default` = meters without a group); empty = all.
    group: str | None = None
    #: Seconds within the run's minute to sample at (set by the schedule from
    #: INFLUX_UPDATER_CRON_SECOND_TRIGGER); empty means one sample, now.
    sample_seconds: list[int] = []
    #: The minute the schedule fired for (ISO 8601); empty means the current minute.
    scheduled_minute: str | None = None
    read_concurrency: int = DEFAULT_CONCURRENCY
    #: Seconds to wait for a link (gateway, serial port) another run is reading before its
    #: meters are given up for this run (ops/link_pools.py).
    link_wait_s: float = 50.0
    #: Failed polls in a row before a meter counts as down (alerts). The schedule sets it
    #: from the code server's ENERGYMON_ALERT_DOWN_AFTER, so a run started where the alert
    #: settings are not (a run container) counts as configured; empty: the run's own setting.
    down_after: int | None = None


def sample_times(seconds: list[int], minute: datetime, now: float) -> list[float]:
    """Absolute sample times within `minute`. Seconds already past collapse into one sample
    taken at once (several back-to-back reads of the same instant would only repeat it)."""
    if not seconds:
        return [now]
    start = minute.replace(second=0, microsecond=0).timestamp()
    times = sorted(start + s for s in set(seconds))
    future = [t for t in times if t > now]
    return ([now] if len(future) < len(times) else []) + future


@dg.op(description="Meters (enabled, or the configured ids) and their registers from the registry.")
def load_definitions(
    context: dg.OpExecutionContext, config: PollConfig, registry: RegistryResource
) -> PollPlan:
    run_process.freeze_heap()
    if config.down_after is not None:
        try:
            in_range("down_after", config.down_after, 1, DOWN_AFTER_MAX)
        except SettingsError as error:
            raise dg.Failure(
                description=f"{error} (failed polls in a row before a meter counts as down)"
            ) from None
    try:
        definitions = load_registry(
            registry.engine(), meter_ids=config.meter_ids, group=config.group
        )
    except EnergymonError as error:  # registry unreachable or not migrated: one line, no trace
        raise dg.Failure(description=str(error)) from None
    for problem in definitions.problems:
        context.log.warning(problem)
    now = time.time()
    minute = (
        datetime.fromisoformat(config.scheduled_minute)
        if config.scheduled_minute
        else datetime.fromtimestamp(now, UTC)
    )
    plan = PollPlan(
        meters=definitions.meters,
        sample_times=sample_times(config.sample_seconds, minute, now),
        dry_run=config.dry_run,
        read_concurrency=config.read_concurrency,
        link_wait_s=config.link_wait_s,
        down_after=config.down_after,
        due=(
            minute.replace(second=min(config.sample_seconds), microsecond=0).timestamp()
            if config.sample_seconds
            else None
        ),
    )
    context.add_output_metadata(
        {
            "meters": len(plan.meters),
            "registers": sum(len(m.registers) for m in plan.meters),
            "samples": len(plan.sample_times),
            "skipped rows": dg.MetadataValue.md(
                "\n".join(f"- {p}" for p in definitions.problems) or "none"
            ),
        }
    )
    return plan


@dg.op(
    description="Read every meter at each sample time, link by link (links concurrently, "
    "each link's Dagster pool held while it is read); keep the request splits "
    "a device forced (exception 2) and each meter's state in the registry."
)
def read_meters(
    context: dg.OpExecutionContext,
    plan: PollPlan,
    registry: RegistryResource,
    alerts: AlertsResource,
) -> list[MeterResult]:
    if not plan.meters:
        context.log.info("no meters to read")
        return []
    links = group_links(plan.meters)
    for link in links:
        for conflict in link.conflicts:
            context.log.warning(conflict)
    pools = LinkPools.of(context, plan.link_wait_s)
    pools.prepare(link.key for link in links)
    run_process.import_before(min(plan.sample_times))  # in a scheduled run's wait
    results = asyncio.run(
        read_all(plan.meters, plan.sample_times, plan.read_concurrency, link_guard=pools.hold)
    )
    for result in results:
        if result.errors:
            context.log.warning(f"meter {result.meter.meter_id}: {result.error}")
    _save_learnt_splits(context, registry, results)
    # For meter_alert_sensor; the schedule's threshold (the code server's) over the run's own.
    down_after = plan.down_after or alerts.down_after
    states = record_meter_states(context, registry, down_after, results)
    started = [r.first_request_at for r in results if r.first_request_at is not None]
    late = {}
    if plan.due is not None and started:  # a scheduled run: how late its first sample was
        late = {"first sample late (s)": round(min(started) - plan.due, 3)}
    context.add_output_metadata(
        {
            **late,
            "meters ok": sum(r.ok for r in results),
            "meters failed": sum(not r.ok for r in results),
            "requests": sum(r.requests for r in results),
            "values read": sum(r.values_read for r in results),
            "learnt splits": sum(len(r.learnt_splits) for r in results),
            **states,
        }
    )
    return results


def _save_learnt_splits(
    context: dg.OpExecutionContext, registry: RegistryResource, results: list[MeterResult]
) -> None:
    """The readings matter more than the splits: a registry that cannot take them now costs
    the next run the failed merged reads again, never this run's values."""
    learnt = [(r.meter, r.learnt_splits) for r in results if r.learnt_splits]
    if not learnt:
        return
    for meter, keys in learnt:
        values = ", ".join(f"FC{fc} {address}" for fc, address in sorted(keys))
        context.log.info(f"meter {meter.meter_id}: reads alone from now on: {values}")
    try:
        save_learnt_splits(registry.engine(), learnt)
    except (EnergymonError, SQLAlchemyError) as error:
        context.log.warning(f"learnt request splits not saved: {error}")


@dg.op(
    description="Decode results into the validated readings DataFrame; drop and count values "
    "that are not finite or outside the register's min/max.",
    out={
        "readings": dg.Out(dagster_type=ReadingsFrame),
        "dropped": dg.Out(dict, description="values dropped, per (meter id, reason)"),
    },
)
def validate_readings(context: dg.OpExecutionContext, results: list[MeterResult]):
    run_process.freeze_heap()
    from energymon_pipeline import readings  # pandas: after the read (ops/run_process.py)

    validated = readings.validate(results)
    for (meter_id, reason), count in sorted(validated.dropped.items()):
        context.log.warning(f"meter {meter_id}: dropped {count} value(s): {reason}")
    context.add_output_metadata(
        {"rows": len(validated.frame), "dropped": validated.dropped_total},
        output_name="readings",
    )
    return validated.frame, dict(validated.dropped)
