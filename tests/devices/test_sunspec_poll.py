"""A `sunspec` meter polled by poll_meters_job into a real influxd while the device changes
its scale factors: every value lands with the scale factor of its own response (no 10x or
100x jump when W_SF moves), not-implemented points are never written (nor written as 0), and
a device changing its scale factors as fast as it can never makes the reader mix a value of
one update with the scale factor of another."""

from __future__ import annotations

import threading
import time

import dagster as dg
import pytest

from energymon_pipeline.devices.sunspec import layout_registers
from energymon_pipeline.devices.sunspec_store import discover_and_store
from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import Endpoint, MeterSpec
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.definitions import load_meter
from virtual_server import VirtualModbusTCPServer
from virtual_server.sunspec import SunSpecInverter

#: AC powers, one per poll: W_SF is -1 below 3000 W and 0 from 3000 W on.
POWERS = [2712.3, 2950.0, 3050.0, 3411.0, 2999.9, 3000.0, 2890.4]
NOT_IMPLEMENTED = [
    "inverter_three_phase_PPVphAB",
    "inverter_three_phase_TmpSnk",
    "inverter_three_phase_TmpTrns",
    "inverter_three_phase_StVnd",
    "inverter_three_phase_EvtVnd1",
    "mppt_module1_Tmp",
    "mppt_module2_Tmp",
    "ac_meter_abcn_WphA",
    "ac_meter_abcn_VA",
    "ac_meter_abcn_TotVAhImp",
]


@pytest.fixture
def stack(pipeline_env, run_job, influxd, influx_db):
    engine = db.create_engine(pipeline_env["ENERGYMON_DATABASE_URL"])
    with engine.begin() as connection:  # only the SunSpec meter is polled
        connection.exec_driver_sql("UPDATE energy_meters SET enabled = false")
    device = SunSpecInverter(powers=POWERS)
    server = VirtualModbusTCPServer({1: device})
    server.start_in_thread()
    queries.add_meter(engine, {"id": 9, "host": "127.0.0.1", "port": server.port,
                               "slave_address": 1, "type": "sunspec", "description": "roof"})  # fmt: skip
    assert discover_and_store(engine, load_meter(engine, 9)).ok
    yield {"engine": engine, "run_job": run_job, "server": server, "device": device,
           "influxd": influxd, "db": influx_db}  # fmt: skip
    server.stop_thread()
    engine.dispose()


def run_poll(stack) -> dg.ExecuteInProcessResult:
    return stack["run_job"]("poll_meters_job")


def query(stack, q: str) -> list[dict]:
    return stack["influxd"].query(q, database=stack["db"])


def expected(power: float, resolution_below_3000: float = 0.1) -> float:
    return round(power / resolution_below_3000) * resolution_below_3000 if power < 3000 else (
        float(round(power))
    )  # fmt: skip


def test_scale_factor_changes_never_jump_and_absent_points_are_never_written(stack):
    device, server = stack["device"], stack["server"]
    published = []
    for index in range(len(POWERS)):
        if index:
            device.update(server.devices[1])  # the next power, maybe another W_SF
        published.append(device.history[-1])
        server.reset_requests()
        result = run_poll(stack)
        assert result.success
        # Only the planned reads: no discovery in a poll.
        assert [r.address for r in server.requests] == [40068, 40190]
    assert {sf for _, sf in published} == {-1, 0}  # the scale factor did change

    rows = query(stack, 'SELECT "value" FROM "inverter_three_phase_W" WHERE "id" = \'9\'')
    values = [row["value"] for row in rows]
    assert values == pytest.approx([expected(p) for p in POWERS], abs=1e-9)
    for before, after in zip(values, values[1:], strict=False):
        assert 0.5 < after / before < 2.0  # never a 10x or 100x step
    # The meter's W (exporting) follows the same scale factor changes.
    meter_w = [r["value"] for r in query(stack, 'SELECT "value" FROM "ac_meter_abcn_W"')]
    assert len(meter_w) == len(POWERS)
    assert all(-2100 < w < -1500 for w in meter_w)
    # MPPT modules each have their own series, with DC power from the live DCW_SF.
    module_w = query(stack, 'SELECT "value" FROM "mppt_module2_DCW"')
    assert [round(r["value"]) for r in module_w] == [round(0.45 * p / 0.97) for p in POWERS]

    measurements = {m["name"] for m in query(stack, "SHOW MEASUREMENTS")}
    for absent in NOT_IMPLEMENTED:
        assert absent not in measurements
    assert {"inverter_three_phase_TmpCab", "inverter_three_phase_WH",
            "ac_meter_abcn_TotWhExp", "common_DA"} <= measurements  # fmt: skip
    # Nothing was written as 0 for want of a value: the only zeros are real zeros (event
    # bitfields and timestamps the device reports as 0).
    zero = query(stack, 'SELECT "value" FROM /.*/ WHERE "value" = 0 AND "id" = \'9\'')
    zero_names = {row["name"] for row in zero}
    assert zero_names <= {"inverter_three_phase_Evt1", "inverter_three_phase_Evt2",
                          "mppt_Evt", "mppt_TmsPer", "mppt_module1_Tms", "mppt_module2_Tms",
                          "mppt_module1_DCEvt", "mppt_module2_DCEvt", "ac_meter_abcn_Evt"}  # fmt: skip
    # The poll's own health point counts the values read, not the ones not implemented.
    [health] = query(stack, 'SELECT last("values") FROM "energymon_poll" WHERE "id" = \'9\'')
    assert health["last"] == 49


def test_a_device_changing_scale_factors_continuously_is_read_consistently():
    """The device switches W_SF on every update, as fast as a thread can; each read takes
    value and scale factor from one response, so every reading is one of the two powers."""
    device = SunSpecInverter(powers=[2950.0, 3050.0])
    with VirtualModbusTCPServer({1: device}) as server:
        memory = server.devices[1]
        from energymon_pipeline.devices.sunspec import SunSpecDevice, SunSpecModel

        layout = SunSpecDevice(1, 40000, (SunSpecModel(1, 40002, 66), SunSpecModel(103, 40070, 50),
                                          SunSpecModel(160, 40122, 48),
                                          SunSpecModel(203, 40172, 105)))  # fmt: skip
        meter = MeterSpec(1, Endpoint("127.0.0.1", server.port, 1, timeout_s=2.0, retries=0),
                          "sunspec", "fast", layout_registers(layout).registers)  # fmt: skip
        stop = threading.Event()

        def churn() -> None:
            while not stop.is_set():
                device.update(memory)

        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        try:
            seen = []
            deadline = time.monotonic() + 20
            while len(seen) < 40 and time.monotonic() < deadline:
                [result] = read_meters_sync([meter])
                assert result.errors == []
                [w] = [r.value for r in result.readings
                       if r.register.measurement == "inverter_three_phase_W"]  # fmt: skip
                seen.append(w)
        finally:
            stop.set()
            thread.join(5)
    updates = len(device.history)
    assert updates > 40  # the device really changed under the reader
    assert set(seen) <= {2950.0, 3050.0}
    assert len(seen) == 40
