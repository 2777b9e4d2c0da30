"""Fleet mode: N simulated meters across unit ids and ports, each with its own values, all
read in one poll through the project's own reader."""

from __future__ import annotations

import itertools
import time

import pytest

from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import Endpoint, MeterSpec, RegisterSpec
from virtual_server import Fleet
from virtual_server.devices.sdm630 import Sdm630

_ids = itertools.count(52_000)
REGISTERS = (RegisterSpec("voltageL1", 0), RegisterSpec("importActiveEnergy", 72))


def meters(fleet: Fleet, timeout_s: float = 2.0) -> list[MeterSpec]:
    return [
        MeterSpec(
            meter_id=next(_ids),
            endpoint=Endpoint(m.host, m.port, m.unit_id, timeout_s=timeout_s, retries=0),
            meter_type="sdm630",
            description=f"fleet {m.index}",
            registers=REGISTERS,
        )
        for m in fleet.members
    ]


def test_fleet_serves_n_devices_across_unit_ids_and_ports():
    with Fleet(7, lambda index: Sdm630(seed=index), units_per_port=3) as fleet:
        members = fleet.members
        assert [(m.index, m.unit_id) for m in members] == [
            (0, 1), (1, 2), (2, 3), (3, 1), (4, 2), (5, 3), (6, 1)
        ]  # fmt: skip
        assert len({m.port for m in members}) == 3 == len(fleet.servers)
        results = read_meters_sync(meters(fleet))
        assert all(result.errors == [] for result in results)
        for member, result in zip(members, results, strict=True):
            voltage = result.readings[0].value
            assert voltage == member.device.published[0]
        assert len({result.readings[0].value for result in results}) == 7  # own values each
        assert len(fleet.requests) == 7 * 2  # addresses 0 and 72 are too far apart to merge


def test_fleet_response_delay_imitates_a_slow_gateway():
    with Fleet(2, lambda index: Sdm630(seed=index), response_delay_ms=120) as fleet:
        started = time.perf_counter()
        results = read_meters_sync(meters(fleet))
        elapsed = time.perf_counter() - started
        assert all(result.errors == [] for result in results)
        # Two requests per meter in sequence, the meters concurrently.
        assert 0.24 <= elapsed < 2.0
        fleet.set_response_delay_ms(0)
        assert all(server.response_delay_ms == 0 for server in fleet.servers)


def test_fleet_on_consecutive_ports(refused_port):
    try:
        fleet = Fleet(3, lambda index: Sdm630(seed=index), first_port=refused_port,
                      units_per_port=1).start_in_thread()  # fmt: skip
    except OSError:
        pytest.skip(f"port {refused_port}+1/+2 is taken on this machine")
    try:
        assert [m.port for m in fleet.members] == [refused_port + i for i in range(3)]
        assert all(r.errors == [] for r in read_meters_sync(meters(fleet)))
    finally:
        fleet.stop_thread()


def test_fleet_refuses_what_cannot_be_served():
    with pytest.raises(ValueError, match="at least 1 device"):
        Fleet(0, lambda index: Sdm630())
    with pytest.raises(ValueError, match="units_per_port 248 is not allowed; allowed: 1-247"):
        Fleet(5, lambda index: Sdm630(), units_per_port=248)
    with pytest.raises(ValueError, match="need ports 65535-65536, past 65535"):
        Fleet(2, lambda index: Sdm630(), first_port=65535, units_per_port=1)
