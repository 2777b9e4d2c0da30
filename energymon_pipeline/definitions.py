"""The one dg.Definitions of energymon.

Built from the environment when Dagster loads the code location; a bad setting (a cron field,
a time zone) fails the load with a message naming the variable, its value and what is
allowed. `build_definitions(env)` builds the same thing from another environment for tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from energymon_pipeline import settings
from energymon_pipeline.alerts.config import alert_settings
from energymon_pipeline.assets import build_rollup_assets
from energymon_pipeline.jobs import (
    build_rollup_jobs,
    connectivity_check_job,
    poll_meters_job,
    purge_old_runs_job,
)
from energymon_pipeline.ops.alerts import (
    AlertsResource,
    build_meter_alert_sensor,
    build_poll_failure_sensor,
)
from energymon_pipeline.resources import InfluxResource, RegistryResource
from energymon_pipeline.schedules import (
    build_poll_schedule,
    build_purge_schedule,
    build_rollup_schedules,
)
from energymon_pipeline.sensors import build_new_meter_sensor


def _secret(env: Mapping[str, str], name: str | None):
    """A secret (a password, a URL holding one) as dg.EnvVar when it is set: the UI, the run
    config and the run history show the variable's name, never its value."""
    if name and env.get(name):
        return dg.EnvVar(name)
    return None


def build_definitions(env: Mapping[str, str] | None = None) -> dg.Definitions:
    env = os.environ if env is None else env
    pipeline = settings.pipeline(env)
    influx = settings.influx(env)
    spool = settings.spool(env)
    alerts = alert_settings(env)
    rollups = build_rollup_assets(pipeline.rollup_start, pipeline.timezone)
    rollup_hourly, rollup_daily = build_rollup_jobs(rollups)
    return dg.Definitions(
        assets=rollups.assets,
        asset_checks=rollups.checks,
        jobs=[
            poll_meters_job,
            purge_old_runs_job,
            connectivity_check_job,
            rollup_hourly,
            rollup_daily,
        ],
        sensors=[
            build_new_meter_sensor(connectivity_check_job, pipeline.sensor_interval_s),
            build_meter_alert_sensor(alerts.interval_s),
            build_poll_failure_sensor(poll_meters_job),
        ],
        schedules=[
            *[
                build_poll_schedule(
                    pipeline.poll,
                    pipeline.timezone,
                    poll_meters_job,
                    pipeline.read_concurrency,
                    group,
                    pipeline.group_tags.get(group),
                    alerts.down_after,
                )
                for group in (pipeline.poll_groups or (None,))
            ],
            build_purge_schedule(
                purge_old_runs_job,
                pipeline.run_retention_days,
                pipeline.timezone,
                alerts.history_days,
            ),
            *build_rollup_schedules(rollup_hourly, rollup_daily),
        ],
        # Every job runs its ops in the run's own process, one after another: no subprocess
        # per op for a poll run every minute.
        executor=dg.in_process_executor,
        resources={
            # Outputs stay in memory: a poll run every minute writes no pickles to disk.
            "io_manager": dg.mem_io_manager,
            "alerts": AlertsResource.of(alerts),
            "registry": RegistryResource(database_url=_secret(env, "ENERGYMON_DATABASE_URL") or ""),
            "influx": InfluxResource(
                host=influx.host,
                port=influx.port,
                database=influx.database,
                username=influx.username,
                password=_secret(env, influx.password_variable),
                spool_dir=str(spool.path.absolute()),
                spool_max_bytes=spool.max_bytes,
                spool_max_age_s=spool.max_age_s,
                raw_retention=influx.raw_retention or "",
            ),
        },
    )


defs = build_definitions()
