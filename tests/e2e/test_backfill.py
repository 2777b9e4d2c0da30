"""A backfill of the hourly rollup asset launched through the running webserver (GraphQL), as a
user launches it from the asset catalog after an outage: three hourly partitions of
energymon_rollup_1h are run by the daemon, their three hours of rollups land in InfluxDB, the
asset shows them as materialized, and each partition's check passes (every enabled meter has
its rollup)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from e2e_system import RUNS_QUERY

from energymon_pipeline.influx.writer import InfluxWriter
from energymon_pipeline.registry import db, queries

# dagster-graphql's own client calls gql the deprecated way; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning")

HOURLY = ["energymon_rollup_1h"]
CHECK = "every_enabled_meter_rolled_up"

_LAUNCH_BACKFILL = """
mutation E2eBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

_BACKFILL_STATUS = """
query E2eBackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status isAssetBackfill assetSelection { path } }
    ... on PythonError { message }
  }
}
"""

_ASSET = """
query E2eRollupAsset($key: AssetKeyInput!, $check: String!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      dependencyKeys { path }
      dependedByKeys { path }
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { status startKey endKey } }
      }
    }
  }
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 20) {
    partition
    status
    evaluation { success description }
  }
}
"""

HOURS = (10, 11, 12)


def ms(hour: int, minute: int) -> int:
    return int(datetime(2026, 11, 20, hour, minute, tzinfo=UTC).timestamp() * 1000)


def test_backfill_of_three_hours_from_the_asset_catalog(running_system):
    system = running_system
    engine = db.create_engine(system.registry_url)
    try:  # other tests of the session may have added meters: every enabled one gets readings
        meters = [m["id"] for m in queries.list_meters(engine, enabled_only=True)]
    finally:
        engine.dispose()
    lines = [
        f"test_measurement,dataunit=test_u,description=test_energy_meter,id={meter} "
        f"value={h}.5 {ms(h, m)}"
        for meter in meters
        for h in HOURS
        for m in (0, 30)
    ]
    with InfluxWriter(system.influxd.target(system.influx_db)) as writer:
        writer.write(lines)

    partitions = [f"2026-11-20-{h:02d}:00" for h in HOURS]
    result = system.gql(
        _LAUNCH_BACKFILL,
        {"params": {"assetSelection": [{"path": HOURLY}], "partitionNames": partitions}},
    )["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id = result["backfillId"]

    def finished():
        status = system.gql(_BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert status["__typename"] == "PartitionBackfill", status
        assert (status["isAssetBackfill"], status["assetSelection"]) == (True, [{"path": HOURLY}])
        return status["status"] if status["status"] not in ("REQUESTED", "FAILING") else None

    assert system.wait_for("the backfill to finish", finished, timeout_s=180) in (
        "COMPLETED",
        "COMPLETED_SUCCESS",
    )
    data = system.gql(
        RUNS_QUERY,
        {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}, "limit": 10},
    )["runsOrError"]
    assert data["__typename"] == "Runs", data
    runs = data["results"]
    assert sorted(
        (r["status"], {t["key"]: t["value"] for t in r["tags"]}["dagster/partition"]) for r in runs
    ) == [("SUCCESS", p) for p in partitions]
    rows = system.influxd.query(
        'SELECT * FROM "energymon_rollup_1h" WHERE "measurement" = \'test_measurement\' '
        'GROUP BY "id"',
        database=system.influx_db,
    )
    assert sorted((r["id"], r["time"], r["count"], r["mean"]) for r in rows) == sorted(
        (str(meter), ms(h, 0), 2, h + 0.5) for meter in meters for h in HOURS
    )

    # What the asset catalog shows: the lineage, the three hours materialized, their checks.
    asset = system.gql(_ASSET, {"key": {"path": HOURLY}, "check": CHECK})
    node = asset["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    assert node["dependencyKeys"] == [{"path": ["raw_readings"]}]
    assert node["dependedByKeys"] == [{"path": ["energymon_rollup_1d"]}]
    statuses = node["assetPartitionStatuses"]
    assert statuses["__typename"] == "TimePartitionStatuses", statuses
    assert [r for r in statuses["ranges"] if r["status"] == "MATERIALIZED"] == [
        {"status": "MATERIALIZED", "startKey": partitions[0], "endKey": partitions[-1]}
    ]
    checks = {e["partition"]: e for e in asset["assetCheckExecutions"]}
    assert {p: checks[p]["status"] for p in partitions} == dict.fromkeys(partitions, "SUCCEEDED")
    assert {checks[p]["evaluation"]["description"] for p in partitions} == {
        f"all {len(meters)} enabled meter(s) rolled up"
    }
