"""What answers on a link, and what it is: the identification `energymon discover` prints and
the connectivity check of an `auto` meter records.

For one unit on an open `ModbusConnection` (`identify_unit`): SunSpec first (a "SunS" map
describes itself: models and identity), then the shipped profiles' signatures (e.g. Eastron's
meter code), else "answers, unknown". `scan` does it for many unit ids of one link.

Why this shape:

- One request at a time: every read is awaited before the next is sent (a bus carries one
  request at a time), on the one connection the caller opened; different units of a link
  are identified one after the other, never concurrently.
- A first probe read decides whether a unit is there at all: holding registers 40000-40003
  (where SunSpec's search starts). Any answer counts, a Modbus exception too (most devices
  answer exception 2 for registers they do not have), except exceptions 10 and 11 (a
  gateway saying its path or target is not available: no device behind that unit id). A
  unit that stays silent costs that one request's timeout, not one per SunSpec base address
  and profile signature, so a scan of 247 silent unit ids takes 247 timeouts, no more.
- Bounded: a unit that answers is identified within `unit_time_s` (its SunSpec search and
  signature reads share it), and the whole scan within `total_s`; units that the scan's time
  does not reach are listed as not scanned. A scan stops early only when the link itself
  fails (refused, unreachable, a serial port that cannot be opened): no later unit could
  answer then either.
- Only reads (function codes 3 and 4) are sent; nothing is written to a device.

`identify_and_store` is the connectivity check of a meter of type `auto`: it identifies the
meter's unit and records the result in the registry (the meter's type becomes `sunspec` with
its layout stored, or the matched profile's type with the profile's registers imported when
that type has none yet); a unit that answers but is not identified fails the check and keeps
type `auto`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from energymon_pipeline.devices.signatures import ProfileMatch, match_profile
from energymon_pipeline.devices.sunspec import SUNSPEC_TYPE, SunSpecDevice, probe_sunspec
from energymon_pipeline.modbus.client import BlockRead, ErrorKind, ModbusConnection
from energymon_pipeline.modbus.connectivity import (
    REACHABLE,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    ConnectivityResult,
)
from energymon_pipeline.modbus.types import FunctionCode, MeterSpec, ReadRequest
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.profiles import Profile, import_profile, list_profiles
from energymon_pipeline.registry.tables import energy_meters

__all__ = [
    "AUTO_TYPE",
    "FIRST_READ",
    "Garbled",
    "IDENTIFY_TIME_S",
    "UNIDENTIFIED",
    "UNKNOWN",
    "Identification",
    "LinkDown",
    "ScanResult",
    "identify_and_store",
    "identify_unit",
    "scan",
]

#: The `energy_meters.type` of a meter its connectivity check identifies.
AUTO_TYPE = "auto"
#: `Identification.identified_as` of a unit that answers but is not identified.
UNKNOWN = "unknown"
#: The connectivity result of an `auto` meter that answers but is not identified.
UNIDENTIFIED = "unidentified"
#: The connectivity result of an `auto` meter whose answer was not a Modbus answer.
MALFORMED = str(ErrorKind.MALFORMED)
#: The first probe read of every unit: where SunSpec's search starts.
FIRST_READ = ReadRequest(FunctionCode.READ_HOLDING_REGISTERS, 40000, 4)
#: Exceptions a gateway answers for a unit id with no device behind it (10: gateway path
#: unavailable, 11: gateway target device failed to respond).
ABSENT_EXCEPTIONS = frozenset({10, 11})
#: How long the connectivity check of an `auto` meter may identify it in all.
IDENTIFY_TIME_S = 30.0
#: Share of a unit's time its SunSpec search may use (the rest is for the signatures).
_SUNSPEC_SHARE = 0.6


class LinkDown(Exception):
    """The link cannot be used (refused, unreachable, port not opened): stop scanning it."""


class Garbled(Exception):
    """The unit's first answer was not a Modbus answer to the request (another protocol on
    the port, RTU framing on a Modbus TCP port or the reverse): not asked further."""


@dataclass(frozen=True)
class Identification:
    """A unit that answered, and what it is."""

    unit: int
    #: "sunspec", the matched profile's name, or "unknown".
    identified_as: str
    sunspec: SunSpecDevice | None = None
    profile: ProfileMatch | None = None
    #: For an unknown unit: what was tried, in one line.
    detail: str = ""

    @property
    def identified(self) -> bool:
        return self.identified_as != UNKNOWN

    @property
    def device_name(self) -> str | None:
        """Manufacturer and model for a person, when known."""
        if self.sunspec is not None:
            return " ".join(p for p in (self.sunspec.manufacturer, self.sunspec.model) if p) or None
        if self.profile is not None:
            return f"{self.profile.manufacturer} {'/'.join(self.profile.models)}".strip() or None
        return None

    def details(self) -> str:
        """One line: SunSpec models and identity, or the profile and its signature value."""
        device = self.sunspec
        if device is not None:
            ids = ", ".join(str(i) for i in device.model_ids)
            extra = ", ".join(
                f"{k} {v}"
                for k, v in (("version", device.version), ("serial", device.serial_number))
                if v
            )
            who = self.device_name or "unnamed device"
            return f"{who}{f' ({extra})' if extra else ''}; models {ids} at {device.base_address}"
        if self.profile is not None:
            return str(self.profile)
        return f"answers, unknown ({self.detail})" if self.detail else "answers, unknown"

    def as_dict(self) -> dict[str, Any]:
        """The `discover --json` shape of one unit."""
        data: dict[str, Any] = {"unit": self.unit, "identified_as": self.identified_as}
        if self.sunspec is not None:
            layout = self.sunspec.as_dict()
            data.update(
                base_address=layout["base_address"],
                models=layout["models"],
                identity=layout["identity"],
            )
        elif self.profile is not None:
            match = self.profile
            data.update(
                profile=match.profile,
                manufacturer=match.manufacturer,
                model="/".join(match.models),
                signature=match.signature.describe(),
                value=match.value,
                also=list(match.also),
            )
        else:
            data["detail"] = self.detail
        return data


@dataclass
class ScanResult:
    #: Units that answered, in scan order.
    found: list[Identification] = field(default_factory=list)
    #: Units asked (answering or not).
    scanned: list[int] = field(default_factory=list)
    #: Units the scan did not reach: its time ran out, or the link failed.
    not_scanned: list[int] = field(default_factory=list)
    #: Units whose first answer was malformed (Garbled), with the first such error.
    garbled: list[int] = field(default_factory=list)
    garbled_error: str | None = None
    #: Why the scan stopped early (the link failed), or None.
    link_error: str | None = None
    elapsed_s: float = 0.0


def _link_failure(block: BlockRead) -> bool:
    error = block.error
    if error is None:
        return False
    if error.kind in (ErrorKind.REFUSED, ErrorKind.CONNECTION):
        return True
    if error.kind is ErrorKind.CLOSED and "right after accepting" in error.detail:
        return True  # a gateway at its connection limit: no unit can be asked
    # A reconnect that timed out (the first connect is the caller's).
    return error.kind is ErrorKind.TIMEOUT and error.detail.startswith("no connection")


async def _answers(connection: ModbusConnection, unit: int, timeout_s: float) -> str | None:
    """The first probe read: what `unit` answered (for a person), or None when nothing is
    there. LinkDown when the link failed."""
    meter = dataclasses.replace(
        connection.endpoint,
        unit_id=unit,
        timeout_s=max(0.05, min(timeout_s, connection.endpoint.timeout_s)),
        retries=0,
    )
    block = await connection.read(FIRST_READ, meter)
    if block.error is None:
        return f"{FIRST_READ.count} registers"
    if _link_failure(block):
        raise LinkDown(str(block.error))
    if block.error.kind is ErrorKind.MALFORMED:
        raise Garbled(str(block.error))
    if block.error.kind is ErrorKind.MODBUS_EXCEPTION:
        if block.error.exception_code in ABSENT_EXCEPTIONS:
            return None
        return str(block.error)
    return None  # silent, or the connection closed on the request: nobody there to ask


async def identify_unit(
    connection: ModbusConnection,
    unit: int,
    unit_time_s: float,
    profiles: list[Profile] | None = None,
) -> Identification | None:
    """What `unit` on `connection`'s link is, or None when it does not answer the first
    probe read. Ends within `unit_time_s` (each request's timeout is at most the
    connection's); LinkDown when the link failed, Garbled when the first answer was not a
    Modbus answer. `profiles`: default every shipped one."""
    deadline = time.monotonic() + max(0.0, unit_time_s)
    first = await _answers(connection, unit, unit_time_s)
    if first is None:
        return None
    remaining = deadline - time.monotonic()
    probe = await probe_sunspec(connection, unit, remaining * _SUNSPEC_SHARE)
    if probe.device is not None:
        return Identification(unit, SUNSPEC_TYPE, sunspec=probe.device)
    remaining = deadline - time.monotonic()
    match = await match_profile(connection, unit, remaining, profiles)
    if match is not None:
        return Identification(unit, match.profile, profile=match)
    return Identification(
        unit,
        UNKNOWN,
        detail=f"its first read (holding register {FIRST_READ.address}) got {first}; no "
        "SunSpec map, no shipped profile's signature",
    )


async def scan(
    connection: ModbusConnection,
    units: Iterable[int],
    unit_time_s: float,
    total_s: float,
    on_unit: Callable[[int, Identification | None], None] | None = None,
) -> ScanResult:
    """Identify each of `units` in turn on `connection`, within `total_s` in all.
    `on_unit(unit, identification or None)` is called after each."""
    started = time.monotonic()
    deadline = started + max(0.0, total_s)
    units = list(units)
    result = ScanResult()
    profiles = list_profiles()
    # The first read connects (the connection's own connect checks a peer that accepts and
    # drops at once; a link that cannot be connected is LinkDown there).
    for index, unit in enumerate(units):
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            result.not_scanned = units[index:]
            break
        try:
            found = await identify_unit(connection, unit, min(unit_time_s, remaining), profiles)
        except LinkDown as down:
            result.link_error = str(down)
            result.not_scanned = units[index:]
            break
        except Garbled as garbled:
            found = None
            result.garbled.append(unit)
            result.garbled_error = result.garbled_error or str(garbled)
        result.scanned.append(unit)
        if found is not None:
            result.found.append(found)
        if on_unit is not None:
            on_unit(unit, found)
    result.elapsed_s = time.monotonic() - started
    return result


# --- the connectivity check of an `auto` meter -------------------------------------------

_FAILURES = {ErrorKind.REFUSED: REFUSED, ErrorKind.TIMEOUT: TIMEOUT}


async def _identify(
    meter: MeterSpec, time_s: float
) -> tuple[Identification | None, float | None, ConnectivityResult | None]:
    """(what the unit is, TCP connect latency, the link's failure as a result)."""
    connection = ModbusConnection(meter.endpoint)
    try:
        started = time.monotonic()
        error = await connection.open()
        if error is not None:
            result = _FAILURES.get(error.kind, UNREACHABLE)
            return None, None, ConnectivityResult(result, None, str(error))
        latency_ms = None
        if meter.endpoint.serial is None:
            latency_ms = (time.monotonic() - started) * 1000
        try:
            found = await identify_unit(connection, meter.endpoint.unit_id, time_s)
        except LinkDown as down:
            result = REFUSED if "refused" in str(down) else UNREACHABLE
            return None, latency_ms, ConnectivityResult(result, latency_ms, str(down))
        except Garbled as garbled:
            message = f"unit {meter.endpoint.unit_id}: {garbled}; the type stays {AUTO_TYPE!r}"
            return None, latency_ms, ConnectivityResult(MALFORMED, latency_ms, message)
        return found, latency_ms, None
    finally:
        connection.close()


def set_identified_type(engine: Engine, meter_id: int, type_: str) -> bool:
    """Give an `auto` meter the type it was identified as; False when the meter is gone or
    no longer `auto` (someone set its type meanwhile: theirs stands)."""
    statement = (
        energy_meters.update()
        .where(energy_meters.c.id == meter_id, energy_meters.c.type == AUTO_TYPE)
        .values(type=type_)
    )
    return bool(queries.run_in_transaction(engine, lambda c: c.execute(statement).rowcount))


def import_profile_if_missing(engine: Engine, profile: str, as_type: str | None = None) -> str:
    """Import `profile`'s registers (as `as_type`) unless its type has registers already
    (those may be the user's own edits: left alone). Returns what was done, in words."""
    type_ = as_type or profile
    present = queries.run_in_transaction(engine, queries.register_types)
    if type_ in present:
        return f"type {type_!r} already has registers"
    result = import_profile(engine, profile, as_type)
    return f"profile {profile} imported as type {type_!r} ({len(result.ids)} register rows)"


def identify_and_store(
    engine: Engine, meter: MeterSpec, time_s: float = IDENTIFY_TIME_S
) -> ConnectivityResult:
    """The connectivity check of an `auto` meter: identify its unit and record what it is
    (see the module doc). The result is `reachable` only when the meter was identified."""
    from energymon_pipeline.devices.sunspec_store import layout_endpoint, save_layout

    unit = meter.endpoint.unit_id
    found, latency_ms, failure = asyncio.run(_identify(meter, time_s))
    if failure is not None:
        return failure
    if found is None:
        return ConnectivityResult(
            TIMEOUT,
            latency_ms,
            f"unit {unit} did not answer its first read (holding register "
            f"{FIRST_READ.address}) within {meter.endpoint.timeout_s:g} s; the type stays "
            f"{AUTO_TYPE!r}",
        )
    if not found.identified:
        return ConnectivityResult(
            UNIDENTIFIED,
            latency_ms,
            f"unit {unit} answers, but it is {found.detail}; the type stays {AUTO_TYPE!r}: "
            "set the meter's type by hand (a profile's name, or registers of your own)",
        )
    if found.sunspec is not None:
        save_layout(engine, meter.meter_id, layout_endpoint(meter), found.sunspec)
        done = "layout stored"
    else:
        assert found.profile is not None
        done = import_profile_if_missing(engine, found.profile.profile)
    if not set_identified_type(engine, meter.meter_id, found.identified_as):
        return ConnectivityResult(
            UNIDENTIFIED,
            latency_ms,
            f"identified as {found.identified_as} ({found.details()}), but the meter is no "
            f"longer of type {AUTO_TYPE!r} (changed or removed meanwhile): type not changed",
        )
    return ConnectivityResult(
        REACHABLE,
        latency_ms,
        f"identified as {found.identified_as}: {found.details()}; type set to "
        f"{found.identified_as!r}, {done} (the next check reads it as that type)",
    )
