"""Learnt request splits in the registry: stored per meter with the digest of its register map,
loaded into the meter's definition, forgotten when the map changes. On SQLite and the real
PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    PlanOptions,
    RegisterSpec,
)
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.definitions import load_definitions
from energymon_pipeline.registry.learnt_splits import register_map_digest, save_learnt_splits
from energymon_pipeline.registry.tables import meter_learnt_splits

ADDRESSES = (0, 4, 8)
SPLITS = frozenset({(4, 0), (4, 4)})
ROWS = "SELECT meter_id, function_code, address FROM meter_learnt_splits ORDER BY 1, 2, 3"


def add_meter(engine, meter_id: int = 1, type_: str = "gappy") -> None:
    queries.insert_registers(
        engine,
        [(i, {"type": type_, "register_address": a, "measurement_name": f"v{a}",
              "data_unit": "V", "data_type": 3, "function_code": 4, "word_order": 2,
              "byte_order": 2}) for i, a in enumerate(ADDRESSES)],
    )  # fmt: skip
    queries.add_meter(engine, {"id": meter_id, "host": "127.0.0.1", "port": 502,
                               "slave_address": 1, "type": type_})  # fmt: skip


def loaded(engine, meter_id: int = 1) -> MeterSpec:
    [meter] = load_definitions(engine, meter_ids=[meter_id]).meters
    return meter


def test_digest_follows_what_the_device_is_asked_only():
    registers = tuple(RegisterSpec(f"v{a}", a) for a in ADDRESSES)
    meter = MeterSpec(1, Endpoint("h", 502, 1), "gappy", None, registers)
    digest = register_map_digest(meter)
    assert len(digest) == 64
    # Names, units, scales, byte orders, the endpoint and the splits themselves: same reads.
    renamed = tuple(dataclasses.replace(r, measurement="x" + r.measurement, scale=2.0,
                                        unit="kW") for r in registers)  # fmt: skip
    for same in (
        dataclasses.replace(meter, registers=renamed),
        dataclasses.replace(meter, registers=tuple(reversed(registers))),
        dataclasses.replace(meter, endpoint=Endpoint("other", 1502, 7), learnt_splits=SPLITS),
    ):
        assert register_map_digest(same) == digest
    moved = (*registers[:2], dataclasses.replace(registers[2], address=10))
    wider = (*registers[:2], dataclasses.replace(registers[2], data_type=DataType.FLOAT64))
    holding = (*registers[:2], dataclasses.replace(registers[2], function_code=FunctionCode(3)))
    for changed in (
        dataclasses.replace(meter, registers=moved),
        dataclasses.replace(meter, registers=wider),
        dataclasses.replace(meter, registers=holding),
        dataclasses.replace(meter, registers=registers[:2]),
        dataclasses.replace(meter, meter_type="gappy2"),
        dataclasses.replace(meter, plan_options=PlanOptions(max_gap=2)),
        dataclasses.replace(meter, plan_options=PlanOptions(max_registers_per_request=4)),
    ):
        assert register_map_digest(changed) != digest


def test_saved_splits_seed_the_next_load(migrated, fetch):
    add_meter(migrated)
    meter = loaded(migrated)
    assert meter.learnt_splits == frozenset()
    assert save_learnt_splits(migrated, [(meter, SPLITS)]) == 2
    assert fetch(migrated, ROWS) == [(1, 4, 0), (1, 4, 4)]
    assert loaded(migrated).learnt_splits == SPLITS
    # The virtual meter (id 0) learnt nothing and gets nothing.
    assert {m.meter_id: m.learnt_splits for m in load_definitions(migrated).meters} == {
        0: frozenset(), 1: SPLITS
    }  # fmt: skip


def test_saving_again_adds_only_what_is_new_and_keeps_when_it_was_learnt(migrated, fetch):
    add_meter(migrated)
    meter = loaded(migrated)
    first = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    save_learnt_splits(migrated, [(meter, {(4, 0)})], learnt_at=first)
    later = first + timedelta(minutes=1)
    assert save_learnt_splits(migrated, [(loaded(migrated), SPLITS)], learnt_at=later) == 1
    with migrated.connect() as connection:
        rows = connection.execute(
            sa.select(meter_learnt_splits.c.address, meter_learnt_splits.c.learnt_at)
        ).all()
    # SQLite hands back naive UTC, PostgreSQL an aware time.
    assert {a: t if t.tzinfo else t.replace(tzinfo=UTC) for a, t in rows} == {0: first, 4: later}
    assert save_learnt_splits(migrated, [(meter, set())]) == 0


def test_a_changed_register_map_forgets_the_splits(migrated, fetch):
    add_meter(migrated)
    save_learnt_splits(migrated, [(loaded(migrated), SPLITS)])
    # A register added to the meter's type: the map the splits were learnt on is gone.
    queries.insert_registers(
        migrated,
        [(0, {"type": "gappy", "register_address": 20, "measurement_name": "v20",
              "data_unit": "V", "data_type": 3, "function_code": 4, "word_order": 2,
              "byte_order": 2})],
    )  # fmt: skip
    assert loaded(migrated).learnt_splits == frozenset()
    assert fetch(migrated, ROWS) == []  # deleted when found stale

    # A plan override changed on the meter's row: the same.
    save_learnt_splits(migrated, [(loaded(migrated), SPLITS)])
    assert loaded(migrated).learnt_splits == SPLITS
    with migrated.begin() as connection:
        connection.execute(sa.text("UPDATE energy_meters SET max_gap = 2 WHERE id = 1"))
    assert loaded(migrated).learnt_splits == frozenset()
    assert fetch(migrated, ROWS) == []


def test_a_save_from_a_read_of_an_older_map_replaces_nothing_current(migrated, fetch):
    add_meter(migrated)
    old = loaded(migrated)
    with migrated.begin() as connection:
        connection.execute(sa.text("UPDATE energy_meters SET type = 'other' WHERE id = 1"))
    queries.insert_registers(
        migrated,
        [(0, {"type": "other", "register_address": 0, "measurement_name": "v0",
              "data_unit": "V", "data_type": 3, "function_code": 4, "word_order": 2,
              "byte_order": 2})],
    )  # fmt: skip
    # A run that loaded the meter before the edit saves what it learnt on the old map:
    # stored under the old digest, so the next load ignores it (and deletes it).
    save_learnt_splits(migrated, [(old, SPLITS)])
    assert loaded(migrated).learnt_splits == frozenset()
    assert fetch(migrated, ROWS) == []


def test_rows_that_name_no_value_of_the_meter_are_ignored(migrated, fetch):
    add_meter(migrated)
    meter = loaded(migrated)
    with migrated.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO meter_learnt_splits VALUES (1, 4, 0, :d, :t), (1, 3, 4, :d, :t), "
                "(1, 4, 99, :d, :t)"
            ),
            {"d": register_map_digest(meter), "t": datetime.now(UTC)},
        )
    assert loaded(migrated).learnt_splits == {(4, 0)}


def test_removed_meters_take_their_splits_along(migrated, fetch):
    add_meter(migrated)
    meter = loaded(migrated)
    save_learnt_splits(migrated, [(meter, SPLITS)])
    queries.remove_meter(migrated, 1)
    assert fetch(migrated, ROWS) == []
    # A run that read the meter before it was removed saves nothing for it.
    assert save_learnt_splits(migrated, [(meter, SPLITS)]) == 0
    assert fetch(migrated, ROWS) == []
