"""The virtual Modbus TCP server: simulated meters, bridges for devices that do not speak
Modbus, and fleets for benchmarks. Run it with `python -m virtual_server`; extend it as
virtual_server/README.md shows.

- `server`: the read-only core (sparse device memories served by pymodbus).
- `tcp_server`: `VirtualModbusTCPServer`, the original's extension contract (override
  `set_datastore()`), refreshed on the update schedule.
- `devices`: the simpler form (`Device.values()` -> {address: value}) and the built-in
  `test` and `sdm630` devices; `adapters`: bridges such as the Zeversolar TLC10000.
- `fleet`: many devices across unit ids and ports.
"""

from virtual_server.devices.base import Device, as_float32, publish
from virtual_server.fleet import Fleet, FleetMember
from virtual_server.runner import run, serve
from virtual_server.schedule import UpdateSchedule
from virtual_server.server import NO_VALUE_EXCEPTION, DeviceMemory, VirtualModbusServer
from virtual_server.tcp_server import ALL_UNIT_IDS, VirtualModbusTCPServer

__all__ = [
    "ALL_UNIT_IDS",
    "NO_VALUE_EXCEPTION",
    "Device",
    "DeviceMemory",
    "Fleet",
    "FleetMember",
    "UpdateSchedule",
    "VirtualModbusServer",
    "VirtualModbusTCPServer",
    "as_float32",
    "publish",
    "run",
    "serve",
]
