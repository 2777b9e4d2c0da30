"""Meters behind one gateway are read over the link's connections, one request at a time,
each request to its own unit id; a meter that times out costs only itself. The gateway is a
real TCP server on loopback that refuses connections beyond its limit and counts overlapping
requests (tests/gateway_sim.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import pytest
from gateway_sim import Gateway, word

from energymon_pipeline.modbus.links import LinkUnavailable, group_links
from energymon_pipeline.modbus.reader import read_meters, read_meters_sync
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    RegisterSpec,
    SerialLine,
)

pytestmark = pytest.mark.timeout(60)

REGISTERS = tuple(
    RegisterSpec(f"r{a}", a, DataType.UINT16, FunctionCode.READ_HOLDING_REGISTERS)
    for a in (0, 1, 2, 40, 41)
)


def meters(port: int, units, **endpoint) -> list[MeterSpec]:
    return [
        MeterSpec(
            meter_id=unit,
            endpoint=Endpoint("127.0.0.1", port, unit, timeout_s=0.5, retries=0, **endpoint),
            meter_type="t",
            description=None,
            registers=REGISTERS,
        )
        for unit in units
    ]


@pytest.fixture
def gateway():
    started: list[Gateway] = []

    def start(**kwargs) -> Gateway:
        started.append(Gateway(**kwargs).start())
        return started[-1]

    yield start
    for gateway in started:
        gateway.stop()


def values_of(result) -> dict[str, float]:
    return {r.register.measurement: r.value for r in result.readings}


def test_ten_meters_behind_a_one_connection_gateway_are_all_read(gateway):
    gw = gateway(units=set(range(1, 11)), max_connections=1, delay_s=0.01)
    results = read_meters_sync(meters(gw.port, range(1, 11)))
    assert gw.refused == 0
    assert gw.connections == 1
    assert gw.max_in_flight == 1
    for result in results:
        unit = result.meter.endpoint.unit_id
        assert result.ok, result.error
        assert values_of(result) == {f"r{a}": word(unit, a) for a in (0, 1, 2, 40, 41)}
    # Two planned requests per meter (0-2 and 40-41 are farther apart than max_gap).
    assert gw.units_read() == {unit: 2 for unit in range(1, 11)}


def test_a_silent_meter_costs_only_itself(gateway):
    gw = gateway(units=set(range(1, 6)), silent={3}, delay_s=0.005)
    results = read_meters_sync(meters(gw.port, range(1, 6)))
    by_unit = {r.meter.endpoint.unit_id: r for r in results}
    assert not by_unit[3].ok and "timeout" in by_unit[3].error
    for unit in (1, 2, 4, 5):
        assert by_unit[unit].ok, by_unit[unit].error
        assert values_of(by_unit[unit])["r0"] == word(unit, 0)
    assert gw.max_in_flight == 1
    assert gw.refused == 0


def test_a_late_answer_is_never_taken_for_the_next_meters(gateway):
    # Unit 2 answers 0.3 s after its 0.5 s timeout, on the bus, while unit 3 is asked.
    gw = gateway(units={1, 2, 3}, late={2}, late_s=0.8, delay_s=0.005)
    results = read_meters_sync(
        [dataclasses.replace(m, endpoint=dataclasses.replace(m.endpoint, timeout_s=2.0))
         if m.meter_id == 3 else m for m in meters(gw.port, (1, 2, 3))]
    )  # fmt: skip
    by_unit = {r.meter.endpoint.unit_id: r for r in results}
    assert not by_unit[2].ok and "timeout" in by_unit[2].error
    assert by_unit[3].ok, by_unit[3].error
    assert values_of(by_unit[3]) == {f"r{a}": word(3, a) for a in (0, 1, 2, 40, 41)}


def test_max_connections_opens_that_many_with_one_request_each(gateway):
    gw = gateway(units=set(range(1, 9)), max_connections=2, delay_s=0.02)
    results = read_meters_sync(meters(gw.port, range(1, 9), max_connections=2))
    assert all(r.ok for r in results)
    assert gw.connections == 2 and gw.refused == 0
    # The gateway serialises its bus, but the poller keeps a request in flight on each.
    assert gw.max_in_flight == 2


def test_inter_request_delay_and_connect_pause(gateway):
    gw = gateway(units={1, 2}, delay_s=0.0)
    read_meters_sync(meters(gw.port, (1, 2), inter_request_delay_s=0.1, connect_delay_s=0.2))
    times = gw.request_times
    assert len(times) == 4
    assert all(b - a >= 0.09 for a, b in zip(times, times[1:], strict=False))
    assert times[0] - gw.connect_times[0] >= 0.19


def test_different_links_are_read_concurrently(gateway):
    first = gateway(units={1, 2}, delay_s=0.3)
    second = gateway(units={1, 2}, delay_s=0.3)
    started = time.monotonic()
    results = read_meters_sync(meters(first.port, (1, 2)) + meters(second.port, (1, 2)))
    elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    # Each link: 4 requests of 0.3 s back to back; the links side by side.
    assert elapsed < 2.2


def test_link_settings_are_the_most_careful_of_its_meters():
    a, b = meters(502, (1, 2))
    a = dataclasses.replace(
        a,
        endpoint=dataclasses.replace(
            a.endpoint, max_connections=3, inter_request_delay_s=0.05, connect_delay_s=0.5
        ),
    )
    b = dataclasses.replace(b, endpoint=dataclasses.replace(
        b.endpoint, max_connections=2, inter_request_delay_s=0.02))  # fmt: skip
    other = meters(503, (1,))[0]
    links = group_links([a, other, b])
    assert [link.key for link in links] == ["tcp:127.0.0.1:502:socket", "tcp:127.0.0.1:503:socket"]
    link = links[0]
    assert link.endpoint.max_connections == 2
    assert link.endpoint.inter_request_delay_s == 0.05
    assert link.endpoint.connect_delay_s == 0.5
    assert link.connections == 2
    # A row that leaves a setting NULL (a meter added later) does not count.
    [joined] = group_links([a, meters(502, (3,))[0]])
    assert joined.endpoint.max_connections == 3


def test_a_serial_port_is_one_link_and_differing_line_settings_are_named():
    a, b = meters(0, (1, 2), serial=SerialLine("/dev/ttyUSB0", 9600), max_connections=4)
    b = dataclasses.replace(
        b, endpoint=dataclasses.replace(b.endpoint, serial=SerialLine("/dev/ttyUSB0", 19200))
    )
    [link] = group_links([b, a])
    assert link.key == "serial:/dev/ttyUSB0"
    assert link.connections == 1  # whatever max_connections says: a port opens once
    assert link.endpoint.serial.baudrate == 9600  # the lowest meter id's
    assert len(link.conflicts) == 1 and "meter 2" in link.conflicts[0]


def test_a_link_guard_is_held_per_sample_and_the_link_released_between(gateway):
    gw = gateway(units={1, 2}, delay_s=0.0)
    held: list[tuple[str, float]] = []

    @contextlib.asynccontextmanager
    async def guard(link):
        held.append(("take", time.monotonic()))
        yield
        held.append(("give", time.monotonic()))

    now = time.time()
    results = asyncio.run(read_meters(meters(gw.port, (1, 2)), [now, now + 0.3], link_guard=guard))
    assert all(r.ok and r.samples == 2 for r in results)
    assert [what for what, _ in held] == ["take", "give", "take", "give"]
    # Closed between samples, so another run's connection would be accepted meanwhile.
    assert gw.connections == 2 and gw.max_open_connections == 1


def test_a_busy_link_fails_its_meters_for_the_rest_of_the_run(gateway):
    gw = gateway(units={1})

    @contextlib.asynccontextmanager
    async def busy(link):
        raise LinkUnavailable("link busy: pool held by run X")
        yield  # pragma: no cover

    [result] = asyncio.run(read_meters(meters(gw.port, (1,)), [0.0, 0.0], link_guard=busy))
    assert result.errors == ["link busy: pool held by run X"]
    assert result.failed_values == 2 * len(REGISTERS)
    assert gw.requests == []
