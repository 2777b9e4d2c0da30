"""The client against peers that misbehave: each fault is named for what it is (never a
timeout it is not, never an asyncio traceback), costs only its own meter, and nothing a peer
sends late or broken is ever taken for the answer to a request."""

from __future__ import annotations

import asyncio
import logging
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from energymon_pipeline.modbus import client
from energymon_pipeline.modbus.client import (
    FrameCheck,
    ModbusConnection,
    check_rtu_frame,
    check_tcp_frame,
)
from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    ReadRequest,
    RegisterSpec,
)
from virtual_server import DeviceMemory

HR = FunctionCode.READ_HOLDING_REGISTERS
IR = FunctionCode.READ_INPUT_REGISTERS
#: One FLOAT32 in each register table: two requests per sample.
SPECS = (RegisterSpec("v", 0, function_code=HR), RegisterSpec("w", 0, function_code=IR))
V, W = "FC3 0-1 (v)", "FC4 0-1 (w)"


def meter(port: int, meter_id: int, specs=SPECS, timeout_s: float = 5.0,
          retries: int = 1) -> MeterSpec:  # fmt: skip
    return MeterSpec(
        meter_id=meter_id,
        endpoint=Endpoint("127.0.0.1", port, 1, timeout_s=timeout_s, retries=retries),
        meter_type="test",
        description=None,
        registers=tuple(specs),
    )


def asyncio_errors(caplog) -> list[str]:
    """What asyncio logged at warning level or above (its "Fatal error ..." tracebacks)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno >= logging.WARNING
    ]


def test_each_fault_is_named_and_costs_only_its_meter(peers, modbus_server, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    memory = DeviceMemory()
    memory.set_registers(HR, 0, encode_value(230.125, DataType.FLOAT32))
    memory.set_registers(IR, 0, encode_value(-1.5, DataType.FLOAT32))
    modbus_server.devices[1] = memory
    behaviours = ["closes_at_once", "closes_after_request", "answers_garbage",
                  "byte_count_too_large", "byte_count_too_small"]  # fmt: skip
    started = {name: peers.start(name) for name in behaviours}
    garbage = started["answers_garbage"].garbage
    assert garbage[2:4] != b"\0\0", "the seed must give a protocol id a Modbus frame cannot have"
    meters = [meter(modbus_server.port, 0)] + [
        meter(peer.port, i) for i, peer in enumerate(started.values(), start=1)
    ]

    began = time.monotonic()
    good, at_once, after_request, junk, too_large, too_small = read_meters_sync(meters)
    elapsed = time.monotonic() - began

    # Nothing waited for the 5 s timeout: every fault was recognised when it happened.
    assert elapsed < 4, elapsed
    assert good.ok and {r.register.measurement: r.value for r in good.readings} == {
        "v": 230.125, "w": -1.5
    }  # fmt: skip

    # Hanging up on a new connection before answering is what a gateway at its connection
    # limit does: the read is tried again on new connections for FIRST_CONNECT_RETRY_S, then
    # the sample ends (the next request would meet the same).
    dropped = f"{V}: connection closed by the device: right after accepting the connection"
    assert at_once.errors == after_request.errors == [dropped]
    assert at_once.failed_values == after_request.failed_values == 2
    assert 2 <= len(started["closes_after_request"].requests) <= 6

    # A broken answer costs its own request; the next one goes out on a new connection.
    shown = garbage[:16].hex(" ")
    protocol = struct.unpack(">H", garbage[2:4])[0]
    assert junk.errors == [
        f"{name}: malformed response: not a Modbus TCP frame (protocol id {protocol}; "
        f"23 byte(s): {shown} ...)"
        for name in (V, W)
    ]
    assert too_large.errors == [
        f"{name}: malformed response: response byte count 6 does not match the 4 data bytes sent"
        for name in (V, W)
    ]
    assert too_small.errors == [
        f"{name}: malformed response: response byte count 2 does not match the 4 data bytes sent"
        for name in (V, W)
    ]
    for name in ("answers_garbage", "byte_count_too_large", "byte_count_too_small"):
        peer = started[name]
        assert (peer.connections, len(peer.requests)) == (2, 2), name
    for result in (at_once, after_request, junk, too_large, too_small):
        assert not result.readings and not result.ok
        assert result.error == "; ".join(dict.fromkeys(result.errors))
    assert asyncio_errors(caplog) == []


def test_an_answer_with_more_registers_than_asked_is_refused(peers):
    peer = peers.start("answers_too_many_registers")  # a consistent frame, 3 registers of 2
    [result] = read_meters_sync([meter(peer.port, 1, specs=SPECS[:1])])
    assert result.errors == [
        f"{V}: malformed response: response byte count 6 does not match the 4 bytes requested "
        "(2 registers)"
    ]


def test_a_late_answer_is_never_taken_for_the_next_request(peers):
    peer = peers.start("late_first_answer")  # 1st answer (111) after 0.6 s, then 222 at once
    spec = RegisterSpec("v", 0, DataType.INT16, HR)
    start = time.time()
    [result] = read_meters_sync(
        [meter(peer.port, 1, specs=[spec], timeout_s=0.4, retries=0)],
        sample_times=[start, start + 0.45],
    )
    assert result.errors == ["FC3 0 (v): timeout: no answer within 0.4 s"]
    assert [r.value for r in result.readings] == [222.0]
    assert peer.connections == 2


def test_a_cancelled_read_is_cancelled_and_its_late_answer_never_taken(peers):
    """The caller's cancellation goes on (the client only takes back its own), and the
    abandoned request's connection is not used again."""
    peer = peers.start("late_first_answer")  # 1st answer (111) after 0.6 s, then 222 at once

    async def scenario():
        connection = ModbusConnection(Endpoint("127.0.0.1", peer.port, 1, retries=0))
        request = ReadRequest(HR, 0, 1)
        reading = asyncio.create_task(connection.read(request))
        await asyncio.sleep(0.2)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        block = await connection.read(request)
        connection.close()
        return block

    block = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert block.error is None and block.data == [222]
    assert peer.connections == 2


def test_a_cancellation_with_a_fault_is_still_a_cancellation(modbus_server, monkeypatch):
    """A fault the hooks see and the caller's cancellation in the same step: the client takes
    back only its own cancellation, the caller's goes on."""
    modbus_server.devices[1] = DeviceMemory(holding_registers={0: 7})

    async def fault_and_cancel(self, request, unit):
        loop = asyncio.get_running_loop()
        loop.call_soon(self._exchange.fail, client.ReadError(client.ErrorKind.CLOSED))
        loop.call_soon(asyncio.current_task().cancel)
        await asyncio.sleep(60)

    monkeypatch.setattr(ModbusConnection, "_send", fault_and_cancel)

    async def scenario():
        connection = ModbusConnection(Endpoint("127.0.0.1", modbus_server.port, 1))
        reading = asyncio.create_task(connection.read(ReadRequest(HR, 0, 1)))
        with pytest.raises(asyncio.CancelledError):
            await reading
        connection.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_call_that_never_ends_is_bounded_and_the_reader_goes_on(modbus_server, monkeypatch):
    """pymodbus bounds its own call; should it not, the client's bound ends the request as a
    timeout, and the reading task is not left cancelled."""
    modbus_server.devices[1] = DeviceMemory(holding_registers={0: 7})
    send = ModbusConnection._send
    calls = []

    async def stuck_once(self, request, unit):
        calls.append(request)
        if len(calls) == 1:
            await asyncio.sleep(60)
        return await send(self, request, unit)

    monkeypatch.setattr(ModbusConnection, "_send", stuck_once)

    async def scenario():
        endpoint = Endpoint("127.0.0.1", modbus_server.port, 1, timeout_s=0.2, retries=0)
        connection = ModbusConnection(endpoint)
        first = await connection.read(ReadRequest(HR, 0, 1))
        second = await connection.read(ReadRequest(HR, 0, 1))
        await asyncio.sleep(0)
        connection.close()
        return first, second, asyncio.current_task().cancelling()

    first, second, cancelling = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert str(first.error) == "timeout: no answer within 0.2 s"
    assert 1.1 <= first.latency_s < 3  # the bound: timeout x tries + 1 s
    assert second.error is None and second.data == [7]
    assert cancelling == 0


def test_an_answer_to_another_transaction_is_skipped(peers):
    peer = peers.start("stale_answer_first")  # a frame for tid+100 (999), then the answer
    spec = RegisterSpec("v", 0, DataType.INT16, HR)
    [result] = read_meters_sync([meter(peer.port, 1, specs=[spec])])
    assert result.ok, result.errors
    assert [r.value for r in result.readings] == [0x0101]


def test_an_incomplete_answer_is_malformed_not_a_timeout(peers):
    peer = peers.start("answers_garbage", garbage_size=3)
    [result] = read_meters_sync([meter(peer.port, 1, specs=SPECS[:1], timeout_s=0.3, retries=0)])
    assert result.errors == [
        f"{V}: malformed response: no complete answer within 0.3 s, got 3 byte(s): "
        f"{peer.garbage.hex(' ')}"
    ]


def test_what_escapes_pymodbus_is_reported_not_logged(peers, monkeypatch, caplog):
    """Without the frame check, pymodbus's decoder raises inside data_received on a byte
    count larger than the data; the connection's own exception handler reports it."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    monkeypatch.setattr(client, "check_tcp_frame", lambda *args: FrameCheck("answer"))
    peer = peers.start("byte_count_too_large")
    began = time.monotonic()
    [result] = read_meters_sync([meter(peer.port, 1, specs=SPECS[:1])])
    assert time.monotonic() - began < 4
    assert result.errors == [
        f"{V}: malformed response: undecodable answer "
        "(Modbus Error: [Input/Output] Unable to decode request)"
    ]
    assert asyncio_errors(caplog) == []


def test_other_exception_contexts_reach_the_previous_handler(modbus_server):
    modbus_server.devices[1] = DeviceMemory(holding_registers={0: 7})
    seen = []

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
        connection = ModbusConnection(Endpoint("127.0.0.1", modbus_server.port, 1))
        block = await connection.read(ReadRequest(HR, 0, 1))
        loop.call_exception_handler({"message": "not ours", "exception": ValueError()})
        loop.call_exception_handler({"message": "no protocol"})
        loop.call_exception_handler({"message": "unhashable", "protocol": [], "exception": 1})
        connection.close()
        return block

    block = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert block.error is None and block.data == [7]
    assert seen == ["not ours", "no protocol", "unhashable"]


# --- the frame checks, against pymodbus's own framers ------------------------------------


def mbap(tid: int, unit: int, pdu: bytes, protocol: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1 if length is None else length,
                       unit) + pdu  # fmt: skip


READ2 = ReadRequest(HR, 0, 2)
ANSWER = bytes([3, 4, 0x43, 0x66, 0x20, 0])


@pytest.mark.parametrize(
    ("buffer", "status", "detail"),
    [
        (mbap(5, 1, ANSWER), "answer", ""),
        (mbap(5, 1, bytes([0x83, 2])), "answer", ""),
        (mbap(0, 1, ANSWER), "answer", ""),  # pymodbus accepts transaction id 0
        (mbap(5, 1, ANSWER)[:9], "incomplete", ""),
        (b"\0\5\0", "incomplete", ""),
        (mbap(5, 1, bytes([3, 6, 0x43, 0x66, 0x20, 0])), "malformed",
         "response byte count 6 does not match the 4 data bytes sent"),
        (mbap(5, 1, bytes([3, 2, 0x43, 0x66, 0x20, 0])), "malformed",
         "response byte count 2 does not match the 4 data bytes sent"),
        (mbap(5, 1, bytes([3, 2, 0x43, 0x66])), "malformed",
         "response byte count 2 does not match the 4 bytes requested (2 registers)"),
        (mbap(5, 1, bytes([4, 4, 0x43, 0x66, 0x20, 0])), "malformed",
         "function code 4 in the answer to a function 3 request"),
        (mbap(5, 1, bytes([3])), "malformed", "an answer without a byte count"),
        (mbap(5, 1, bytes([0x83])), "malformed", "an exception response without its code"),
        (mbap(5, 1, ANSWER, protocol=0x4854), "malformed",
         "not a Modbus TCP frame (protocol id 18516; 13 byte(s): 00 05 48 54 00 07 01 03 04 43 "
         "66 20 00)"),
        (mbap(5, 1, ANSWER, length=1), "malformed",
         "not a Modbus TCP frame (length field 1; 13 byte(s): 00 05 00 00 00 01 01 03 04 43 66 "
         "20 00)"),
    ],
)  # fmt: skip
def test_tcp_frame_check(buffer, status, detail):
    check = check_tcp_frame(buffer, READ2, 5, 1)
    assert (check.status, check.detail) == (status, detail)


def test_tcp_frame_check_skips_what_pymodbus_skips():
    late = mbap(4, 1, bytes([3, 4, 9, 9, 9, 9]))
    other_unit = mbap(5, 2, ANSWER)
    check = check_tcp_frame(late + other_unit + mbap(5, 1, ANSWER) + b"\1", READ2, 5, 1)
    assert check.status == "answer" and check.trailing == 1
    assert check.ignored == (
        "an answer for transaction 4 (expected 5)", "an answer from unit 2 (expected 1)"
    )  # fmt: skip
    waiting = check_tcp_frame(late + b"\0\5", READ2, 5, 1)
    assert (waiting.status, waiting.pending) == ("incomplete", b"\0\5")


def rtu(frame: bytes) -> bytes:
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


@pytest.mark.parametrize(
    ("buffer", "status", "detail"),
    [
        (rtu(bytes([1]) + ANSWER), "answer", ""),
        (rtu(bytes([1, 0x83, 2])), "answer", ""),
        (rtu(bytes([1]) + ANSWER)[:-1], "incomplete", ""),
        (rtu(bytes([1, 3, 6, 0x43, 0x66, 0x20, 0])), "malformed",
         "response byte count 6 does not match the 4 bytes requested (2 registers)"),
        (bytes([1]) + ANSWER + b"\0\0", "malformed",
         "CRC error (9 byte(s): 01 03 04 43 66 20 00 00 00)"),
        (b"\xff\xfe\xfd", "incomplete", ""),  # not a start of the answer: pymodbus hunts
    ],
)  # fmt: skip
def test_rtu_frame_check(buffer, status, detail):
    check = check_rtu_frame(buffer, READ2, 1)
    assert (check.status, check.detail) == (status, detail)


FLAWS = ["tid", "tid 0", "unit", "protocol", "length", "function", "exception",
         "no byte count", "byte count", "data", "cut", "trailing", "frame before"]  # fmt: skip


@st.composite
def tcp_buffers(draw, request: ReadRequest, tid: int, unit: int) -> bytes:
    """Raw bytes, or a right answer with up to three flaws, each drawn with random values."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=40))
    flaws = set(draw(st.lists(st.sampled_from(FLAWS), max_size=3)))
    fc = int(request.function_code)
    expected = client.expected_byte_count(request)
    data = draw(st.binary(min_size=expected, max_size=expected))
    if "data" in flaws:
        data = draw(st.binary(max_size=expected + 4))
    byte_count = draw(st.integers(0, 255)) if "byte count" in flaws else expected
    code = fc
    if "function" in flaws:
        code = draw(st.sampled_from([1, 2, 3, 4, 0x2B, 0x80, 0x81, 0]))
    if "exception" in flaws:
        code, byte_count, data = fc | 0x80, draw(st.integers(0, 255)), b""
    pdu = bytes([code]) + (b"" if "no byte count" in flaws else bytes([byte_count])) + data
    frame = mbap(
        draw(st.integers(1, 65535)) if "tid" in flaws else 0 if "tid 0" in flaws else tid,
        draw(st.integers(0, 255)) if "unit" in flaws else unit,
        pdu,
        protocol=draw(st.integers(1, 65535)) if "protocol" in flaws else 0,
        length=draw(st.integers(0, 300)) if "length" in flaws else None,
    )
    if "frame before" in flaws:
        frame = draw(tcp_buffers(request, tid, unit)) + frame
    if "cut" in flaws:
        frame = frame[: draw(st.integers(0, len(frame)))]
    if "trailing" in flaws:
        frame += draw(st.binary(min_size=1, max_size=8))
    return frame


@st.composite
def requests_and_buffers(draw, framer: str):
    request = ReadRequest(draw(st.sampled_from(list(FunctionCode))), 0, draw(st.integers(1, 20)))
    if framer == "socket":
        return request, draw(tcp_buffers(request, 7, 1))
    fc = int(request.function_code)
    body = bytes([draw(st.sampled_from([1, 2])), draw(st.sampled_from([fc, fc | 0x80, 0x2B]))])
    body += draw(st.binary(max_size=client.expected_byte_count(request) + 4))
    if draw(st.booleans()):
        body = bytes([1, fc, client.expected_byte_count(request)]) + draw(
            st.binary(min_size=client.expected_byte_count(request),
                      max_size=client.expected_byte_count(request))
        )  # fmt: skip
    return request, rtu(body) if draw(st.booleans()) else body


def assert_pymodbus_takes_it(pdu, request: ReadRequest) -> None:
    assert pdu is not None
    if pdu.isError():
        return
    if request.function_code.is_bit:
        assert len(pdu.bits) >= request.count
    else:
        assert len(pdu.registers) == request.count


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_and_buffers("socket"))
def test_what_the_tcp_check_lets_through_pymodbus_decodes(case):
    """The check never raises; what it passes on never makes pymodbus's socket framer raise,
    and pymodbus finds an answer in it exactly when the check says there is one, with as many
    values as were asked for."""
    request, buffer = case
    check = check_tcp_frame(buffer, request, 7, 1)
    if check.status == "malformed":
        return  # never handed to pymodbus
    used, pdu = FramerSocket(DecodePDU(False)).handleFrame(buffer, 1, 7)
    if check.status == "answer":
        assert_pymodbus_takes_it(pdu, request)
    else:
        assert pdu is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_and_buffers("rtu"))
def test_what_the_rtu_check_accepts_pymodbus_decodes(case):
    request, buffer = case
    check = check_rtu_frame(buffer, request, 1)
    if check.status == "answer":
        _used, pdu = FramerRTU(DecodePDU(False)).handleFrame(buffer, 1, 0)
        assert_pymodbus_takes_it(pdu, request)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (2, "modbus exception 2 (illegal address)"),
        (7, "modbus exception 7 (negative acknowledge)"),
        (10, "modbus exception 10 (gateway path unavailable)"),
        (11, "modbus exception 11 (gateway no response)"),
        (99, "modbus exception 99 (unknown)"),
    ],
)
def test_exception_codes_are_named_by_pymodbus(code, text):
    error = client.ReadError(client.ErrorKind.MODBUS_EXCEPTION, exception_code=code)
    assert str(error) == text
