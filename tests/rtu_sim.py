"""A Modbus RTU bus on a real pseudo-terminal pair, for tests: the code under test opens the
slave side (`path`) as its serial port, through pyserial; a responder thread on the master
side answers for the units on the bus with real RTU frames (unit id, PDU, CRC-16/MODBUS, low
byte first) and checks the CRC of every request. The CRC is computed here, not by pymodbus,
so a wrong CRC on either side fails the test.

Every unit answers FC 3/4 reads with `unit * 1000 + address` in each register (as
tests/gateway_sim.py). Units in `silent` never answer (a dead meter on the bus)."""

from __future__ import annotations

import os
import select
import struct
import threading
import time
import tty
from dataclasses import dataclass, field

WAIT_S = 10.0


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(body: bytes) -> bytes:
    """An RTU frame: the body and its CRC, low byte first."""
    return body + struct.pack("<H", crc16(body))


def word(unit: int, address: int) -> int:
    return (unit * 1000 + address) & 0xFFFF


@dataclass
class RtuBus:
    units: set[int]
    silent: set[int] = field(default_factory=set)
    delay_s: float = 0.005
    path: str = ""
    requests: list[tuple[int, int, int, int]] = field(default_factory=list)
    bad_crc: int = 0

    def start(self) -> RtuBus:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        os.close(self._master)
        os.close(self._slave)

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                buffer = b""  # a silence ends a frame (RTU's 3.5 character times)
                continue
            try:
                buffer += os.read(self._master, 256)
            except OSError:
                return
            # FC 1-4 requests are 8 bytes: unit, fc, address, count, CRC.
            while len(buffer) >= 8:
                request, buffer = buffer[:8], buffer[8:]
                self._answer(request)

    def _answer(self, request: bytes) -> None:
        (crc,) = struct.unpack("<H", request[6:8])
        if crc != crc16(request[:6]):
            self.bad_crc += 1
            return
        unit, fc, address, count = struct.unpack(">BBHH", request[:6])
        self.requests.append((unit, fc, address, count))
        if unit not in self.units or unit in self.silent:
            return
        time.sleep(self.delay_s)
        if fc in (3, 4):
            data = b"".join(struct.pack(">H", word(unit, address + i)) for i in range(count))
            body = bytes([unit, fc, len(data)]) + data
        else:
            body = bytes([unit, fc | 0x80, 1])
        os.write(self._master, frame(body))
