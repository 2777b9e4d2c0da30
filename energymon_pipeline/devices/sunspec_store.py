"""Discovered SunSpec layouts in the registry: kept per meter, refreshed by the connectivity
check, read by every poll (which never rediscovers).

A `sunspec` meter's registers are not rows of `registers`: they follow from its device's
layout (base address, models, their addresses and lengths), which differs from device to
device. The layout is discovered (devices/sunspec.py) when the meter is added, edited or
re-enabled (new_meter_sensor -> connectivity_check_job), or by `energymon read` when none is
stored yet, and kept in `sunspec_layouts` (migration 0006) with the endpoint it was
discovered at: a layout found at another host, port or unit id is not used for the meter's
new endpoint (the poll reports the meter as waiting for its check instead of reading a
different device with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from energymon_pipeline.devices.sunspec import (
    SUNSPEC_TYPE,
    SunSpecDevice,
    SunSpecProbe,
    layout_registers,
    probe_sunspec,
)
from energymon_pipeline.errors import EnergymonError, RegistryError
from energymon_pipeline.modbus.client import ErrorKind, ModbusConnection
from energymon_pipeline.modbus.connectivity import (
    REACHABLE,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    ConnectivityResult,
)
from energymon_pipeline.modbus.plan import plan_requests
from energymon_pipeline.modbus.types import MeterSpec, RegisterSpec
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.tables import energy_meters, metadata

__all__ = [
    "DISCOVERY_TIMEOUT_S",
    "NOT_SUNSPEC",
    "discover_and_store",
    "ensure_layout",
    "layout_endpoint",
    "load_layout",
    "registers_for",
    "sunspec_layouts",
]

#: How long one discovery may take in all (the marker search and the model chain).
DISCOVERY_TIMEOUT_S = 30.0
#: The connectivity result of a unit that answers but holds no SunSpec map.
NOT_SUNSPEC = "not sunspec"

sunspec_layouts = sa.Table(
    "sunspec_layouts",
    metadata,
    sa.Column(
        "meter_id",
        sa.Integer,
        sa.ForeignKey("energy_meters.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Where the layout was discovered: the link and unit id (Endpoint.link_key, unit).
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("base_address", sa.Integer, nullable=False),
    sa.Column("manufacturer", sa.String(64), nullable=True),
    sa.Column("model", sa.String(64), nullable=True),
    sa.Column("version", sa.String(64), nullable=True),
    sa.Column("serial_number", sa.String(64), nullable=True),
    # The model ids in chain order, comma-separated, for people reading the table.
    sa.Column("models", sa.String(512), nullable=False),
    # SunSpecDevice.to_json(): the models with addresses and lengths, and the identity.
    sa.Column("layout", sa.Text, nullable=False),
    sa.Column("discovered_at", sa.DateTime(timezone=True), nullable=False),
)


def layout_endpoint(row_or_meter: dict[str, Any] | MeterSpec) -> str:
    """Where a meter is, as stored with its layout: `<link key> unit <id>`."""
    if isinstance(row_or_meter, MeterSpec):
        return f"{row_or_meter.endpoint.link_key} unit {row_or_meter.endpoint.unit_id}"
    return f"{queries.link_key(row_or_meter)} unit {row_or_meter['slave_address']}"


def save_layout(engine: Engine, meter_id: int, endpoint: str, device: SunSpecDevice) -> None:
    """Replace the meter's stored layout (nothing when the meter is gone)."""

    def clip(text: str | None, size: int = 64) -> str | None:
        return None if text is None else text[:size]

    def work(connection) -> None:
        connection.execute(sunspec_layouts.delete().where(sunspec_layouts.c.meter_id == meter_id))
        connection.execute(
            sunspec_layouts.insert().values(
                meter_id=meter_id,
                endpoint=endpoint[:300],
                base_address=device.base_address,
                manufacturer=clip(device.manufacturer),
                model=clip(device.model),
                version=clip(device.version),
                serial_number=clip(device.serial_number),
                models=",".join(str(i) for i in device.model_ids)[:512],
                layout=device.to_json(),
                discovered_at=datetime.now(UTC),
            )
        )

    # A meter removed meanwhile (foreign key): its layout goes with it.
    with contextlib.suppress(IntegrityError):
        queries.run_in_transaction(engine, work)


def load_layout(engine: Engine, meter_id: int) -> tuple[str, SunSpecDevice] | None:
    """(endpoint, device) stored for the meter, or None."""
    query = sa.select(sunspec_layouts.c.endpoint, sunspec_layouts.c.layout).where(
        sunspec_layouts.c.meter_id == meter_id
    )
    row = queries.run_in_transaction(engine, lambda c: c.execute(query).first())
    if row is None:
        return None
    return row[0], SunSpecDevice.from_json(row[1])


def registers_for(connection, meter_rows: list[dict[str, Any]]) -> dict[int, Any]:
    """meter id -> its registers (a tuple) or why it has none (a line), for every `sunspec`
    row in `meter_rows`. Meters with the same layout share one tuple (one plan per read)."""
    rows = [r for r in meter_rows if r["type"] == SUNSPEC_TYPE]
    if not rows:
        return {}
    stored = {
        meter_id: (endpoint, layout)
        for meter_id, endpoint, layout in connection.execute(
            sa.select(
                sunspec_layouts.c.meter_id, sunspec_layouts.c.endpoint, sunspec_layouts.c.layout
            ).where(sunspec_layouts.c.meter_id.in_([r["id"] for r in rows]))
        )
    }
    shared: dict[str, tuple[RegisterSpec, ...]] = {}
    found: dict[int, Any] = {}
    for row in rows:
        entry = stored.get(row["id"])
        if entry is None:
            found[row["id"]] = (
                "its SunSpec layout has not been discovered yet (the connectivity check "
                f"discovers it; `energymon read {row['id']}` does it now)"
            )
            continue
        endpoint, layout = entry
        if endpoint != layout_endpoint(row):
            found[row["id"]] = (
                f"its SunSpec layout was discovered at {endpoint}, not at the meter's "
                f"{layout_endpoint(row)}; waiting for its connectivity check to rediscover it"
            )
            continue
        key = f"{row['slave_address']}:{layout}"
        if key not in shared:
            try:
                device = SunSpecDevice.from_json(layout)
            except ValueError as error:
                found[row["id"]] = f"its stored SunSpec layout is unusable: {error}"
                continue
            shared[key] = layout_registers(device).registers
        found[row["id"]] = shared[key] or "its SunSpec device has no models a poll reads"
    return found


_RESULTS = {ErrorKind.REFUSED: REFUSED, ErrorKind.TIMEOUT: TIMEOUT}


async def _discover(
    meter: MeterSpec, timeout_s: float
) -> tuple[SunSpecProbe, float | None, str | None]:
    """(what the probe found, TCP connect latency, the connect's failure as a result)."""
    connection = ModbusConnection(meter.endpoint)
    try:
        latency_ms = None
        if meter.endpoint.serial is None:
            started = time.monotonic()
            error = await connection.open()
            if error is not None:
                result = _RESULTS.get(error.kind, UNREACHABLE)
                return SunSpecProbe(None, False, str(error)), None, result
            latency_ms = (time.monotonic() - started) * 1000
        probe = await probe_sunspec(connection, meter.endpoint.unit_id, timeout_s)
        return probe, latency_ms, None
    finally:
        connection.close()


def discover_and_store(
    engine: Engine, meter: MeterSpec, timeout_s: float = DISCOVERY_TIMEOUT_S
) -> ConnectivityResult:
    """Discover the meter's SunSpec layout and keep it: the connectivity check of a
    `sunspec` meter. The old layout stays when the device cannot be read now."""
    probe, latency_ms, failure = asyncio.run(_discover(meter, timeout_s))
    if probe.device is None:
        if probe.answered:
            return ConnectivityResult(NOT_SUNSPEC, latency_ms, probe.detail)
        if failure is None:  # connected (or a serial port), but no answer in time
            failure = REFUSED if "refused" in probe.detail else TIMEOUT
        return ConnectivityResult(failure, latency_ms, probe.detail)
    device = probe.device
    save_layout(engine, meter.meter_id, layout_endpoint(meter), device)
    layout = layout_registers(device)
    requests = plan_requests(layout.registers, meter.plan_options)
    skipped = f"; {len(layout.skipped)} point(s) left out" if layout.skipped else ""
    return ConnectivityResult(
        REACHABLE,
        latency_ms,
        f"{device.describe()}; layout stored: {len(layout.registers)} value(s) in "
        f"{len(requests)} request(s){skipped}",
    )


def ensure_layout(engine: Engine, meter_id: int, again: bool = False) -> str | None:
    """For `energymon read`: discover and store a `sunspec` meter's layout when none is
    stored for its endpoint (or, with `again`, in any case); returns what was found (None
    when nothing had to be done). EnergymonError when the device cannot be discovered;
    RegistryError for `again` on a meter that is not `sunspec`."""
    query = sa.select(energy_meters).where(energy_meters.c.id == meter_id)
    found = queries.run_in_transaction(engine, lambda c: c.execute(query).first())
    if found is not None and again and found._mapping["type"] != SUNSPEC_TYPE:
        raise RegistryError(
            f"meter {meter_id} has type {found._mapping['type']!r}; only a meter of type "
            f"{SUNSPEC_TYPE!r} has a SunSpec layout to rediscover"
        )
    if found is None or found._mapping["type"] != SUNSPEC_TYPE:
        return None  # not a sunspec meter (or none at all: the read says so)
    row = dict(found._mapping)
    stored = load_layout(engine, meter_id)
    if not again and stored is not None and stored[0] == layout_endpoint(row):
        return None
    from energymon_pipeline.registry.definitions import load_meter

    meter = load_meter(engine, meter_id)
    outcome = discover_and_store(engine, meter)
    if not outcome.ok:
        raise EnergymonError(
            f"meter {meter_id} ({meter.endpoint}): SunSpec discovery failed: {outcome.message}"
        )
    return outcome.message
