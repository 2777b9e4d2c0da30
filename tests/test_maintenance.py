"""purge_old_runs_job deletes runs older than the retention period, alerts older than the
alert history's, and nothing else; the instance configuration files the stack uses are
valid."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.instance.config import dagster_instance_config

from energymon_pipeline.alerts.outbox import SENT, Alert, history, raise_alert
from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.jobs import purge_old_runs_job
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.tables import alert_deliveries
from energymon_pipeline.resources import RegistryResource

ROOT = Path(__file__).resolve().parents[1]


def add_run(instance, age_days: float) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="poll_meters_job", run_id=run_id,
                                   status=dg.DagsterRunStatus.SUCCESS))  # fmt: skip
    created = datetime.now(UTC) - timedelta(days=age_days)
    with instance.run_storage.connect() as connection:
        connection.execute(
            sa.text("UPDATE runs SET create_timestamp = :t WHERE run_id = :r"),
            {"t": created.replace(tzinfo=None), "r": run_id},
        )
    return run_id


@pytest.fixture
def registry_resource(tmp_path) -> RegistryResource:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    engine = db.create_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return RegistryResource(database_url=url)


def purge(instance, registry: RegistryResource, **ops) -> dg.ExecuteInProcessResult:
    return purge_old_runs_job.execute_in_process(
        instance=instance,
        run_config={"ops": {name: {"config": config} for name, config in ops.items()}},
        resources={"registry": registry},
        raise_on_error=False,
    )


def test_purge_deletes_only_runs_older_than_retention(registry_resource):
    with dg.instance_for_test() as instance:
        old = [add_run(instance, 20), add_run(instance, 15)]
        recent = [add_run(instance, 13), add_run(instance, 0.1)]
        result = purge(instance, registry_resource, purge_old_runs={"retention_days": 14})
        assert result.success
        assert result.output_for_node("purge_old_runs") == 2
        remaining = {r.run_id for r in instance.get_runs()}
        assert not remaining & set(old)
        assert set(recent) <= remaining
        assert result.run_id in remaining


def test_purge_refuses_zero_days(registry_resource):
    with dg.instance_for_test() as instance:
        result = purge(instance, registry_resource, purge_old_runs={"retention_days": 0})
        assert not result.success


def step_failure(result: dg.ExecuteInProcessResult, op: str) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure and e.step_key == op]
    return failure.step_failure_data.error.message


def test_alert_history_keeps_recent_and_queued_alerts(registry_url):
    """Alerts raised before the retention go with their deliveries, unless a channel still
    has one queued (it is sent first); the rest stay. On SQLite and PostgreSQL."""
    engine = db.create_engine(registry_url)
    db.upgrade(engine)
    now = datetime.now(UTC)

    def add(key: str, age_days: float, sent: tuple[str, ...]) -> None:
        def work(connection):
            alert_id = raise_alert(connection, Alert(key, "meter_down", f"text {key}"),
                                   now - timedelta(days=age_days), ("webhook", "email"))  # fmt: skip
            connection.execute(
                alert_deliveries.update()
                .where(alert_deliveries.c.alert_id == alert_id,
                       alert_deliveries.c.channel.in_(sent))
                .values(status=SENT)
            )  # fmt: skip

        queries.run_in_transaction(engine, work)

    add("old-sent", 400, ("webhook", "email"))
    add("old-half-queued", 400, ("webhook",))
    add("just-kept", 364, ("webhook", "email"))
    add("recent", 1, ("webhook", "email"))
    registry = RegistryResource(database_url=registry_url)
    with dg.instance_for_test() as instance:
        result = purge(instance, registry, purge_alert_history={"history_days": 365})
        assert result.success
        assert result.output_for_node("purge_alert_history") == 1
        assert {row["key"] for row in history(engine)} == {"old-half-queued", "just-kept", "recent"}
        deliveries = queries.run_in_transaction(
            engine, lambda c: c.execute(sa.select(sa.func.count()).select_from(alert_deliveries))
            .scalar()
        )  # fmt: skip
        assert deliveries == 6, "the deleted alert's two deliveries went with it"

        bad = purge(instance, registry, purge_alert_history={"history_days": 0})
        assert not bad.success
        assert {row["key"] for row in history(engine)} == {"old-half-queued", "just-kept", "recent"}
        message = step_failure(bad, "purge_alert_history")
        assert "history_days=0 is out of range; allowed: 1 to 36500" in message
    engine.dispose()


def test_alert_history_registry_down_is_one_line(tmp_path):
    registry = RegistryResource(database_url=f"sqlite:///{tmp_path / 'missing' / 'r.sqlite'}")
    with dg.instance_for_test() as instance:
        add_run(instance, 20)
        result = purge(instance, registry, purge_old_runs={"retention_days": 14})
        assert not result.success
        assert result.output_for_node("purge_old_runs") == 1, "the runs are purged regardless"
        message = step_failure(result, "purge_alert_history")
        assert "alert history not pruned: the registry database" in message
        assert "run `energymon db upgrade` first" in message and "Traceback" not in message


def test_purge_schedule_carries_the_code_servers_alert_history_days(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", url)  # read through dg.EnvVar
    defs = build_definitions({"ENERGYMON_DATABASE_URL": url, "ENERGYMON_ALERT_HISTORY_DAYS": "30"})
    schedule = defs.get_repository_def().get_schedule_def("purge_old_runs_schedule")
    when = datetime(2026, 11, 27, 3, 17, tzinfo=UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context,
    ):
        [request] = schedule.evaluate_tick(context).run_requests
    dg.validate_run_config(purge_old_runs_job, request.run_config)
    assert request.run_config["ops"]["purge_alert_history"]["config"] == {"history_days": 30}


@pytest.mark.parametrize("path", ["dagster.yaml", "config/dagster.local.yaml"])
def test_instance_configs_are_valid(path, tmp_path, monkeypatch):
    for name, value in {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432",
                        "POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p",
                        "DAGSTER_POSTGRES_DB": "dagster"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    shutil.copy(ROOT / path, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {
        "key": "energymon/poll_group",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 2,  # the run reading its minute and the next one, waiting ahead
    } in limits
    assert config["run_retries"] == {"enabled": True, "max_retries": 1,
                                     "retry_on_asset_or_op_failure": False}  # fmt: skip
    assert config["telemetry"] == {"enabled": False}
    # Every link pool (ops/link_pools.py) gets limit 1; crashed runs' slots are freed.
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] == 60
    if path == "dagster.yaml":
        assert "postgres" in config["storage"]
