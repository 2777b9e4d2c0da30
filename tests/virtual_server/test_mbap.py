"""Modbus TCP framing, on its own and on the wire: frames split or packed any way TCP likes
are all answered, in order; invalid requests get the specification's exception under the
request's function code. Frames are crafted by hand and sent with raw sockets, so nothing of
ours (and no client's politeness) stands between the test and the server; answers are
compared byte for byte. Every wait is bounded."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import pytest
from pymodbus.client import ModbusTcpClient

from virtual_server import DeviceMemory, DeviceMemoryServer
from virtual_server.mbap import Frame, FrameReader, FramingError, encode

pytestmark = pytest.mark.timeout(60)

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


def read(tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, fc, address, count)


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def registers(tid: int, unit: int, fc: int, *words: int) -> bytes:
    return frame(tid, unit, struct.pack(f">BB{len(words)}H", fc, 2 * len(words), *words))


def exception(tid: int, unit: int, fc: int, code: int) -> bytes:
    return frame(tid, unit, bytes([0x80 | fc, code]))


def receive(connection: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        connection.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = connection.recv(size - len(data))
        except TimeoutError:
            pytest.fail(f"only {data!r} of {size} bytes within {timeout} s")
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def nothing_more(connection: socket.socket, wait: float = 0.3) -> bool:
    """Nothing arrives, and the connection stays open, for `wait` seconds."""
    connection.settimeout(wait)
    try:
        connection.recv(64)
    except TimeoutError:
        return True
    return False


@pytest.fixture(scope="module")
def server():
    memories = {
        1: DeviceMemory(input_registers={0: 0x4366, 1: 0x8000, 2: 7}, holding_registers={0: 9}),
        2: DeviceMemory(input_registers={0: 0x0102}, coils={0: True, 1: False, 2: True}),
    }
    with DeviceMemoryServer(memories) as running:
        yield running


@pytest.fixture
def connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connected:
        yield connected


def test_frame_reader_splits_and_joins():
    two = read(1, 1, 4, 0, 2) + read(2, 2, 3, 5, 1)
    expected = [Frame(1, 1, bytes([4, 0, 0, 0, 2])), Frame(2, 2, bytes([3, 0, 5, 0, 1]))]
    assert FrameReader().feed(two) == expected
    one_byte_at_a_time = FrameReader()
    got = [f for byte in two for f in one_byte_at_a_time.feed(bytes([byte]))]
    assert got == expected
    split = FrameReader()
    assert split.feed(two[:15]) == expected[:1]
    assert split.feed(two[15:]) == expected[1:]
    assert encode(1, 1, bytes([4, 4, 0x43, 0x66, 0x80, 0])) == registers(1, 1, 4, 0x4366, 0x8000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">HHHBB", 1, 1, 2, 1, 3), "MBAP protocol id 1, not 0"),
        (struct.pack(">HHHB", 1, 0, 1, 1), "MBAP length 1 outside 2-254"),
        (struct.pack(">HHHB", 1, 0, 255, 1), "MBAP length 255 outside 2-254"),
    ],
)
def test_frame_reader_refuses_what_cannot_be_framed(data, message):
    with pytest.raises(FramingError, match=message):
        FrameReader().feed(data)


def test_two_requests_in_one_write_are_both_answered_in_order(server, connection):
    server.reset_requests()
    connection.sendall(read(0x0101, 1, 4, 0, 2) + read(0x0102, 2, 4, 0, 1))
    expected = registers(0x0101, 1, 4, 0x4366, 0x8000) + registers(0x0102, 2, 4, 0x0102)
    assert receive(connection, len(expected)) == expected
    assert server.requests == [(1, 4, 0, 2), (2, 4, 0, 1)]


def test_many_requests_in_one_write_and_a_frame_split_across_writes(connection):
    # 40 frames, 480 bytes: more than one frame's largest size in a single segment.
    burst = b"".join(read(tid, 1 + tid % 2, 4, 0, 1) for tid in range(40))
    connection.sendall(burst)
    expected = b"".join(
        registers(tid, 1 + tid % 2, 4, 0x4366 if tid % 2 == 0 else 0x0102) for tid in range(40)
    )
    assert receive(connection, len(expected)) == expected
    # One request in three pieces, with pauses: answered once complete, and only then.
    request = read(77, 1, 4, 2, 1)
    connection.sendall(request[:3])
    assert nothing_more(connection, 0.1)
    connection.sendall(request[3:9])
    assert nothing_more(connection, 0.1)
    connection.sendall(request[9:] + read(78, 1, 3, 0, 1)[:4])
    assert receive(connection, 11) == registers(77, 1, 4, 7)
    connection.sendall(read(78, 1, 3, 0, 1)[4:])
    assert receive(connection, 11) == registers(78, 1, 3, 9)


def test_invalid_requests_get_the_specifications_exceptions(server, connection):
    """Each answered under the request's own function code | 0x80: exception 3 for a
    quantity outside the limits or a PDU of the wrong length, 1 for a function code the
    server does not serve (writes included), 2 for addresses past the end; all sent in one
    write, all answered in order."""
    server.reset_requests()
    cases = [
        (read(1, 1, 4, 0, 0), exception(1, 1, 4, ILLEGAL_VALUE)),  # count 0
        (read(2, 1, 3, 0, 126), exception(2, 1, 3, ILLEGAL_VALUE)),  # 126 registers
        (read(3, 2, 1, 0, 2001), exception(3, 2, 1, ILLEGAL_VALUE)),  # 2001 coils
        (read(4, 2, 2, 0, 0), exception(4, 2, 2, ILLEGAL_VALUE)),  # 0 discrete inputs
        (frame(5, 1, bytes([3, 0, 0])), exception(5, 1, 3, ILLEGAL_VALUE)),  # PDU too short
        (frame(6, 1, bytes([0x2B, 0x0E, 0x01, 0x00])), exception(6, 1, 0x2B, ILLEGAL_FUNCTION)),
        (frame(7, 1, bytes([0x07])), exception(7, 1, 0x07, ILLEGAL_FUNCTION)),
        (frame(8, 1, bytes([0x08, 0, 0, 0x12, 0x34])), exception(8, 1, 0x08, ILLEGAL_FUNCTION)),
        (frame(9, 1, bytes([0x41, 1, 2])), exception(9, 1, 0x41, ILLEGAL_FUNCTION)),
        (frame(10, 1, bytes([6, 0, 0, 0, 1])), exception(10, 1, 6, ILLEGAL_FUNCTION)),  # write
        (frame(11, 1, bytes([5, 0, 0, 0xFF, 0])), exception(11, 1, 5, ILLEGAL_FUNCTION)),
        (frame(12, 1, bytes([16, 0, 0, 0, 1, 2, 0, 1])), exception(12, 1, 16, ILLEGAL_FUNCTION)),
        (frame(13, 1, bytes([15, 0, 0, 0, 1, 1, 1])), exception(13, 1, 15, ILLEGAL_FUNCTION)),
        (read(14, 1, 4, 65535, 2), exception(14, 1, 4, ILLEGAL_ADDRESS)),
        (read(15, 1, 4, 0, 1), registers(15, 1, 4, 0x4366)),  # still serving afterwards
    ]
    connection.sendall(b"".join(request for request, _ in cases))
    expected = b"".join(answer for _, answer in cases)
    assert receive(connection, len(expected)) == expected
    assert len(server.requests) == len(cases)
    assert server.requests[:3] == [(1, 4, 0, 0), (1, 3, 0, 126), (2, 1, 0, 2001)]
    assert server.requests[9] == (1, 6, 0, 1)
    assert nothing_more(connection)


def test_an_absent_unit_in_the_middle_is_skipped_not_blocking(connection):
    connection.sendall(read(1, 1, 4, 0, 1) + read(2, 9, 4, 0, 1) + read(3, 2, 4, 0, 1))
    expected = registers(1, 1, 4, 0x4366) + registers(3, 2, 4, 0x0102)
    assert receive(connection, len(expected)) == expected
    assert nothing_more(connection)


@pytest.mark.parametrize(
    "garbage",
    [struct.pack(">HHHBBHH", 1, 7, 6, 1, 4, 0, 1), struct.pack(">HHHB", 1, 0, 300, 1)],
    ids=["protocol id 7", "length 300"],
)
def test_a_stream_that_cannot_be_framed_is_closed(server, garbage):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(garbage)
        connection.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert connection.recv(64) == b""
    # Other connections are unaffected.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as other:
        other.sendall(read(1, 1, 4, 0, 1))
        assert receive(other, 11) == registers(1, 1, 4, 0x4366)


def test_pymodbus_sync_client_reads_and_sees_exceptions(server):
    client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
    try:
        assert client.connect()
        response = client.read_input_registers(0, count=2, device_id=1)
        assert response.registers == [0x4366, 0x8000]
        assert client.convert_from_registers(response.registers, client.DATATYPE.FLOAT32) == 230.5
        bits = client.read_coils(0, count=3, device_id=2)
        assert bits.bits[:3] == [True, False, True]
        refused = client.write_register(0, 1, device_id=1)
        assert refused.isError() and refused.function_code == 0x86
        assert refused.exception_code == ILLEGAL_FUNCTION
        unmapped = client.read_input_registers(1, count=3, device_id=1)
        assert unmapped.function_code == 0x84 and unmapped.exception_code == ILLEGAL_ADDRESS
    finally:
        client.close()
