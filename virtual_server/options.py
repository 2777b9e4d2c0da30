"""`python -m virtual_server` options -> the servers to run.

Options come from command-line flags, else from the environment (see
`virtual_server.settings.run_settings`); errors are one line naming the flag or variable, its
value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from energymon_pipeline.errors import SettingsError
from virtual_server.devices import BUILTIN_DEVICES, make_device
from virtual_server.devices.base import Device
from virtual_server.fleet import Fleet
from virtual_server.schedule import UpdateSchedule
from virtual_server.scheduled_server import ALL_UNIT_IDS, VirtualModbusTCPServer

__all__ = ["DeviceSpec", "build_servers", "parse_device_specs"]

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<unit>\d{1,3}))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """One `NAME[@UNIT]` entry; unit None means every unit id no other entry names."""

    name: str
    unit_id: int | None = None

    def __str__(self) -> str:
        return self.name if self.unit_id is None else f"{self.name}@{self.unit_id}"


def parse_device_specs(entries: Sequence[str], source: str) -> list[DeviceSpec]:
    """`source` names where the entries came from in messages: `--device` or
    `VIRTUAL_SERVER_DEVICES`."""
    allowed = (
        f"NAME or NAME@UNIT with NAME one of {', '.join(BUILTIN_DEVICES)} and UNIT a unit id 0-255"
    )

    def refuse(entry: str, reason: str) -> SettingsError:
        shown = f"{source} entry {entry!r}" if source.isupper() else f"{source} {entry!r}"
        return SettingsError(f"{shown} {reason}; allowed: {allowed}")

    specs: list[DeviceSpec] = []
    for entry in entries:
        match = _SPEC.match(entry.strip())
        if not match:
            raise refuse(entry, "is not a device entry")
        name = match["name"].lower()
        if name not in BUILTIN_DEVICES:
            raise refuse(entry, f"names the unknown device {name!r}")
        unit = int(match["unit"]) if match["unit"] is not None else None
        if unit is not None and unit > 255:
            raise refuse(entry, f"has the unit id {unit}, outside 0-255")
        specs.append(DeviceSpec(name, unit))
    if not specs:
        raise SettingsError(f"{source} names no device; allowed: {allowed}")
    wildcards = [spec for spec in specs if spec.unit_id is None]
    if len(wildcards) > 1:
        raise SettingsError(
            f"{source}: {wildcards[0]} and {wildcards[1]} both claim every unit id; give all "
            "but one of them a unit id (NAME@UNIT)"
        )
    units = [spec.unit_id for spec in specs if spec.unit_id is not None]
    repeated = sorted({unit for unit in units if units.count(unit) > 1})
    if repeated:
        raise SettingsError(f"{source}: unit id {repeated[0]} is given to two devices")
    return specs


@dataclass
class ServerPlan:
    servers: list[VirtualModbusTCPServer]
    #: One line per server: what it serves, for the start-up log.
    descriptions: list[str]


def build_servers(
    specs: Sequence[DeviceSpec],
    *,
    host: str,
    port: int,
    schedule: UpdateSchedule | None,
    fleet_size: int = 0,
    units_per_port: int = 247,
    response_delay_ms: float = 0.0,
    gateway: bool = False,
    max_connections: int = 0,
    env: Mapping[str, str] | None = None,
    source: str = "--device",
) -> ServerPlan:
    """One server for the listed devices, or with `fleet_size` > 0 a fleet of that many
    instances of the one listed device; `gateway` and `max_connections` apply to every
    server (port)."""
    env = {} if env is None else env
    if fleet_size > 0:
        if len(specs) != 1 or specs[0].unit_id is not None:
            shown = ", ".join(str(spec) for spec in specs)
            raise SettingsError(
                f"a fleet simulates one kind of device, but {source} gives {shown!r}; "
                "allowed: exactly one device name without @UNIT"
            )
        name = specs[0].name
        try:
            fleet = Fleet(
                fleet_size,
                lambda index: make_device(name, env),
                host=host,
                first_port=port,
                units_per_port=units_per_port,
                response_delay_ms=response_delay_ms,
                schedule=schedule,
                gateway=gateway,
                max_connections=max_connections,
            )
        except ValueError as error:
            raise SettingsError(f"fleet: {error}") from None
        descriptions = []
        for server in fleet.servers:
            units = sorted(server.simulated)
            descriptions.append(f"{len(units)} x {name} at unit ids {units[0]}-{units[-1]}")
        return ServerPlan(fleet.servers, descriptions)

    devices: dict[int, Device] = {}
    parts = []
    for spec in specs:
        if spec.unit_id is not None:
            devices[spec.unit_id] = make_device(spec.name, env)
            parts.append(f"{spec.name} at unit id {spec.unit_id}")
    for spec in specs:
        if spec.unit_id is None:
            device = make_device(spec.name, env)
            for unit_id in ALL_UNIT_IDS:
                devices.setdefault(unit_id, device)
            parts.append(f"{spec.name} at {'every other' if parts else 'every'} unit id")
    server = VirtualModbusTCPServer(
        devices,
        schedule=schedule,
        host=host,
        port=port,
        response_delay_ms=response_delay_ms,
        gateway=gateway,
        max_connections=max_connections,
    )
    return ServerPlan([server], ["; ".join(parts)])
