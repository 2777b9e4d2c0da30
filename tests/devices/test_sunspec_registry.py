"""SunSpec layouts in the registry (migration 0006, SQLite and PostgreSQL): an original
database adopts them without a changed row; the connectivity check of a `sunspec` meter
discovers and keeps the layout, a poll's definitions read it without rediscovering, a layout
found at another endpoint is not used; `energymon read` discovers when none is stored."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import sqlalchemy as sa
from test_sensors import tick as sensor_tick

from energymon_pipeline.devices.sunspec_store import load_layout
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.definitions import load_definitions
from virtual_server import DeviceMemory, VirtualModbusTCPServer
from virtual_server.sunspec import SunSpecInverter

ORIGINAL_DDL = [
    """CREATE TABLE energy_meters (id int PRIMARY KEY, host varchar(64) NOT NULL,
        port int NOT NULL, slave_address int NOT NULL, type varchar(32) NOT NULL,
        description varchar(64) NOT NULL)""",
    """CREATE TABLE registers (type varchar(32) NOT NULL, register_address int NOT NULL,
        measurement_name varchar(64) NOT NULL, data_unit varchar(8) NULL, data_type int,
        function_code int, word_order int, byte_order int)""",
    "INSERT INTO energy_meters VALUES (1, '192.168.1.113', 502, 1, 'sdm630', 'example')",
    "INSERT INTO registers VALUES ('sdm630', 0, 'voltageL1', 'V', 3, 4, 2, 2)",
]


def test_an_original_database_gains_the_layout_table_and_keeps_its_rows(registry, fetch):
    with registry.begin() as connection:
        for statement in ORIGINAL_DDL:
            connection.execute(sa.text(statement))
    db.upgrade(registry)
    assert fetch(registry, "SELECT id, host, port, slave_address, type, description "
                 "FROM energy_meters WHERE id = 1") == [
        (1, "192.168.1.113", 502, 1, "sdm630", "example")
    ]  # fmt: skip
    assert fetch(registry, "SELECT type, register_address, measurement_name FROM registers") == [
        ("sdm630", 0, "voltageL1")
    ]
    assert fetch(registry, "SELECT * FROM sunspec_layouts") == []
    assert db.current_revision(registry) == db.revisions()[-1]
    assert "0006" in db.revisions()
    # The old meter still loads as before; a sunspec meter without a layout is reported.
    queries.add_meter(registry, {"id": 5, "host": "127.0.0.1", "port": 1502,
                                 "slave_address": 1, "type": "sunspec", "description": "pv"})  # fmt: skip
    definitions = load_definitions(registry, meter_ids=[1, 5])
    assert [m.meter_id for m in definitions.meters] == [1]
    assert definitions.problems == [
        "meter 5: skipped: its SunSpec layout has not been discovered yet (the connectivity "
        "check discovers it; `energymon read 5` does it now)"
    ]


@pytest.fixture
def env(pipeline_env):
    return pipeline_env


@pytest.fixture
def check(run_job):
    def run(env, meter_id: int) -> dg.ExecuteInProcessResult:
        config = {"ops": {"check_meter_connectivity": {"config": {"meter_id": meter_id}}}}
        return run_job("connectivity_check_job", config)

    return run


def test_the_connectivity_check_discovers_and_keeps_the_layout_the_poll_uses(env, check, fetch):
    engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
    with VirtualModbusTCPServer({7: SunSpecInverter(base_address=50000)}) as server:
        queries.add_meter(engine, {"id": 3, "host": "127.0.0.1", "port": server.port,
                                   "slave_address": 7, "type": "sunspec",
                                   "description": "roof"})  # fmt: skip
        result = check(env, 3)
        assert result.success, result
        assert result.output_for_node("check_meter_connectivity") == "reachable"
        [(models, base, manufacturer, serial, layout)] = fetch(
            engine, "SELECT models, base_address, manufacturer, serial_number, layout "
            "FROM sunspec_layouts WHERE meter_id = 3"
        )  # fmt: skip
        assert (models, base, manufacturer, serial) == ("1,103,160,203", 50000, "energymon",
                                                        "VS-0001")  # fmt: skip
        assert json.loads(layout)["models"][1] == {
            "id": 103, "name": "inverter_three_phase", "address": 50070, "length": 50
        }  # fmt: skip
        [meter] = queries.list_meters(engine)[-1:]
        assert meter["status_result"] == "reachable"
        assert (
            "SunSpec at 50000 (unit 7): energymon Virtual SunSpec Inverter"
            in (meter["status_message"])
        )
        # The poll's definitions come from the stored layout: no request to the device.
        server.reset_requests()
        [spec] = load_definitions(engine, meter_ids=[3]).meters
        assert server.requests == []
        names = {r.measurement: r for r in spec.registers}
        assert names["inverter_three_phase_W"].address == 50072 + 12
        assert names["inverter_three_phase_W"].scale_factor_address == 50072 + 13
        assert "mppt_module2_DCW" in names and "ac_meter_abcn_TotWhImp" in names
        assert names["ac_meter_abcn_TotWhImp"].cumulative

        # Moved to another unit id: the old layout is not used for it.
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE energy_meters SET slave_address = 8 WHERE id = 3")
        definitions = load_definitions(engine, meter_ids=[3])
        assert definitions.meters == []
        assert "was discovered at tcp:127.0.0.1:" in definitions.problems[0]
        assert "waiting for its connectivity check" in definitions.problems[0]
        # Unit 8 answers but is not SunSpec: the check fails and says so.
        server.devices[8] = DeviceMemory(holding_registers={0: 1})
        failed = check(env, 3)
        assert not failed.success
        assert queries.list_meters(engine)[-1]["status_result"] == "not sunspec"
        # Deleting the meter deletes its layout.
        queries.remove_meter(engine, 3)
        assert fetch(engine, "SELECT COUNT(*) FROM sunspec_layouts") == [(0,)]
    engine.dispose()


def test_energymon_read_discovers_a_new_sunspec_meter_then_reads_it(energymon, registry_url):
    assert energymon("db", "upgrade").exit_code == 0
    engine = db.create_engine(registry_url)
    device = SunSpecInverter(powers=[2500.0, 3500.0])
    with VirtualModbusTCPServer({1: device}) as server:
        queries.add_meter(engine, {"id": 4, "host": "127.0.0.1", "port": server.port,
                                   "slave_address": 1, "type": "sunspec",
                                   "description": "pv"})  # fmt: skip
        first = energymon("read", "4", "--json")
        assert first.exit_code == 0, first.stderr
        assert first.stderr.startswith("meter 4: discovered SunSpec at 40000 (unit 1)")
        readings = {r["measurement"]: r for r in json.loads(first.stdout)["readings"]}
        assert readings["inverter_three_phase_W"]["value"] == 2500.0
        assert readings["inverter_three_phase_W"]["unit"] == "W"
        assert readings["inverter_three_phase_PhVphA"]["value"] == 230.1
        assert readings["mppt_module1_DCV"]["value"] == 600.0
        # Not implemented on the device: no reading at all (never 0).
        for absent in ("inverter_three_phase_PPVphAB", "inverter_three_phase_TmpSnk",
                       "inverter_three_phase_StVnd", "mppt_module1_Tmp", "ac_meter_abcn_WphA",
                       "ac_meter_abcn_TotVAhImp"):  # fmt: skip
            assert absent not in readings
        assert load_layout(engine, 4) is not None
        # The second read uses the stored layout: no discovery requests, W_SF now 0.
        device.update(server.devices[1])
        server.reset_requests()
        second = energymon("read", "4")
        assert second.exit_code == 0, second.stderr
        assert second.stderr == ""
        assert all(r.count > 4 for r in server.requests)  # no marker or header reads
        assert len(server.requests) == 2
        row = next(line for line in second.stdout.splitlines()
                   if line.startswith("inverter_three_phase_W "))  # fmt: skip
        assert row.split()[:3] == ["inverter_three_phase_W", "3500", "W"]
        # A firmware update moved the map: --rediscover finds it again before reading.
        memory = server.devices[1]
        memory.clear()
        device.base_address = 50000
        device.update(memory)
        stale = energymon("read", "4")
        assert stale.exit_code == 1  # the old addresses are gone (exception 2)
        again = energymon("read", "4", "--rediscover")
        assert again.exit_code == 0, again.stderr
        assert again.stderr.startswith("meter 4: discovered SunSpec at 50000 (unit 1)")
        assert load_layout(engine, 4)[1].base_address == 50000
    refused = energymon("read", "0", "--rediscover")
    assert refused.exit_code != 0
    assert refused.stderr == (
        "error: meter 0 has type 'virtual_modbustcp'; only a meter of type 'sunspec' has a "
        "SunSpec layout to rediscover\n"
    )
    engine.dispose()


def test_read_of_a_sunspec_meter_that_is_not_sunspec_is_one_line(energymon, registry_url):
    assert energymon("db", "upgrade").exit_code == 0
    engine = db.create_engine(registry_url)
    with VirtualModbusTCPServer({1: SunSpecInverter()}) as server:
        server.devices[2] = DeviceMemory(holding_registers={0: 1})
        queries.add_meter(engine, {"id": 4, "host": "127.0.0.1", "port": server.port,
                                   "slave_address": 2, "type": "sunspec",
                                   "description": "pv"})  # fmt: skip
        result = energymon("read", "4")
    assert result.exit_code != 0
    assert result.stderr.startswith(
        f"error: meter 4 (127.0.0.1:{server.port} unit 2): SunSpec discovery failed: no "
        "SunSpec marker at 40000/40001"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    engine.dispose()


def run_requested_checks(run_job, tick) -> list[bool]:
    return [
        run_job("connectivity_check_job", request.run_config).success
        for request in tick.run_requests or []
    ]


def test_added_and_re_enabled_meters_get_their_layout_through_the_sensor(env, run_job):
    """The new-meter sensor -> connectivity_check_job path: a new sunspec meter gets its
    layout; after the device's firmware moved its map (base 40000 -> 0) while the meter was
    disabled, re-enabling it rediscovers the layout."""
    url = env["ENERGYMON_DATABASE_URL"]
    engine = db.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE energy_meters SET enabled = false")  # not meter 0
    cursor = sensor_tick(url, None).cursor
    memory = DeviceMemory()
    device = SunSpecInverter()
    device.update(memory)
    with VirtualModbusTCPServer({1: SunSpecInverter()}) as server:
        server.devices[2] = memory
        queries.add_meter(engine, {"id": 6, "host": "127.0.0.1", "port": server.port,
                                   "slave_address": 2, "type": "sunspec",
                                   "description": "pv"})  # fmt: skip
        tick = sensor_tick(url, cursor)
        assert run_requested_checks(run_job, tick) == [True]
        assert load_layout(engine, 6)[1].base_address == 40000

        queries.set_meter_enabled(engine, 6, False)
        cursor = sensor_tick(url, tick.cursor).cursor
        memory.clear()
        device.base_address = 0
        device.update(memory)
        queries.set_meter_enabled(engine, 6, True)
        tick = sensor_tick(url, cursor)
        assert run_requested_checks(run_job, tick) == [True]
        assert load_layout(engine, 6)[1].base_address == 0
        [spec] = load_definitions(engine, meter_ids=[6]).meters
        assert {r.measurement: r.address for r in spec.registers}["inverter_three_phase_W"] == 84
    engine.dispose()


@pytest.mark.parametrize("case", ["refused", "timeout"])
def test_a_sunspec_meter_that_does_not_answer_keeps_its_old_layout(
    case, env, check, refused_port, silent_port, fetch
):
    engine = db.create_engine(env["ENERGYMON_DATABASE_URL"])
    with VirtualModbusTCPServer({1: SunSpecInverter()}) as server:
        queries.add_meter(engine, {"id": 8, "host": "127.0.0.1", "port": server.port,
                                   "slave_address": 1, "type": "sunspec", "timeout_s": 0.5,
                                   "description": "pv"})  # fmt: skip
        assert check(env, 8).success
    stored = fetch(engine, "SELECT layout FROM sunspec_layouts WHERE meter_id = 8")
    port = refused_port if case == "refused" else silent_port
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE energy_meters SET port = {port} WHERE id = 8")
    result = check(env, 8)
    assert not result.success
    [meter] = [m for m in queries.list_meters(engine) if m["id"] == 8]
    assert meter["status_result"] == case
    # The device is away, not changed: its layout stays (for its old endpoint).
    assert fetch(engine, "SELECT layout FROM sunspec_layouts WHERE meter_id = 8") == stored
    engine.dispose()


def test_a_layout_for_a_meter_removed_meanwhile_is_not_kept(migrated, fetch):
    from energymon_pipeline.devices.sunspec import SunSpecDevice, SunSpecModel
    from energymon_pipeline.devices.sunspec_store import save_layout

    device = SunSpecDevice(1, 40000, (SunSpecModel(1, 40002, 66),))
    save_layout(migrated, 99, "tcp:127.0.0.1:502:socket unit 1", device)  # no meter 99
    assert fetch(migrated, "SELECT COUNT(*) FROM sunspec_layouts") == [(0,)]
