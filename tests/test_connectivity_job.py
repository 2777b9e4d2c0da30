"""connectivity_check_job against a real Modbus server, a refused port and a silent port:
the result lands in meter_status, in the run metadata and as an energymon_connectivity point;
a failed check fails the run with its message."""

from __future__ import annotations

import dagster as dg
import pytest

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.registry import db, queries
from virtual_server import DeviceMemory


@pytest.fixture
def env(registry_url, influxd, influx_db, tmp_path):
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


def point_meter_0(env, port: int, timeout_s: float = 3.0) -> None:
    engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"UPDATE energy_meters SET host = '127.0.0.1', port = {port}, timeout_s = {timeout_s}"
        )
    engine.dispose()


def check(env, meter_id: int = 0) -> dg.ExecuteInProcessResult:
    job = build_definitions(env).resolve_job_def("connectivity_check_job")
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        # The registry URL reaches the resource as dg.EnvVar, read from the process.
        patch.setenv("ENERGYMON_DATABASE_URL", env["ENERGYMON_DATABASE_URL"])
        return job.execute_in_process(
            run_config={"ops": {"check_meter_connectivity": {"config": {"meter_id": meter_id}}}},
            instance=instance,
            raise_on_error=False,
        )


def status(env) -> dict:
    engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
    [meter] = [m for m in queries.list_meters(engine) if m["id"] == 0]
    engine.dispose()
    return meter


def failure_message(result) -> str:
    event = next(e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE")
    return event.event_specific_data.error.message


def test_reachable_meter(env, modbus_server, influxd):
    modbus_server.devices[0] = DeviceMemory(holding_registers={0: 7})
    point_meter_0(env, modbus_server.port)
    result = check(env)
    assert result.success
    assert result.output_for_node("check_meter_connectivity") == "reachable"
    meter = status(env)
    assert meter["status_result"] == "reachable"
    assert meter["status_latency_ms"] >= 0
    assert "read FC3 address 0 (test_measurement)" in meter["status_message"]
    [point] = influxd.query('SELECT * FROM "energymon_connectivity"', database=env["INFLUXDB_DB"])
    assert (point["id"], point["ok"], point["result"]) == ("0", True, "reachable")
    assert [r.function_code for r in modbus_server.requests] == [3]


@pytest.mark.parametrize("case", ["refused", "timeout", "exception", "no registers"])
def test_failed_checks_fail_the_run_with_their_message(
    case, env, modbus_server, refused_port, silent_port
):
    if case == "refused":
        point_meter_0(env, refused_port)
        expected = ("refused", f"127.0.0.1:{refused_port} refused the connection")
    elif case == "timeout":
        point_meter_0(env, silent_port, timeout_s=0.5)
        expected = ("timeout", "reading FC3 address 0 (test_measurement): timeout")
    elif case == "exception":
        modbus_server.devices[0] = DeviceMemory(holding_registers={5: 1})  # address 0 unmapped
        point_meter_0(env, modbus_server.port)
        expected = ("modbus exception 2", "modbus exception 2 (illegal address)")
    else:
        modbus_server.devices[0] = DeviceMemory()
        point_meter_0(env, modbus_server.port)
        engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM registers")
        engine.dispose()
        expected = ("no registers configured", "has no registers to read")
    result = check(env)
    assert not result.success
    message = failure_message(result)
    assert message.startswith("dagster._core.definitions.events.Failure: meter 0 (127.0.0.1:")
    assert f": {expected[0]}: " in message and expected[1] in message
    assert status(env)["status_result"] == expected[0]


def test_unknown_meter_is_a_clear_failure(env):
    result = check(env, meter_id=99)
    assert not result.success
    assert "meter 99 does not exist" in failure_message(result)
