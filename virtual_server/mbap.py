"""Modbus TCP framing: the byte stream of one connection -> the requests it carries.

Every MBAP header is seven bytes: transaction id (2), protocol id (2, always 0), length (2,
the bytes that follow: unit id + PDU) and unit id (1). TCP does not keep a client's writes
apart, so one received chunk may hold several frames, or the end of one and the start of the
next; `FrameReader` keeps what is left over and returns every complete frame, in order.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["HEADER_SIZE", "MAX_LENGTH", "Frame", "FrameReader", "FramingError", "encode"]

HEADER_SIZE = 7
#: Largest allowed length field: unit id + a PDU of at most 253 bytes.
MAX_LENGTH = 254


class FramingError(ValueError):
    """The stream cannot be split into frames any more (protocol id not 0, a length field
    out of range): nothing after it can be trusted, so the connection is closed."""


class Frame(NamedTuple):
    transaction_id: int
    unit_id: int
    pdu: bytes


class FrameReader:
    """Collects received bytes; `feed()` returns the frames completed so far."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER_SIZE:
            transaction_id, protocol_id, length, unit_id = struct.unpack_from(">HHHB", self._buffer)
            if protocol_id != 0:
                raise FramingError(f"MBAP protocol id {protocol_id}, not 0 (Modbus)")
            if not 2 <= length <= MAX_LENGTH:
                raise FramingError(f"MBAP length {length} outside 2-{MAX_LENGTH}")
            end = HEADER_SIZE - 1 + length
            if len(self._buffer) < end:
                break
            frames.append(Frame(transaction_id, unit_id, bytes(self._buffer[HEADER_SIZE:end])))
            del self._buffer[:end]
        return frames


def encode(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    """The MBAP frame answering `transaction_id` with `pdu`."""
    return struct.pack(">HHHB", transaction_id, 0, len(pdu) + 1, unit_id) + pdu
