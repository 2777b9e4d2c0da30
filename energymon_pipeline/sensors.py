"""new_meter_sensor: notices new, edited and re-enabled meters and checks that they answer.

The original looked for new meters every SCHEDULER_CRON tick. Here the cursor records each
enabled meter's version (its `updated_at`, set by the database on every real change,
whoever made it: the CLI, psql, a migration), and every meter whose version is new gets one
connectivity_check_job run. The run key carries the version, so an edited or re-added meter
is checked again but the same version never twice.
"""

import json

import dagster as dg

from energymon_pipeline.ops.connectivity import ConnectivityConfig
from energymon_pipeline.registry import queries
from energymon_pipeline.resources import RegistryResource

MIN_INTERVAL_S = 5


def build_new_meter_sensor(job: dg.JobDefinition, interval_s: int) -> dg.SensorDefinition:
    """`interval_s` comes from the period SCHEDULER_CRON_* implies (or its own variable);
    never below 5 s."""

    @dg.sensor(
        name="new_meter_sensor",
        job=job,
        minimum_interval_seconds=max(MIN_INTERVAL_S, int(interval_s)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Checks every new, edited or re-enabled meter with connectivity_check_job.",
    )
    def new_meter_sensor(context: dg.SensorEvaluationContext, registry: RegistryResource):
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        versions = queries.meter_versions(registry.engine())
        if not versions:
            if seen:
                context.log.info(f"meter(s) {', '.join(sorted(seen, key=int))} removed")
                context.update_cursor(json.dumps({}))
            return dg.SkipReason("the energy_meters table is empty: nothing to check")
        current = {
            str(meter_id): updated_at.isoformat()
            for meter_id, (enabled, updated_at) in versions.items()
            if enabled
        }
        removed = sorted(set(seen) - {str(meter_id) for meter_id in versions}, key=int)
        if removed:
            context.log.info(f"meter(s) {', '.join(removed)} removed from the registry")
        changed = [
            (meter_id, version)
            for meter_id, version in sorted(current.items(), key=lambda item: int(item[0]))
            if seen.get(meter_id) != version
        ]
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            return dg.SkipReason(f"no new or changed meters among {len(current)} enabled")
        context.log.info(f"checking meter(s) {', '.join(meter_id for meter_id, _ in changed)}")
        return [
            dg.RunRequest(
                run_key=f"meter-{meter_id}-{version}",
                run_config=dg.RunConfig(
                    ops={"check_meter_connectivity": ConnectivityConfig(meter_id=int(meter_id))}
                ),
                tags={"energymon/meter_id": meter_id},
            )
            for meter_id, version in changed
        ]

    return new_meter_sensor
