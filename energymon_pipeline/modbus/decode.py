"""Register words to float64 values, exactly and in bulk, and back again.

Why this module exists instead of pymodbus's payload helpers: those helpers moved or vanished
between pymodbus releases (BinaryPayloadDecoder is gone in 3.x), and the byte layout is small
enough to own. Owning it also lets the virtual server encode with `encode_value`, so the
simulator and the pipeline cannot disagree about word or byte order.

Conventions (the original system's, see ORIGINAL-SYSTEM.md "Decoding semantics"):

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

Speed: a request's registers are grouped by (data type, word order, byte order) once, in
`BlockDecoder`; decoding is then one numpy gather plus one byte-order-aware view per group,
with no Python work per register.
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
    if array.size == 0:
        return array.astype(np.uint16)
    if array.dtype.kind == "b":
        return array.astype(np.uint16)
    if array.dtype.kind not in "iu":
        raise ValueError(f"register words must be integers 0..65535, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 0xFFFF:
        bad = low if low < 0 else high
        raise ValueError(f"register word {bad} is outside 0..65535")
    return array.astype(np.uint16)


def _as_bits(bits: WordsLike) -> np.ndarray:
    array = np.asarray(bits)
    if array.ndim != 1:
        raise ValueError(f"coil/discrete input bits must be a 1-D sequence, got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"coil/discrete input bits must be booleans or 0/1, got {array.dtype}")
    return array if array.dtype == np.bool_ else array != 0


def _decode_matrix(words: np.ndarray, data_type: DataType, byte_order: Order) -> np.ndarray:
    """Decode an (n, width) uint16 matrix whose rows are already in big-word order.

    Storing each word big-endian (or little-endian, which is exactly "swap the two bytes")
    lays out each row as the value's big-endian byte image, which numpy then reads in place.
    """
    image = np.ascontiguousarray(words, dtype=">u2" if byte_order is Order.BIG else "<u2")
    return image.view(">" + _NUMPY_CODE[data_type]).reshape(-1).astype(np.float64)


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
    return _decode_matrix(matrix, data_type, byte_order)


class BlockDecoder:
    """How to decode one `ReadRequest`, worked out once and reused every poll.

    Grouping the registers and building the gather indices is the only per-register Python
    work; it happens here so `decode` is a handful of numpy calls per group.
    """

    __slots__ = ("request", "_bits", "_groups", "_scale", "_offset")

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        function_code = FunctionCode(request.function_code)
        self._bits = function_code.is_bit
        grouped: dict[tuple[DataType, Order, Order] | None, tuple[list[int], list[int]]] = {}
        scales: list[float] = []
        offsets: list[float] = []
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
            key = (
                None
                if self._bits
                else _group_key(register.data_type, register.word_order, register.byte_order)
            )
            positions, starts = grouped.setdefault(key, ([], []))
            positions.append(position)
            starts.append(start)
            scales.append(float(register.scale))
            offsets.append(float(register.offset))

        count = len(request.registers)
        self._groups: list[tuple[np.ndarray | slice, np.ndarray, DataType | None, Order]] = []
        for key, (positions, starts) in grouped.items():
            where: np.ndarray | slice = (
                slice(None) if len(positions) == count else np.asarray(positions, dtype=np.intp)
            )
            start_array = np.asarray(starts, dtype=np.intp)
            if key is None:
                self._groups.append((where, start_array, None, Order.BIG))
                continue
            data_type, word_order, byte_order = key
            word_index = np.arange(data_type.words, dtype=np.intp)
            if word_order is Order.LITTLE:
                word_index = word_index[::-1]
            self._groups.append((where, start_array[:, None] + word_index, data_type, byte_order))
        self._scale = None if all(s == 1.0 for s in scales) else np.asarray(scales)
        self._offset = None if all(o == 0.0 for o in offsets) else np.asarray(offsets)

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
        for where, index, data_type, byte_order in self._groups:
            if data_type is None:
                out[where] = array[index]
            else:
                out[where] = _decode_matrix(array[index], data_type, byte_order)
        if self._scale is not None:
            out *= self._scale
        if self._offset is not None:
            out += self._offset
        return out


def _group_key(data_type: DataType, word_order: Order, byte_order: Order):
    data_type = _data_type(data_type)
    word_order = _order(word_order, "word_order") if data_type.words > 1 else Order.BIG
    return data_type, word_order, _order(byte_order, "byte_order")


# Decoders keyed by id(request). Each entry holds its request, so the id cannot be reused by
# another object while the entry lives; the identity check makes a stale hit impossible.
# Identity rather than equality: hashing a request walks every RegisterSpec, which costs as
# much as compiling it. Plans are cached per meter (plan.MeterPlanner), so the same request
# objects come back every poll.
_CACHE_SIZE = 2048
_cache: OrderedDict[int, BlockDecoder] = OrderedDict()
_cache_lock = threading.Lock()


def block_decoder(request: ReadRequest) -> BlockDecoder:
    """The (cached) decoder for `request`."""
    key = id(request)
    with _cache_lock:
        decoder = _cache.get(key)
        if decoder is not None and decoder.request is request:
            _cache.move_to_end(key)
            return decoder
    decoder = BlockDecoder(request)
    with _cache_lock:
        _cache[key] = decoder
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
