"""The `test` device: the original virtual meter's random values.

It serves what the registry's seeded virtual meter (type `virtual_modbustcp`: INT16 at
holding register 0, big-endian) reads, plus the original base class's FLOAT32 at input
registers 0-1, so a fresh install polls real (random) values with no physical meter.
"""

from __future__ import annotations

import random

from energymon_pipeline.modbus.types import DataType, FunctionCode
from virtual_server.devices.base import Device, as_float32, publish
from virtual_server.memory import DeviceMemory

__all__ = ["RandomTestDevice"]


class RandomTestDevice(Device):
    """A random INT16 at holding register 0 and a random FLOAT32 (0-1000) at input registers
    0-1, both big-endian words and bytes; new values on every update.

    `published` holds what the last update wrote: {(function_code, address): value}.
    """

    name = "test"

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self.published: dict[tuple[int, int], float | int] = {}

    def update(self, memory: DeviceMemory) -> None:
        whole = self._random.randint(-(2**15), 2**15 - 1)
        real = as_float32(self._random.uniform(0.0, 1000.0))
        with memory.batch():
            publish(memory, {0: whole}, DataType.INT16, FunctionCode.READ_HOLDING_REGISTERS)
            publish(memory, {0: real}, DataType.FLOAT32, FunctionCode.READ_INPUT_REGISTERS)
        self.published = {
            (int(FunctionCode.READ_HOLDING_REGISTERS), 0): whole,
            (int(FunctionCode.READ_INPUT_REGISTERS), 0): real,
        }
