"""The simpler extension form: a device says what its registers hold; the server encodes it.

Encoding goes through `energymon_pipeline.modbus.decode.encode_value`, the exact inverse of
what the poller decodes with, so the simulator and the pipeline cannot disagree about word
or byte order.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.types import DataType, FunctionCode, Order
from virtual_server.memory import NO_VALUE_EXCEPTION, DeviceMemory

__all__ = ["Device", "Value", "as_float32", "publish"]

#: A value to publish, or None for "no value" (reads of it answer a Modbus exception).
Value = float | int | None


def as_float32(value: float) -> float:
    """`value` rounded to the nearest FLOAT32, so what a device remembers publishing is
    exactly what the poller decodes."""
    return struct.unpack(">f", struct.pack(">f", value))[0]


def publish(
    memory: DeviceMemory,
    values: Mapping[int, Value],
    data_type: DataType | int = DataType.FLOAT32,
    function_code: FunctionCode | int = FunctionCode.READ_INPUT_REGISTERS,
    word_order: Order | int = Order.BIG,
    byte_order: Order | int = Order.BIG,
    no_value_exception: int = NO_VALUE_EXCEPTION,
) -> None:
    """Write `values` (address -> value) into `memory`, all at once.

    Everything is encoded before anything is written, so a value the type cannot hold
    (ValueError naming it) leaves the memory as it was; a reader never sees half an update.
    A None value keeps its registers mapped without a value.
    """
    data_type = DataType(data_type)
    function_code = FunctionCode(function_code)
    if function_code.is_bit:
        raise ValueError("publish() writes registers: use function code 3 or 4, not 1 or 2")
    encoded: list[tuple[int, list[int] | None]] = []
    for address, value in sorted(values.items()):
        if value is None:
            encoded.append((address, None))
            continue
        try:
            encoded.append((address, encode_value(value, data_type, word_order, byte_order)))
        except ValueError as error:
            raise ValueError(f"address {address}: {error}") from None
    with memory.batch():
        for address, words in encoded:
            if words is None:
                memory.set_no_value(function_code, address, data_type.words, no_value_exception)
            else:
                memory.set_registers(function_code, address, words)


class Device:
    """One simulated or bridged device. Subclass it and override `values()`:

        class Thermometer(Device):
            data_type = DataType.FLOAT32        # the defaults: FLOAT32 input registers,
            function_code = FunctionCode.READ_INPUT_REGISTERS   # big-endian words and bytes
            def values(self):
                return {0: read_celsius()}      # address -> value; None = no value

    The server calls `update(memory)` once when it starts (so nothing reads zeros before the
    first tick) and then on every update tick, in a worker thread: `values()` may block on
    I/O. It should not raise for a source that is merely unreachable: return None for the
    values it could not get, so the poller records a gap. Override `update()` instead when
    the device spans several tables or types (see `RandomTestDevice`).
    """

    #: Name used in logs and by `python -m virtual_server --device`.
    name = "device"
    data_type: DataType = DataType.FLOAT32
    function_code: FunctionCode = FunctionCode.READ_INPUT_REGISTERS
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG

    def values(self) -> Mapping[int, Value]:
        raise NotImplementedError(
            f"{type(self).__name__} must override values() (or update()) to publish anything"
        )

    def update(self, memory: DeviceMemory) -> None:
        publish(
            memory,
            self.values(),
            self.data_type,
            self.function_code,
            self.word_order,
            self.byte_order,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
