"""Schedules built from the original cron variables, evaluated with
build_schedule_context(scheduled_execution_time=...)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from energymon_pipeline import settings
from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.errors import SettingsError
from energymon_pipeline.jobs import poll_meters_job, purge_old_runs_job
from energymon_pipeline.ops.poll import sample_times
from energymon_pipeline.schedules import build_poll_schedule, build_purge_schedule


def poll_schedule(env: dict[str, str]):
    pipeline = settings.pipeline(env)
    return build_poll_schedule(pipeline.poll, pipeline.timezone, poll_meters_job)


def evaluate(schedule, when: datetime, instance=None):
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    return schedule.evaluate_tick(context)


def config_of(request: dg.RunRequest, job: dg.JobDefinition = poll_meters_job) -> dict:
    """The op config a tick requests, after checking that the run config is valid for the job
    (what the daemon would refuse to launch)."""
    dg.validate_run_config(job, request.run_config)
    return request.run_config["ops"]["load_definitions"]["config"]


def test_default_schedule_polls_every_minute_at_second_0():
    schedule = poll_schedule({})
    assert schedule.cron_schedule == "*/1 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    when = datetime(2026, 11, 27, 12, 34, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        [request] = evaluate(schedule, when, instance).run_requests
    assert config_of(request) == {
        "sample_seconds": [0],
        "scheduled_minute": when.isoformat(),
        "read_concurrency": 64,
        "dry_run": False,
        "link_wait_s": 50.0,
    }


def test_custom_cron_values_and_time_zone():
    schedule = poll_schedule({
        "INFLUX_UPDATER_CRON_HOUR_TRIGGER": "6-18",
        "INFLUX_UPDATER_CRON_MINUTE_TRIGGER": "*/5",
        "INFLUX_UPDATER_CRON_SECOND_TRIGGER": "*/10",
        "TZ": "Europe/Warsaw",
    })  # fmt: skip
    assert schedule.cron_schedule == "*/5 6-18 * * *"
    assert schedule.execution_timezone == "Europe/Warsaw"
    when = datetime(2026, 6, 1, 7, 5, tzinfo=ZoneInfo("Europe/Warsaw"))
    with dg.instance_for_test() as instance:
        [request] = evaluate(schedule, when, instance).run_requests
    assert config_of(request)["sample_seconds"] == [0, 10, 20, 30, 40, 50]


def test_tick_is_skipped_while_a_poll_run_is_in_progress():
    schedule = poll_schedule({})
    when = datetime(2026, 11, 27, 12, 35, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        run_id = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="poll_meters_job", run_id=run_id,
                                       status=dg.DagsterRunStatus.STARTED))  # fmt: skip
        result = evaluate(schedule, when, instance)
        assert not result.run_requests
        assert result.skip_message == (
            f"poll run {run_id} is still in progress; skipped this tick so runs never overlap"
        )
        instance.report_run_failed(instance.get_run_by_id(run_id))
        assert len(evaluate(schedule, when, instance).run_requests) == 1


def test_bad_cron_value_fails_with_the_named_error():
    with pytest.raises(
        SettingsError, match=r"INFLUX_UPDATER_CRON_MINUTE_TRIGGER='\*/90' has the step 90"
    ):
        poll_schedule({"INFLUX_UPDATER_CRON_MINUTE_TRIGGER": "*/90"})


def test_sample_times_within_the_minute():
    minute = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    start = minute.timestamp()
    # Run starts 2 s into the minute: second 0 is past -> sampled at once; the rest on time.
    assert sample_times([0, 10, 20], minute, start + 2) == [start + 2, start + 10, start + 20]
    # Several past seconds collapse into one immediate sample.
    assert sample_times([0, 10, 20], minute, start + 25) == [start + 25]
    assert sample_times([30], minute, start + 1) == [start + 30]
    assert sample_times([], minute, start + 7) == [start + 7]


def test_purge_schedule_uses_the_retention_days():
    schedule = build_purge_schedule(purge_old_runs_job, 30, "Europe/Warsaw")
    assert schedule.cron_schedule == "17 3 * * *"
    with dg.instance_for_test() as instance:
        [request] = evaluate(
            schedule, datetime(2026, 11, 27, 3, 17, tzinfo=UTC), instance
        ).run_requests
    dg.validate_run_config(purge_old_runs_job, request.run_config)
    assert request.run_config["ops"]["purge_old_runs"]["config"]["retention_days"] == 30


def test_one_schedule_per_poll_group():
    pipeline = settings.pipeline({"ENERGYMON_POLL_GROUPS": "default,north"})
    schedules = [
        build_poll_schedule(pipeline.poll, pipeline.timezone, poll_meters_job, group=group)
        for group in pipeline.poll_groups
    ]
    assert [s.name for s in schedules] == [
        "poll_meters_schedule_default",
        "poll_meters_schedule_north",
    ]
    when = datetime(2026, 11, 27, 12, 36, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        run_id = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="poll_meters_job", run_id=run_id,
                                       status=dg.DagsterRunStatus.STARTED,
                                       tags={"energymon/poll_group": "north"}))  # fmt: skip
        default, north = (evaluate(s, when, instance) for s in schedules)
    [request] = default.run_requests
    assert config_of(request)["group"] == "default"
    assert request.tags["energymon/poll_group"] == "default"
    assert not north.run_requests, "only the group whose run is still going skips its tick"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("north,,south", None),
        ("north pole", "has the group 'north pole'"),
        ("a,a", "names a group twice"),
    ],
)
def test_poll_groups_setting(value, message):
    if message is None:
        assert settings.pipeline({"ENERGYMON_POLL_GROUPS": value}).poll_groups == ("north", "south")
    else:
        with pytest.raises(SettingsError, match=message):
            settings.pipeline({"ENERGYMON_POLL_GROUPS": value})


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Warsaw"])
def test_rollup_schedules_request_the_closed_hour_and_day(timezone, tmp_path, monkeypatch):
    """Each hour 5 minutes after it closes, each day at 00:20, in TZ: the partition that just
    closed, of the rollup asset jobs users know by name."""
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", url)  # read through dg.EnvVar
    defs = build_definitions({"ENERGYMON_DATABASE_URL": url, "TZ": timezone})
    repository = defs.get_repository_def()
    hourly = repository.get_schedule_def("energy_rollup_schedule")
    daily = repository.get_schedule_def("energy_rollup_daily_schedule")
    assert (hourly.job_name, hourly.cron_schedule) == ("energy_rollup_job", "5 * * * *")
    assert (daily.job_name, daily.cron_schedule) == ("energy_rollup_daily_job", "20 0 * * *")
    assert {hourly.execution_timezone, daily.execution_timezone} == {timezone}
    assert hourly.default_status == daily.default_status == dg.DefaultScheduleStatus.RUNNING
    zone = ZoneInfo(timezone)

    def requested(schedule, when: datetime) -> str:
        context = dg.build_schedule_context(
            scheduled_execution_time=when, repository_def=repository
        )
        [request] = schedule.evaluate_tick(context).run_requests
        return request.partition_key

    assert requested(hourly, datetime(2026, 11, 20, 11, 5, tzinfo=zone)) == "2026-11-20-10:00"
    assert requested(hourly, datetime(2026, 11, 21, 0, 5, tzinfo=zone)) == "2026-11-20-23:00"
    assert requested(daily, datetime(2026, 11, 21, 0, 20, tzinfo=zone)) == "2026-11-20"
