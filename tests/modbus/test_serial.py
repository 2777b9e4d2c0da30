"""Modbus RTU on a local serial port: pymodbus's serial client through pyserial, on a real
pseudo-terminal pair with an RTU responder on the other end (tests/rtu_sim.py: real frames,
CRC checked both ways)."""

from __future__ import annotations

import json

import pytest
from rtu_sim import RtuBus, word

from energymon_pipeline.modbus.connectivity import check_sync
from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    RegisterSpec,
    SerialLine,
)

pytestmark = pytest.mark.timeout(60)

REGISTERS = tuple(
    RegisterSpec(f"r{a}", a, DataType.UINT16, FunctionCode.READ_INPUT_REGISTERS)
    for a in (0, 1, 2, 30)
)


REGISTERS_CSV = (
    "type,register_address,measurement_name,data_unit,data_type,function_code,word_order,"
    "byte_order\nserialtest,0,a,V,4,4,2,2\nserialtest,1,b,V,4,4,2,2\n"
)


@pytest.fixture
def bus():
    started: list[RtuBus] = []

    def start(**kwargs) -> RtuBus:
        started.append(RtuBus(**kwargs).start())
        return started[-1]

    yield start
    for bus in started:
        bus.stop()


def serial_meter(path: str, unit: int, timeout_s: float = 0.5, parity: str = "N") -> MeterSpec:
    return MeterSpec(
        meter_id=unit,
        endpoint=Endpoint(
            path, 0, unit, timeout_s=timeout_s, retries=0,
            # Parity N: a Linux pseudo-terminal refuses PARENB (EINVAL), a real port does not.
            serial=SerialLine(path, baudrate=19200, parity=parity, stopbits=1, bytesize=8),
        ),
        meter_type="t",
        description=None,
        registers=REGISTERS,
    )  # fmt: skip


def test_meters_on_a_serial_bus_are_read_one_request_at_a_time(bus):
    rtu = bus(units={1, 2, 3})
    results = read_meters_sync([serial_meter(rtu.path, unit) for unit in (1, 2, 3)])
    for result in results:
        unit = result.meter.endpoint.unit_id
        assert result.ok, result.error
        assert {r.register.measurement: r.value for r in result.readings} == {
            f"r{a}": word(unit, a) for a in (0, 1, 2, 30)
        }
    assert rtu.bad_crc == 0
    # Two planned requests per meter, in the meters' order, each to its own unit id.
    assert [(u, fc, a) for u, fc, a, _n in rtu.requests] == [
        (u, 4, a) for u in (1, 2, 3) for a in (0, 30)
    ]


def test_a_dead_meter_on_the_bus_costs_only_itself(bus):
    rtu = bus(units={1, 2, 3}, silent={2})
    results = read_meters_sync([serial_meter(rtu.path, unit) for unit in (1, 2, 3)])
    by_unit = {r.meter.endpoint.unit_id: r for r in results}
    assert by_unit[1].ok and by_unit[3].ok, (by_unit[1].error, by_unit[3].error)
    assert not by_unit[2].ok and "timeout" in by_unit[2].error


def test_a_missing_serial_port_is_named(tmp_path):
    path = str(tmp_path / "ttyUSB9")
    [result] = read_meters_sync([serial_meter(path, 1)])
    assert not result.ok
    assert f"serial port {path} does not exist" in result.error


def test_connectivity_check_of_a_serial_meter(bus, tmp_path):
    rtu = bus(units={7})
    outcome = check_sync(serial_meter(rtu.path, 7))
    assert outcome.ok, outcome.message
    assert "serial port" in outcome.message
    missing = check_sync(serial_meter(str(tmp_path / "ttyUSB9"), 7))
    assert not missing.ok and "does not exist" in missing.message


def test_line_settings_the_port_refuses_are_named(bus):
    rtu = bus(units={1})
    [result] = read_meters_sync([serial_meter(rtu.path, 1, parity="E")])
    assert not result.ok
    assert f"serial port {rtu.path} refused the settings" in result.error


def test_probe_and_read_on_a_serial_port(bus, energymon, tmp_path):
    rtu = bus(units={4})
    probed = energymon(
        "probe", "--serial", rtu.path, "--unit", "4", "--address", "10", "--count", "3",
        "--function", "4", "--type", "UINT16", "--timeout", "1", "--json",
    )  # fmt: skip
    assert probed.exit_code == 0, probed.stderr
    values = [r["value"] for r in json.loads(probed.stdout)["readings"]]
    assert values == [word(4, 10), word(4, 11), word(4, 12)]

    assert energymon("db", "upgrade").exit_code == 0
    csv = tmp_path / "registers.csv"
    csv.write_text(REGISTERS_CSV)
    assert energymon("registers", "import", str(csv)).exit_code == 0
    added = energymon(
        "meters", "add", "--serial", rtu.path, "--baudrate", "19200", "--parity", "N",
        "--stopbits", "1", "--unit", "4", "--type", "serialtest", "--id", "9",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    read = energymon("read", "9", "--json")
    assert read.exit_code == 0, read.stderr
    assert {r["measurement"]: r["value"] for r in json.loads(read.stdout)["readings"]} == {
        "a": word(4, 0), "b": word(4, 1),
    }  # fmt: skip
    assert rtu.bad_crc == 0


def test_probe_needs_host_or_serial(energymon):
    neither = energymon("probe", "--address", "0")
    assert neither.exit_code == 2 and "give --host (Modbus TCP) or --serial PATH" in neither.stderr
