"""Request splits a meter's device forced on the poll (exception 2), kept from run to run.

Some devices answer exception code 2 to any read that spans an unmapped register; the reader
then reads those values one by one (modbus/plan.py MeterPlanner). Every poll run is a new
process, so what one run learnt lives here, in `meter_learnt_splits`, and seeds the next
runs' plans (`MeterSpec.learnt_splits`): the merged read that failed is not sent again.

A split holds for the register map it was learnt on. Each row carries the digest of that map
(`register_map_digest`); when the meter's type, its type's registers or its plan options
change, the digest changes, the rows are stale: they are not used, and are deleted the next
time the meter's definitions are loaded. The merged read is then tried afresh (a corrected
map may have no gap left to avoid).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import asdict, replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from energymon_pipeline.modbus.types import MeterSpec, SplitKey
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.tables import energy_meters, meter_learnt_splits

__all__ = ["register_map_digest", "save_learnt_splits", "with_learnt_splits"]


def register_map_digest(meter: MeterSpec) -> str:
    """SHA-256 (hex) of what the meter's request plan is made from: its type, the function
    code, address and width of each of its registers, and its plan options. Names, units,
    scales and byte orders are left out: they do not change which reads the device sees."""
    spans = sorted({(int(r.function_code), r.address, r.width) for r in meter.registers})
    text = json.dumps(
        {"type": meter.meter_type, "registers": spans, "options": asdict(meter.plan_options)},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def with_learnt_splits(connection: Connection, meters: list[MeterSpec]) -> list[MeterSpec]:
    """`meters`, each seeded with the splits stored for its current register map; stored
    splits of an older map are deleted. A stored row that names none of the meter's values
    (written by hand, or left by a map edit that kept the digest) is ignored."""
    if not meters:
        return meters
    by_id = {meter.meter_id: meter for meter in meters}
    # Meters of one type share their registers tuple (registry/definitions.py): one digest
    # per type and plan options, not one per meter, in every run's first op.
    shared: dict[tuple, str] = {}
    digests = {}
    for meter_id, meter in by_id.items():
        key = (meter.meter_type, id(meter.registers), meter.plan_options)
        if key not in shared:
            shared[key] = register_map_digest(meter)
        digests[meter_id] = shared[key]
    rows = connection.execute(
        sa.select(
            meter_learnt_splits.c.meter_id,
            meter_learnt_splits.c.function_code,
            meter_learnt_splits.c.address,
            meter_learnt_splits.c.register_map,
        ).where(meter_learnt_splits.c.meter_id.in_(sorted(by_id)))
    )
    learnt: dict[int, set[SplitKey]] = {}
    stale: set[int] = set()
    for meter_id, function_code, address, digest in rows:
        if digest != digests[meter_id]:
            stale.add(meter_id)
            continue
        values = {(int(r.function_code), r.address) for r in by_id[meter_id].registers}
        if (function_code, address) in values:
            learnt.setdefault(meter_id, set()).add((function_code, address))
    for meter_id in sorted(stale):
        connection.execute(
            meter_learnt_splits.delete().where(
                meter_learnt_splits.c.meter_id == meter_id,
                meter_learnt_splits.c.register_map != digests[meter_id],
            )
        )
    return [
        replace(meter, learnt_splits=frozenset(learnt[meter.meter_id]))
        if meter.meter_id in learnt
        else meter
        for meter in meters
    ]


def save_learnt_splits(
    engine: Engine,
    learnt: Iterable[tuple[MeterSpec, Collection[SplitKey]]],
    learnt_at: datetime | None = None,
) -> int:
    """Store what a read learnt: per meter (as it was read, so with the register map the
    splits hold for), the (function code, address) of each value to read alone from now on.
    Splits of another map are replaced; splits already stored are kept with their time; a
    meter removed meanwhile is skipped. Returns how many rows were added."""
    learnt_at = learnt_at or datetime.now(UTC)
    wanted = [(meter, set(keys)) for meter, keys in learnt if keys]
    if not wanted:
        return 0

    def work(connection: Connection) -> int:
        ids = [meter.meter_id for meter, _ in wanted]
        existing = set(
            connection.scalars(sa.select(energy_meters.c.id).where(energy_meters.c.id.in_(ids)))
        )
        added = 0
        for meter, keys in wanted:
            if meter.meter_id not in existing:
                continue
            digest = register_map_digest(meter)
            mine = meter_learnt_splits.c.meter_id == meter.meter_id
            connection.execute(
                meter_learnt_splits.delete().where(
                    mine, meter_learnt_splits.c.register_map != digest
                )
            )
            stored = {
                (function_code, address)
                for function_code, address in connection.execute(
                    sa.select(
                        meter_learnt_splits.c.function_code, meter_learnt_splits.c.address
                    ).where(mine)
                )
            }
            new = sorted(keys - stored)
            if new:
                connection.execute(
                    meter_learnt_splits.insert(),
                    [
                        {
                            "meter_id": meter.meter_id,
                            "function_code": function_code,
                            "address": address,
                            "register_map": digest,
                            "learnt_at": learnt_at,
                        }
                        for function_code, address in new
                    ],
                )
            added += len(new)
        return added

    return queries.run_in_transaction(engine, work)
