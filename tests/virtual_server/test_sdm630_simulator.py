"""The sdm630 simulator polled through the project's own reader with the registers of the
shipped `sdm630` profile: what the poller decodes is exactly what the simulator published,
in the request plan's 2 requests, and the values are a plausible, self-consistent meter."""

from __future__ import annotations

import itertools
import math
import time

from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import Endpoint, MeterSpec
from energymon_pipeline.registry.definitions import register_spec
from energymon_pipeline.registry.profiles import profile_rows
from energymon_pipeline.registry.validation import check_register
from virtual_server import UpdateSchedule, VirtualModbusTCPServer, as_float32
from virtual_server.devices.sdm630 import PRODUCTION_REGISTERS, Sdm630

_ids = itertools.count(50_000)
INPUT = 4


def profile_registers(name: str = "sdm630"):
    specs = []
    for _, row in profile_rows(name):
        clean, problems = check_register(row)
        assert problems == []
        specs.append(register_spec(clean))
    return tuple(specs)


def meter(port: int, unit: int = 1) -> MeterSpec:
    return MeterSpec(
        meter_id=next(_ids),
        endpoint=Endpoint("127.0.0.1", port, unit, timeout_s=2.0, retries=0),
        meter_type="sdm630",
        description="simulated sdm630",
        registers=profile_registers(),
    )


def poll(port: int, unit: int = 1) -> dict[int, float]:
    (result,) = read_meters_sync([meter(port, unit)])
    assert result.errors == [], result.errors
    return {reading.register.address: reading.value for reading in result.readings}


def test_every_profile_value_decodes_to_what_the_simulator_published_in_two_requests():
    device = Sdm630(seed=7)
    with VirtualModbusTCPServer({1: device}) as server:
        server.reset_requests()
        values = poll(server.port)
        requests = server.requests
    assert len(requests) <= 3
    assert [(r.function_code, r.address, r.count) for r in requests] == [
        (INPUT, 0, 36),
        (INPUT, 52, 28),
    ]
    assert sorted(values) == sorted(PRODUCTION_REGISTERS)
    for address, value in values.items():
        assert value == device.published[address], address  # bit-exact, no tolerance


def test_profile_is_exactly_the_production_map_the_simulator_serves():
    rows = [row for _, row in profile_rows("sdm630")]
    assert len(rows) == 27
    assert {int(r["register_address"]): (r["measurement_name"], r["data_unit"]) for r in rows} == (
        PRODUCTION_REGISTERS
    )
    assert {
        (r["data_type"], r["function_code"], r["word_order"], r["byte_order"]) for r in rows
    } == {("3", "4", "2", "2")}


def test_values_are_physically_consistent():
    for seed in range(5):
        device = Sdm630(seed=seed)
        for _ in range(3):
            v = device.values()
            for phase in range(3):
                u, i, pf = v[0 + 2 * phase], v[6 + 2 * phase], v[30 + 2 * phase]
                p, s, q = v[12 + 2 * phase], v[18 + 2 * phase], v[24 + 2 * phase]
                assert 200 < u < 260 and 0 < i <= 40 and 0.7 <= pf <= 0.99
                assert p == as_float32(u * i * pf)
                assert s == as_float32(u * i)
                assert math.isclose(p * p + q * q, s * s, rel_tol=1e-5)
            assert v[52] == as_float32(v[12] + v[14] + v[16])
            assert v[56] == as_float32(v[18] + v[20] + v[22])
            assert v[60] == as_float32(v[24] + v[26] + v[28])
            assert v[62] == as_float32(v[52] / v[56])
            assert 49.9 <= v[70] <= 50.1
            assert math.isclose(v[342], v[72] + v[74], rel_tol=1e-6)  # total = import + export


def test_energy_counters_only_grow_with_the_power_over_time():
    now = [1000.0]
    device = Sdm630(seed=3, clock=lambda: now[0])
    previous = device.values()
    for _ in range(20):
        now[0] += 60.0  # one minute per update
        current = device.values()
        for address in (72, 74, 76, 78, 80, 82, 342, 344, *range(346, 364, 2)):
            assert current[address] >= previous[address], address
        # The per-phase import energies (SDM630 v2) add up to the total import.
        assert math.isclose(sum(current[a] for a in (346, 348, 350)), current[72], rel_tol=1e-4)
        # The import counter gained about a minute of the total power (kW * h).
        gained = current[72] - previous[72]
        assert math.isclose(gained, current[52] / 1000 / 60, rel_tol=0.05, abs_tol=0.002)
        previous = current


def test_registers_between_the_mapped_ones_answer_like_the_meter():
    device = Sdm630(seed=1)
    with VirtualModbusTCPServer({1: device}) as server:
        memory = server.devices[1]
        assert memory.read(INPUT, 0, 88) is not None  # one read across the whole first block
        assert memory.read(INPUT, 36, 16) is not None
        assert memory.read(INPUT, 200, 26) is not None
        assert memory.read(INPUT, 342, 22) is not None  # totals and per-phase energies
        assert memory.read(INPUT, 88, 2) is None  # past the block: exception 2, as the meter


def test_values_are_present_before_the_first_tick():
    # A schedule that fires only at 03:17:29 does not tick during this test.
    late = UpdateSchedule(hour="3", minute="17", second="29")
    with VirtualModbusTCPServer({1: Sdm630(seed=2)}, schedule=late) as server:
        assert server.updates == 1
        values = poll(server.port)
    assert len(values) == 27
    assert all(values[a] != 0.0 for a in PRODUCTION_REGISTERS if a not in (74, 78))


def test_the_update_schedule_changes_the_values():
    device = Sdm630(seed=4)
    with VirtualModbusTCPServer({1: device}, schedule=UpdateSchedule.every_second()) as server:
        first = poll(server.port)
        deadline = time.monotonic() + 6
        while server.updates < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.updates >= 3, "no update ticks within 6 s"
        later = poll(server.port)
    changed = [a for a in first if first[a] != later[a]]
    assert {0, 6, 12, 52, 72} <= set(changed)
    assert later[72] > first[72]  # energy grew
    assert later[74] == first[74]  # this load never exports


def test_the_v2_profile_discover_identifies_it_as_reads_without_a_gap():
    """`energymon discover` identifies this device by its meter code as `sdm630-v2` (the
    fullest profile with that code): every one of that profile's values is served, so a meter
    added that way reads completely, with no exception 2 and no learnt splits."""
    device = Sdm630(seed=11)
    with VirtualModbusTCPServer({1: device}) as server:
        spec = MeterSpec(
            meter_id=next(_ids),
            endpoint=Endpoint("127.0.0.1", server.port, 1, timeout_s=2.0, retries=0),
            meter_type="sdm630-v2",
            description="simulated sdm630 v2",
            registers=profile_registers("sdm630-v2"),
        )
        (result,) = read_meters_sync([spec])
    assert result.errors == [] and result.failed_values == 0 and not result.learnt_splits
    values = {reading.register.address: reading.value for reading in result.readings}
    assert sorted(values) == sorted(r.address for r in spec.registers)
    for address, value in values.items():
        assert value == device.published[address], address
