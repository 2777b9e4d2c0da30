"""How a request is answered from the memories, without a network: the request as logged,
writes refused, and a read that did not come through the scoped read classes refused (so a
pymodbus upgrade that bypasses them fails loudly instead of serving another unit's values)."""

from __future__ import annotations

from pymodbus.constants import ExcCodes
from pymodbus.pdu.bit_message import WriteMultipleCoilsRequest
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    ReadHoldingRegistersRequest,
    ReadWriteMultipleRegistersRequest,
)

from virtual_server import DeviceMemory, Request
from virtual_server.request_handling import (
    WRITE_FUNCTION_CODES,
    answer_from_memory,
    request_of,
)


def test_requests_as_logged():
    assert request_of(ReadHoldingRegistersRequest(dev_id=3, address=10, count=4)) == (3, 3, 10, 4)
    assert request_of(WriteMultipleCoilsRequest(5, [True, False, True], dev_id=1)) == Request(
        1, 15, 5, 3
    )
    # Function code 23 is logged by its write half, 22 as one register.
    both = ReadWriteMultipleRegistersRequest(0, 2, 100, [1, 2, 3], dev_id=2)
    assert request_of(both) == (2, 23, 100, 3)
    assert request_of(MaskWriteRegisterRequest(7, dev_id=2)) == (2, 22, 7, 1)


def test_writes_are_refused_before_any_memory_is_touched():
    memory = DeviceMemory(holding_registers={0: 1})
    block = [0] * 4
    for code in sorted(WRITE_FUNCTION_CODES):
        assert answer_from_memory({1: memory}, code, 0, block) == ExcCodes.ILLEGAL_FUNCTION
    assert block == [0] * 4 and memory.read(3, 0, 1) == [1]


def test_a_read_outside_the_scoped_read_classes_is_a_device_failure():
    memory = DeviceMemory(holding_registers={0: 1})
    block = [0] * 4
    assert answer_from_memory({1: memory}, 3, 0, block) == ExcCodes.DEVICE_FAILURE
    assert block == [0] * 4
