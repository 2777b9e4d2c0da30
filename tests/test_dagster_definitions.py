"""The one dg.Definitions: every job, the asset jobs too, runs in the in-process executor set
on Definitions, and the rollups are partitioned assets with their lineage and checks."""

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


def test_rollup_lineage_partitions_and_checks(defs):
    """raw_readings (external) -> hourly rollup -> daily rollup, partitioned in TZ; a day is
    rolled up from exactly its own hours (25 on the day the clocks go back); one check per
    rollup asset, partitioned like it."""
    graph = defs.get_repository_def().asset_graph
    raw, hourly, daily = (
        graph.get(dg.AssetKey(name))
        for name in ("raw_readings", "energymon_rollup_1h", "energymon_rollup_1d")
    )
    assert (raw.is_external, raw.is_materializable) == (True, False)
    assert hourly.parent_keys == {raw.key}
    assert daily.parent_keys == {hourly.key}
    assert str(hourly.partitions_def) == "Hourly, starting 2026-01-01-00:00 Europe/Warsaw."
    assert str(daily.partitions_def) == "Daily, starting 2026-01-01 Europe/Warsaw."
    mapping = graph.get_partition_mapping(daily.key, hourly.key)
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    for day, hours in (("2026-11-20", 24), ("2026-10-25", 25)):
        upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
            daily.partitions_def.subset_with_partition_keys([day]),
            daily.partitions_def,
            hourly.partitions_def,
        ).partitions_subset.get_partition_keys()
        upstream = list(upstream)
        assert (len(upstream), upstream[0], upstream[-1]) == (hours, f"{day}-00:00", f"{day}-23:00")
    for asset in (hourly, daily):
        assert asset.check_keys == {dg.AssetCheckKey(asset.key, "every_enabled_meter_rolled_up")}
    checks = {
        key: defs.get_repository_def().asset_checks_defs_by_key[key]
        for asset in (hourly, daily)
        for key in asset.check_keys
    }
    assert {
        key.asset_key.to_user_string(): spec.partitions_def
        for check in checks.values()
        for key, spec in ((spec.key, spec) for spec in check.check_specs)
    } == {
        "energymon_rollup_1h": hourly.partitions_def,
        "energymon_rollup_1d": daily.partitions_def,
    }
