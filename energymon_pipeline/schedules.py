"""Schedules, built by small factories from settings so tests can build them with other values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import dagster as dg

from energymon_pipeline.cron import CronTrigger
from energymon_pipeline.ops.maintenance import AlertHistoryConfig, PurgeConfig
from energymon_pipeline.ops.poll import PollConfig

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


GROUP_TAG = "energymon/poll_group"
#: Poll runs of one group in progress at once: the one reading its minute and the next one,
#: launched a minute ahead, waiting for its own (dagster.yaml's `energymon/poll_group` limit).
RUNS_PER_GROUP = 2
ALL_METERS = "all"


def build_poll_schedule(
    poll: CronTrigger,
    timezone: str,
    job: dg.JobDefinition,
    read_concurrency: int = 64,
    group: str | None = None,
    tags: Mapping[str, str] | None = None,
    down_after: int | None = None,
) -> dg.ScheduleDefinition:
    """`poll_meters_schedule` (or `poll_meters_schedule_<group>` for one poll group): the
    hour and minute variables say which minutes are polled, the second variable the sample
    times within each. The schedule ticks one minute AHEAD of each polled minute
    (`CronTrigger.ahead_cron_schedules`), and its run waits for its sample seconds: the queue,
    the new process, its imports and the registry read happen before the minute, so the first
    sample is taken at its second (within ~1 s) instead of several seconds late. Running by
    default, so a fresh stack polls without a click. A run of a group may wait ahead while
    the group's previous run is still reading (the link pools keep them off each other's
    links); a tick that finds two runs of the group in progress is skipped, so slow runs never
    pile up. `tags` (ENERGYMON_GROUP_TAGS) go on each run as well: they tell the run
    launcher where the group runs (a Kubernetes node selector, resources). `down_after`
    (ENERGYMON_ALERT_DOWN_AFTER as the code server reads it) goes in each run's config: a run
    in a container of its own does not get the alert settings' file."""
    group_tag = group or ALL_METERS
    ahead = poll.ahead_cron_schedules

    @dg.schedule(
        name="poll_meters_schedule" if group is None else f"poll_meters_schedule_{group}",
        cron_schedule=ahead[0] if len(ahead) == 1 else ahead,
        execution_timezone=timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Polls every enabled meter{'' if group is None else f' of group {group!r}'}: "
            f"hour {poll.hour!r}, minute {poll.minute!r} "
            f"({timezone}), sampling at second(s) {poll.second!r} of the minute. Ticks a "
            "minute ahead; the run waits for its sample times."
        ),
    )
    def poll_meters_schedule(context: dg.ScheduleEvaluationContext):
        running = context.instance.get_runs(
            filters=dg.RunsFilter(
                job_name=job.name,
                statuses=IN_PROGRESS,
                tags={GROUP_TAG: group_tag} if group is not None else {},
            ),
            limit=RUNS_PER_GROUP,
        )
        if len(running) >= RUNS_PER_GROUP:
            return dg.SkipReason(
                f"poll runs {', '.join(r.run_id for r in running)} are still in progress "
                "(one reading, one waiting for its minute); skipped this tick so runs never "
                "pile up"
            )
        minute = context.scheduled_execution_time + timedelta(minutes=1)
        return dg.RunRequest(
            run_config=dg.RunConfig(
                ops={
                    "load_definitions": PollConfig(
                        sample_seconds=list(poll.seconds),
                        scheduled_minute=minute.isoformat(),
                        read_concurrency=read_concurrency,
                        group=group,
                        down_after=down_after,
                    )
                }
            ),
            tags={
                **(tags or {}),
                "energymon/scheduled_minute": minute.isoformat(),
                GROUP_TAG: group_tag,
            },
        )

    return poll_meters_schedule


def build_purge_schedule(
    job: dg.JobDefinition, retention_days: int, timezone: str, alert_history_days: int = 365
) -> dg.ScheduleDefinition:
    """Daily at 03:17 local time (off the hour, away from the poll's busiest ticks). Both
    retentions go in the run's config (the code server's settings)."""
    return dg.ScheduleDefinition(
        name="purge_old_runs_schedule",
        cron_schedule="17 3 * * *",
        execution_timezone=timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        run_config=dg.RunConfig(
            ops={
                "purge_old_runs": PurgeConfig(retention_days=retention_days),
                "purge_alert_history": AlertHistoryConfig(history_days=alert_history_days),
            }
        ),
        description=f"Deletes runs older than {retention_days} day(s) and alerts older than "
        f"{alert_history_days} day(s).",
    )


def build_rollup_schedules(
    hourly_job: dg.UnresolvedAssetJobDefinition, daily_job: dg.UnresolvedAssetJobDefinition
) -> list[dg.ScheduleDefinition]:
    """Each hour is rolled up 5 minutes after it closes (late points of its last poll run
    have landed by then); each day 20 minutes after midnight in TZ, after its last hour."""
    return [
        dg.build_schedule_from_partitioned_job(
            hourly_job,
            name="energy_rollup_schedule",
            minute_of_hour=5,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
        dg.build_schedule_from_partitioned_job(
            daily_job,
            name="energy_rollup_daily_schedule",
            hour_of_day=0,
            minute_of_hour=20,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
    ]
