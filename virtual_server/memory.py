"""What one simulated unit id holds: `DeviceMemory`, four sparse, read-only tables.

- Sparse maps. A real meter answers exception 2 (illegal data address) to a read that touches
  any unmapped register, even when its neighbours exist; the pipeline's split fallback depends
  on that. So an address that is not in a table is unmapped, and `DeviceMemory.answer` says
  which exception a read touching it gets.
- "No value". A bridge whose source failed must not publish 0.0 (the original did, and it
  corrupted energy totals). `DeviceMemory.set_no_value` keeps such addresses mapped but
  valueless: a read touching them is answered with an exception (default 0x0B, gateway
  target device failed to respond), so the poller records a gap. Not exception 2: that one
  means "this address does not exist", and the poller would learn to split its reads.

Addresses are zero-based protocol addresses, as sent on the wire.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping

from pymodbus.constants import ExcCodes

from energymon_pipeline.modbus.types import FunctionCode

__all__ = ["ADDRESS_SPACE", "NO_VALUE_EXCEPTION", "DeviceMemory"]

#: What a read of an address holding no value is answered with: the bridged device (or the
#: simulation) had nothing to give, which is a gateway's "target device failed to respond".
NO_VALUE_EXCEPTION = int(ExcCodes.GATEWAY_NO_RESPONSE)

#: Addresses 0..65535 of each table.
ADDRESS_SPACE = 65536
_TABLE_NAMES = {
    FunctionCode.READ_COILS: "coil",
    FunctionCode.READ_DISCRETE_INPUTS: "discrete input",
    FunctionCode.READ_HOLDING_REGISTERS: "holding register",
    FunctionCode.READ_INPUT_REGISTERS: "input register",
}


def _table(function_code: int, *, bits: bool | None = None) -> FunctionCode:
    """The table a read function code addresses; `bits` restricts it to bit or word tables."""
    try:
        table = FunctionCode(function_code)
    except ValueError:
        raise ValueError(
            f"function code {function_code} does not name a table: use 1 (coils), "
            "2 (discrete inputs), 3 (holding registers) or 4 (input registers)"
        ) from None
    if bits is not None and table.is_bit != bits:
        wanted = "1 or 2 (bits)" if bits else "3 or 4 (16-bit registers)"
        raise ValueError(f"function code {function_code} is the wrong table here: use {wanted}")
    return table


def _check_span(table: FunctionCode, address: int, count: int) -> None:
    if not isinstance(address, int) or not 0 <= address < ADDRESS_SPACE:
        raise ValueError(f"{_TABLE_NAMES[table]} address {address!r} is outside 0..65535")
    if address + count > ADDRESS_SPACE:
        raise ValueError(
            f"{count} {_TABLE_NAMES[table]}s from address {address} run past address 65535"
        )


class DeviceMemory:
    """What one simulated unit id holds: four separate sparse tables, address -> value.

    Coils and discrete inputs hold bools, holding and input registers hold 16-bit words
    (0..65535). An address that is not in a table is unmapped: any read that touches it is
    answered with exception 2, like a real meter. Tables are addressed by their read function
    code (1 coils, 2 discrete inputs, 3 holding registers, 4 input registers).

    An address may also be mapped but hold no value (`set_no_value`): reads touching it are
    answered with an exception code instead of data; setting a value there again clears it.

    All methods take one lock, so tests may change values from their own thread while the
    server answers from its event loop thread; each read sees the tables either before or
    after a whole `set_*` call, or a whole `with memory.batch():` block of them.
    """

    def __init__(
        self,
        *,
        coils: Mapping[int, bool | int] | None = None,
        discrete_inputs: Mapping[int, bool | int] | None = None,
        holding_registers: Mapping[int, int] | None = None,
        input_registers: Mapping[int, int] | None = None,
    ) -> None:
        # Re-entrant, so `batch()` can hold it across several set_* calls.
        self._lock = threading.RLock()
        self._tables: dict[FunctionCode, dict[int, int | bool]] = {fc: {} for fc in FunctionCode}
        # address -> exception code, for addresses that are mapped but hold no value.
        self._no_value: dict[FunctionCode, dict[int, int]] = {fc: {} for fc in FunctionCode}
        for fc, initial in (
            (FunctionCode.READ_COILS, coils),
            (FunctionCode.READ_DISCRETE_INPUTS, discrete_inputs),
            (FunctionCode.READ_HOLDING_REGISTERS, holding_registers),
            (FunctionCode.READ_INPUT_REGISTERS, input_registers),
        ):
            for address, value in sorted((initial or {}).items()):
                if fc.is_bit:
                    self.set_bits(fc, address, [value])
                else:
                    self.set_registers(fc, address, [value])

    def set_registers(self, function_code: int, address: int, words: Iterable[int]) -> None:
        """Map `words` at `address`, `address + 1`, ... of table 3 or 4 (mapped or not)."""
        table = _table(function_code, bits=False)
        values = list(words)
        _check_span(table, address, len(values))
        for offset, word in enumerate(values):
            if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
                raise ValueError(
                    f"{_TABLE_NAMES[table]} {address + offset}: {word!r} is not a 16-bit word "
                    "(an int in 0..65535)"
                )
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for offset, word in enumerate(values):
                target[address + offset] = word
                no_value.pop(address + offset, None)

    def set_bits(self, function_code: int, address: int, bits: Iterable[bool | int]) -> None:
        """Map `bits` at `address`, `address + 1`, ... of table 1 or 2 (0/1 or bools)."""
        table = _table(function_code, bits=True)
        values = list(bits)
        _check_span(table, address, len(values))
        for offset, bit in enumerate(values):
            if bit not in (0, 1):
                raise ValueError(
                    f"{_TABLE_NAMES[table]} {address + offset}: {bit!r} is not a bit "
                    "(True/False or 0/1)"
                )
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for offset, bit in enumerate(values):
                target[address + offset] = bool(bit)
                no_value.pop(address + offset, None)

    def set_no_value(
        self,
        function_code: int,
        address: int,
        count: int = 1,
        exception_code: int = NO_VALUE_EXCEPTION,
    ) -> None:
        """Keep `count` addresses from `address` mapped but without a value: a read touching
        any of them is answered with `exception_code` (a read that also touches an unmapped
        address is still exception 2). Setting a value there again clears this."""
        table = _table(function_code)
        if count < 1:
            raise ValueError(f"cannot clear {count} {_TABLE_NAMES[table]}s: count must be >= 1")
        _check_span(table, address, count)
        try:
            code = int(ExcCodes(exception_code))
        except ValueError:
            allowed = ", ".join(str(int(c)) for c in ExcCodes)
            raise ValueError(
                f"exception code {exception_code!r} is not a Modbus exception; allowed: {allowed}"
            ) from None
        if code == ExcCodes.ILLEGAL_ADDRESS:
            raise ValueError(
                "exception code 2 means the address does not exist: use unmap() for that"
            )
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for cleared in range(address, address + count):
                target.pop(cleared, None)
                no_value[cleared] = code

    @contextlib.contextmanager
    def batch(self):
        """Hold the lock across several set_* calls, so no read sees half of an update
        (a meter's power and energy from different moments)."""
        with self._lock:
            yield self

    def unmap(self, function_code: int, address: int, count: int = 1) -> None:
        """Make `count` addresses from `address` unmapped again (reads of them: exception 2)."""
        table = _table(function_code)
        if count < 1:
            raise ValueError(f"cannot unmap {count} {_TABLE_NAMES[table]}s: count must be >= 1")
        _check_span(table, address, count)
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for unmapped in range(address, address + count):
                target.pop(unmapped, None)
                no_value.pop(unmapped, None)

    def clear(self) -> None:
        """Unmap every address of every table."""
        with self._lock:
            for target in (*self._tables.values(), *self._no_value.values()):
                target.clear()

    def answer(
        self, function_code: int, address: int, count: int
    ) -> list[int] | list[bool] | ExcCodes:
        """What a read of `count` addresses from `address` is answered with: the values, or
        the exception code (2 when any address is unmapped, else the no-value code of the
        first address holding no value)."""
        table = _table(function_code)
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            values: list = []
            refusal: int | None = None
            for current in range(address, address + count):
                if current in target:
                    values.append(target[current])
                elif current in no_value:
                    refusal = no_value[current] if refusal is None else refusal
                else:
                    return ExcCodes.ILLEGAL_ADDRESS
            return values if refusal is None else ExcCodes(refusal)

    def read(self, function_code: int, address: int, count: int) -> list[int] | list[bool] | None:
        """The values at `address`..`address + count - 1`, or None if any of them is unmapped
        or holds no value."""
        outcome = self.answer(function_code, address, count)
        return None if isinstance(outcome, ExcCodes) else outcome

    def mapped(self, function_code: int) -> dict[int, int | bool]:
        """A copy of one table: address -> value for every address that holds a value."""
        table = _table(function_code)
        with self._lock:
            return dict(self._tables[table])

    def without_value(self, function_code: int) -> dict[int, int]:
        """Address -> exception code for every address that is mapped but holds no value."""
        table = _table(function_code)
        with self._lock:
            return dict(self._no_value[table])
