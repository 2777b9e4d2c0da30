"""Fixtures of the SunSpec tests: a migrated registry with the test influxd, and Dagster jobs
of the project's definitions run in-process against them."""

from __future__ import annotations

import dagster as dg
import pytest

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.registry import db


@pytest.fixture
def pipeline_env(registry_url, influxd, influx_db, tmp_path) -> dict[str, str]:
    """The environment the definitions are built from: a migrated registry (SQLite and
    PostgreSQL), the test influxd and a spool directory."""
    engine = db.create_engine(registry_url)
    db.upgrade(engine)
    engine.dispose()
    return {
        "ENERGYMON_DATABASE_URL": registry_url,
        "INFLUXDB_HOSTNAME": influxd.host,
        "INFLUXDB_PORT": str(influxd.port),
        "INFLUXDB_DB": influx_db,
        "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool"),
    }


@pytest.fixture
def run_job(pipeline_env):
    """run_job(name, run_config=None): one in-process run of a job of the definitions, on a
    fresh test instance; it does not raise when the run fails."""

    def run(name: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
        job = build_definitions(pipeline_env).resolve_job_def(name)
        with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
            # The registry URL reaches the resource as dg.EnvVar, read from the process.
            patch.setenv("ENERGYMON_DATABASE_URL", pipeline_env["ENERGYMON_DATABASE_URL"])
            return job.execute_in_process(
                run_config=run_config, instance=instance, raise_on_error=False
            )

    return run
