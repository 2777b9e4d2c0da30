"""SunSpec discovery over energymon's own ModbusConnection: against the virtual SunSpec
device at every base address devices use, against a plain pymodbus server holding a SunSpec
image written out here by hand (software this project did not write), and against units that
are not SunSpec, silent, or hold a chain that never ends. Only reads, one at a time, bounded."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from energymon_pipeline.devices.sunspec import (
    MAX_MODELS,
    SunSpecDevice,
    discover_sunspec,
    layout_registers,
    probe_sunspec,
)
from energymon_pipeline.modbus.client import ModbusConnection
from energymon_pipeline.modbus.types import Endpoint
from virtual_server import DeviceMemory, VirtualModbusTCPServer
from virtual_server.sunspec import SunSpecInverter

HOLDING = 3


def probe(port: int, unit: int = 1, timeout_s: float = 5.0, request_timeout_s: float = 1.0):
    async def run():
        connection = ModbusConnection(
            Endpoint("127.0.0.1", port, unit, timeout_s=request_timeout_s, retries=0)
        )
        try:
            return await probe_sunspec(connection, unit, timeout_s)
        finally:
            connection.close()

    return asyncio.run(run())


def test_the_virtual_device_is_found_with_its_models_and_identity():
    with VirtualModbusTCPServer({3: SunSpecInverter()}) as server:
        server.reset_requests()
        found = probe(server.port, unit=3)
        requests = server.requests
        stats = server.stats
    device = found.device
    assert device is not None and found.answered
    assert device.unit == 3 and device.base_address == 40000
    assert [(m.model_id, m.address, m.length) for m in device.models] == [
        (1, 40002, 66),
        (103, 40070, 50),
        (160, 40122, 48),
        (203, 40172, 105),
    ]
    assert device.identity == {
        "Mn": "energymon",
        "Md": "Virtual SunSpec Inverter",
        "Opt": "3 phase, 2 MPPT",
        "Vr": "1.0.0",
        "SN": "VS-0001",
    }
    assert device.device_address == 1
    # Marker, five headers (four models and the end marker), the common model: 7 reads.
    assert [(r.function_code, r.address, r.count) for r in requests] == [
        (HOLDING, 40000, 4),
        (HOLDING, 40002, 2),
        (HOLDING, 40070, 2),
        (HOLDING, 40122, 2),
        (HOLDING, 40172, 2),
        (HOLDING, 40279, 2),
        (HOLDING, 40002, 68),
    ]
    assert stats.max_in_flight == 1
    assert "energymon Virtual SunSpec Inverter" in found.detail
    assert SunSpecDevice.from_json(device.to_json()) == device


@pytest.mark.parametrize("base", [0, 1, 40001, 50000, 50001])
def test_every_base_address_devices_use_is_found(base):
    with VirtualModbusTCPServer({1: SunSpecInverter(base_address=base)}) as server:
        device = probe(server.port).device
    assert device is not None
    assert device.base_address == base
    assert device.models[0].address == base + 2
    assert device.model_ids == [1, 103, 160, 203]


def test_a_unit_that_answers_without_sunspec_is_not_a_device():
    with VirtualModbusTCPServer({1: SunSpecInverter()}) as server:
        server.devices[2] = DeviceMemory(holding_registers={0: 1, 1: 2, 2: 3, 3: 4})
        found = probe(server.port, unit=2)
    assert found.device is None
    assert found.answered
    assert found.detail.startswith("no SunSpec marker at 40000/40001, 50000/50001, 0/1")


def test_a_silent_unit_ends_within_the_time_given(silent_port):
    started = time.monotonic()
    found = probe(silent_port, timeout_s=1.5, request_timeout_s=5.0)
    elapsed = time.monotonic() - started
    assert found.device is None and not found.answered
    assert elapsed < 3.0
    assert "no answer" in found.detail or "out of time" in found.detail


def test_a_refused_connection_is_not_a_device(refused_port):
    found = probe(refused_port)
    assert found.device is None and not found.answered


def test_a_chain_without_an_end_marker_is_bounded():
    # "SunS", then empty models (id 64000, length 0) forever.
    memory = DeviceMemory()
    memory.set_registers(HOLDING, 40000, [0x5375, 0x6E53] + [64000, 0] * 200)
    with VirtualModbusTCPServer({1: SunSpecInverter()}) as server:
        server.devices[5] = memory
        found = probe(server.port, unit=5)
    assert found.device is None and found.answered
    assert f"more than {MAX_MODELS} models" in found.detail


def test_a_chain_that_stops_at_unmapped_registers_ends_there():
    # Some devices answer exception 2 where the end marker should be.
    memory = DeviceMemory()
    memory.set_registers(HOLDING, 0, [0x5375, 0x6E53, 1, 66] + [0] * 66)
    with VirtualModbusTCPServer({1: SunSpecInverter()}) as server:
        server.devices[6] = memory
        found = probe(server.port, unit=6)
    assert found.device is not None
    assert found.device.model_ids == [1]
    assert found.device.identity == {}


# --- a plain pymodbus server ---------------------------------------------------------------


def _text(value: str, registers: int) -> list[int]:
    data = value.encode("ascii").ljust(2 * registers, b"\0")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def hand_made_image() -> list[int]:
    """SunS, common model 1, single-phase inverter 101 and the end marker, typed in from the
    SunSpec Information Model Reference, not produced by this project's code."""
    common = [1, 66, *_text("Fronius", 16), *_text("Primo 5.0-1", 16), *_text("", 8),
              *_text("3.14.1-2", 8), *_text("12345678", 16), 1, 0x8000]  # fmt: skip
    inverter = [101, 50]
    body = [0] * 50
    body[0:4] = [2174, 2174, 0xFFFF, 0xFFFF]  # A, AphA, AphB/AphC not implemented
    body[4] = 0xFFFE  # A_SF = -2
    body[5:8] = [0xFFFF, 0xFFFF, 0xFFFF]  # PPVphAB.. not implemented
    body[8:11] = [2301, 0xFFFF, 0xFFFF]  # PhVphA, PhVphB/C not implemented
    body[11] = 0xFFFF  # V_SF = -1
    body[12], body[13] = 5000, 0  # W = 5000, W_SF = 0
    body[14], body[15] = 4999, 0xFFFE  # Hz 49.99
    inverter += body
    return [0x5375, 0x6E53, *common, *inverter, 0xFFFF, 0]


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


@pytest.mark.parametrize("base", [0, 50000])
def test_discovery_against_a_plain_pymodbus_server(base):
    image = hand_made_image()

    async def run():
        port = free_port()
        device = SimDevice(
            id=1, simdata=[SimData(address=base, values=image, datatype=SimType.REGISTERS)]
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        connection = ModbusConnection(Endpoint("127.0.0.1", port, 1, timeout_s=2.0, retries=0))
        try:
            return await asyncio.wait_for(discover_sunspec(connection, 1, 10.0), 15)
        finally:
            connection.close()
            await server.shutdown()

    device = asyncio.run(run())
    assert device is not None
    assert device.base_address == base
    assert [(m.model_id, m.address, m.length) for m in device.models] == [
        (1, base + 2, 66),
        (101, base + 70, 50),
    ]
    assert (device.manufacturer, device.model, device.version, device.serial_number) == (
        "Fronius",
        "Primo 5.0-1",
        "3.14.1-2",
        "12345678",
    )
    assert "Opt" not in device.identity  # empty text is not an identity
    names = {r.measurement: r for r in layout_registers(device).registers}
    assert names["inverter_single_phase_W"].address == base + 72 + 12
    assert names["inverter_single_phase_W"].scale_factor_address == base + 72 + 13


def test_a_chain_that_fills_the_address_space_ends_at_65535():
    # SunS at 50000, then one model whose body reaches register 65535: nothing can follow.
    length = 0x10000 - 50004
    memory = DeviceMemory()
    memory.set_registers(HOLDING, 50000, [0x5375, 0x6E53, 64001, length] + [0] * length)
    with VirtualModbusTCPServer({1: SunSpecInverter()}) as server:
        server.devices[4] = memory
        found = probe(server.port, unit=4)
    assert found.device is not None
    assert [(m.model_id, m.address, m.length) for m in found.device.models] == [
        (64001, 50002, length)
    ]
