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
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        return schedule.evaluate_tick(context)


def config_of(request: dg.RunRequest, job: dg.JobDefinition = poll_meters_job) -> dict:
    """The op config a tick requests, after checking that the run config is valid for the job
    (what the daemon would refuse to launch)."""
    dg.validate_run_config(job, request.run_config)
    return request.run_config["ops"]["load_definitions"]["config"]


def test_default_schedule_polls_every_minute_at_second_0():
    schedule = poll_schedule({})
    # Every minute, ticking a minute ahead: the run for 12:35 is launched at 12:34 and waits.
    assert schedule.cron_schedule == "* * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    when = datetime(2026, 11, 27, 12, 34, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        [request] = evaluate(schedule, when, instance).run_requests
    assert config_of(request) == {
        "sample_seconds": [0],
        "scheduled_minute": datetime(2026, 11, 27, 12, 35, tzinfo=UTC).isoformat(),
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
    # Minutes 0, 5, ..., 55 of hours 6-18, each ticked one minute before: 06:00 at 05:59.
    assert schedule.cron_schedule == [
        "4,9,14,19,24,29,34,39,44,49,54 6-18 * * *",
        "59 5-17 * * *",
    ]
    assert schedule.execution_timezone == "Europe/Warsaw"
    when = datetime(2026, 6, 1, 5, 59, tzinfo=ZoneInfo("Europe/Warsaw"))
    with dg.instance_for_test() as instance:
        [request] = evaluate(schedule, when, instance).run_requests
    config = config_of(request)
    assert config["sample_seconds"] == [0, 10, 20, 30, 40, 50]
    assert config["scheduled_minute"] == "2026-06-01T06:00:00+02:00"


def test_a_run_waits_ahead_while_one_reads_and_a_third_tick_is_skipped():
    schedule = poll_schedule({})
    when = datetime(2026, 11, 27, 12, 35, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        reading, waiting = str(uuid.uuid4()), str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="poll_meters_job", run_id=reading,
                                       status=dg.DagsterRunStatus.STARTED))  # fmt: skip
        # The previous minute's run is still reading: the next one is launched to wait.
        assert len(evaluate(schedule, when, instance).run_requests) == 1
        instance.add_run(dg.DagsterRun(job_name="poll_meters_job", run_id=waiting,
                                       status=dg.DagsterRunStatus.STARTING))  # fmt: skip
        result = evaluate(schedule, when, instance)
        assert not result.run_requests
        assert result.skip_message == (
            f"poll runs {waiting}, {reading} are still in progress (one reading, one waiting "
            "for its minute); skipped this tick so runs never pile up"
        )
        instance.report_run_failed(instance.get_run_by_id(reading))
        assert len(evaluate(schedule, when, instance).run_requests) == 1


def test_ahead_ticks_cover_each_polled_minute_once_across_hours_and_midnight():
    """The ahead cron strings fire exactly one minute before every polled minute of a day."""
    for hour, minute in [("*", "*/1"), ("6-18", "*/5"), ("0", "0"), ("3,23", "0,30"), ("*", "59")]:
        trigger = settings.pipeline({
            "INFLUX_UPDATER_CRON_HOUR_TRIGGER": hour,
            "INFLUX_UPDATER_CRON_MINUTE_TRIGGER": minute,
        }).poll  # fmt: skip
        polled = {h * 60 + m for h in trigger.hours for m in trigger.minutes}
        ticks = set()
        for cron in trigger.ahead_cron_schedules:
            minutes_field, hours_field = cron.split()[:2]
            ticks |= {
                h * 60 + m for h in _expand(hours_field, 24) for m in _expand(minutes_field, 60)
            }
        assert {(t + 1) % 1440 for t in ticks} == polled, (hour, minute)


def _expand(field: str, size: int) -> set[int]:
    if field == "*":
        return set(range(size))
    values = set()
    for part in field.split(","):
        low, _, high = part.partition("-")
        values |= set(range(int(low), int(high or low) + 1))
    return values


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


@pytest.mark.parametrize(("env", "expected"), [({}, 3), ({"ENERGYMON_ALERT_DOWN_AFTER": "5"}, 5)])
def test_poll_runs_carry_the_code_servers_down_threshold(env, expected, tmp_path, monkeypatch):
    """A run in a container of its own (DockerRunLauncher) does not get the alert settings'
    file: the schedule, in the code server, puts ENERGYMON_ALERT_DOWN_AFTER in its config."""
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", url)  # read through dg.EnvVar
    defs = build_definitions({"ENERGYMON_DATABASE_URL": url, **env})
    schedule = defs.get_repository_def().get_schedule_def("poll_meters_schedule")
    with dg.instance_for_test() as instance:
        [request] = evaluate(
            schedule, datetime(2026, 11, 27, 12, 34, tzinfo=UTC), instance
        ).run_requests
    assert config_of(request)["down_after"] == expected


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
        for status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING):
            instance.add_run(dg.DagsterRun(job_name="poll_meters_job", run_id=str(uuid.uuid4()),
                                           status=status,
                                           tags={"energymon/poll_group": "north"}))  # fmt: skip
        default, north = (evaluate(s, when, instance) for s in schedules)
    [request] = default.run_requests
    assert config_of(request)["group"] == "default"
    assert request.tags["energymon/poll_group"] == "default"
    assert not north.run_requests, "only the group whose two runs are still going skips"


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
        with dg.build_schedule_context(
            scheduled_execution_time=when, repository_def=repository
        ) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        return request.partition_key

    assert requested(hourly, datetime(2026, 11, 20, 11, 5, tzinfo=zone)) == "2026-11-20-10:00"
    assert requested(hourly, datetime(2026, 11, 21, 0, 5, tzinfo=zone)) == "2026-11-20-23:00"
    assert requested(daily, datetime(2026, 11, 21, 0, 20, tzinfo=zone)) == "2026-11-20"
