"""SunSpec devices: finding the "SunS" map, walking its model chain, and what a poll reads.

For `energymon discover` and the connectivity check::

    device = await discover_sunspec(connection, unit, timeout_s)   # SunSpecDevice | None
    probe = await probe_sunspec(connection, unit, timeout_s)       # SunSpecProbe (more detail)

`discover_sunspec(connection: ModbusConnection, unit: int, timeout_s: float) -> SunSpecDevice
| None` reads, on `unit` of an already created `modbus.client.ModbusConnection` (one link),
the SunSpec marker and model chain, and returns the device's layout (base address, each
model's id, address and length) and its common-model identity (Mn, Md, Opt, Vr, SN, DA), or
None when the unit did not answer, holds no "SunS" marker, or its chain is broken. It never
raises for device or network faults; `probe_sunspec` returns the same with `answered` (did
the unit answer at all) and `detail` (one line: what was found or what went wrong).

- Where: "SunS" (0x5375 0x6E53) is looked for at protocol addresses 40000, 50000 and 0, and
  one register later (40001, 50001, 1: devices whose documentation counts registers from 1
  and whose firmware followed it). One read of 4 registers covers both at each base.
- The chain: after the marker, each model is ID, L (its length in registers after those two)
  and its body; the chain ends at ID 0xFFFF. At most MAX_MODELS models are walked; a device
  that answers exception 2 where the next header should be ends the chain there too (some do
  instead of writing the end marker).
- Bounded and one at a time: every request is awaited before the next is sent (a bus carries
  one request at a time), and the whole search ends within `timeout_s`: each request's own
  timeout is what remains of it, at most the connection's timeout, without retries.
- Only reads (function code 3) are sent; nothing is written to a device.

What a poll reads (`layout_registers`): the numeric points of the models in POLLED_MODELS,
from the Alliance's model definitions (devices/sunspec_models.py), with the device's
addresses. Each value names its scale-factor register (`RegisterSpec.scale_factor_address`),
so the planner reads both in one request and the decoder applies the scale factor of that
same response; each names its type's "not implemented" value, which is never a reading.

Measurement names: `<model>_<point>`, with the model's name from the Alliance's file and the
point's SunSpec name (`inverter_three_phase_W`, `ac_meter_abcn_TotWhImp`); a repeating group's
points carry the group name and its 1-based index (`mppt_module2_DCW`); the second and later
models of one name on a device carry their number (`ac_meter_abcn_2_W`). See README.md,
"SunSpec devices".
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from energymon_pipeline.devices.sunspec_models import GroupDef, ModelDef, PointDef, model_definition
from energymon_pipeline.modbus.client import BlockRead, ErrorKind, ModbusConnection
from energymon_pipeline.modbus.types import (
    MAX_REGISTERS_PER_REQUEST,
    DataType,
    FunctionCode,
    ReadRequest,
    RegisterSpec,
)

__all__ = [
    "BASE_ADDRESSES",
    "MAX_MODELS",
    "POLLED_MODELS",
    "SUNSPEC_TYPE",
    "LayoutRegisters",
    "SunSpecDevice",
    "SunSpecModel",
    "SunSpecProbe",
    "discover_sunspec",
    "layout_registers",
    "probe_sunspec",
]

#: The `energy_meters.type` of a meter read from its discovered SunSpec layout.
SUNSPEC_TYPE = "sunspec"
#: "SunS" as two registers.
MARKER = (0x5375, 0x6E53)
#: Where the marker is looked for, in this order (each also one register later).
BASE_ADDRESSES = (40000, 50000, 0)
END_MODEL_ID = 0xFFFF
#: A chain longer than this is taken for garbage.
MAX_MODELS = 64
#: Models whose points a poll reads: common, inverters (integer + scale factor, and float),
#: MPPT, storage, meters (integer + scale factor, and float).
POLLED_MODELS = frozenset(
    {1, 101, 102, 103, 111, 112, 113, 124, 160, 201, 202, 203, 204, 211, 212, 213, 214}
)
HOLDING = FunctionCode.READ_HOLDING_REGISTERS

#: SunSpec point type -> (data type, its "not implemented" value, a counter).
_POINT_TYPES: dict[str, tuple[DataType, int, bool]] = {
    "int16": (DataType.INT16, 0x8000, False),
    "uint16": (DataType.UINT16, 0xFFFF, False),
    "acc16": (DataType.UINT16, 0, True),
    "enum16": (DataType.UINT16, 0xFFFF, False),
    "bitfield16": (DataType.UINT16, 0xFFFF, False),
    "int32": (DataType.INT32, 0x80000000, False),
    "uint32": (DataType.UINT32, 0xFFFFFFFF, False),
    "acc32": (DataType.UINT32, 0, True),
    "enum32": (DataType.UINT32, 0xFFFFFFFF, False),
    "bitfield32": (DataType.UINT32, 0xFFFFFFFF, False),
    "int64": (DataType.INT64, 0x8000000000000000, False),
    "uint64": (DataType.UINT64, 0xFFFFFFFFFFFFFFFF, False),
    "acc64": (DataType.UINT64, 0, True),
    "bitfield64": (DataType.UINT64, 0xFFFFFFFFFFFFFFFF, False),
    "float32": (DataType.FLOAT32, 0x7FC00000, False),
    "float64": (DataType.FLOAT64, 0x7FF8000000000000, False),
}
#: Units of energy: a float model's energy points (no acc type there) are counters too.
_ENERGY_UNITS = frozenset({"Wh", "kWh", "VAh", "varh", "VArh", "Varh", "Ah"})
#: Identity points of the common model (1), in the order shown.
IDENTITY_POINTS = ("Mn", "Md", "Opt", "Vr", "SN")


@dataclass(frozen=True, slots=True)
class SunSpecModel:
    """One model of a device's chain: `address` is its ID register, `length` its L (the
    registers after ID and L)."""

    model_id: int
    address: int
    length: int

    @property
    def end(self) -> int:
        return self.address + 2 + self.length

    @property
    def name(self) -> str:
        definition = model_definition(self.model_id)
        return definition.name if definition else f"model_{self.model_id}"


@dataclass(frozen=True)
class SunSpecDevice:
    """A discovered SunSpec device: where its map starts, its models and its identity."""

    unit: int
    #: The address of "SunS" (the first model's ID follows two registers later).
    base_address: int
    models: tuple[SunSpecModel, ...]
    #: Common-model text points (Mn, Md, Opt, Vr, SN) the device filled in.
    identity: dict[str, str] = field(default_factory=dict)
    #: The common model's DA (device address), when implemented.
    device_address: int | None = None

    @property
    def manufacturer(self) -> str | None:
        return self.identity.get("Mn")

    @property
    def model(self) -> str | None:
        return self.identity.get("Md")

    @property
    def version(self) -> str | None:
        return self.identity.get("Vr")

    @property
    def serial_number(self) -> str | None:
        return self.identity.get("SN")

    @property
    def model_ids(self) -> list[int]:
        return [m.model_id for m in self.models]

    def describe(self) -> str:
        """One line for logs and the CLI."""
        who = " ".join(p for p in (self.manufacturer, self.model) if p) or "unnamed device"
        extra = ", ".join(
            f"{k} {v}" for k, v in (("version", self.version), ("serial", self.serial_number)) if v
        )
        ids = ", ".join(str(i) for i in self.model_ids)
        return (
            f"SunSpec at {self.base_address} (unit {self.unit}): {who}"
            f"{f' ({extra})' if extra else ''}; models {ids}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape kept in the registry and printed by `discover --json`."""
        return {
            "unit": self.unit,
            "base_address": self.base_address,
            "models": [
                {"id": m.model_id, "name": m.name, "address": m.address, "length": m.length}
                for m in self.models
            ],
            "identity": dict(self.identity),
            "device_address": self.device_address,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SunSpecDevice:
        """ValueError naming what is wrong when `text` is not a stored layout."""
        try:
            data = json.loads(text)
            models = tuple(
                SunSpecModel(int(m["id"]), int(m["address"]), int(m["length"]))
                for m in data["models"]
            )
            identity = {str(k): str(v) for k, v in (data.get("identity") or {}).items()}
            da = data.get("device_address")
            return cls(
                int(data["unit"]),
                int(data["base_address"]),
                models,
                identity,
                None if da is None else int(da),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a stored SunSpec layout: {error}") from None


@dataclass(frozen=True)
class SunSpecProbe:
    """What `probe_sunspec` found: the device (or None), whether the unit answered at all,
    and one line saying what was found or what went wrong."""

    device: SunSpecDevice | None
    answered: bool
    detail: str


# --- discovery -----------------------------------------------------------------------------


class _Out(Exception):
    """The search's time ran out, or the link failed: stop sending."""


class _Reader:
    def __init__(self, connection: ModbusConnection, unit: int, timeout_s: float) -> None:
        self.connection = connection
        self.unit = unit
        self.deadline = time.monotonic() + max(0.0, timeout_s)
        self.answered = False
        self.last_error: str | None = None

    async def read(self, address: int, count: int) -> BlockRead:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.01:
            raise _Out("out of time")
        base = self.connection.endpoint
        meter = dataclasses.replace(
            base, unit_id=self.unit, timeout_s=min(remaining, base.timeout_s), retries=0
        )
        block = await self.connection.read(ReadRequest(HOLDING, address, count), meter)
        if block.error is None:
            self.answered = True
        elif block.error.kind is ErrorKind.MODBUS_EXCEPTION:
            self.answered = True  # an exception is an answer: the unit is there
            self.last_error = f"address {address}: {block.error}"
        else:
            self.last_error = f"address {address}: {block.error}"
            if block.error.kind in (ErrorKind.REFUSED, ErrorKind.CONNECTION):
                raise _Out(str(block.error))
            if block.error.kind is ErrorKind.TIMEOUT and not self.answered:
                raise _Out(f"no answer from unit {self.unit}")
        return block


async def _find_base(reader: _Reader) -> int | None:
    for base in BASE_ADDRESSES:
        block = await reader.read(base, 4)
        if block.data is not None:
            if tuple(block.data[0:2]) == MARKER:
                return base
            if tuple(block.data[1:3]) == MARKER:
                return base + 1
            continue
        # A map starting one register later may refuse a read from `base` (exception 2).
        block = await reader.read(base + 1, 2)
        if block.data is not None and tuple(block.data[0:2]) == MARKER:
            return base + 1
    return None


def _text(words: list[int]) -> str:
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


async def _common(reader: _Reader, model: SunSpecModel) -> tuple[dict[str, str], int | None]:
    definition = model_definition(1)
    count = min(2 + model.length, MAX_REGISTERS_PER_REQUEST)
    block = await reader.read(model.address, count)
    if block.data is None or definition is None:
        return {}, None
    words = list(block.data)
    identity: dict[str, str] = {}
    for name in IDENTITY_POINTS:
        point = definition.fixed.point(name)
        if point is not None and point.offset + point.size <= len(words):
            text = _text(words[point.offset : point.offset + point.size])
            if text:
                identity[name] = text
    da = definition.fixed.point("DA")
    device_address = None
    if da is not None and da.offset < len(words) and words[da.offset] != 0xFFFF:
        device_address = words[da.offset]
    return identity, device_address


async def probe_sunspec(connection: ModbusConnection, unit: int, timeout_s: float) -> SunSpecProbe:
    """`discover_sunspec` with whether the unit answered and what happened, in one line."""
    reader = _Reader(connection, unit, timeout_s)
    try:
        base = await _find_base(reader)
        if base is None:
            where = ", ".join(f"{b}/{b + 1}" for b in BASE_ADDRESSES)
            return SunSpecProbe(
                None,
                reader.answered,
                f"no SunSpec marker at {where}"
                + (f" (last: {reader.last_error})" if reader.last_error else ""),
            )
        models: list[SunSpecModel] = []
        address = base + 2
        while address + 2 <= 0x10000:  # a chain ending exactly at 65535 has no end marker
            if len(models) >= MAX_MODELS:
                return SunSpecProbe(
                    None,
                    True,
                    f"SunSpec at {base}: more than {MAX_MODELS} "
                    "models without the end marker 0xFFFF",
                )
            block = await reader.read(address, 2)
            if block.data is None:
                if models and block.error and block.error.kind is ErrorKind.MODBUS_EXCEPTION:
                    break  # no end marker, but nothing more either
                return SunSpecProbe(
                    None, True, f"SunSpec at {base}: model header at {address}: {block.error}"
                )
            model_id, length = block.data[0], block.data[1]
            if model_id == END_MODEL_ID:
                break
            if address + 2 + length > 0x10000:
                return SunSpecProbe(
                    None,
                    True,
                    f"SunSpec at {base}: model {model_id} at "
                    f"{address} claims {length} registers, past 65535",
                )
            models.append(SunSpecModel(model_id, address, length))
            address += 2 + length
        if not models:
            return SunSpecProbe(None, True, f"SunSpec at {base}: no models before the end marker")
        identity: dict[str, str] = {}
        device_address = None
        common = next((m for m in models if m.model_id == 1), None)
        if common is not None:
            identity, device_address = await _common(reader, common)
        device = SunSpecDevice(unit, base, tuple(models), identity, device_address)
        return SunSpecProbe(device, True, device.describe())
    except _Out as out:
        return SunSpecProbe(None, reader.answered, f"unit {unit}: {out}")


async def discover_sunspec(
    connection: ModbusConnection, unit: int, timeout_s: float
) -> SunSpecDevice | None:
    """The SunSpec layout of `unit` on `connection`'s link, or None (see the module doc)."""
    return (await probe_sunspec(connection, unit, timeout_s)).device


# --- what a poll reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutRegisters:
    registers: tuple[RegisterSpec, ...]
    #: One line per point or model left out, and why.
    skipped: tuple[str, ...] = ()


def _spec(
    name: str,
    point: PointDef,
    address: int,
    sf_address: int | None,
    static_scale: float,
) -> RegisterSpec | None:
    kind = _POINT_TYPES.get(point.type)
    if kind is None:
        return None
    data_type, not_implemented, counter = kind
    return RegisterSpec(
        measurement=name,
        address=address,
        data_type=data_type,
        function_code=HOLDING,
        unit=point.units,
        scale=static_scale,
        cumulative=counter or (point.units in _ENERGY_UNITS),
        scale_factor_address=sf_address,
        not_implemented=not_implemented,
    )


def _group_specs(
    prefix: str,
    group: GroupDef,
    start: int,
    model: SunSpecModel,
    definition: ModelDef,
    fixed_start: int,
    limit: int,
    skipped: list[str],
) -> list[RegisterSpec]:
    specs = []
    for point in group.points:
        if point.name in ("ID", "L") and group is definition.fixed:
            continue
        if point.type not in _POINT_TYPES:
            continue  # text, scale factors, padding, addresses: not values
        address = start + point.offset
        if address + point.size > model.end:
            continue  # a shorter (older) version of the model: not on this device
        name = f"{prefix}_{point.name}"
        sf_address, static = None, 1.0
        if isinstance(point.sf, int):
            static = 10.0**point.sf
        elif isinstance(point.sf, str):
            owner, base = (
                (group, start) if group.point(point.sf) else (definition.fixed, fixed_start)
            )
            sf_point = owner.point(point.sf)
            if sf_point is None or base + sf_point.offset >= model.end:
                skipped.append(f"{name}: its scale factor {point.sf} is not on the device")
                continue
            sf_address = base + sf_point.offset
            first, end = min(address, sf_address), max(address + point.size, sf_address + 1)
            if end - first > limit:
                skipped.append(
                    f"{name}: {end - first} registers from its scale factor {point.sf}, more "
                    f"than one request may read ({limit})"
                )
                continue
        spec = _spec(name, point, address, sf_address, static)
        if spec is not None:
            specs.append(spec)
    return specs


def layout_registers(
    device: SunSpecDevice, limit: int = MAX_REGISTERS_PER_REQUEST
) -> LayoutRegisters:
    """The registers a poll reads from `device`: every numeric point of its POLLED_MODELS
    models, named as the module doc says, each with its scale factor's address."""
    specs: list[RegisterSpec] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}
    for model in device.models:
        definition = model_definition(model.model_id)
        if model.model_id not in POLLED_MODELS or definition is None:
            continue
        seen[definition.name] = seen.get(definition.name, 0) + 1
        number = seen[definition.name]
        prefix = definition.name if number == 1 else f"{definition.name}_{number}"
        specs += _group_specs(
            prefix,
            definition.fixed,
            model.address,
            model,
            definition,
            model.address,
            limit,
            skipped,
        )
        if not definition.repeating:
            continue
        if len(definition.repeating) > 1 or definition.repeating[0].nested:
            skipped.append(f"{prefix}: repeating groups of this shape are not read")
            continue
        group = definition.repeating[0]
        room = model.end - (model.address + definition.fixed.length)
        count = max(0, room // group.length) if group.length else 0
        for index in range(count):
            start = model.address + definition.fixed.length + index * group.length
            specs += _group_specs(
                f"{prefix}_{group.name}{index + 1}",
                group,
                start,
                model,
                definition,
                model.address,
                limit,
                skipped,
            )
    return LayoutRegisters(tuple(specs), tuple(skipped))
