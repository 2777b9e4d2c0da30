"""purge_old_runs_job deletes runs older than the retention period and nothing else; the
instance configuration files the stack uses are valid."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.instance.config import dagster_instance_config

from energymon_pipeline.jobs import purge_old_runs_job

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


def test_purge_deletes_only_runs_older_than_retention():
    with dg.instance_for_test() as instance:
        old = [add_run(instance, 20), add_run(instance, 15)]
        recent = [add_run(instance, 13), add_run(instance, 0.1)]
        result = purge_old_runs_job.execute_in_process(
            instance=instance,
            run_config={"ops": {"purge_old_runs": {"config": {"retention_days": 14}}}},
        )
        assert result.success
        assert result.output_for_node("purge_old_runs") == 2
        remaining = {r.run_id for r in instance.get_runs()}
        assert not remaining & set(old)
        assert set(recent) <= remaining
        assert result.run_id in remaining


def test_purge_refuses_zero_days():
    with dg.instance_for_test() as instance:
        result = purge_old_runs_job.execute_in_process(
            instance=instance,
            run_config={"ops": {"purge_old_runs": {"config": {"retention_days": 0}}}},
            raise_on_error=False,
        )
        assert not result.success


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
