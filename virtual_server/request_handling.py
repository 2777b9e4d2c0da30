"""How the virtual server answers a request: pymodbus's server (ModbusTcpServer with
SimDevice/SimData) made to serve `DeviceMemory` tables, read-only.

Why it is built this way (pymodbus 3.16.1; the classes it relies on are named so an upgrade
knows where to look):

- SimData can mark addresses invalid, but only when the device is built, and for coils and
  discrete inputs only per 16-bit group. So the server runs one catch-all SimDevice (id 0,
  which pymodbus routes every unit id to; `whole_address_space`) whose four blocks span the
  whole address space, and its `action` callback - called before pymodbus answers any read or
  write - looks the request up in the unit's `DeviceMemory` (`answer_from_memory`): an
  unmapped address returns `ExcCodes.ILLEGAL_ADDRESS`, otherwise it copies the current values
  into the block (the callback's documented "modify registers inline"), which pymodbus then
  returns.
- The action callback is not told the unit id, and for bit reads it receives the number of
  16-bit words spanned instead of the number of bits. The read request classes are therefore
  replaced (ModbusTcpServer's `custom_pdu`: `SCOPED_READS`) by subclasses that publish the
  decoded request in a ContextVar before running the stock handling; pymodbus runs each
  request in its own task, so concurrent connections never see each other's request.
- Read-only. The action answers every write function code (5, 6, 15, 16, 22, 23) with
  `ExcCodes.ILLEGAL_FUNCTION` before pymodbus touches the block, so nothing changes.
- Request counting uses `trace_pdu`, which pymodbus calls once for every request it decodes,
  whatever the outcome (served, exception 1/2, unknown unit id). Frames pymodbus cannot decode
  are not counted; among them reads asking for 0 or more than 125 registers / 2000 bits, which
  pymodbus answers itself with exception 1 under function code 0x80. pymodbus also decodes
  only the first request of each received TCP segment (the rest waits for more data), which
  matters only to a client that pipelines; pymodbus's own client does not.
- Unknown unit ids. With SimDevice, pymodbus itself never treats a unit id as missing: without
  a device 0 a request for an absent id fails with a KeyError inside pymodbus and is answered
  with exception 4 (device failure) plus an error log; with a device 0 every id is served by
  it. `ignore_missing_devices` only reacts to NoSuchIdException, which only the deprecated
  ModbusServerContext raises. So `trace_pdu` replaces a request for a unit id that is not
  simulated with an `AbsentUnitRequest`, which raises NoSuchIdException, and pymodbus's own
  missing-device handling applies: by default no answer at all (what a gateway does for an
  absent device: the client times out), or with `answer_unknown_units=True` exception 0x0B
  (gateway target device failed to respond).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    ReadWriteMultipleRegistersRequest,
)
from pymodbus.simulator import DataType, SimData, SimDevice

from energymon_pipeline.modbus.types import FunctionCode
from virtual_server.memory import ADDRESS_SPACE, DeviceMemory

__all__ = [
    "SCOPED_READS",
    "WRITE_FUNCTION_CODES",
    "AbsentUnitRequest",
    "Request",
    "answer_from_memory",
    "request_of",
    "whole_address_space",
]

#: Function codes that would change a device; the virtual server refuses them (exception 1).
WRITE_FUNCTION_CODES = frozenset({5, 6, 15, 16, 22, 23})


class Request(NamedTuple):
    """One request as it arrived on the wire (compares equal to a plain 4-tuple).

    `address`/`count` are the request's start and quantity; for single writes the count is 1;
    for function code 23 (read/write) they describe the write half; for function codes without
    an address (diagnostics, device identification) both are 0.
    """

    unit_id: int
    function_code: int
    address: int
    count: int


def request_of(pdu: ModbusPDU) -> Request:
    if isinstance(pdu, ReadWriteMultipleRegistersRequest):
        return Request(pdu.dev_id, pdu.function_code, pdu.write_address, pdu.write_count)
    if isinstance(pdu, MaskWriteRegisterRequest):
        return Request(pdu.dev_id, pdu.function_code, pdu.address, 1)
    count = pdu.count or len(pdu.bits) or len(pdu.registers)
    return Request(pdu.dev_id, pdu.function_code, pdu.address, count)


@dataclass(frozen=True, slots=True)
class _ReadScope:
    unit_id: int
    function_code: int
    address: int
    count: int


# The read being served by the current task (see the module docstring).
_current_read: ContextVar[_ReadScope | None] = ContextVar("virtual_server_read", default=None)


class _ScopedRead(ModbusPDU):
    """Runs pymodbus's own read handling with the decoded request published to the action."""

    async def datastore_update(self, context, device_id: int) -> ModbusPDU:
        token = _current_read.set(
            _ReadScope(device_id, self.function_code, self.address, self.count)
        )
        try:
            return await super().datastore_update(context, device_id)
        finally:
            _current_read.reset(token)


class _ReadCoils(_ScopedRead, ReadCoilsRequest):
    pass


class _ReadDiscreteInputs(_ScopedRead, ReadDiscreteInputsRequest):
    pass


class _ReadHoldingRegisters(_ScopedRead, ReadHoldingRegistersRequest):
    pass


class _ReadInputRegisters(_ScopedRead, ReadInputRegistersRequest):
    pass


SCOPED_READS: list[type[ModbusPDU]] = [
    _ReadCoils,
    _ReadDiscreteInputs,
    _ReadHoldingRegisters,
    _ReadInputRegisters,
]


class AbsentUnitRequest(ModbusPDU):
    """Stands in for a request to a unit id the server does not simulate: raising
    NoSuchIdException hands it to pymodbus's missing-device handling (silence or 0x0B)."""

    def __init__(self, request: ModbusPDU, delay_s: float) -> None:
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code
        self._delay_s = delay_s

    async def datastore_update(self, context, device_id: int) -> ModbusPDU:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        raise NoSuchIdException(f"unit id {device_id} is not simulated by this server")


def whole_address_space(action) -> SimDevice:
    """One device (id 0 = every unit id) whose four blocks cover addresses 0..65535, so every
    read and write reaches `action` instead of being refused by pymodbus's range check."""
    bits = [False] * ADDRESS_SPACE
    return SimDevice(
        0,
        simdata=(
            [SimData(0, values=bits, datatype=DataType.BITS)],
            [SimData(0, values=list(bits), datatype=DataType.BITS)],
            [SimData(0, count=ADDRESS_SPACE, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=ADDRESS_SPACE, values=0, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )


def answer_from_memory(
    devices: Mapping[int, DeviceMemory],
    function_code: int,
    start_address: int,
    registers: list[int],
) -> ExcCodes | None:
    """The SimDevice action's answer: refuse writes; for a read, the exception its unit's
    memory gives, or None after copying the values into `registers` (the block from
    `start_address`, which pymodbus then slices and returns)."""
    if function_code in WRITE_FUNCTION_CODES:
        return ExcCodes.ILLEGAL_FUNCTION
    read = _current_read.get()
    if read is None or read.function_code != function_code:
        return ExcCodes.DEVICE_FAILURE  # a read that bypassed _ScopedRead: a bug here
    table = FunctionCode(function_code)
    memory = devices.get(read.unit_id)
    if memory is None:  # removed after the request arrived
        raise NoSuchIdException(f"unit id {read.unit_id} is not simulated by this server")
    values = memory.answer(table, read.address, read.count)
    if isinstance(values, ExcCodes):
        return values
    # The caller does not await between this and pymodbus slicing the block, so concurrent
    # reads of other units cannot overwrite what is copied in.
    if table.is_bit:
        for address, bit in enumerate(values, start=read.address):
            word = address // 16 - start_address
            mask = 1 << (address % 16)
            registers[word] = registers[word] | mask if bit else registers[word] & ~mask
    else:
        first = read.address - start_address
        registers[first : first + len(values)] = values
    return None
