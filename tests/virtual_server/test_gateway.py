"""Gateway mode: N simulated SDM630s behind one port that is one RS-485 bus (one request at a
time across all connections, each taking the delay) and holds at most M connections. The
peers are pymodbus's own clients (sync and async) and raw sockets; every wait is bounded."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from virtual_server import DeviceMemory, DeviceMemoryServer, Fleet
from virtual_server.devices.sdm630 import Sdm630

pytestmark = pytest.mark.timeout(60)

INPUT = 4


def run(scenario, timeout: float = 30.0):
    async def bounded():
        return await asyncio.wait_for(scenario, timeout)

    return asyncio.run(bounded())


def float32(client, registers: list[int]) -> float:
    return client.convert_from_registers(registers, client.DATATYPE.FLOAT32)


def closed_by_server(port: int, timeout: float = 3.0) -> bool:
    """Connect with a raw socket, send one read, and say whether the server closed the
    connection (EOF or reset) instead of answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.settimeout(timeout)
        try:
            raw.sendall(struct.pack(">HHHBBHH", 1, 0, 6, 1, INPUT, 0, 2))
            return raw.recv(64) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def test_each_unit_answers_its_own_registers_through_the_sync_client():
    with Fleet(5, lambda index: Sdm630(seed=index), units_per_port=5, gateway=True,
               max_connections=1, response_delay_ms=5) as fleet:  # fmt: skip
        (server,) = fleet.servers
        assert server.gateway and server.max_connections == 1
        client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        try:
            assert client.connect()
            seen = set()
            for member in fleet.members:
                response = client.read_input_registers(0, count=2, device_id=member.unit_id)
                assert not response.isError(), response
                voltage = float32(client, response.registers)
                assert voltage == member.device.published[0]
                seen.add(voltage)
            assert len(seen) == 5  # own values each
            # Unit 6 is not on this bus: silence, as a gateway with no such device.
            with pytest.raises(ModbusIOException):
                client.read_input_registers(0, count=2, device_id=6)
        finally:
            client.close()
        assert fleet.stats.requests_served == 6
        assert fleet.stats.max_in_flight == 1


def test_connections_beyond_the_limit_are_closed_at_once_and_counted():
    memory = DeviceMemory(input_registers={0: 1, 1: 2})
    with DeviceMemoryServer({1: memory}, gateway=True, max_connections=2) as server:
        first = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        second = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        try:
            assert first.connect() and second.connect()
            assert first.read_input_registers(0, count=2, device_id=1).registers == [1, 2]
            assert second.read_input_registers(0, count=2, device_id=1).registers == [1, 2]
            assert server.connections == 2
            # The third: the TCP handshake succeeds (the kernel completes it), then the
            # server closes the socket without reading a request.
            assert closed_by_server(server.port)
            assert server.stats.connections_refused == 1

            # pymodbus's async client sees it as a failed request, not as an answer (left
            # to itself it would reconnect every 0.1 s, each attempt another refusal).
            async def third_async_client():
                client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1,
                                              retries=0, reconnect_delay=0)  # fmt: skip
                try:
                    await asyncio.wait_for(client.connect(), 5)
                    await asyncio.sleep(0.1)  # let the close arrive
                    with pytest.raises((ConnectionException, ModbusIOException)):
                        await client.read_input_registers(0, count=2, device_id=1)
                finally:
                    client.close()

            run(third_async_client())
            assert server.stats.connections_refused == 2
            # The held connections were not disturbed.
            assert first.read_input_registers(0, count=2, device_id=1).registers == [1, 2]
        finally:
            first.close()
        # A closed connection frees its place.
        deadline = time.monotonic() + 5
        while server.connections > 1:
            assert time.monotonic() < deadline, "the closed connection is still counted"
            time.sleep(0.02)
        try:
            again = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
            assert again.connect()
            assert again.read_input_registers(0, count=2, device_id=1).registers == [1, 2]
        finally:
            again.close()
            second.close()
        stats = server.stats
        assert (stats.connections_accepted, stats.connections_refused) == (3, 2)
        assert stats.max_in_flight == 1


async def _two_clients_reading(port: int, units: list[int], reads: int) -> list[tuple]:
    """Two async pymodbus clients, each reading its units `reads` times as fast as it can,
    at the same time; (client, unit, started, answered, voltage) per request."""
    log: list[tuple] = []

    async def one(name: str, unit: int):
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        try:
            assert await asyncio.wait_for(client.connect(), 5)
            for _ in range(reads):
                started = time.perf_counter()
                response = await client.read_input_registers(0, count=2, device_id=unit)
                assert not response.isError(), response
                answered = time.perf_counter()
                log.append((name, unit, started, answered, float32(client, response.registers)))
        finally:
            client.close()

    await asyncio.gather(*(one(f"client {unit}", unit) for unit in units))
    return log


def test_requests_from_two_connections_never_overlap_on_the_bus():
    delay_ms, reads = 40, 6
    with Fleet(2, lambda index: Sdm630(seed=index), units_per_port=2, gateway=True,
               max_connections=2, response_delay_ms=delay_ms) as fleet:  # fmt: skip
        (server,) = fleet.servers
        started = time.perf_counter()
        log = run(_two_clients_reading(server.port, [1, 2], reads))
        elapsed = time.perf_counter() - started
        stats = server.stats
    assert stats.max_in_flight == 1
    assert stats.requests_served == 2 * reads and stats.connections_refused == 0
    # Each request took at least the delay, and as the clients see it the answers came one
    # bus slot after another: 12 answers need 12 slots, not 6.
    assert all(answered - begun >= delay_ms / 1000 for _, _, begun, answered, _ in log)
    answers = sorted(answered for *_, answered, _ in log)
    gaps = [later - earlier for earlier, later in zip(answers, answers[1:], strict=False)]
    # (Half a slot: the clients' own event loop may see one answer late, the next on time;
    # answers served at the same time would arrive with no gap at all.)
    assert min(gaps) >= 0.5 * delay_ms / 1000, [round(g * 1000) for g in gaps]
    assert elapsed >= 2 * reads * delay_ms / 1000
    # Each answer on the connection it came from: each client got its own unit's voltage.
    voltages = {m.unit_id: m.device.published[0] for m in fleet.members}
    assert all(voltage == voltages[unit] for _, unit, _, _, voltage in log)


def test_without_gateway_mode_connections_are_served_at_the_same_time():
    """The counterpart: the same load on a plain server overlaps, so the counter is real."""
    delay_ms, reads = 40, 4
    with Fleet(2, lambda index: Sdm630(seed=index), units_per_port=2,
               response_delay_ms=delay_ms) as fleet:  # fmt: skip
        (server,) = fleet.servers
        run(_two_clients_reading(server.port, [1, 2], reads))
    assert server.stats.max_in_flight == 2


def test_pipelined_requests_on_a_gateway_queue_with_the_other_connections():
    """Two requests in one write on one connection and one on another: all three answered,
    each on its own connection, in order, one at a time."""
    delay_ms = 30
    memories = {1: DeviceMemory(input_registers={0: 11}), 2: DeviceMemory(input_registers={0: 22})}
    with DeviceMemoryServer(memories, gateway=True, response_delay_ms=delay_ms) as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as a,
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as b,
        ):
            started = time.perf_counter()
            a.sendall(
                struct.pack(">HHHBBHH", 7, 0, 6, 1, INPUT, 0, 1)
                + struct.pack(">HHHBBHH", 8, 0, 6, 2, INPUT, 0, 1)
            )
            b.sendall(struct.pack(">HHHBBHH", 9, 0, 6, 2, INPUT, 0, 1))
            assert _receive(a, 22) == (
                struct.pack(">HHHBBBH", 7, 0, 5, 1, INPUT, 2, 11)
                + struct.pack(">HHHBBBH", 8, 0, 5, 2, INPUT, 2, 22)
            )
            assert _receive(b, 11) == struct.pack(">HHHBBBH", 9, 0, 5, 2, INPUT, 2, 22)
            assert time.perf_counter() - started >= 3 * delay_ms / 1000
        assert server.stats.max_in_flight == 1 and server.stats.requests_served == 3


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    deadline = time.monotonic() + 5
    while len(data) < size:
        assert time.monotonic() < deadline, f"got {data!r} of {size} bytes"
        chunk = connection.recv(size - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_a_client_leaving_mid_request_frees_the_bus():
    delay_ms = 100
    memory = DeviceMemory(input_registers={0: 5})
    with DeviceMemoryServer({1: memory}, gateway=True, response_delay_ms=delay_ms) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as leaving:
            leaving.sendall(struct.pack(">HHHBBHH", 1, 0, 6, 1, INPUT, 0, 1) * 5)
        client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        try:
            assert client.connect()
            started = time.perf_counter()
            assert client.read_input_registers(0, count=1, device_id=1).registers == [5]
            assert time.perf_counter() - started < 5 * delay_ms / 1000
        finally:
            client.close()
        assert server.stats.max_in_flight == 1


def test_stats_reset_and_fleet_totals():
    with Fleet(4, lambda index: Sdm630(seed=index), units_per_port=2, gateway=True,
               max_connections=1) as fleet:  # fmt: skip
        for server in fleet.servers:
            client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
            try:
                assert client.connect()
                for unit in (1, 2):
                    assert not client.read_input_registers(0, count=2, device_id=unit).isError()
                assert closed_by_server(server.port)
            finally:
                client.close()
        stats = fleet.stats
        assert (stats.requests_served, stats.connections_refused, stats.max_in_flight) == (4, 2, 1)
        assert stats.connections_accepted == 2
        for server in fleet.servers:
            server.reset_stats()
        assert fleet.stats.requests_served == 0 == fleet.stats.connections_refused


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_connections must be >= 0"):
        DeviceMemoryServer({}, max_connections=-1)
