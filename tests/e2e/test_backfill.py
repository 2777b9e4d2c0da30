"""A backfill of energy_rollup_job launched through the running webserver (GraphQL), as a
user launches it from the UI after an outage: three hourly partitions are run by the daemon
and their three hours of rollups land in InfluxDB."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from e2e_system import LOCATION, REPOSITORY

from energymon_pipeline.influx.writer import InfluxWriter

# dagster-graphql's own client calls gql the deprecated way; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning")

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
    ... on PartitionBackfill { status numPartitions }
    ... on PythonError { message }
  }
}
"""

HOURS = (10, 11, 12)


def ms(hour: int, minute: int) -> int:
    return int(datetime(2026, 11, 20, hour, minute, tzinfo=UTC).timestamp() * 1000)


def test_backfill_of_three_hours_through_the_webserver(running_system):
    system = running_system
    lines = [
        f"test_measurement,dataunit=test_u,description=test_energy_meter,id=0 value={h}.5 {ms(h, m)}"
        for h in HOURS
        for m in (0, 30)
    ]
    with InfluxWriter(system.influxd.target(system.influx_db)) as writer:
        writer.write(lines)

    partitions = [f"2026-11-20-{h:02d}:00" for h in HOURS]
    result = system.gql(
        _LAUNCH_BACKFILL,
        {
            "params": {
                "selector": {
                    "partitionSetName": "energy_rollup_job_partition_set",
                    "repositorySelector": {
                        "repositoryName": REPOSITORY,
                        "repositoryLocationName": LOCATION,
                    },
                },
                "partitionNames": partitions,
            }
        },
    )["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id = result["backfillId"]

    def finished():
        status = system.gql(_BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert status["__typename"] == "PartitionBackfill", status
        return status["status"] if status["status"] not in ("REQUESTED", "FAILING") else None

    assert system.wait_for("the backfill to finish", finished, timeout_s=180) in (
        "COMPLETED",
        "COMPLETED_SUCCESS",
    )
    runs = system.runs("energy_rollup_job")
    assert sorted(r["status"] for r in runs) == ["SUCCESS"] * 3
    rows = system.influxd.query(
        'SELECT * FROM "energymon_rollup_1h" WHERE "measurement" = \'test_measurement\'',
        database=system.influx_db,
    )
    assert [(r["time"], r["count"], r["mean"]) for r in rows] == [
        (ms(h, 0), 2, h + 0.5) for h in HOURS
    ]
