"""The original's extension contract (subclass, override set_datastore) and the simpler
Device form, exercised over real TCP on loopback with the project's own reader."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time

import pytest
from pymodbus.client import AsyncModbusTcpClient

from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    Order,
    RegisterSpec,
)
from virtual_server import (
    NO_VALUE_EXCEPTION,
    Device,
    DeviceMemory,
    UpdateSchedule,
    VirtualModbusTCPServer,
)

_ids = itertools.count(51_000)
HOLDING, INPUT = FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS


def read(port: int, registers, unit: int = 1, timeout_s: float = 2.0):
    meter = MeterSpec(
        meter_id=next(_ids),
        endpoint=Endpoint("127.0.0.1", port, unit, timeout_s=timeout_s, retries=0),
        meter_type="t",
        description=None,
        registers=tuple(registers),
    )
    (result,) = read_meters_sync([meter])
    return result


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class Counter(VirtualModbusTCPServer):
    """The README's shape: a subclass overriding set_datastore()."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.listening_at_first_call: bool | None = None

    def set_datastore(self) -> None:
        if self.calls == 0:
            self.listening_at_first_call = self.running
        self.calls += 1
        self.set_value(0, float(self.calls))  # FLOAT32, input registers 0-1, big/big
        self.set_value(
            10, -self.calls, data_type=DataType.INT32, function_code=HOLDING,
            word_order=Order.LITTLE, byte_order=Order.BIG,
        )  # fmt: skip


def test_set_datastore_runs_once_before_listening_then_on_the_schedule():
    server = Counter(schedule=UpdateSchedule.every_second())
    with server:
        assert server.calls == 1 and server.listening_at_first_call is False
        result = read(
            server.port,
            [
                RegisterSpec("count", 0),
                RegisterSpec("neg", 10, DataType.INT32, HOLDING, Order.LITTLE, Order.BIG),
            ],
            unit=77,  # without devices, every unit id answers (the original's behaviour)
        )
        assert result.errors == []
        first = {r.register.measurement: r.value for r in result.readings}
        assert first["neg"] == -first["count"] and first["count"] >= 1
        wait_for(lambda: server.calls >= 3)
        (later,) = read(server.port, [RegisterSpec("count", 0)]).readings
        assert later.value >= 3
    calls = server.calls
    time.sleep(1.1)
    assert server.calls == calls  # stopping stops the schedule


def test_without_schedule_there_is_exactly_one_update():
    with Counter() as server:
        time.sleep(0.3)
        assert server.calls == 1 and server.updates == 1


def test_default_set_datastore_publishes_a_float_at_input_registers_0_1():
    with VirtualModbusTCPServer() as server:
        result = read(server.port, [RegisterSpec("x", 0)], unit=3)
    assert result.errors == [] and 0.0 <= result.readings[0].value <= 1000.0


class Pair(Device):
    """The simpler form: {address: value}, FLOAT32 input registers big/big by default."""

    def __init__(self) -> None:
        self.missing = False

    def values(self):
        return {0: 230.5, 2: None if self.missing else 12.25}


def test_device_form_and_no_value_is_an_exception_never_zero():
    device = Pair()
    with VirtualModbusTCPServer({5: device}) as server:
        result = read(server.port, [RegisterSpec("u", 0), RegisterSpec("e", 2)], unit=5)
        assert [r.value for r in result.readings] == [230.5, 12.25]
        device.missing = True
        server.set_datastore()  # an update tick, run by hand
        result = read(server.port, [RegisterSpec("u", 0), RegisterSpec("e", 2)], unit=5)
        # One request covered both values: the no-value register fails it with 0x0B, so both
        # are a gap this cycle, and the plan is not split (no exception 2).
        assert result.readings == []
        assert result.failed_values == 2
        assert "modbus exception 11" in result.error
        result = read(server.port, [RegisterSpec("u", 0)], unit=5)
        assert [r.value for r in result.readings] == [230.5]
        device.missing = False
        server.set_datastore()
        result = read(server.port, [RegisterSpec("e", 2)], unit=5)
        assert [r.value for r in result.readings] == [12.25]


def test_only_configured_unit_ids_answer_when_devices_are_given():
    with VirtualModbusTCPServer({1: Pair(), 2: Pair()}) as server:
        assert read(server.port, [RegisterSpec("u", 0)], unit=2).errors == []
        missing = read(server.port, [RegisterSpec("u", 0)], unit=3, timeout_s=0.3)
    assert missing.readings == [] and "timeout" in missing.error


def test_writes_are_rejected_and_change_nothing():
    async def scenario(port: int):
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await asyncio.wait_for(client.connect(), 5)
        try:
            written = await client.write_registers(0, [1, 2], device_id=1)
            single = await client.write_register(0, 7, device_id=1)
            after = await client.read_input_registers(0, count=2, device_id=1)
        finally:
            client.close()
        return written, single, after

    with VirtualModbusTCPServer({1: Pair()}) as server:
        before = server.devices[1].mapped(INPUT)
        written, single, after = asyncio.run(scenario(server.port))
        assert written.isError() and written.exception_code == 1
        assert single.isError() and single.exception_code == 1
        assert after.registers == [before[0], before[1]]
        assert server.devices[1].mapped(INPUT) == before


class Broken(VirtualModbusTCPServer):
    def __init__(self, fail_at_start: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_at_start = fail_at_start
        self.calls = 0

    def set_datastore(self) -> None:
        self.calls += 1
        if self.calls == 1 and self.fail_at_start:
            raise RuntimeError("sensor driver missing")
        if self.calls > 1:
            raise RuntimeError("sensor went away")
        self.set_value(0, 42.0)


def test_a_failing_first_update_fails_the_start():
    server = Broken(fail_at_start=True)
    with pytest.raises(RuntimeError, match="sensor driver missing"):
        server.start_in_thread()
    assert not server.running


def test_a_failing_tick_is_logged_and_the_previous_values_stay(caplog):
    caplog.set_level(logging.ERROR, logger="virtual_server")
    server = Broken(fail_at_start=False, schedule=UpdateSchedule.every_second())
    with server:
        wait_for(lambda: server.calls >= 2)
        (reading,) = read(server.port, [RegisterSpec("x", 0)]).readings
        assert reading.value == 42.0
        wait_for(lambda: any("set_datastore() failed" in r.message for r in caplog.records))
    assert server.updates == 1


def test_a_slow_update_does_not_stall_answers_or_stopping():
    release = threading.Event()

    class Slow(VirtualModbusTCPServer):
        calls = 0

        def set_datastore(self) -> None:
            type(self).calls += 1
            if type(self).calls > 1:
                release.wait(30)  # a source hanging far longer than the test
            self.set_value(0, 1.0)

    server = Slow(schedule=UpdateSchedule.every_second())
    try:
        with server:
            wait_for(lambda: Slow.calls >= 2)
            started = time.monotonic()
            assert read(server.port, [RegisterSpec("x", 0)]).errors == []
            assert time.monotonic() - started < 2.0  # not held up by the hanging update
            started = time.monotonic()
        assert time.monotonic() - started < 5.0
    finally:
        release.set()


def test_device_memory_no_value_rules():
    memory = DeviceMemory(input_registers={0: 1, 1: 2, 2: 3})
    memory.set_no_value(INPUT, 1)
    assert memory.answer(INPUT, 0, 2) == NO_VALUE_EXCEPTION
    assert memory.answer(INPUT, 0, 4) == 2  # an unmapped address is still exception 2
    assert memory.read(INPUT, 1, 1) is None and memory.answer(INPUT, 2, 1) == [3]
    assert memory.mapped(INPUT) == {0: 1, 2: 3}
    assert memory.without_value(INPUT) == {1: NO_VALUE_EXCEPTION}
    memory.set_registers(INPUT, 1, [9])
    assert memory.answer(INPUT, 0, 3) == [1, 9, 3] and memory.without_value(INPUT) == {}
    with pytest.raises(ValueError, match="use unmap"):
        memory.set_no_value(INPUT, 0, exception_code=2)
    with pytest.raises(ValueError, match="not a Modbus exception"):
        memory.set_no_value(INPUT, 0, exception_code=99)


def test_a_value_the_type_cannot_hold_changes_nothing():
    with VirtualModbusTCPServer({1: Pair()}) as server:
        before = server.devices[1].mapped(INPUT)
        with pytest.raises(ValueError, match="address 4: 70000 is outside the INT16 range"):
            server.set_values({0: 5.0, 4: 70000}, data_type=DataType.INT16, unit_id=1)
        assert server.devices[1].mapped(INPUT) == before
