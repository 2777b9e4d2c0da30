"""How a request is answered from the memories, without a network: the request as logged,
the order of the specification's checks (absent unit, function code, quantity, address), and
exact response bytes. Request PDUs are built by pymodbus (software we did not write) where it
builds them, by hand where it refuses to (bad quantities, unknown function codes)."""

from __future__ import annotations

import struct

import pytest
from pymodbus.pdu.bit_message import ReadCoilsRequest, WriteMultipleCoilsRequest
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    ReadWriteMultipleRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from virtual_server import DeviceMemory, Request
from virtual_server.request_handling import (
    WRITE_FUNCTION_CODES,
    answer,
    exception_pdu,
    request_of,
)

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, GATEWAY_NO_RESPONSE = 1, 2, 3, 0x0B


def pdu(request) -> bytes:
    """The request PDU pymodbus's client would send (function code first)."""
    return bytes([request.function_code]) + request.encode()


def read_pdu(fc: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", fc, address, count)


def memory() -> DeviceMemory:
    return DeviceMemory(
        holding_registers={0: 0x1234, 1: 0xABCD, 3: 7},
        input_registers={0: 1, 1: 2},
        coils={0: True, 1: False, 2: True, 8: True, 9: False},
    )


def test_requests_as_logged():
    assert request_of(3, pdu(ReadHoldingRegistersRequest(address=10, count=4))) == (3, 3, 10, 4)
    assert request_of(1, pdu(WriteMultipleCoilsRequest(5, [True, False, True]))) == Request(
        1, 15, 5, 3
    )
    # Function code 23 is logged by its write half, 22 and 6 as one register.
    both = ReadWriteMultipleRegistersRequest(0, 2, 100, [1, 2, 3])
    assert request_of(2, pdu(both)) == (2, 23, 100, 3)
    assert request_of(2, pdu(MaskWriteRegisterRequest(7))) == (2, 22, 7, 1)
    assert request_of(2, pdu(WriteSingleRegisterRequest(address=9, registers=[5]))) == (2, 6, 9, 1)
    # Quantities as sent, also when not allowed; no address for other or short PDUs.
    assert request_of(1, read_pdu(3, 0, 0)) == (1, 3, 0, 0)
    assert request_of(1, bytes([0x2B, 0x0E, 0x01, 0x00])) == (1, 0x2B, 0, 0)
    assert request_of(1, bytes([3, 0])) == (1, 3, 0, 0)


def test_reads_answer_exact_bytes():
    devices = {1: memory()}
    request = pdu(ReadHoldingRegistersRequest(address=0, count=2))
    assert answer(devices, 1, request) == bytes([3, 4, 0x12, 0x34, 0xAB, 0xCD])
    request = pdu(ReadInputRegistersRequest(address=1, count=1))
    assert answer(devices, 1, request) == bytes([4, 2, 0, 2])
    # Bits LSB first; 10 coils: two bytes.
    devices[1].set_bits(1, 3, [False] * 5)
    request = pdu(ReadCoilsRequest(address=0, count=10))
    assert answer(devices, 1, request) == bytes([1, 2, 0b00000101, 0b00000001])


def test_writes_are_refused_before_any_memory_is_touched():
    devices = {1: memory()}
    for request in (
        WriteSingleRegisterRequest(address=0, registers=[999]),
        WriteMultipleRegistersRequest(address=0, registers=[1, 2]),
        WriteMultipleCoilsRequest(0, [True]),
        MaskWriteRegisterRequest(0, 0, 1),
        ReadWriteMultipleRegistersRequest(0, 2, 0, [999]),
    ):
        code = request.function_code
        assert answer(devices, 1, pdu(request)) == bytes([0x80 | code, ILLEGAL_FUNCTION])
    for code in sorted(WRITE_FUNCTION_CODES):  # even malformed ones: the code is refused first
        assert answer(devices, 1, bytes([code])) == bytes([0x80 | code, ILLEGAL_FUNCTION])
    assert devices[1].read(3, 0, 2) == [0x1234, 0xABCD]


@pytest.mark.parametrize("code", [0x07, 0x08, 0x11, 0x2B, 0x41, 0x7F])
def test_unknown_function_codes_are_exception_1_under_their_own_code(code):
    assert answer({1: memory()}, 1, bytes([code, 0, 0])) == bytes([0x80 | code, ILLEGAL_FUNCTION])


@pytest.mark.parametrize(
    ("fc", "count"),
    [(3, 0), (3, 126), (4, 0), (4, 65535), (1, 0), (1, 2001), (2, 0), (2, 2001)],
)
def test_quantities_outside_the_limits_are_exception_3(fc, count):
    assert answer({1: memory()}, 1, read_pdu(fc, 0, count)) == bytes([0x80 | fc, ILLEGAL_VALUE])


def test_limits_themselves_are_served():
    full = DeviceMemory(
        holding_registers={a: a for a in range(125)}, coils=dict.fromkeys(range(2000), 1)
    )
    response = answer({1: full}, 1, read_pdu(3, 0, 125))
    assert response is not None and response[:2] == bytes([3, 250]) and len(response) == 252
    response = answer({1: full}, 1, read_pdu(1, 0, 2000))
    assert response == bytes([1, 250]) + b"\xff" * 250


def test_a_read_pdu_of_the_wrong_length_is_exception_3():
    for request in (bytes([3]), bytes([3, 0, 0, 0]), read_pdu(3, 0, 1) + b"\x00"):
        assert answer({1: memory()}, 1, request) == bytes([0x83, ILLEGAL_VALUE])


def test_addresses_unmapped_or_past_the_end_are_exception_2():
    devices = {1: memory()}
    assert answer(devices, 1, read_pdu(3, 0, 4)) == bytes([0x83, ILLEGAL_ADDRESS])  # hole at 2
    assert answer(devices, 1, read_pdu(3, 65535, 2)) == bytes([0x83, ILLEGAL_ADDRESS])
    assert answer(devices, 1, read_pdu(1, 65000, 1000)) == bytes([0x81, ILLEGAL_ADDRESS])


def test_no_value_answers_its_exception():
    devices = {1: memory()}
    devices[1].set_no_value(4, 1)
    assert answer(devices, 1, read_pdu(4, 0, 2)) == bytes([0x84, GATEWAY_NO_RESPONSE])


def test_absent_units_are_silent_or_0x0b_whatever_the_request():
    devices = {1: memory()}
    for request in (read_pdu(3, 0, 1), read_pdu(3, 0, 0), bytes([6, 0, 0, 0, 1]), bytes([0x2B])):
        assert answer(devices, 2, request) is None
        assert answer(devices, 2, request, answer_unknown_units=True) == exception_pdu(
            request[0], GATEWAY_NO_RESPONSE
        )
