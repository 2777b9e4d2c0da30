"""Decoding must match a plain `struct` reading of the same bytes, for every type and order."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymon_pipeline.modbus.decode import (
    BlockDecoder,
    decode_block,
    decode_values,
    encode_value,
)
from energymon_pipeline.modbus.types import (
    DataType,
    FunctionCode,
    Order,
    ReadRequest,
    RegisterSpec,
)

STRUCT_CODE = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT64: "d",
}
INT_BITS = {
    DataType.INT16: (16, True),
    DataType.UINT16: (16, False),
    DataType.INT32: (32, True),
    DataType.UINT32: (32, False),
    DataType.INT64: (64, True),
    DataType.UINT64: (64, False),
}
ORDERS = [Order.BIG, Order.LITTLE]


def reference_words(value, data_type: DataType, word_order: Order, byte_order: Order) -> list:
    """Independent model of the wire: big-endian image, then word reversal, then byte swap."""
    image = struct.pack(">" + STRUCT_CODE[data_type], value)
    words = [image[i : i + 2] for i in range(0, len(image), 2)]
    if word_order is Order.LITTLE and len(words) > 1:
        words.reverse()
    if byte_order is Order.LITTLE:
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def values_of(data_type: DataType) -> st.SearchStrategy:
    if data_type is DataType.FLOAT32:
        return st.floats(width=32)
    if data_type is DataType.FLOAT64:
        return st.floats()
    bits, signed = INT_BITS[data_type]
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return st.integers(low, high)


def same(actual: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return actual == expected


kinds = st.tuples(st.sampled_from(list(DataType)), st.sampled_from(ORDERS), st.sampled_from(ORDERS))


# -- fixed vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word_order", "byte_order", "words"),
    [
        (Order.BIG, Order.BIG, [0x4366, 0x0000]),
        (Order.LITTLE, Order.BIG, [0x0000, 0x4366]),
        (Order.BIG, Order.LITTLE, [0x6643, 0x0000]),
        (Order.LITTLE, Order.LITTLE, [0x0000, 0x6643]),
    ],
)
def test_float32_230_vectors(word_order, byte_order, words):
    assert decode_values(words, DataType.FLOAT32, word_order, byte_order).tolist() == [230.0]
    assert encode_value(230.0, DataType.FLOAT32, word_order, byte_order) == words


def test_16_bit_types_ignore_word_order_but_not_byte_order():
    for word_order in ORDERS:
        assert decode_values([0xFFFE], DataType.INT16, word_order, Order.BIG).tolist() == [-2.0]
        assert decode_values([0xFEFF], DataType.INT16, word_order, Order.LITTLE).tolist() == [-2.0]
        assert decode_values([0x0100], DataType.UINT16, word_order, Order.LITTLE).tolist() == [1.0]


def test_64_bit_word_order_reverses_all_four_words():
    words = [0x0001, 0x0002, 0x0003, 0x0004]
    big = decode_values(words, DataType.UINT64, Order.BIG, Order.BIG)[0]
    little = decode_values(words, DataType.UINT64, Order.LITTLE, Order.BIG)[0]
    assert big == float(0x0001_0002_0003_0004)
    assert little == float(0x0004_0003_0002_0001)


# -- properties against the struct reference -------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kind=kinds)
def test_decode_values_matches_struct_reference(data, kind):
    data_type, word_order, byte_order = kind
    values = data.draw(st.lists(values_of(data_type), min_size=1, max_size=8))
    words = [w for v in values for w in reference_words(v, data_type, word_order, byte_order)]
    decoded = decode_values(words, data_type, word_order, byte_order)
    assert decoded.dtype == np.float64
    assert len(decoded) == len(values)
    for actual, value in zip(decoded.tolist(), values, strict=True):
        assert same(actual, float(value)), (value, actual)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kind=kinds)
def test_encode_matches_reference_and_roundtrips(data, kind):
    data_type, word_order, byte_order = kind
    value = data.draw(values_of(data_type))
    words = encode_value(value, data_type, word_order, byte_order)
    assert words == reference_words(value, data_type, word_order, byte_order)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert same(decode_values(words, data_type, word_order, byte_order)[0], float(value))


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    layout=st.lists(
        st.tuples(kinds, st.integers(0, 3), st.sampled_from([1.0, 0.001, -2.5])),
        min_size=1,
        max_size=12,
    ),
)
def test_block_with_mixed_types_and_gaps_matches_reference(data, layout):
    base = 1000
    words: list[int] = []
    registers: list[RegisterSpec] = []
    expected: list[float] = []
    for i, ((data_type, word_order, byte_order), gap, scale) in enumerate(layout):
        words.extend([0xDEAD] * gap)  # unread filler between values
        value = data.draw(values_of(data_type))
        registers.append(
            RegisterSpec(
                f"m{i}",
                base + len(words),
                data_type,
                FunctionCode.READ_HOLDING_REGISTERS,
                word_order,
                byte_order,
                scale=scale,
                offset=1.5,
            )
        )
        words.extend(reference_words(value, data_type, word_order, byte_order))
        expected.append(float(value) * scale + 1.5)
    request = ReadRequest(FunctionCode.READ_HOLDING_REGISTERS, base, len(words), tuple(registers))
    decoded = decode_block(request, words)
    for actual, want in zip(decoded.tolist(), expected, strict=True):
        assert same(actual, want), (want, actual)


# -- specific behaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("data_type", [DataType.FLOAT32, DataType.FLOAT64])
@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("word_order", ORDERS)
@pytest.mark.parametrize("byte_order", ORDERS)
def test_nan_and_inf_survive(data_type, special, word_order, byte_order):
    words = encode_value(special, data_type, word_order, byte_order)
    assert words == reference_words(special, data_type, word_order, byte_order)
    (decoded,) = decode_values(words, data_type, word_order, byte_order)
    if math.isnan(special):
        assert math.isnan(decoded)
    else:
        assert decoded == special


def test_nan_and_inf_survive_scale_and_offset_in_a_block():
    specs = [
        RegisterSpec("nan", 0, DataType.FLOAT32, scale=0.5, offset=10.0),
        RegisterSpec("inf", 2, DataType.FLOAT32, scale=0.5, offset=10.0),
        RegisterSpec("ninf", 4, DataType.FLOAT64, scale=2.0, offset=-1.0),
    ]
    words = (
        encode_value(math.nan, DataType.FLOAT32)
        + encode_value(math.inf, DataType.FLOAT32)
        + encode_value(-math.inf, DataType.FLOAT64)
    )
    decoded = decode_block(
        ReadRequest(FunctionCode.READ_INPUT_REGISTERS, 0, 8, tuple(specs)), words
    )
    assert math.isnan(decoded[0])
    assert decoded[1] == math.inf
    assert decoded[2] == -math.inf


def test_scale_and_offset():
    specs = (
        RegisterSpec("energy", 10, DataType.UINT32, scale=0.01, offset=0.0),
        RegisterSpec("temperature", 12, DataType.INT16, scale=0.1, offset=-40.0),
        RegisterSpec("plain", 13, DataType.INT16),
    )
    words = encode_value(123456, DataType.UINT32) + encode_value(-5, DataType.INT16) + [7]
    request = ReadRequest(FunctionCode.READ_INPUT_REGISTERS, 10, 4, specs)
    assert decode_block(request, words).tolist() == pytest.approx([1234.56, -40.5, 7.0])


def test_block_keeps_register_order_not_address_order():
    specs = (
        RegisterSpec("b", 2, DataType.INT16),
        RegisterSpec("a", 0, DataType.FLOAT32),
        RegisterSpec("c", 3, DataType.INT16),
    )
    words = encode_value(230.0, DataType.FLOAT32) + [5, 6]
    request = ReadRequest(FunctionCode.READ_INPUT_REGISTERS, 0, 4, specs)
    assert decode_block(request, words).tolist() == [5.0, 230.0, 6.0]


def test_overlapping_definitions_read_the_same_words():
    specs = (
        RegisterSpec("as_float", 0, DataType.FLOAT32),
        RegisterSpec("high_word", 0, DataType.UINT16),
        RegisterSpec("as_int", 0, DataType.INT32),
    )
    request = ReadRequest(FunctionCode.READ_INPUT_REGISTERS, 0, 2, specs)
    assert decode_block(request, [0x4366, 0x0000]).tolist() == [230.0, 0x4366, 0x43660000]


@pytest.mark.parametrize(
    "function_code", [FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS]
)
def test_coils_are_one_bit_each(function_code):
    specs = (
        RegisterSpec("on", 5, DataType.FLOAT64, function_code),  # data type ignored for bits
        RegisterSpec("off", 6, function_code=function_code),
        RegisterSpec("scaled", 9, function_code=function_code, scale=2.0, offset=1.0),
    )
    request = ReadRequest(function_code, 5, 5, specs)
    bits = [True, False, True, True, True, False, False, False]  # padded to a byte
    assert decode_block(request, bits).tolist() == [1.0, 0.0, 3.0]
    assert decode_block(request, [1, 0, 0, 0, 0]).tolist() == [1.0, 0.0, 1.0]


def test_too_short_input_raises():
    request = ReadRequest(
        FunctionCode.READ_INPUT_REGISTERS, 100, 4, (RegisterSpec("v", 102, DataType.FLOAT32),)
    )
    with pytest.raises(
        ValueError, match="got 3 registers for a read of 4 registers at address 100"
    ):
        decode_block(request, [0, 0, 0])
    coils = ReadRequest(
        FunctionCode.READ_COILS,
        0,
        10,
        (RegisterSpec("c", 9, function_code=FunctionCode.READ_COILS),),
    )
    with pytest.raises(ValueError, match="got 8 bits"):
        decode_block(coils, [False] * 8)
    with pytest.raises(ValueError, match="not a whole number of FLOAT32 values"):
        decode_values([1, 2, 3], DataType.FLOAT32)


def test_bad_words_raise():
    with pytest.raises(ValueError, match="65536 is outside 0..65535"):
        decode_values([1, 65536], DataType.UINT16)
    with pytest.raises(ValueError, match="-1 is outside"):
        decode_values(np.array([-1, 2]), DataType.INT32)
    with pytest.raises(ValueError, match="must be integers"):
        decode_values([1.5, 2.0], DataType.INT32)
    with pytest.raises(ValueError, match="data_type 9 is not supported"):
        decode_values([1], 9)


def test_register_outside_request_raises():
    request = ReadRequest(
        FunctionCode.READ_INPUT_REGISTERS, 0, 2, (RegisterSpec("v", 1, DataType.FLOAT32),)
    )
    with pytest.raises(ValueError, match="'v' occupies addresses 1..2, outside the request's 0..1"):
        BlockDecoder(request)
    mixed = ReadRequest(
        FunctionCode.READ_INPUT_REGISTERS,
        0,
        2,
        (RegisterSpec("h", 0, function_code=FunctionCode.READ_HOLDING_REGISTERS),),
    )
    with pytest.raises(ValueError, match="'h' uses function code 3"):
        decode_block(mixed, [0, 0])


def test_encode_refuses_out_of_range_and_fractional_ints():
    with pytest.raises(ValueError, match="40000 is outside the INT16 range -32768..32767"):
        encode_value(40000, DataType.INT16)
    with pytest.raises(ValueError, match="-1 is outside the UINT32 range"):
        encode_value(-1, DataType.UINT32)
    with pytest.raises(ValueError, match="INT32 needs a whole number, got 1.5"):
        encode_value(1.5, DataType.INT32)
    with pytest.raises(ValueError, match="whole number, got nan"):
        encode_value(math.nan, DataType.INT64)
    with pytest.raises(ValueError, match="outside the FLOAT32 range"):
        encode_value(1e39, DataType.FLOAT32)
    assert encode_value(7.0, DataType.UINT16) == [7]
    assert encode_value(np.int64(-2), DataType.INT16) == [0xFFFE]


def test_large_contiguous_block_decodes_like_single_values():
    rng = np.random.default_rng(1)
    values = rng.normal(size=1000).astype(np.float32)
    words = np.frombuffer(values.astype(">f4").tobytes(), dtype=">u2").astype(np.uint16)
    decoded = decode_values(words, DataType.FLOAT32)
    assert np.array_equal(decoded, values.astype(np.float64))


def test_decoder_cache_is_keyed_by_identity():
    a = ReadRequest(
        FunctionCode.READ_INPUT_REGISTERS, 0, 1, (RegisterSpec("x", 0, DataType.INT16),)
    )
    b = ReadRequest(
        FunctionCode.READ_INPUT_REGISTERS, 0, 1, (RegisterSpec("x", 0, DataType.UINT16),)
    )
    assert decode_block(a, [0xFFFF]).tolist() == [-1.0]
    assert decode_block(b, [0xFFFF]).tolist() == [65535.0]
    assert decode_block(a, [0xFFFF]).tolist() == [-1.0]
