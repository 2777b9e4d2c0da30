"""The issue's case as a poll run: ten SDM630-mapped meters (units 1-10) behind one gateway
that accepts one connection and serves one request at a time, 10 ms per request. Before links,
one run read 27 of 270 values and the gateway refused 9 connections; now every value is read
over the gateway's one connection, one request at a time (tests/gateway_sim.py counts)."""

from __future__ import annotations

import dagster as dg
import pytest
from gateway_sim import Gateway

from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.registry import db, queries

pytestmark = pytest.mark.timeout(120)

SDM630_ADDRESSES = [*range(0, 35, 2), 52, 56, 60, 62, 70, 72, 74, 76, 78]


@pytest.fixture
def gateway():
    gw = Gateway(units=set(range(1, 11)), max_connections=1, delay_s=0.01).start()
    yield gw
    gw.stop()


def test_ten_meters_behind_a_one_connection_gateway(tmp_path, gateway, monkeypatch):
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    engine = db.create_engine(url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE energy_meters SET enabled = false WHERE id = 0")
    queries.insert_registers(
        engine,
        [(i, {"type": "sdm630", "register_address": a, "measurement_name": f"value{a}",
              "data_unit": "V", "data_type": 5, "function_code": 4, "word_order": 2,
              "byte_order": 2}) for i, a in enumerate(SDM630_ADDRESSES)],
    )  # fmt: skip
    for unit in range(1, 11):
        queries.add_meter(engine, {"id": unit, "host": "127.0.0.1", "port": gateway.port,
                                   "slave_address": unit, "type": "sdm630"})  # fmt: skip
    engine.dispose()
    env = {"ENERGYMON_DATABASE_URL": url, "ENERGYMON_SPOOL_DIR": str(tmp_path / "spool")}
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", url)
    job = build_definitions(env).resolve_job_def("poll_meters_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"load_definitions": {"config": {"dry_run": True}}}},
            instance=instance,
        )
    assert result.success
    [results] = [result.output_for_node("read_meters")]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert sum(len(r.readings) for r in results) == 270
    assert gateway.refused == 0
    assert gateway.connections == 1
    assert gateway.max_in_flight == 1
    # UINT32 at address a of unit u: words u*1000+a, u*1000+a+1.
    first = {r.register.address: r.value for r in results[2].readings}
    assert first[0] == (3000 << 16) + 3001
