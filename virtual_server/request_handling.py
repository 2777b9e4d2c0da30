"""How the virtual server answers one request: a Modbus request PDU (function code and data,
as carried in an MBAP frame) -> the response PDU, from the `DeviceMemory` of its unit id.

Checked in the order the Modbus application protocol specification (v1.1b3, section 6 and
the server state diagram of 4.4) gives, so a third-party client gets what a real device
would send:

1. A unit id the server does not simulate gets no answer (a gateway whose device is absent:
   the client times out), or with `answer_unknown_units` exception 0x0B (gateway target
   device failed to respond), whatever the function code.
2. A function code other than the four reads (1 coils, 2 discrete inputs, 3 holding
   registers, 4 input registers) is answered with exception 1 (illegal function) under the
   request's function code | 0x80. Writes (5, 6, 15, 16, 22, 23) are among them: the server
   is read-only and nothing changes. So are diagnostics (8), device identification (0x2B)
   and the rest: the simulated meters do not implement them.
3. A read whose quantity is outside 1-125 registers or 1-2000 bits, or whose PDU is not
   exactly five bytes long, is answered with exception 3 (illegal data value).
4. A read running past address 65535, or touching an address the unit's memory does not map,
   is answered with exception 2 (illegal data address); one touching an address without a
   value with that address's no-value exception (0x0B by default).

pymodbus 3.16.1's server answered items 2 and 3 differently (exception 1 under function code
0x80 for a quantity it could not decode) and answered only the first of two requests that
arrived in one TCP segment, so the server no longer uses it: `virtual_server.mbap` splits the
byte stream into frames, `virtual_server.server` runs the connections, and this module is a
pure function of the request and the memories, tested without a network.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import NamedTuple

from pymodbus.constants import ExcCodes

from energymon_pipeline.modbus.types import FunctionCode
from virtual_server.memory import ADDRESS_SPACE, DeviceMemory

__all__ = [
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "READ_FUNCTION_CODES",
    "WRITE_FUNCTION_CODES",
    "Request",
    "answer",
    "exception_pdu",
    "request_of",
]

#: The function codes the virtual server serves: reads of the four tables.
READ_FUNCTION_CODES = frozenset(int(code) for code in FunctionCode)
#: Function codes that would change a device; the virtual server refuses them (exception 1).
WRITE_FUNCTION_CODES = frozenset({5, 6, 15, 16, 22, 23})
#: The specification's limits of one read (a response PDU holds at most 253 bytes).
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000


class Request(NamedTuple):
    """One request as it arrived on the wire (compares equal to a plain 4-tuple).

    `address`/`count` are the request's start and quantity as sent, even when they are not
    allowed (a read of 0 registers is logged with count 0); for single writes (5, 6) and
    mask writes (22) the count is 1; for function code 23 (read/write) they describe the
    write half; for a function code without an address (diagnostics, device identification,
    unknown codes) or a PDU too short to hold them, both are 0.
    """

    unit_id: int
    function_code: int
    address: int
    count: int


def request_of(unit_id: int, pdu: bytes) -> Request:
    """The request a PDU (function code first) carries, for the request log."""
    function_code = pdu[0]
    data = pdu[1:]
    address = count = 0
    if function_code == 23 and len(data) >= 8:
        address, count = struct.unpack(">HH", data[4:8])
    elif function_code in (5, 6, 22) and len(data) >= 2:
        (address,) = struct.unpack(">H", data[:2])
        count = 1
    elif (function_code in READ_FUNCTION_CODES or function_code in (15, 16)) and len(data) >= 4:
        address, count = struct.unpack(">HH", data[:4])
    return Request(unit_id, function_code, address, count)


def exception_pdu(function_code: int, code: int) -> bytes:
    """The exception response to a request with `function_code`."""
    return bytes(((function_code | 0x80) & 0xFF, int(code)))


def answer(
    devices: Mapping[int, DeviceMemory],
    unit_id: int,
    pdu: bytes,
    *,
    answer_unknown_units: bool = False,
) -> bytes | None:
    """The response PDU to the request PDU `pdu` (function code first, at least one byte) for
    `unit_id`, or None for no answer at all (an absent unit id). See the module docstring
    for the order of the checks."""
    function_code = pdu[0]
    memory = devices.get(unit_id)
    if memory is None:
        if answer_unknown_units:
            return exception_pdu(function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        return None
    if function_code not in READ_FUNCTION_CODES:
        return exception_pdu(function_code, ExcCodes.ILLEGAL_FUNCTION)
    table = FunctionCode(function_code)
    limit = MAX_READ_BITS if table.is_bit else MAX_READ_REGISTERS
    if len(pdu) != 5:
        return exception_pdu(function_code, ExcCodes.ILLEGAL_VALUE)
    address, count = struct.unpack(">HH", pdu[1:5])
    if not 1 <= count <= limit:
        return exception_pdu(function_code, ExcCodes.ILLEGAL_VALUE)
    if address + count > ADDRESS_SPACE:
        return exception_pdu(function_code, ExcCodes.ILLEGAL_ADDRESS)
    values = memory.answer(table, address, count)
    if isinstance(values, ExcCodes):
        return exception_pdu(function_code, values)
    if table.is_bit:
        packed = bytearray((count + 7) // 8)
        for offset, bit in enumerate(values):
            if bit:
                packed[offset // 8] |= 1 << (offset % 8)
        return bytes((function_code, len(packed))) + bytes(packed)
    return bytes((function_code, 2 * count)) + struct.pack(f">{count}H", *values)
