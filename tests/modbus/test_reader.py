"""Reading meters end to end over real TCP: a real pymodbus server on loopback serving known
values, and faults that must hurt only their own meter. Request counts are what the server
received, not what the client believes it sent."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import pytest

from energymon_pipeline.modbus import reader
from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    Order,
    PlanOptions,
    RegisterSpec,
)
from virtual_server import DeviceMemory

HR = FunctionCode.READ_HOLDING_REGISTERS
IR = FunctionCode.READ_INPUT_REGISTERS
SDM630_ADDRESSES = [*range(0, 35, 2), 52, 56, 60, 62, 70, 72, 74, 76, 78]

# One exactly representable value per type: what the server holds must come back bit-exact.
VALUES = {
    DataType.INT16: -12345,
    DataType.UINT16: 54321,
    DataType.INT32: -2_000_000_001,
    DataType.UINT32: 4_000_000_001,
    DataType.FLOAT32: 230.125,
    DataType.INT64: -(2**52) - 7,
    DataType.UINT64: 2**53 - 3,
    DataType.FLOAT64: 49.987654321,
}

_ids = itertools.count(1000)


def meter(port: int, registers, unit: int = 1, timeout_s: float = 1.0, retries: int = 0,
          options: PlanOptions | None = None, meter_id: int | None = None) -> MeterSpec:  # fmt: skip
    return MeterSpec(
        meter_id=next(_ids) if meter_id is None else meter_id,
        endpoint=Endpoint("127.0.0.1", port, unit, timeout_s=timeout_s, retries=retries),
        meter_type="test",
        description="test meter",
        registers=tuple(registers),
        plan_options=options or PlanOptions(),
    )


def sdm630(memory: DeviceMemory) -> list[RegisterSpec]:
    """The original's 27-register sdm630 map, with value address/2 + 0.5 at each address.
    Like a real SDM630, the device answers for the registers between the mapped ones."""
    memory.set_registers(IR, 0, [0] * 80)
    specs = []
    for address in SDM630_ADDRESSES:
        memory.set_registers(IR, address, encode_value(address / 2 + 0.5, DataType.FLOAT32))
        specs.append(RegisterSpec(f"v{address}", address))
    return specs


def by_name(result) -> dict[str, float]:
    return {r.register.measurement: r.value for r in result.readings}


def test_every_type_and_order_decodes_exactly(modbus_server):
    memory = DeviceMemory()
    specs, expected = [], {}
    next_address = {HR: 0, IR: 0}
    for data_type, word_order, byte_order, fc in itertools.product(
        DataType, Order, Order, (HR, IR)
    ):
        value = VALUES[data_type]
        address = next_address[fc]
        memory.set_registers(fc, address, encode_value(value, data_type, word_order, byte_order))
        name = f"{data_type.name}_{word_order.name}_{byte_order.name}_{int(fc)}"
        specs.append(RegisterSpec(name, address, data_type, fc, word_order, byte_order))
        expected[name] = float(value)
        memory.set_registers(fc, address + data_type.words, [0xDEAD])  # a mapped gap register
        next_address[fc] = address + data_type.words + 1
    memory.set_bits(FunctionCode.READ_COILS, 0, [1, 0, 1])
    memory.set_bits(FunctionCode.READ_DISCRETE_INPUTS, 7, [0, 1])
    for name, fc, bit_address, bit in [("c0", 1, 0, 1.0), ("c1", 1, 1, 0.0), ("c2", 1, 2, 1.0),
                                       ("d7", 2, 7, 0.0), ("d8", 2, 8, 1.0)]:  # fmt: skip
        specs.append(RegisterSpec(name, bit_address, function_code=FunctionCode(fc)))
        expected[name] = bit
    memory.set_registers(HR, 5000, encode_value(-12345, DataType.INT16))
    scaled = RegisterSpec("scaled", 5000, DataType.INT16, HR, scale=0.1, offset=-1.0)
    specs.append(scaled)
    expected["scaled"] = -12345 * 0.1 - 1.0
    modbus_server.devices[1] = memory

    [result] = read_meters_sync([meter(modbus_server.port, specs)])
    assert result.ok, result.errors
    assert by_name(result) == pytest.approx(expected, rel=0, abs=0)
    assert result.requests == len(modbus_server.requests)
    # 64 values in 2 function codes with gaps, coils, inputs and one far value: 5 requests.
    assert sorted((r.function_code, r.address) for r in modbus_server.requests) == [
        (1, 0), (2, 7), (3, 0), (3, 5000), (4, 0)
    ]  # fmt: skip


def test_sdm630_map_costs_two_requests_per_sample_on_one_connection(modbus_server):
    memory = DeviceMemory()
    specs = sdm630(memory)
    modbus_server.devices[1] = memory
    start = time.time()
    samples = [start, start + 0.2, start + 0.4]
    [result] = read_meters_sync([meter(modbus_server.port, specs)], sample_times=samples)
    assert result.ok, result.errors
    assert result.samples == 3
    assert len(result.readings) == 27 * 3
    received = modbus_server.requests
    assert len(received) == result.requests == 6  # at most 3 per sample is the target
    assert {(r.function_code, r.address, r.count) for r in received} == {(4, 0, 36), (4, 52, 28)}
    times = sorted({r.time for r in result.readings})
    assert times[0] >= samples[0] and times[-1] >= samples[2]
    assert all(r.value == r.register.address / 2 + 0.5 for r in result.readings)


def test_faults_hurt_only_their_own_meter(modbus_server, refused_port, silent_port):
    good, gap, exception = DeviceMemory(), DeviceMemory(), DeviceMemory()
    good_specs = sdm630(good)
    # Two values around an unmapped register: the merged read gets exception 2.
    gap.set_registers(HR, 0, encode_value(1.5, DataType.FLOAT32))
    gap.set_registers(HR, 4, encode_value(2.5, DataType.FLOAT32))
    gap_specs = [RegisterSpec("a", 0, function_code=HR), RegisterSpec("b", 4, function_code=HR)]
    # A value whose own register is unmapped: exception 2 on a single-value read, plus a good
    # value in another function code that must still be read.
    exception.set_registers(IR, 0, encode_value(7.0, DataType.FLOAT32))
    exception_specs = [RegisterSpec("missing", 100, function_code=HR), RegisterSpec("ok", 0)]
    modbus_server.devices.update({1: good, 2: gap, 3: exception})
    port = modbus_server.port
    meters = [
        meter(port, good_specs, unit=1),
        meter(refused_port, good_specs),
        meter(silent_port, good_specs, timeout_s=0.5),
        meter(port, gap_specs, unit=2),
        meter(port, exception_specs, unit=3),
        meter(port, good_specs, unit=99, timeout_s=0.5),  # wrong unit id: no answer
    ]
    results = read_meters_sync(meters)
    good_r, refused_r, silent_r, gap_r, exception_r, wrong_unit_r = results

    assert good_r.ok and len(good_r.readings) == 27
    assert all(r.value == r.register.address / 2 + 0.5 for r in good_r.readings)

    assert not refused_r.readings and refused_r.failed_values == 27
    assert (
        refused_r.error
        == f"FC4 0-35 (v0, v2, v4 +15): connection refused: 127.0.0.1:{refused_port}"
    )

    assert not silent_r.readings and silent_r.failed_values == 27
    assert silent_r.error.startswith("FC4 0-35 (v0, v2, v4 +15): timeout: ")
    assert silent_r.requests == 1, "after a timeout the rest of the sample is not attempted"

    assert gap_r.ok, gap_r.errors
    assert by_name(gap_r) == {"a": 1.5, "b": 2.5}

    assert by_name(exception_r) == {"ok": 7.0}
    assert exception_r.failed_values == 1
    assert exception_r.error == "FC3 100-101 (missing): modbus exception 2 (illegal address)"

    assert not wrong_unit_r.readings
    assert wrong_unit_r.error.startswith("FC4 0-35 (v0, v2, v4 +15): timeout")


def test_split_after_exception_2_is_reported_and_seeds_the_next_read(modbus_server):
    memory = DeviceMemory()
    names = ["a", "b", "c"]
    for i, address in enumerate([0, 4, 8]):  # registers 2-3 and 6-7 are unmapped
        memory.set_registers(HR, address, encode_value(float(i), DataType.FLOAT32))
    specs = [RegisterSpec(n, a, function_code=HR) for n, a in zip(names, [0, 4, 8], strict=True)]
    modbus_server.devices[1] = memory
    spec = meter(modbus_server.port, specs)

    # Two samples: the second of the same read already plans the values alone.
    [first] = read_meters_sync([spec], sample_times=[0.0, 0.0])
    assert first.ok and by_name(first) == {"a": 0.0, "b": 1.0, "c": 2.0}
    assert [(r.address, r.count) for r in modbus_server.requests] == [
        (0, 10), (0, 2), (4, 2), (8, 2), (0, 2), (4, 2), (8, 2)
    ]  # fmt: skip
    assert first.learnt_splits == {(3, 0), (3, 4), (3, 8)}

    # A read is all a reader remembers (every poll run is a new process): without the seed
    # the merged read is tried again; seeded with what the first read learnt, it is not,
    # and nothing new is reported.
    modbus_server.reset_requests()
    [unseeded] = read_meters_sync([spec])
    assert [(r.address, r.count) for r in modbus_server.requests][0] == (0, 10)
    modbus_server.reset_requests()
    seeded = dataclasses.replace(spec, learnt_splits=first.learnt_splits)
    [second] = read_meters_sync([seeded])
    assert second.ok and by_name(second) == by_name(first)
    assert [(r.address, r.count) for r in modbus_server.requests] == [(0, 2), (4, 2), (8, 2)]
    assert second.learnt_splits == frozenset()


def test_a_learnt_split_is_reported_beyond_the_seed_only(modbus_server):
    memory = DeviceMemory()
    for address in (0, 4, 20, 24):  # gaps at 2-3 and 22-23
        memory.set_registers(HR, address, encode_value(1.0, DataType.FLOAT32))
    specs = [RegisterSpec(f"v{a}", a, function_code=HR) for a in (0, 4, 20, 24)]
    modbus_server.devices[1] = memory
    options = PlanOptions(max_gap=10)
    seeded = meter(modbus_server.port, specs, options=options)
    seeded = dataclasses.replace(seeded, learnt_splits=frozenset({(3, 0), (3, 4)}))

    [result] = read_meters_sync([seeded])
    assert result.ok
    assert result.learnt_splits == {(3, 20), (3, 24)}
    assert [(r.address, r.count) for r in modbus_server.requests] == [
        (0, 2), (4, 2), (20, 6), (20, 2), (24, 2)
    ]  # fmt: skip


def test_per_meter_overrides_shape_the_requests(modbus_server):
    memory = DeviceMemory()
    specs = sdm630(memory)
    modbus_server.devices[1] = memory
    single = meter(modbus_server.port, specs, options=PlanOptions(single_register_reads=True))
    [result] = read_meters_sync([single])
    assert result.ok and result.requests == 27 == len(modbus_server.requests)
    modbus_server.reset_requests()
    narrow = meter(
        modbus_server.port, specs, options=PlanOptions(max_gap=0, max_registers_per_request=8)
    )
    [result] = read_meters_sync([narrow])
    assert result.ok
    assert max(r.count for r in modbus_server.requests) <= 8
    assert len(modbus_server.requests) == result.requests


def test_many_meters_concurrently_with_a_bound(modbus_server):
    specs = None
    for unit in range(1, 41):
        memory = DeviceMemory()
        specs = sdm630(memory)
        modbus_server.devices[unit] = memory
    meters = [meter(modbus_server.port, specs, unit=unit) for unit in range(1, 41)]
    results = reader.read_meters_sync(meters, concurrency=8)
    assert all(r.ok for r in results)
    assert sum(len(r.readings) for r in results) == 40 * 27
    assert len(modbus_server.requests) == 80
    assert {r.unit_id for r in modbus_server.requests} == set(range(1, 41))


def test_nan_and_inf_come_through_as_such(modbus_server):
    memory = DeviceMemory()
    memory.set_registers(IR, 0, encode_value(math.nan, DataType.FLOAT32))
    memory.set_registers(IR, 2, encode_value(math.inf, DataType.FLOAT32))
    modbus_server.devices[1] = memory
    [result] = read_meters_sync(
        [meter(modbus_server.port, [RegisterSpec("n", 0), RegisterSpec("i", 2)])]
    )
    values = by_name(result)
    assert math.isnan(values["n"]) and values["i"] == math.inf
