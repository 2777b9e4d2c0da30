"""`make run` promise: the registry's seeded virtual meter reads real (random) values from the
virtual server's `test` device, on both registry backends."""

from __future__ import annotations

import dataclasses

from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.registry import db
from energymon_pipeline.registry.definitions import load_definitions
from virtual_server import VirtualModbusTCPServer
from virtual_server.devices import RandomTestDevice


def test_seeded_registry_meter_reads_the_test_device(migrated):
    assert db.upgrade(migrated) == []  # already current: upgrading again changes nothing
    definitions = load_definitions(migrated)
    (meter,) = [m for m in definitions.meters if m.meter_type == "virtual_modbustcp"]
    assert meter.meter_id == 0 and meter.endpoint.unit_id == 0
    device = RandomTestDevice(seed=11)
    with VirtualModbusTCPServer(device) as server:
        endpoint = dataclasses.replace(
            meter.endpoint, host="127.0.0.1", port=server.port, timeout_s=2.0, retries=0
        )
        (result,) = read_meters_sync([dataclasses.replace(meter, endpoint=endpoint)])
    assert result.errors == []
    (reading,) = result.readings
    assert reading.register.measurement == "test_measurement"
    assert reading.value == device.published[(3, 0)]


def test_test_device_values_are_random_and_fit_their_types():
    device = RandomTestDevice(seed=5)
    with VirtualModbusTCPServer({0: device}) as server:
        memory = server.devices[0]
        seen = set()
        for _ in range(5):
            server.set_datastore()
            whole, real = device.published[(3, 0)], device.published[(4, 0)]
            assert -(2**15) <= whole < 2**15 and 0.0 <= real <= 1000.0
            assert memory.read(3, 0, 1) is not None and memory.read(4, 0, 2) is not None
            seen.add(whole)
    assert len(seen) > 1
