"""The virtual server core against a real pymodbus client on loopback.

No pytest-asyncio here: each test runs its scenario with asyncio.run, and every wait is bounded
(client timeouts, asyncio.wait_for) so a hang fails the test instead of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from virtual_server import DeviceMemory, DeviceMemoryServer, Request

pytestmark = pytest.mark.timeout(60)

HOLDING, INPUT, COILS, DISCRETE = 3, 4, 1, 2
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, GATEWAY_NO_RESPONSE = 1, 2, 3, 0x0B


def run(scenario, timeout: float = 30.0):
    """Run one async scenario with an overall bound."""

    async def bounded():
        return await asyncio.wait_for(scenario, timeout)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def connected(port: int, timeout: float = 2.0):
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=timeout, retries=0)
    try:
        assert await asyncio.wait_for(client.connect(), 5), f"cannot connect to port {port}"
        yield client
    finally:
        client.close()


async def read(client: AsyncModbusTcpClient, fc: int, address: int, count: int, unit: int = 1):
    """(values, None) or (None, exception code); bit values cut to `count`."""
    method = {
        COILS: client.read_coils,
        DISCRETE: client.read_discrete_inputs,
        HOLDING: client.read_holding_registers,
        INPUT: client.read_input_registers,
    }[fc]
    response = await method(address, count=count, device_id=unit)
    if response.isError():
        return None, response.exception_code
    values = response.bits[:count] if fc in (COILS, DISCRETE) else response.registers
    return list(values), None


def meter() -> DeviceMemory:
    """Registers 0, 1, 3 mapped (2 is a hole), the same shape in every table."""
    return DeviceMemory(
        holding_registers={0: 10, 1: 11, 3: 13},
        input_registers={0: 20, 1: 21, 3: 23},
        coils={0: True, 1: False, 3: True},
        discrete_inputs={0: False, 1: True, 3: False},
    )


def test_reads_return_what_was_set_in_each_table():
    memory = DeviceMemory(
        holding_registers={100: 1, 101: 65535},
        input_registers={100: 7, 101: 8, 65535: 9},
        coils={5: True, 6: False, 7: True},
        discrete_inputs={5: False, 6: True, 7: True, 65535: True},
    )

    async def scenario():
        async with DeviceMemoryServer({1: memory}) as server, connected(server.port) as c:
            assert await read(c, HOLDING, 100, 2) == ([1, 65535], None)
            assert await read(c, INPUT, 100, 2) == ([7, 8], None)
            assert await read(c, INPUT, 65535, 1) == ([9], None)
            assert await read(c, COILS, 5, 3) == ([True, False, True], None)
            assert await read(c, DISCRETE, 5, 3) == ([False, True, True], None)
            assert await read(c, DISCRETE, 65535, 1) == ([True], None)
            # Separate tables: holding register 65535 is not mapped although input 65535 is.
            assert await read(c, HOLDING, 65535, 1) == (None, ILLEGAL_ADDRESS)

    run(scenario())


@pytest.mark.parametrize(
    ("fc", "part_before", "part_after"),
    [
        (HOLDING, [10, 11], [13]),
        (INPUT, [20, 21], [23]),
        (COILS, [True, False], [True]),
        (DISCRETE, [False, True], [False]),
    ],
)
def test_read_spanning_an_unmapped_address_is_exception_2(fc, part_before, part_after):
    async def scenario():
        async with DeviceMemoryServer({1: meter()}) as server, connected(server.port) as c:
            assert await read(c, fc, 0, 4) == (None, ILLEGAL_ADDRESS)
            assert await read(c, fc, 1, 3) == (None, ILLEGAL_ADDRESS)
            assert await read(c, fc, 2, 1) == (None, ILLEGAL_ADDRESS)
            assert await read(c, fc, 3, 2) == (None, ILLEGAL_ADDRESS)  # runs past the end
            assert await read(c, fc, 0, 2) == (part_before, None)
            assert await read(c, fc, 3, 1) == (part_after, None)

    run(scenario())


def test_writes_are_refused_with_exception_1_and_change_nothing():
    memory = meter()
    before = {fc: memory.mapped(fc) for fc in (COILS, DISCRETE, HOLDING, INPUT)}

    async def scenario():
        async with DeviceMemoryServer({1: memory}) as server, connected(server.port) as c:
            responses = {
                5: await c.write_coil(0, False, device_id=1),
                6: await c.write_register(0, 999, device_id=1),
                15: await c.write_coils(0, [False, True], device_id=1),
                16: await c.write_registers(0, [999, 998], device_id=1),
                22: await c.mask_write_register(address=0, and_mask=0, or_mask=1, device_id=1),
                23: await c.readwrite_registers(
                    read_address=0, read_count=2, write_address=0, values=[999], device_id=1
                ),
                # A write to an unmapped address is refused as a write, not as an address.
                -6: await c.write_register(2, 5, device_id=1),
            }
            for fc, response in responses.items():
                assert response.isError(), f"fc {fc} was accepted: {response}"
                assert response.exception_code == ILLEGAL_FUNCTION, f"fc {fc}: {response}"
            assert await read(c, HOLDING, 0, 2) == ([10, 11], None)
            assert await read(c, COILS, 0, 2) == ([True, False], None)
            assert await read(c, HOLDING, 2, 1) == (None, ILLEGAL_ADDRESS)

    run(scenario())
    assert {fc: memory.mapped(fc) for fc in (COILS, DISCRETE, HOLDING, INPUT)} == before


def test_read_quantity_outside_the_protocol_limits_is_exception_3_and_counted():
    """Exception 3 (illegal data value) under the request's function code | 0x80, as the
    specification says; pymodbus's client refuses to send such reads, so the frames are
    written by hand. Logged with the quantity as sent."""

    async def raw_read(port: int, fc: int, address: int, count: int) -> bytes:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        try:
            writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, fc, address, count))
            return await asyncio.wait_for(reader.readexactly(9), 5)
        finally:
            writer.close()

    async def scenario():
        memory = DeviceMemory(holding_registers={a: a for a in range(200)})
        async with DeviceMemoryServer({1: memory}) as server:
            cases = [(HOLDING, 0), (HOLDING, 126), (COILS, 0), (COILS, 2001)]
            for fc, count in cases:
                answer = await raw_read(server.port, fc, 0, count)
                assert answer == struct.pack(">HHHBBB", 1, 0, 3, 1, 0x80 | fc, ILLEGAL_VALUE)
            assert server.requests == [(1, fc, 0, count) for fc, count in cases]
            server.reset_requests()
            answer = await raw_read(server.port, HOLDING, 0, 1)
            assert answer[:9] == struct.pack(">HHHBBB", 1, 0, 5, 1, HOLDING, 2)
            assert server.requests == [(1, HOLDING, 0, 1)]

    run(scenario())


def test_request_counting_is_exact_including_failures():
    async def scenario():
        async with DeviceMemoryServer({1: meter()}) as server, connected(server.port) as c:
            await read(c, HOLDING, 0, 2)  # ok
            await read(c, HOLDING, 0, 4)  # exception 2
            await read(c, COILS, 1, 3)  # exception 2
            await read(c, INPUT, 3, 1)  # ok
            await c.write_register(5, 1, device_id=1)  # exception 1
            await read(c, DISCRETE, 0, 2)  # ok
            assert server.requests == [
                (1, 3, 0, 2),
                (1, 3, 0, 4),
                (1, 1, 1, 3),
                (1, 4, 3, 1),
                (1, 6, 5, 1),
                (1, 2, 0, 2),
            ]
            assert server.requests[0] == Request(unit_id=1, function_code=3, address=0, count=2)
            server.reset_requests()
            assert server.requests == []
            for _ in range(25):
                await read(c, HOLDING, 0, 4)
            assert len(server.requests) == 25

    run(scenario())


def test_response_delay_delays_answers_and_exceptions():
    delay_ms = 150

    async def scenario():
        server = DeviceMemoryServer({1: meter()}, response_delay_ms=delay_ms)
        async with server, connected(server.port) as c:
            for fc, address, count, expected_error in [
                (HOLDING, 0, 2, None),
                (HOLDING, 0, 4, ILLEGAL_ADDRESS),
                (COILS, 0, 2, None),
            ]:
                started = time.perf_counter()
                _, error = await read(c, fc, address, count)
                elapsed = time.perf_counter() - started
                assert error == expected_error
                assert elapsed >= delay_ms / 1000, f"answered after {elapsed * 1000:.0f} ms"
            server.response_delay_ms = 0  # changeable while running
            assert await read(c, HOLDING, 0, 2) == ([10, 11], None)

    run(scenario())


def test_unknown_unit_id_gets_no_answer_by_default():
    async def scenario():
        async with DeviceMemoryServer({1: meter()}) as server:
            async with connected(server.port, timeout=0.5) as c:
                with pytest.raises(ModbusIOException):
                    await c.read_holding_registers(0, count=2, device_id=7)
            # The silence is per request: the known unit still answers on a new connection.
            async with connected(server.port) as c:
                assert await read(c, HOLDING, 0, 2, unit=1) == ([10, 11], None)
            assert server.requests == [(7, 3, 0, 2), (1, 3, 0, 2)]

    run(scenario())


def test_unknown_unit_id_answered_with_gateway_exception_when_enabled():
    async def scenario():
        server = DeviceMemoryServer({1: meter()}, answer_unknown_units=True)
        async with server, connected(server.port) as c:
            assert await read(c, HOLDING, 0, 2, unit=7) == (None, GATEWAY_NO_RESPONSE)
            assert await read(c, COILS, 0, 2, unit=0) == (None, GATEWAY_NO_RESPONSE)
            response = await c.write_register(0, 1, device_id=7)
            assert response.exception_code == GATEWAY_NO_RESPONSE
            assert await read(c, HOLDING, 0, 2, unit=1) == ([10, 11], None)

    run(scenario())


def test_units_are_served_from_their_own_memory_under_concurrent_clients():
    memories = {
        unit: DeviceMemory(
            holding_registers={a: unit * 100 + a for a in range(50)},
            coils={a: (a + unit) % 3 == 0 for a in range(50)},
        )
        for unit in (0, 1, 2, 247)
    }

    async def one_client(port: int, unit: int):
        async with connected(port) as c:
            for start in range(0, 40, 7):
                values, error = await read(c, HOLDING, start, 10, unit=unit)
                assert error is None
                assert values == [unit * 100 + a for a in range(start, start + 10)]
                bits, error = await read(c, COILS, start, 10, unit=unit)
                assert error is None
                assert bits == [(a + unit) % 3 == 0 for a in range(start, start + 10)]

    async def scenario():
        async with DeviceMemoryServer(memories) as server:
            await asyncio.gather(*(one_client(server.port, unit) for unit in memories))
            assert len(server.requests) == len(memories) * 2 * len(range(0, 40, 7))

    run(scenario())


def test_values_set_at_runtime_are_visible_to_the_next_read_in_thread_mode():
    memory = meter()
    with DeviceMemoryServer({1: memory}) as server:
        assert server.running

        async def read_once(fc, address, count):
            async with connected(server.port) as c:
                return await read(c, fc, address, count)

        assert run(read_once(HOLDING, 0, 2)) == ([10, 11], None)
        memory.set_registers(HOLDING, 0, [500, 501, 502])  # also maps the hole at 2
        assert run(read_once(HOLDING, 0, 4)) == ([500, 501, 502, 13], None)
        memory.set_bits(COILS, 1, [True, True])
        assert run(read_once(COILS, 0, 4)) == ([True, True, True, True], None)
        memory.unmap(HOLDING, 1)
        assert run(read_once(HOLDING, 0, 2)) == (None, ILLEGAL_ADDRESS)
        server.devices[9] = DeviceMemory(input_registers={0: 42})
        assert run(read_once(INPUT, 0, 1)) == ([20], None)

        async def unit_9():
            async with connected(server.port) as c:
                return await read(c, INPUT, 0, 1, unit=9)

        assert run(unit_9()) == ([42], None)
    assert not server.running


def test_stop_frees_the_port_for_a_restart_on_the_same_port():
    with DeviceMemoryServer({1: meter()}) as first:
        port = first.port
    assert port != 0

    async def serve_twice():
        server = DeviceMemoryServer({1: meter()}, port=port)
        for _ in range(2):
            await server.start()
            assert server.port == port
            async with connected(port) as c:
                assert await read(c, HOLDING, 0, 2) == ([10, 11], None)
            started = time.perf_counter()
            await server.stop()
            assert time.perf_counter() - started < 5
            assert not server.running

    run(serve_twice())
    with DeviceMemoryServer({1: meter()}, port=port) as again:
        assert again.port == port


def test_stop_is_bounded_while_a_delayed_answer_is_pending():
    server = DeviceMemoryServer({1: meter()}, response_delay_ms=30_000).start_in_thread()

    async def fire_and_forget():
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.3, retries=0)
        await asyncio.wait_for(client.connect(), 5)
        with contextlib.suppress(ModbusIOException):
            await client.read_holding_registers(0, count=1, device_id=1)
        client.close()

    run(fire_and_forget())
    started = time.perf_counter()
    server.stop_thread(timeout=5)
    assert time.perf_counter() - started < 5


def test_listening_on_a_busy_port_fails_with_a_clear_error():
    with DeviceMemoryServer({1: meter()}) as busy:

        async def second():
            await DeviceMemoryServer({1: meter()}, port=busy.port).start()

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{busy.port}"):
            run(second())


def test_device_memory_rejects_what_a_device_cannot_hold():
    memory = DeviceMemory()
    with pytest.raises(ValueError, match="holding register 11: 70000 is not a 16-bit word"):
        memory.set_registers(HOLDING, 10, [1, 70000])
    with pytest.raises(ValueError, match="input register 5: -1 is not a 16-bit word"):
        memory.set_registers(INPUT, 5, [-1])
    with pytest.raises(ValueError, match="coil 3: 2 is not a bit"):
        memory.set_bits(COILS, 3, [2])
    with pytest.raises(ValueError, match="function code 3 is the wrong table here"):
        memory.set_bits(HOLDING, 0, [True])
    with pytest.raises(ValueError, match="function code 5 does not name a table"):
        memory.set_registers(5, 0, [1])
    with pytest.raises(ValueError, match="2 holding registers from address 65535 run past"):
        memory.set_registers(HOLDING, 65535, [1, 2])
    # Nothing of a rejected call is mapped.
    assert memory.mapped(HOLDING) == {} and memory.mapped(INPUT) == {}
    assert memory.read(HOLDING, 10, 1) is None


def test_device_memory_read_unmap_and_clear():
    memory = meter()
    assert memory.read(HOLDING, 0, 2) == [10, 11]
    assert memory.read(HOLDING, 0, 4) is None
    assert memory.read(DISCRETE, 0, 2) == [False, True]
    memory.unmap(COILS, 0, 2)
    assert memory.mapped(COILS) == {3: True}
    memory.clear()
    assert all(memory.mapped(fc) == {} for fc in (COILS, DISCRETE, HOLDING, INPUT))
