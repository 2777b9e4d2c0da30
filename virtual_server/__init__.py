"""The virtual Modbus TCP server: simulated meters, bridges for devices that do not speak
Modbus, and fleets for benchmarks. Run it with `python -m virtual_server`; extend it as
virtual_server/README.md shows.

- `memory`: `DeviceMemory`, what one simulated unit id holds (sparse, read-only tables).
- `request_handling`: what a request is answered with, from those memories.
- `mbap`: Modbus TCP framing (every frame of a received chunk, in order).
- `server`: `DeviceMemoryServer`, the read-only server answering from memories its caller
  fills (the tests' server), optionally as a gateway (one request at a time, a connection
  limit); `ServerStats`, its counts.
- `scheduled_server`: `VirtualModbusTCPServer`, a `DeviceMemoryServer` that refreshes its own
  values on the update schedule; the original's extension contract (override
  `set_datastore()`).
- `devices`: the simpler form (`Device.values()` -> {address: value}) and the built-in
  `test` and `sdm630` devices; `adapters`: bridges such as the Zeversolar TLC10000.
- `fleet`: many devices across unit ids and ports.
- `settings`: the VIRTUAL_SERVER_* and VIRTUAL_TLC10000_* variables.
- `runner`: serving until SIGTERM; the counts logged at exit and kept in a status file.
"""

from virtual_server.devices.base import Device, as_float32, publish
from virtual_server.fleet import Fleet, FleetMember
from virtual_server.memory import NO_VALUE_EXCEPTION, DeviceMemory
from virtual_server.request_handling import Request
from virtual_server.runner import run, serve
from virtual_server.schedule import UpdateSchedule
from virtual_server.scheduled_server import ALL_UNIT_IDS, VirtualModbusTCPServer
from virtual_server.server import DeviceMemoryServer, ServerStats

__all__ = [
    "ALL_UNIT_IDS",
    "NO_VALUE_EXCEPTION",
    "Device",
    "DeviceMemory",
    "DeviceMemoryServer",
    "Fleet",
    "FleetMember",
    "Request",
    "ServerStats",
    "UpdateSchedule",
    "VirtualModbusTCPServer",
    "as_float32",
    "publish",
    "run",
    "serve",
]
