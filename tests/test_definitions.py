"""The one dg.Definitions: every job runs in the in-process executor set on Definitions (no
job sets its own), and the rollups are partitioned assets with their lineage and checks."""

from __future__ import annotations

import dagster as dg
import pytest

from energymon_pipeline.definitions import build_definitions

JOBS = {
    "poll_meters_job",
    "purge_old_runs_job",
    "connectivity_check_job",
    "energy_rollup_job",
    "energy_rollup_daily_job",
}


@pytest.fixture
def defs(tmp_path, monkeypatch) -> dg.Definitions:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", url)  # read through dg.EnvVar
    return build_definitions({"ENERGYMON_DATABASE_URL": url, "TZ": "Europe/Warsaw"})


def test_every_job_runs_in_process(defs):
    jobs = {job.name: job for job in defs.get_repository_def().get_all_jobs()}
    assert set(jobs) >= JOBS
    assert {name: job.executor_def for name, job in jobs.items()} == {
        name: dg.in_process_executor for name in jobs
    }
