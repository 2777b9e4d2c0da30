"""The vocabulary shared by planning, reading and decoding.

The integer values are the original system's codes (see the registry tables), so a row read from
the database maps onto these enums without translation. This module imports neither pymodbus nor
the registry, so the simulator, the CLI and the benchmarks can use it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class DataType(IntEnum):
    """`registers.data_type`: 1-3 are the original's codes, 4-8 are extensions."""

    INT16 = 1
    INT32 = 2
    FLOAT32 = 3
    UINT16 = 4
    UINT32 = 5
    INT64 = 6
    UINT64 = 7
    FLOAT64 = 8

    @property
    def words(self) -> int:
        """16-bit registers one value occupies."""
        return _WORDS[self]


_WORDS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
}


class FunctionCode(IntEnum):
    """`registers.function_code`: only reads; the pipeline never writes to a device."""

    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4

    @property
    def is_bit(self) -> bool:
        return self in (FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS)


class Order(IntEnum):
    """`registers.word_order` / `registers.byte_order`."""

    LITTLE = 1
    BIG = 2


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """One configured value of a meter type (one row of `registers`).

    `address` is the zero-based protocol address, sent as is. For coils and discrete inputs
    `data_type`, `word_order` and `byte_order` are ignored: one bit is one value (0 or 1).
    """

    measurement: str
    address: int
    data_type: DataType = DataType.FLOAT32
    function_code: FunctionCode = FunctionCode.READ_INPUT_REGISTERS
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    min_value: float | None = None
    max_value: float | None = None
    register_id: int | None = None
    #: A counter (e.g. energy): the rollup job sums its non-negative increments.
    cumulative: bool = False
    #: A live scale factor (SunSpec's `sunssf`): the address of an INT16 register of the same
    #: function code holding a power of ten the device may change at any time. The value is
    #: raw * scale * 10**sf + offset with sf from the same response (the planner keeps both in
    #: one request); 0x8000 there (or |sf| > 10) means the value is not known.
    scale_factor_address: int | None = None
    #: The raw value (the value's words as one unsigned big-endian integer) the device sends
    #: for "not implemented" (SunSpec: 0x8000, 0xFFFF, 0x80000000, ...). Such a value, a NaN
    #: of a float type, or a value whose scale factor is not known, is no reading at all.
    not_implemented: int | None = None

    @property
    def width(self) -> int:
        """Registers (or bits, for FC 1/2) this value occupies."""
        return 1 if self.function_code.is_bit else self.data_type.words

    @property
    def end(self) -> int:
        """One past the last address this value occupies."""
        return self.address + self.width

    @property
    def span(self) -> tuple[int, int]:
        """[first, end) addresses one request must cover to decode this value: the value
        itself and, with a live scale factor, that register too."""
        sf = self.scale_factor_address
        if sf is None:
            return self.address, self.end
        return min(self.address, sf), max(self.end, sf + 1)


MAX_REGISTERS_PER_REQUEST = 125
"""The Modbus limit for one FC 3/4 read; `max_registers_per_request` may not exceed it."""
MAX_BITS_PER_REQUEST = 2000
"""The Modbus limit for one FC 1/2 read."""


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """Per-meter request planning overrides (None in the registry means the default)."""

    max_gap: int = 10
    max_registers_per_request: int = MAX_REGISTERS_PER_REQUEST
    max_bits_per_request: int = MAX_BITS_PER_REQUEST
    single_register_reads: bool = False


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: `count` registers (or bits) from `address` with one function code,
    covering the values in `registers` (sorted by address)."""

    function_code: FunctionCode
    address: int
    count: int
    registers: tuple[RegisterSpec, ...] = field(default_factory=tuple)

    @property
    def end(self) -> int:
        return self.address + self.count


PARITIES = ("N", "E", "O")
"""Serial parity: none, even, odd (pyserial's codes)."""


@dataclass(frozen=True, slots=True)
class SerialLine:
    """A local serial port carrying Modbus RTU, with its line settings."""

    port: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to talk to one meter (the connection half of an `energy_meters` row).

    The meter sits on a link: a Modbus TCP endpoint (host, port, framer) or, when `serial` is
    set, a local serial port (host and port are then unused). Every meter with the same
    `link_key` shares the link's connections; `max_connections`, `inter_request_delay_s` and
    `connect_delay_s` are the link's settings (see modbus.links for how one value is chosen
    when its meters disagree)."""

    host: str
    port: int
    unit_id: int
    framer: str = "socket"
    timeout_s: float = 3.0
    retries: int = 1
    connect_delay_s: float = 0.0
    request_delay_s: float = 0.0
    serial: SerialLine | None = None
    #: None: not set on this meter's row (the link's other rows, or 1).
    max_connections: int | None = None
    inter_request_delay_s: float = 0.0

    @property
    def link_key(self) -> str:
        """The link's identity: `serial:<path>` or `tcp:<host>:<port>:<framer>`."""
        if self.serial is not None:
            return f"serial:{self.serial.port}"
        return f"tcp:{self.host.strip().lower()}:{self.port}:{self.framer}"

    @property
    def link_name(self) -> str:
        """The link for a person: the serial port, or host:port."""
        if self.serial is not None:
            return self.serial.port
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.link_name} unit {self.unit_id}"


SplitKey = tuple[int, int]
"""(function code, address) of a value that must be read on its own."""


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """Everything needed to poll one meter: its row of `energy_meters` and the registers of
    its type, already validated."""

    meter_id: int
    endpoint: Endpoint
    meter_type: str
    description: str | None
    registers: tuple[RegisterSpec, ...]
    plan_options: PlanOptions = field(default_factory=PlanOptions)
    #: Values this meter's device refused to have read in a merged request (exception 2),
    #: learnt by earlier runs and kept in the registry: each is read alone from the start.
    learnt_splits: frozenset[SplitKey] = frozenset()
