"""Register words to float64 values, exactly and in bulk, and back again.

Why this module exists instead of pymodbus's payload helpers: those helpers moved or vanished
between pymodbus releases (BinaryPayloadDecoder is gone in 3.x), and the byte layout is small
enough to own. Owning it also lets the virtual server encode with `encode_value`, so the
simulator and the pipeline cannot disagree about word or byte order.

Conventions (the original system's, so a register row it read gives the same value here):

- A word is a register as pymodbus returns it: a Python int 0..65535 read big-endian off the
  wire, so 0x4366 stands for the bytes 43 66.
- Word order BIG: the first word is the most significant. LITTLE: the word sequence is
  reversed before combining (all four words for 64-bit types). Word order does not apply to
  16-bit types.
- Byte order LITTLE: the two bytes inside each word are swapped.
- Coils and discrete inputs (function codes 1 and 2) are one bit per value: 0.0 or 1.0; any
  non-zero input counts as 1.

Every value comes out as float64, times `RegisterSpec.scale` plus `RegisterSpec.offset`.
NaN and +/-inf stay NaN and +/-inf (validation drops them later; turning them into 0 corrupted
energy totals in the original). INT64/UINT64 values beyond 2**53 in magnitude are rounded to
the nearest float64 (relative error below 2**-53); energy counters do not get there, and one
output dtype keeps the DataFrame and InfluxDB fields uniform.

Speed: word order and byte order are both permutations of a value's bytes, so `BlockDecoder`
works out, once per request, a byte gather index per register and groups registers by data
type. Decoding is then one gather and one big-endian view per data type present, with no
Python work per register. `python -m bench.micro decode` measures the throughput (one core).
"""

from __future__ import annotations

import math
import operator
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import SupportsFloat, SupportsIndex

import numpy as np

from energymon_pipeline.modbus.types import DataType, FunctionCode, Order, ReadRequest

__all__ = [
    "BlockDecoder",
    "block_decoder",
    "decode_block",
    "decode_values",
    "encode_value",
]

# numpy dtype (without the byte-order prefix) of each type's big-endian byte image.
_NUMPY_CODE: dict[DataType, str] = {
    DataType.INT16: "i2",
    DataType.UINT16: "u2",
    DataType.INT32: "i4",
    DataType.UINT32: "u4",
    DataType.FLOAT32: "f4",
    DataType.INT64: "i8",
    DataType.UINT64: "u8",
    DataType.FLOAT64: "f8",
}
_STRUCT_CODE: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT64: "d",
}
_FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64})
_INT_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}

WordsLike = Sequence[int] | np.ndarray


def _data_type(value: int) -> DataType:
    try:
        return DataType(value)
    except ValueError:
        allowed = ", ".join(f"{t.value} {t.name}" for t in DataType)
        raise ValueError(f"data_type {value!r} is not supported; allowed: {allowed}") from None


def _order(value: int, name: str) -> Order:
    try:
        return Order(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not supported; allowed: 1 LITTLE, 2 BIG") from None


def _as_words(words: WordsLike) -> np.ndarray:
    """A 1-D uint16 view or copy of `words`, refusing anything that is not a 16-bit word.

    Range-checking here (rather than letting astype wrap) turns a caller's mix-up, such as
    passing already-decoded values, into an error instead of plausible garbage.
    """
    array = np.asarray(words)
    if array.ndim != 1:
        raise ValueError(f"register words must be a 1-D sequence, got shape {array.shape}")
    if array.dtype == np.uint16:
        return array
    if array.size == 0 or array.dtype.kind == "b":
        return array.astype(np.uint16)
    if array.dtype.kind not in "iu":
        raise ValueError(f"register words must be integers 0..65535, got dtype {array.dtype}")
    if np.any(array >> 16):  # one pass catches both negatives and values above 0xFFFF
        bad = array[(array < 0) | (array > 0xFFFF)][0]
        raise ValueError(f"register word {bad} is outside 0..65535")
    return array.astype(np.uint16)


def _as_bits(bits: WordsLike) -> np.ndarray:
    array = np.asarray(bits)
    if array.ndim != 1:
        raise ValueError(f"coil/discrete input bits must be a 1-D sequence, got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"coil/discrete input bits must be booleans or 0/1, got {array.dtype}")
    return array if array.dtype == np.bool_ else array != 0


def _byte_image(words: np.ndarray) -> np.ndarray:
    """The bytes as they came off the wire: each word big-endian."""
    return words.astype(">u2").view(np.uint8)


def _byte_pattern(data_type: DataType, word_order: Order, byte_order: Order) -> np.ndarray:
    """Where each byte of a value's big-endian image sits in its own wire bytes.

    Word order and byte order are both just permutations of the 2*width bytes, so one gather
    with this pattern turns any layout into the big-endian image numpy reads in place.
    """
    sources = range(data_type.words)
    if word_order is Order.LITTLE:
        sources = reversed(sources)
    pair = (0, 1) if byte_order is Order.BIG else (1, 0)
    return np.array([2 * word + b for word in sources for b in pair], dtype=np.intp)


def _to_float64(values: np.ndarray, out: np.ndarray | None = None, where=slice(None)):
    """Cast to float64. Signalling NaNs in FLOAT32 data set the FPU's invalid flag on the way;
    they still come out as NaN, which is wanted, so that flag is no warning here."""
    if out is None:
        out = np.empty(values.shape, dtype=np.float64)
    if values.dtype.kind == "f" and values.dtype.itemsize == 4:
        with np.errstate(invalid="ignore"):
            out[where] = values
    else:
        out[where] = values
    return out


def decode_values(
    words: WordsLike,
    data_type: DataType | int,
    word_order: Order | int = Order.BIG,
    byte_order: Order | int = Order.BIG,
) -> np.ndarray:
    """Decode back-to-back values of one type (no scale/offset): len(words)/width floats.

    The fast path for benchmarks and bulk tools; `decode_block` is what the pipeline uses.
    """
    data_type = _data_type(data_type)
    word_order = _order(word_order, "word_order")
    byte_order = _order(byte_order, "byte_order")
    array = _as_words(words)
    width = data_type.words
    if array.size % width:
        raise ValueError(
            f"{array.size} words is not a whole number of {data_type.name} values "
            f"({width} words each)"
        )
    matrix = array.reshape(-1, width)
    if width > 1 and word_order is Order.LITTLE:
        matrix = matrix[:, ::-1]
    # Storing each word big-endian, or little-endian (exactly "swap the two bytes"), lays out
    # each row as the value's big-endian image without a byte-level gather.
    image = np.ascontiguousarray(matrix, dtype=">u2" if byte_order is Order.BIG else "<u2")
    return _to_float64(image.view(">" + _NUMPY_CODE[data_type]).reshape(-1))


class BlockDecoder:
    """How to decode one `ReadRequest`, worked out once and reused every poll.

    Grouping and building the gather indices is the only per-register Python work; it happens
    here so `decode` is one byte gather per data type present (at most 8), whatever the mix
    of word and byte orders.
    """

    __slots__ = ("request", "_bits", "_groups", "_scale", "_offset", "_live", "_sentinels",
                 "absent_possible", "_kept")  # fmt: skip

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        function_code = FunctionCode(request.function_code)
        self._bits = function_code.is_bit
        # data type (None for bits) -> (positions in request.registers, gather rows)
        grouped: dict[DataType | None, tuple[list[int], list[np.ndarray | int]]] = {}
        patterns: dict[tuple[DataType, Order, Order], np.ndarray] = {}
        scales: list[float] = []
        offsets: list[float] = []
        live: list[tuple[int, int]] = []  # (position, scale factor word offset)
        sentinels: dict[int, tuple[list[int], list[np.ndarray], list[int]]] = {}
        for position, register in enumerate(request.registers):
            if register.function_code != function_code:
                raise ValueError(
                    f"register {register.measurement!r} uses function code "
                    f"{int(register.function_code)}, but the request reads function code "
                    f"{int(function_code)}"
                )
            start = register.address - request.address
            if start < 0 or register.end > request.end:
                raise ValueError(
                    f"register {register.measurement!r} occupies addresses {register.address}.."
                    f"{register.end - 1}, outside the request's {request.address}.."
                    f"{request.end - 1}"
                )
            if self._bits:
                key, row = None, start
            else:
                layout = _layout(register.data_type, register.word_order, register.byte_order)
                pattern = patterns.get(layout)
                if pattern is None:
                    pattern = patterns[layout] = _byte_pattern(*layout)
                key, row = layout[0], 2 * start + pattern
                _live_hooks(register, request, position, row, live, sentinels)
            positions, rows = grouped.setdefault(key, ([], []))
            positions.append(position)
            rows.append(row)
            scales.append(float(register.scale))
            offsets.append(float(register.offset))

        count = len(request.registers)
        self._groups: list[tuple[np.ndarray | slice, np.ndarray, np.dtype | None]] = []
        for key, (positions, rows) in grouped.items():
            where = slice(None) if len(positions) == count else np.array(positions, np.intp)
            if key is None:
                self._groups.append((where, np.array(rows, dtype=np.intp), None))
            else:
                view = np.dtype(">" + _NUMPY_CODE[key])
                self._groups.append((where, np.stack(rows).astype(np.intp), view))
        self._scale = None if all(s == 1.0 for s in scales) else np.array(scales)
        self._offset = None if all(o == 0.0 for o in offsets) else np.array(offsets)
        self._live = (
            (np.array([p for p, _ in live], np.intp), np.array([o for _, o in live], np.intp))
            if live
            else None
        )
        self._sentinels = [
            (np.array(p, np.intp), np.stack(r).astype(np.intp), np.dtype(f">u{2 * w}"),
             np.array(v, dtype=np.uint64))
            for w, (p, r, v) in sentinels.items()
        ]  # fmt: skip
        #: None, or a mask of the registers whose value may be absent (decoded as NaN, see
        #: RegisterSpec.not_implemented): `present` leaves those out.
        self.absent_possible = None
        self._kept: dict[bytes, tuple] = {}  # which values were present -> their registers
        maybe = [r.not_implemented is not None or r.scale_factor_address is not None
                 for r in request.registers]  # fmt: skip
        if any(maybe):
            self.absent_possible = np.array(maybe, dtype=bool)

    def decode(self, words: WordsLike) -> np.ndarray:
        """One float64 per `request.registers` entry, in that order.

        `words` starts at `request.address`: registers for FC 3/4, bits for FC 1/2. Extra
        trailing items (pymodbus pads bits to whole bytes) are ignored.
        """
        array = _as_bits(words) if self._bits else _as_words(words)
        if array.size < self.request.count:
            unit = "bits" if self._bits else "registers"
            raise ValueError(
                f"got {array.size} {unit} for a read of {self.request.count} {unit} at "
                f"address {self.request.address} (function code "
                f"{int(self.request.function_code)})"
            )
        out = np.empty(len(self.request.registers), dtype=np.float64)
        if self._bits:
            for where, index, _ in self._groups:
                out[where] = array[index]
        else:
            image = _byte_image(array[: self.request.count])
            for where, index, view in self._groups:
                # image[index] is a fresh C-contiguous (n, 2*width) byte matrix: one value a row
                _to_float64(image[index].view(view).reshape(-1), out, where)
        if self._scale is not None:
            out *= self._scale
        if self._live is not None or self._sentinels:
            self._apply_live(array, out)
        if self._offset is not None:
            out += self._offset
        return out

    def _apply_live(self, words: np.ndarray, out: np.ndarray) -> None:
        """Live scale factors (from `words`, this response) and not-implemented values (NaN)."""
        image = _byte_image(words[: self.request.count])
        for positions, index, view, values in self._sentinels:
            raw = image[index].view(view).reshape(-1).astype(np.uint64)
            out[positions[raw == values]] = np.nan
        if self._live is not None:
            positions, offsets = self._live
            exponent = words[offsets].astype(np.int16).astype(np.float64)
            exponent[(exponent == -32768) | (np.abs(exponent) > 10)] = np.nan
            value = out[positions]
            # Dividing by an exact power of ten keeps 2345 at sf -1 exactly 234.5.
            with np.errstate(invalid="ignore"):
                out[positions] = np.where(
                    exponent < 0, value / 10.0**-exponent, value * 10.0**exponent
                )

    def present(self, values: np.ndarray) -> tuple[tuple, np.ndarray]:
        """(registers, values) of `decode`'s output without the absent values (NaN where
        `absent_possible`): a not-implemented value is no reading, not a dropped one."""
        if self.absent_possible is None:
            return self.request.registers, values
        keep = ~(self.absent_possible & np.isnan(values))
        # A device leaves the same points out sample after sample: the same mask gives the
        # same tuple object, which keeps per-tuple caches downstream hitting by identity.
        key = keep.tobytes()
        registers = self._kept.get(key)
        if registers is None:
            if len(self._kept) >= 64:
                self._kept.clear()
            registers = self._kept[key] = tuple(
                r for r, k in zip(self.request.registers, keep.tolist(), strict=True) if k
            )
        return registers, values[keep]


def _live_hooks(register, request, position, row, live, sentinels) -> None:
    """Note `register`'s live scale factor and not-implemented value, if it has them."""
    sf = register.scale_factor_address
    if sf is not None:
        if not request.address <= sf < request.end:
            raise ValueError(
                f"register {register.measurement!r} has its scale factor at address {sf}, "
                f"outside the request's {request.address}..{request.end - 1}"
            )
        live.append((position, sf - request.address))
    if register.not_implemented is not None:
        positions, rows, values = sentinels.setdefault(register.data_type.words, ([], [], []))
        positions.append(position)
        rows.append(row)
        values.append(register.not_implemented)


def _layout(data_type: DataType, word_order: Order, byte_order: Order):
    # A RegisterSpec's codes are enums already, checked where the row entered (the registry's
    # validation, the probe's options); only word order is normalised for one-word types.
    return data_type, word_order if data_type.words > 1 else Order.BIG, byte_order


# Decoders keyed by id(request), each entry holding its request, so the id cannot be reused by
# another object while the entry lives; the identity check makes a stale hit impossible.
# Identity first: a meter's plan is kept for a whole read (plan.MeterPlanner), so the same
# request objects come back every sample of a run, and an identity hit costs no hashing. On an
# identity miss (a new read's plans, another meter) the decoder is looked up by the request's
# value: meters of one type plan equal requests, and hashing a request (a few microseconds) is
# far cheaper than compiling its decoder, so each distinct request is compiled once per process
# however many meters share it, and a fleet with more requests than the identity cache holds
# does not recompile every request every poll.
_CACHE_SIZE = 16384  # a few MB at most; covers fleets of several thousand meters
_cache: OrderedDict[int, tuple[ReadRequest, BlockDecoder]] = OrderedDict()
_shared: OrderedDict[ReadRequest, BlockDecoder] = OrderedDict()
_cache_lock = threading.Lock()


def block_decoder(request: ReadRequest) -> BlockDecoder:
    """The (cached) decoder for `request`."""
    key = id(request)
    with _cache_lock:
        entry = _cache.get(key)
        if entry is not None and entry[0] is request:
            _cache.move_to_end(key)
            return entry[1]
        decoder = _shared.get(request)
    if decoder is None:
        decoder = BlockDecoder(request)
    with _cache_lock:
        _shared[request] = decoder
        _shared.move_to_end(request)
        while len(_shared) > _CACHE_SIZE:
            _shared.popitem(last=False)
        _cache[key] = (request, decoder)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return decoder


def decode_block(request: ReadRequest, words: WordsLike) -> np.ndarray:
    """Decode the response to `request`: one float64 per `request.registers` entry, in order.

    `words` are the registers (FC 3/4) or bits (FC 1/2) read from `request.address` on. Raises
    ValueError when fewer than `request.count` arrived, or a register lies outside the request.
    """
    return block_decoder(request).decode(words)


def _whole_number(value: SupportsIndex | SupportsFloat, data_type: DataType) -> int:
    try:
        return operator.index(value)  # int, bool, numpy integers
    except TypeError:
        pass
    number = float(value)
    if not math.isfinite(number) or not number.is_integer():
        raise ValueError(
            f"{data_type.name} needs a whole number, got {value!r}; round it before encoding"
        )
    return int(number)


def encode_value(
    value: SupportsIndex | SupportsFloat,
    data_type: DataType | int,
    word_order: Order | int = Order.BIG,
    byte_order: Order | int = Order.BIG,
) -> list[int]:
    """The register words a device holding `value` returns: the exact inverse of decoding.

    For integer types the value must already be a whole number inside the type's range
    (ValueError otherwise): rounding and clipping are the caller's decision. Floats beyond
    the FLOAT32 range raise too; NaN and +/-inf encode as themselves.
    """
    data_type = _data_type(data_type)
    word_order = _order(word_order, "word_order")
    byte_order = _order(byte_order, "byte_order")
    code = ">" + _STRUCT_CODE[data_type]
    if data_type in _FLOAT_TYPES:
        try:
            image = struct.pack(code, float(value))
        except OverflowError:
            raise ValueError(
                f"{value!r} is outside the {data_type.name} range "
                f"(magnitude at most {np.finfo(np.float32).max:.8g})"
            ) from None
    else:
        number = _whole_number(value, data_type)
        low, high = _INT_RANGE[data_type]
        if not low <= number <= high:
            raise ValueError(f"{value!r} is outside the {data_type.name} range {low}..{high}")
        image = struct.pack(code, number)
    words = [int.from_bytes(image[i : i + 2], "big") for i in range(0, len(image), 2)]
    if word_order is Order.LITTLE:
        words.reverse()
    if byte_order is Order.LITTLE:
        words = [((word & 0xFF) << 8) | (word >> 8) for word in words]
    return words
