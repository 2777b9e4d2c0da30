"""The core's generic hooks SunSpec relies on: a value and its live scale factor are planned
into one request and decoded from that response; "not implemented" values are no readings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from energymon_pipeline.modbus.decode import block_decoder, encode_value
from energymon_pipeline.modbus.plan import plan_requests
from energymon_pipeline.modbus.types import DataType, FunctionCode, PlanOptions, RegisterSpec

FC3 = FunctionCode.READ_HOLDING_REGISTERS


def spec(name, address, data_type=DataType.INT16, sf=None, na=0x8000):
    return RegisterSpec(name, address, data_type, FC3, scale_factor_address=sf, not_implemented=na)


def words(layout: dict[int, int], count: int, base: int = 0) -> np.ndarray:
    out = np.zeros(count, dtype=np.uint16)
    for address, word in layout.items():
        out[address - base] = word
    return out


def test_a_value_is_planned_with_its_scale_factor_even_across_a_gap():
    # The scale factor 60 registers after the value, max_gap 10: still one request from
    # the value to the scale factor, never the value alone.
    registers = [spec("W", 100, sf=160)]
    [request] = plan_requests(registers, PlanOptions(max_gap=10))
    assert (request.address, request.count) == (100, 61)
    # The scale factor before the value (MPPT: in the model's header).
    [request] = plan_requests([spec("DCW", 300, sf=250)])
    assert (request.address, request.count) == (250, 51)


def test_single_register_reads_still_carry_the_scale_factor():
    requests = plan_requests(
        [spec("A", 10, sf=14), spec("W", 11, sf=15)], PlanOptions(single_register_reads=True)
    )
    assert [(r.address, r.count) for r in requests] == [(10, 5), (11, 5)]


def test_values_beyond_the_request_limit_from_their_scale_factor_get_their_own_request():
    registers = [spec("a", 0, sf=4), spec("b", 130, sf=132)]
    requests = plan_requests(registers, PlanOptions(max_registers_per_request=125))
    assert [(r.address, r.count) for r in requests] == [(0, 5), (130, 3)]


@pytest.mark.parametrize(("raw", "sf", "expected"), [(2345, -1, 234.5), (2345, 0, 2345.0),
                                                     (2345, 2, 234500.0), (7, -3, 0.007)])  # fmt: skip
def test_scale_factor_from_the_same_response(raw, sf, expected):
    registers = (spec("W", 0, sf=1),)
    [request] = plan_requests(registers)
    decoder = block_decoder(request)
    values = decoder.decode(words({0: raw, 1: sf & 0xFFFF}, request.count))
    assert values.tolist() == [expected]


def test_not_implemented_values_of_each_type_are_absent_never_zero():
    registers = (
        spec("i16", 0, DataType.INT16, sf=20, na=0x8000),
        spec("u16", 1, DataType.UINT16, sf=20, na=0xFFFF),
        spec("acc32", 2, DataType.UINT32, sf=20, na=0),
        spec("i32", 4, DataType.INT32, na=0x80000000),
        spec("u32", 6, DataType.UINT32, na=0xFFFFFFFF),
        spec("f32", 8, DataType.FLOAT32, na=0x7FC00000),
        spec("u64", 10, DataType.UINT64, na=0xFFFFFFFFFFFFFFFF),
        spec("ok", 14, DataType.INT16, sf=21, na=0x8000),
        spec("no_sf", 15, DataType.INT16, sf=22, na=0x8000),
    )
    layout = {0: 0x8000, 1: 0xFFFF, 2: 0, 3: 0, 4: 0x8000, 5: 0, 6: 0xFFFF, 7: 0xFFFF}
    layout.update(dict(enumerate(encode_value(math.nan, DataType.FLOAT32), start=8)))
    layout.update({10: 0xFFFF, 11: 0xFFFF, 12: 0xFFFF, 13: 0xFFFF, 14: 5, 15: 5})
    layout.update({20: 0, 21: 0xFFFF, 22: 0x8000})  # sf 0, -1 and "not implemented"
    [request] = plan_requests(registers)
    decoder = block_decoder(request)
    decoded = decoder.decode(words(layout, request.count))
    kept, values = decoder.present(decoded)
    assert [r.measurement for r in kept] == ["ok"]
    assert values.tolist() == [0.5]


def test_ordinary_registers_are_untouched():
    registers = (
        RegisterSpec("x", 0, DataType.INT16, FC3),
        RegisterSpec("y", 1, DataType.INT16, FC3),
    )
    [request] = plan_requests(registers)
    decoder = block_decoder(request)
    assert decoder.absent_possible is None
    values = decoder.decode(words({0: 0x8000, 1: 3}, 2))
    assert decoder.present(values)[1].tolist() == [-32768.0, 3.0]


def test_the_same_absent_points_give_the_same_registers_tuple():
    registers = (spec("a", 0, sf=2), spec("b", 1, sf=2))
    [request] = plan_requests(registers)
    decoder = block_decoder(request)
    first, _ = decoder.present(decoder.decode(words({0: 0x8000, 1: 7, 2: 0}, 3)))
    second, values = decoder.present(decoder.decode(words({0: 0x8000, 1: 9, 2: 0}, 3)))
    assert first is second and [r.measurement for r in first] == ["b"]
    assert values.tolist() == [9.0]
    both, _ = decoder.present(decoder.decode(words({0: 1, 1: 9, 2: 0}, 3)))
    assert [r.measurement for r in both] == ["a", "b"]
