"""Request planning: few requests, every value covered exactly once, limits respected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymon_pipeline.modbus.plan import (
    MAX_BITS_PER_REQUEST,
    MAX_REGISTERS_PER_REQUEST,
    MeterPlanner,
    SharedPlans,
    plan_requests,
)
from energymon_pipeline.modbus.types import (
    DataType,
    FunctionCode,
    PlanOptions,
    ReadRequest,
    RegisterSpec,
)

FC3 = FunctionCode.READ_HOLDING_REGISTERS
FC4 = FunctionCode.READ_INPUT_REGISTERS
DEFAULT = PlanOptions()
SDM630_ADDRESSES = [*range(0, 35, 2), 52, 56, 60, 62, 70, 72, 74, 76, 78]


def floats_at(*addresses: int, function_code: FunctionCode = FC4) -> list[RegisterSpec]:
    return [
        RegisterSpec(f"v{address}", address, DataType.FLOAT32, function_code)
        for address in addresses
    ]


def assert_valid(requests: list[ReadRequest], registers: list[RegisterSpec], options=DEFAULT):
    """Every register in exactly one request that holds it whole; limits and order respected."""
    covered = [r for request in requests for r in request.registers]
    assert sorted(map(id, covered)) == sorted(map(id, registers))
    for request in requests:
        assert request.registers
        limit = (
            options.max_bits_per_request
            if request.function_code.is_bit
            else options.max_registers_per_request
        )
        widest = max(r.width for r in request.registers)
        assert request.count <= max(limit, widest)
        assert request.count <= (2000 if request.function_code.is_bit else 125)
        for register in request.registers:
            assert register.function_code == request.function_code
            assert request.address <= register.address and register.end <= request.end
        addresses = [r.address for r in request.registers]
        assert addresses == sorted(addresses)
        assert request.address == min(addresses)
        assert request.end == max(r.end for r in request.registers)
    keys = [(int(r.function_code), r.address) for r in requests]
    assert keys == sorted(keys)


def test_sdm630_map_needs_at_most_three_requests():
    registers = floats_at(*SDM630_ADDRESSES)
    assert len(registers) == 27
    requests = plan_requests(registers)
    assert len(requests) <= 3
    assert_valid(requests, registers)
    assert [(r.address, r.count) for r in requests] == [(0, 36), (52, 28)]


def test_contiguous_values_share_one_request():
    registers = floats_at(0, 2, 4, 6)
    (request,) = plan_requests(registers)
    assert (request.function_code, request.address, request.count) == (FC4, 0, 8)
    assert request.registers == tuple(registers)


def test_unsorted_input_gives_sorted_deterministic_plan():
    registers = floats_at(40, 0, 20, 2)
    assert plan_requests(registers) == plan_requests(list(reversed(registers)))
    assert_valid(plan_requests(registers), registers)


@pytest.mark.parametrize("max_gap", [0, 1, 10])
def test_max_gap_boundary(max_gap):
    options = PlanOptions(max_gap=max_gap)
    # first value occupies 0..1; the second starts after exactly max_gap unread addresses
    merged = plan_requests(floats_at(0, 2 + max_gap), options)
    assert len(merged) == 1 and merged[0].count == 4 + max_gap
    split = plan_requests(floats_at(0, 2 + max_gap + 1), options)
    assert [(r.address, r.count) for r in split] == [(0, 2), (3 + max_gap, 2)]


def test_register_cap_of_125():
    registers = floats_at(*range(0, 200, 2))  # 100 contiguous FLOAT32 = 200 registers
    requests = plan_requests(registers)
    assert len(requests) == 2
    assert all(r.count <= MAX_REGISTERS_PER_REQUEST for r in requests)
    assert_valid(requests, registers)
    # 62 values fit (124 registers); the 63rd would straddle register 125
    assert requests[0].count == 124


def test_option_cap_is_respected_and_values_never_straddle():
    options = PlanOptions(max_registers_per_request=5)
    registers = floats_at(0, 2, 4, 6, 8)
    requests = plan_requests(registers, options)
    assert [(r.address, r.count) for r in requests] == [(0, 4), (4, 4), (8, 2)]
    assert_valid(requests, registers, options)


def test_value_wider_than_option_cap_still_gets_its_own_request():
    options = PlanOptions(max_registers_per_request=2)
    registers = [RegisterSpec("energy", 0, DataType.UINT64), RegisterSpec("p", 4, DataType.INT16)]
    requests = plan_requests(registers, options)
    assert [(r.address, r.count) for r in requests] == [(0, 4), (4, 1)]


def test_bit_cap_of_2000_for_coils():
    coils = [
        RegisterSpec(f"c{a}", a, function_code=FunctionCode.READ_COILS) for a in range(0, 4500, 3)
    ]
    requests = plan_requests(coils)
    assert [(r.address, r.count) for r in requests] == [(0, 1999), (2001, 1999), (4002, 496)]
    assert all(r.count <= MAX_BITS_PER_REQUEST for r in requests)
    assert_valid(requests, coils)
    contiguous = [
        RegisterSpec(f"d{a}", a, function_code=FunctionCode.READ_DISCRETE_INPUTS)
        for a in range(4001)
    ]
    assert [r.count for r in plan_requests(contiguous)] == [2000, 2000, 1]


def test_mixed_function_codes_never_share_a_request():
    registers = [
        *floats_at(0, 2),
        *floats_at(0, 2, 4, function_code=FC3),
        RegisterSpec("coil", 0, function_code=FunctionCode.READ_COILS),
        RegisterSpec("input", 1, function_code=FunctionCode.READ_DISCRETE_INPUTS),
    ]
    requests = plan_requests(registers)
    assert [(int(r.function_code), r.address, r.count) for r in requests] == [
        (1, 0, 1),
        (2, 1, 1),
        (3, 0, 6),
        (4, 0, 4),
    ]
    assert_valid(requests, registers)


def test_single_register_reads():
    registers = floats_at(0, 2, 4)
    requests = plan_requests(registers, PlanOptions(single_register_reads=True))
    assert [(r.address, r.count, len(r.registers)) for r in requests] == [
        (0, 2, 1),
        (2, 2, 1),
        (4, 2, 1),
    ]


def test_overlapping_definitions_share_a_request():
    registers = [
        RegisterSpec("as_float", 10, DataType.FLOAT32),
        RegisterSpec("high_word", 10, DataType.UINT16),
        RegisterSpec("low_word", 11, DataType.UINT16),
        RegisterSpec("as_double", 8, DataType.FLOAT64),
    ]
    (request,) = plan_requests(registers)
    assert (request.address, request.count) == (8, 4)
    assert [r.measurement for r in request.registers] == [
        "as_double",
        "high_word",
        "as_float",
        "low_word",
    ]
    # a short value inside a long one must not shrink the request's end
    nested = [RegisterSpec("long", 0, DataType.INT64), RegisterSpec("short", 1, DataType.INT16)]
    (request,) = plan_requests(nested)
    assert (request.address, request.count) == (0, 4)


def test_split_memory_keeps_those_values_single():
    planner = MeterPlanner()
    registers = floats_at(0, 2, 4, 6, 18, 20)
    first = planner.plan(registers)
    assert [(r.address, r.count) for r in first] == [(0, 22)]
    assert planner.plan(registers) == first and planner.plan(registers)[0] is first[0]

    retry = planner.split(first[0])
    assert [(r.address, r.count) for r in retry] == [(a, 2) for a in (0, 2, 4, 6, 18, 20)]
    assert planner.split_keys == {(4, a) for a in (0, 2, 4, 6, 18, 20)}

    # later plans keep them single; new values still merge among themselves
    grown = [*registers, *floats_at(40, 42)]
    replanned = planner.plan(grown)
    assert [(r.address, r.count) for r in replanned] == [
        *[(a, 2) for a in (0, 2, 4, 6, 18, 20)],
        (40, 4),
    ]
    assert_valid(replanned, grown)
    # a request with one value has nothing left to split
    assert planner.split(replanned[0]) == []


def test_split_values_are_barriers_for_merging():
    # neighbours of a split value are not merged across it (the bad address lies near it)
    planner = MeterPlanner(split={(4, 10)})
    requests = planner.plan(floats_at(0, 2, 10, 14, 16))
    assert [(r.address, r.count) for r in requests] == [(0, 4), (10, 2), (14, 4)]
    # split keys are per function code
    assert len(plan_requests(floats_at(10, 12, function_code=FC3), split={(4, 10)})) == 1


def test_plan_is_reused_until_inputs_change():
    planner = MeterPlanner()
    registers = floats_at(0, 2)
    first = planner.plan(registers)
    assert planner.plan(floats_at(0, 2))[0] is first[0]  # equal definitions, same objects
    other = planner.plan(registers, PlanOptions(single_register_reads=True))
    assert len(other) == 2


def test_meters_of_one_type_share_their_plan_but_not_their_splits():
    shared = SharedPlans()
    registers = tuple(floats_at(0, 2, 4))
    one, two = MeterPlanner(shared=shared), MeterPlanner(shared=shared)
    first = one.plan(registers)
    assert two.plan(registers)[0] is first[0]  # planned once, the same request objects
    assert [(r.address, r.count) for r in first] == [(0, 6)]
    one.split(first[0])
    assert [(r.address, r.count) for r in one.plan(registers)] == [(0, 2), (2, 2), (4, 2)]
    assert two.plan(registers)[0] is first[0]  # the other meter's splits are its own
    # a seeded split memory plans alike with it too; an equal but other tuple is planned anew
    three = MeterPlanner(split={(4, 2)}, shared=shared)
    assert [(r.address, r.count) for r in three.plan(registers)] == [(0, 2), (2, 2), (4, 2)]
    assert MeterPlanner(shared=shared).plan(tuple(floats_at(0, 2, 4))) == first


register_lists = st.lists(
    st.builds(
        RegisterSpec,
        measurement=st.text("abc", max_size=2),
        address=st.integers(0, 600),
        data_type=st.sampled_from(list(DataType)),
        function_code=st.sampled_from(list(FunctionCode)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    registers=register_lists,
    max_gap=st.integers(0, 20),
    max_registers=st.integers(1, 125),
    max_bits=st.integers(1, 2000),
)
def test_any_plan_covers_every_value_once_within_limits(
    registers, max_gap, max_registers, max_bits
):
    options = PlanOptions(
        max_gap=max_gap, max_registers_per_request=max_registers, max_bits_per_request=max_bits
    )
    requests = plan_requests(registers, options)
    assert_valid(requests, registers, options)
    singles = plan_requests(registers, PlanOptions(single_register_reads=True))
    assert len(singles) == len(registers)
    assert len(requests) <= len(singles)
