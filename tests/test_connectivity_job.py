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


# --- meters of type `auto`: identified by the check ------------------------------------


def add_auto_meter(env, port: int, unit: int, meter_id: int = 9) -> None:
    engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
    result = queries.add_meter(engine, {"id": meter_id, "host": "127.0.0.1", "port": port,
                                        "slave_address": unit, "type": "auto",
                                        "timeout_s": 0.5, "description": "new"})  # fmt: skip
    assert result.ids == [meter_id]
    engine.dispose()


def meter_row(env, meter_id: int = 9) -> dict:
    engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
    [meter] = [m for m in queries.list_meters(engine) if m["id"] == meter_id]
    engine.dispose()
    return meter


def test_an_auto_meter_is_identified_as_sunspec_and_its_layout_stored(env):
    from energymon_pipeline.devices.sunspec_store import load_layout
    from energymon_pipeline.registry.definitions import load_definitions
    from virtual_server import VirtualModbusTCPServer
    from virtual_server.sunspec import SunSpecInverter

    with VirtualModbusTCPServer({4: SunSpecInverter()}) as server:
        add_auto_meter(env, server.port, 4)
        engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
        # Not identified yet: the poll skips it with its reason.
        definitions = load_definitions(engine, meter_ids=[9])
        assert definitions.meters == []
        assert definitions.problems == [
            "meter 9: skipped: its type is 'auto' and it has not been identified yet (its "
            "connectivity check identifies it and sets its type)"
        ]
        result = check(env, 9)
        assert result.success, result
        meter = meter_row(env)
        assert meter["type"] == "sunspec"
        assert meter["status_result"] == "reachable"
        assert meter["status_message"].startswith(
            "identified as sunspec: energymon Virtual SunSpec Inverter (version 1.0.0, serial "
            "VS-0001); models 1, 103, 160, 203 at 40000; type set to 'sunspec', layout stored"
        )
        endpoint, device = load_layout(engine, 9)
        assert endpoint == f"tcp:127.0.0.1:{server.port}:socket unit 4"
        # The poll now reads it from the stored layout, without asking the device.
        server.reset_requests()
        [spec] = load_definitions(engine, meter_ids=[9]).meters
        assert server.requests == []
        assert "inverter_three_phase_W" in {r.measurement for r in spec.registers}
        engine.dispose()


def test_an_auto_meter_is_identified_by_a_profile_whose_registers_are_imported(env):
    from energymon_pipeline.registry.definitions import load_definitions
    from virtual_server import VirtualModbusTCPServer
    from virtual_server.devices.sdm630 import Sdm630

    with VirtualModbusTCPServer({2: Sdm630(seed=2)}) as server:
        add_auto_meter(env, server.port, 2)
        engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
        assert not queries.list_registers(engine, "sdm630-v2")
        result = check(env, 9)
        assert result.success, result
        meter = meter_row(env)
        assert meter["type"] == "sdm630-v2"
        assert "identified as sdm630-v2: Eastron " in meter["status_message"]
        assert "profile sdm630-v2 imported as type 'sdm630-v2'" in meter["status_message"]
        imported = queries.list_registers(engine, "sdm630-v2")
        assert imported
        [spec] = load_definitions(engine, meter_ids=[9]).meters
        assert len(spec.registers) == len(imported)
        # A second auto meter of the same kind finds the registers there and leaves them.
        add_auto_meter(env, server.port, 2, meter_id=10)
        again = check(env, 10)
        assert again.success, again
        assert "type 'sdm630-v2' already has registers" in meter_row(env, 10)["status_message"]
        assert len(queries.list_registers(engine, "sdm630-v2")) == len(imported)
        engine.dispose()


def test_an_auto_meter_that_answers_but_is_unknown_fails_and_stays_auto(env, modbus_server):
    modbus_server.devices[3] = DeviceMemory(holding_registers={0: 7})
    add_auto_meter(env, modbus_server.port, 3)
    result = check(env, 9)
    assert not result.success
    message = failure_message(result)
    assert ": unidentified: unit 3 answers, but it is its first read (holding register 40000) " in (
        message
    )
    assert "the type stays 'auto'" in message
    meter = meter_row(env)
    assert (meter["type"], meter["status_result"]) == ("auto", "unidentified")


def test_an_auto_meter_that_is_silent_fails_as_a_timeout_and_stays_auto(env, silent_port):
    add_auto_meter(env, silent_port, 1)
    result = check(env, 9)
    assert not result.success
    assert "unit 1 did not answer its first read" in failure_message(result)
    meter = meter_row(env)
    assert (meter["type"], meter["status_result"]) == ("auto", "timeout")


def test_the_new_meter_sensor_checks_an_auto_meter_then_checks_it_again_as_identified(env):
    """The sensor -> connectivity_check_job path: the identification changes the meter's type,
    an edit the sensor sees, so the meter is checked once more, now as a `sunspec` meter."""
    from test_sensors import checked_ids, tick

    from energymon_pipeline.registry.definitions import load_definitions
    from virtual_server import VirtualModbusTCPServer
    from virtual_server.sunspec import SunSpecInverter

    url = env["ENERGYMON_DATABASE_URL"]
    cursor = tick(url, None).cursor  # the seeded meter 0 is seen (and not checked here)
    with VirtualModbusTCPServer({6: SunSpecInverter()}) as server:
        add_auto_meter(env, server.port, 6)
        first = tick(url, cursor)
        assert checked_ids(first) == [9]
        assert check(env, 9).success
        assert meter_row(env)["type"] == "sunspec"
        second = tick(url, first.cursor)
        assert checked_ids(second) == [9]  # the type changed: checked again, as sunspec
        again = check(env, 9)
        assert again.success, again
        assert meter_row(env)["status_message"].startswith("SunSpec at 40000 (unit 6)")
        assert checked_ids(tick(url, second.cursor)) == []  # and then left alone
        engine = db.create_engine(url)
        [spec] = load_definitions(engine, meter_ids=[9]).meters
        assert spec.meter_type == "sunspec"
        engine.dispose()
