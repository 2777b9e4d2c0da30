"""The virtual server's SunSpec device: its map follows the Alliance's model definitions, its
W_SF changes when the power crosses 3000 W, points it leaves out carry their type's
"not implemented" value, and `--device sunspec` with VIRTUAL_SUNSPEC_BASE_ADDRESS serves it."""

from __future__ import annotations

import asyncio

import pytest

from energymon_pipeline.devices.sunspec import probe_sunspec
from energymon_pipeline.errors import SettingsError
from energymon_pipeline.modbus.client import ModbusConnection
from energymon_pipeline.modbus.types import Endpoint
from virtual_server.devices import make_device
from virtual_server.memory import DeviceMemory
from virtual_server.options import build_servers, parse_device_specs
from virtual_server.sunspec import POWER_THRESHOLD_W, SunSpecInverter, model_words

HOLDING = 3


def test_a_model_is_laid_out_by_its_definition_with_sentinels_for_what_is_missing():
    words = model_words(103, {"W": 1234, "W_SF": -1, "St": 4})
    assert len(words) == 52 and words[:2] == [103, 50]
    assert words[2:6] == [0xFFFF] * 4  # A..AphC uint16 not implemented
    assert words[6] == 0x8000  # A_SF
    assert words[14:16] == [1234, 0xFFFF]  # W and W_SF -1
    assert words[24:26] == [0, 0]  # WH: acc32 "not accumulated"
    assert words[38] == 4 and words[39] == 0xFFFF  # St, StVnd
    assert words[40:42] == [0xFFFF, 0xFFFF]  # Evt1 bitfield32
    common = model_words(1, {"Mn": "ACME", "SN": "x1"})
    assert common[2:4] == [0x4143, 0x4D45] and common[4] == 0
    mppt = model_words(160, {"N": 2}, [{"ID": 1}, {"ID": 2}])
    assert mppt[:2] == [160, 48] and len(mppt) == 50
    assert mppt[10] == 1 and mppt[30] == 2  # each module's ID at the start of its block
    with pytest.raises(KeyError):
        model_words(64999, {})


@pytest.mark.parametrize(("power", "sf", "raw"), [(2999.4, -1, 29994), (3000.0, 0, 3000),
                                                  (4800.6, 0, 4801), (1000.0, -1, 10000)])  # fmt: skip
def test_w_sf_follows_the_power(power, sf, raw):
    device = SunSpecInverter()
    image = device.image(power)
    start = 2 + 68  # "SunS", then the common model; W is the inverter's 15th register
    assert image[start + 14] == raw and image[start + 15] == sf & 0xFFFF
    assert (device.power_w, device.w_sf) == (power, sf)


def test_the_default_power_sequence_crosses_the_threshold_both_ways():
    device = SunSpecInverter(clock=lambda: 0.0)
    memory = DeviceMemory()
    for _ in range(20):
        device.update(memory)
    powers = [p for p, _ in device.history]
    assert min(powers) == 1000.0 and max(powers) == 5000.0
    flips = sum(
        1 for (_, a), (_, b) in zip(device.history, device.history[1:], strict=False) if a != b
    )
    assert flips >= 2
    assert all((sf == -1) == (p < POWER_THRESHOLD_W) for p, sf in device.history)
    assert memory.read(HOLDING, 40000, 2) == [0x5375, 0x6E53]


def test_the_energy_counter_integrates_the_power():
    now = [0.0]
    device = SunSpecInverter(powers=[3600.0], clock=lambda: now[0])
    memory = DeviceMemory()
    device.update(memory)
    before = memory.read(HOLDING, 40070 + 24, 2)
    now[0] = 3600.0  # an hour at 3600 W
    device.update(memory)
    after = memory.read(HOLDING, 40070 + 24, 2)
    assert (after[0] << 16 | after[1]) - (before[0] << 16 | before[1]) == 3600


def test_base_address_from_the_environment():
    assert make_device("sunspec", {"VIRTUAL_SUNSPEC_BASE_ADDRESS": "50001"}).base_address == 50001
    assert make_device("sunspec", {}).base_address == 40000
    with pytest.raises(SettingsError) as error:
        make_device("sunspec", {"VIRTUAL_SUNSPEC_BASE_ADDRESS": "40002"})
    assert str(error.value) == (
        "VIRTUAL_SUNSPEC_BASE_ADDRESS='40002' is not allowed; allowed: 0, 1, 40000, 40001, "
        "50000, 50001"
    )


def test_served_by_the_device_option_and_found_by_discovery():
    specs = parse_device_specs(["sunspec@3", "test"], "--device")
    plan = build_servers(specs, host="127.0.0.1", port=0, schedule=None,
                         env={"VIRTUAL_SUNSPEC_BASE_ADDRESS": "0"})  # fmt: skip
    [server] = plan.servers
    assert plan.descriptions == ["sunspec at unit id 3; test at every other unit id"]
    with server:

        async def run():
            connection = ModbusConnection(
                Endpoint("127.0.0.1", server.port, 3, timeout_s=2.0, retries=0)
            )
            try:
                return await probe_sunspec(connection, 3, 10.0)
            finally:
                connection.close()

        found = asyncio.run(run())
    assert found.device is not None
    assert found.device.base_address == 0
    assert found.device.model_ids == [1, 103, 160, 203]
