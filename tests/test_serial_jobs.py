"""A serial meter through the Dagster jobs: the poll run and the connectivity check read it
over Modbus RTU on a real pseudo-terminal pair (tests/rtu_sim.py: real frames, CRC checked)."""

from __future__ import annotations

import dagster as dg
import pytest
from rtu_sim import RtuBus, word

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.registry import db, queries

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bus():
    rtu = RtuBus(units={1, 2}).start()
    yield rtu
    rtu.stop()


@pytest.fixture
def env(tmp_path, bus, monkeypatch):
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    engine = db.create_engine(url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE energy_meters SET enabled = false WHERE id = 0")
    queries.insert_registers(
        engine,
        [(i, {"type": "rtu", "register_address": a, "measurement_name": f"v{a}",
              "data_unit": "V", "data_type": 4, "function_code": 4, "word_order": 2,
              "byte_order": 2}) for i, a in enumerate((0, 1, 2))],
    )  # fmt: skip
    for unit in (1, 2):
        queries.add_meter(engine, {"id": unit, "host": bus.path, "port": 0, "slave_address": unit,
                                   "type": "rtu", "serial_port": bus.path, "baudrate": 19200,
                                   "timeout_s": 1})  # fmt: skip
    engine.dispose()
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", url)
    return {
        "ENERGYMON_DATABASE_URL": url,
        "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool"),
        "INFLUXDB_HOSTNAME": "127.0.0.1",
        "INFLUXDB_PORT": "9",  # nothing listens: the connectivity point is spooled
    }


def run(env, job_name: str, op: str, config: dict) -> dg.ExecuteInProcessResult:
    job = build_definitions(env).resolve_job_def(job_name)
    with dg.instance_for_test() as instance:
        return job.execute_in_process(
            run_config={"ops": {op: {"config": config}}}, instance=instance, raise_on_error=False
        )


def test_poll_run_reads_serial_meters(env, bus):
    result = run(env, "poll_meters_job", "load_definitions", {"dry_run": True})
    assert result.success
    results = result.output_for_node("read_meters")
    for meter in results:
        unit = meter.meter.endpoint.unit_id
        assert meter.ok, meter.error
        assert {r.register.address: r.value for r in meter.readings} == {
            a: word(unit, a) for a in (0, 1, 2)
        }
    assert bus.bad_crc == 0 and [u for u, *_ in bus.requests] == [1, 2]


def test_connectivity_check_of_a_serial_meter(env, bus):
    result = run(env, "connectivity_check_job", "check_meter_connectivity", {"meter_id": 2})
    assert result.success
    assert result.output_for_node("check_meter_connectivity") == "reachable"
    assert bus.requests == [(2, 4, 0, 1)]
