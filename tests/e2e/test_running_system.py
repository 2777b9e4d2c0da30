"""The running system, driven as its users drive it: the real dagster-webserver and
dagster-daemon (tests/e2e/conftest.py), through the webserver's GraphQL API with
dagster-graphql's client. A poll run launched from the API lands its reading in InfluxDB; the
poll schedule can be stopped and started; a meter added to the registry is checked by the
sensor's connectivity run and read by the next scheduled poll run."""

from __future__ import annotations

import subprocess
import time

import psycopg2
import pytest
from e2e_system import (
    DONE_STATUSES,
    LOCATION,
    REPOSITORY,
    RUN_TIMEOUT_S,
    SENSOR_INTERVAL_S,
    VENV_BIN,
    VIRTUAL_METER_VALUE,
)

from virtual_server import DeviceMemory

# dagster-graphql's own client calls gql the deprecated way; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning")

SCHEDULE = "poll_meters_schedule"
SENSOR = "new_meter_sensor"
CHECK_JOB = "connectivity_check_job"

_SCHEDULE_QUERY = """
query E2eSchedule($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule {
      name
      cronSchedule
      pipelineName
      scheduleState { id status }
    }
    ... on ScheduleNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

_STOP_SCHEDULE = """
mutation E2eStopSchedule($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

_START_SCHEDULE = """
mutation E2eStartSchedule($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

_SENSOR_QUERY = """
query E2eSensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      name
      minIntervalSeconds
      targets { pipelineName }
      sensorState { status }
    }
    ... on SensorNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

_RUN_TIMES_QUERY = """
query E2eRunTimes($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { startTime endTime } }
}
"""


def _schedule(system) -> dict:
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "scheduleName": SCHEDULE,
    }
    result = system.gql(_SCHEDULE_QUERY, {"selector": selector})["scheduleOrError"]
    assert result["__typename"] == "Schedule", result
    return result


def test_a_poll_run_launched_through_the_api_writes_the_reading(running_system, poll_run):
    assert poll_run["status"] == "SUCCESS", running_system.run_messages(poll_run["run_id"])
    times = running_system.gql(_RUN_TIMES_QUERY, {"runId": poll_run["run_id"]})["runOrError"]
    # The schedule polls every minute too: this run's point is the one stamped inside it.
    start_ms, end_ms = int(times["startTime"] * 1000) - 1, int(times["endTime"] * 1000) + 1
    points = running_system.influxd.query(
        f'SELECT * FROM "test_measurement" WHERE "id" = \'0\' '
        f"AND time >= {start_ms}ms AND time <= {end_ms}ms",
        database=running_system.influx_db,
    )
    assert len(points) == 1, points
    [point] = points
    assert point["value"] == VIRTUAL_METER_VALUE
    assert (point["description"], point["dataunit"], point["type"]) == (
        "test_energy_meter",
        "test_u",
        "virtual_modbustcp",
    )
    [run] = [r for r in running_system.runs("poll_meters_job") if r["runId"] == poll_run["run_id"]]
    assert run["status"] == "SUCCESS"


def test_the_poll_schedule_can_be_stopped_and_started(running_system):
    schedule = _schedule(running_system)
    assert schedule["pipelineName"] == "poll_meters_job"
    assert schedule["cronSchedule"] == "* * * * *"  # every minute, ticked a minute ahead
    assert schedule["scheduleState"]["status"] == "RUNNING"  # running by default

    stopped = running_system.gql(_STOP_SCHEDULE, {"id": schedule["scheduleState"]["id"]})
    assert stopped["stopRunningSchedule"] == {
        "__typename": "ScheduleStateResult",
        "scheduleState": {"status": "STOPPED"},
    }
    assert _schedule(running_system)["scheduleState"]["status"] == "STOPPED"

    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "scheduleName": SCHEDULE,
    }
    started = running_system.gql(_START_SCHEDULE, {"selector": selector})
    assert started["startSchedule"] == {
        "__typename": "ScheduleStateResult",
        "scheduleState": {"status": "RUNNING"},
    }
    assert _schedule(running_system)["scheduleState"]["status"] == "RUNNING"


#: The meter the sensor test adds: unit 1 on the test server, the virtual meter's type.
NEW_METER_ID = 7
NEW_METER_RAW = 4321


def _selector(kind: str, name: str) -> dict:
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, kind: name}


def _tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def test_a_meter_inserted_with_sql_is_checked_by_the_sensor_then_polled_at_the_next_tick(
    running_system,
):
    system = running_system
    sensor = system.gql(_SENSOR_QUERY, {"selector": _selector("sensorName", SENSOR)})
    assert sensor["sensorOrError"] == {
        "__typename": "Sensor",
        "name": SENSOR,
        "minIntervalSeconds": SENSOR_INTERVAL_S,  # from ENERGYMON_SENSOR_INTERVAL_S
        "targets": [{"pipelineName": CHECK_JOB}],
        "sensorState": {"status": "RUNNING"},  # running by default
    }

    # A user's plain SQL client and the original's columns only: the registry fills in the rest.
    system.modbus.devices[1] = DeviceMemory(holding_registers={0: NEW_METER_RAW})
    added_at = time.time()
    connection = psycopg2.connect(system.registry_url)  # libpq takes the URL as it is
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO energy_meters (id, host, port, slave_address, type, description) "
                "VALUES (%s, '127.0.0.1', %s, 1, 'virtual_modbustcp', 'added by the e2e test')",
                (NEW_METER_ID, system.modbus.port),
            )
    finally:
        connection.close()

    def check_run():
        runs = [
            r
            for r in system.runs(CHECK_JOB)
            if _tags(r).get("energymon/meter_id") == str(NEW_METER_ID)
            and r["status"] in DONE_STATUSES
        ]
        return runs[-1] if runs else None  # newest first: the oldest is the sensor's first

    run = system.wait_for(
        f"a finished {CHECK_JOB} run for meter {NEW_METER_ID}",
        check_run,
        timeout_s=2 * SENSOR_INTERVAL_S + RUN_TIMEOUT_S,
    )
    assert run["status"] == "SUCCESS", system.run_messages(run["runId"])
    assert _tags(run)["dagster/sensor_name"] == SENSOR
    assert run["creationTime"] >= added_at - 1
    assert f"meter_id: {NEW_METER_ID}" in run["runConfigYaml"]

    # The result is kept for `energymon meters list` and written for Grafana.
    listing = subprocess.run(
        [str(VENV_BIN / "energymon"), "meters", "list"],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    [line] = [line for line in listing.splitlines() if line.split()[:1] == [str(NEW_METER_ID)]]
    assert "reachable" in line, listing
    [point] = system.influxd.query(
        f'SELECT * FROM "energymon_connectivity" WHERE "id" = \'{NEW_METER_ID}\'',
        database=system.influx_db,
    )
    assert (point["ok"], point["result"], point["description"]) == (
        True,
        "reachable",
        "added by the e2e test",
    )

    # The next tick of the poll schedule reads the new meter with the others.
    def scheduled_poll_run():
        runs = [
            r
            for r in system.runs("poll_meters_job")
            if _tags(r).get("dagster/schedule_name") == SCHEDULE
            and r["creationTime"] > added_at
            and r["status"] in DONE_STATUSES
        ]
        return runs[-1] if runs else None

    # Ticked up to a minute from now for the minute after (the run waits for its second).
    poll = system.wait_for(
        "the next scheduled poll run", scheduled_poll_run, timeout_s=120 + RUN_TIMEOUT_S
    )
    assert poll["status"] == "SUCCESS", system.run_messages(poll["runId"])
    points = system.influxd.query(
        f'SELECT * FROM "test_measurement" WHERE "id" = \'{NEW_METER_ID}\'',
        database=system.influx_db,
    )
    assert points, f"no reading of meter {NEW_METER_ID} in InfluxDB"
    assert {p["value"] for p in points} == {float(NEW_METER_RAW)}
    assert {p["description"] for p in points} == {"added by the e2e test"}
