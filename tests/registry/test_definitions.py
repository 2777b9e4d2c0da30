"""Registry rows -> meter definitions for polling: bad rows are reported and skipped, never
fatal. On SQLite and the real PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from energymon_pipeline.modbus.types import DataType, FunctionCode, Order
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.definitions import load_definitions


def insert(engine, table: str, **values) -> None:
    columns = ", ".join(f'"{c}"' for c in values)
    marks = ", ".join(f":{c}" for c in values)
    with engine.begin() as connection:
        connection.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), values)


def test_seeded_virtual_meter_becomes_a_spec(migrated):
    definitions = load_definitions(migrated)
    assert definitions.problems == []
    [meter] = definitions.meters
    assert (meter.meter_id, meter.meter_type, meter.description) == (
        0,
        "virtual_modbustcp",
        "test_energy_meter",
    )
    assert (meter.endpoint.host, meter.endpoint.port, meter.endpoint.unit_id) == (
        "localhost",
        5020,
        0,
    )
    assert (meter.endpoint.timeout_s, meter.endpoint.retries, meter.endpoint.framer) == (
        3.0,
        1,
        "socket",
    )
    [register] = meter.registers
    assert register.measurement == "test_measurement"
    assert register.data_type is DataType.INT16
    assert register.function_code is FunctionCode.READ_HOLDING_REGISTERS
    assert (register.word_order, register.byte_order) == (Order.BIG, Order.BIG)
    assert (register.unit, register.scale, register.offset) == ("test_u", 1.0, 0.0)


def test_bad_rows_are_skipped_with_reasons(migrated):
    insert(migrated, "registers", type="virtual_modbustcp", register_address=4,
           measurement_name="nulls", data_type=None, function_code=None, word_order=None,
           byte_order=None)  # fmt: skip
    insert(migrated, "energy_meters", id=5, host="h", port=70000, slave_address=1,
           type="virtual_modbustcp")  # fmt: skip
    insert(migrated, "energy_meters", id=6, host="h", port=502, slave_address=1, type="nothing")
    definitions = load_definitions(migrated)
    assert [m.meter_id for m in definitions.meters] == [0]
    assert [r.measurement for r in definitions.meters[0].registers] == ["test_measurement"]
    problems = definitions.problems
    assert any(
        p.startswith("register row id") and "'nulls'): skipped: data_type is empty" in p
        for p in problems
    ), problems
    assert "meter 5: skipped: port 70000 is not allowed; allowed: 1-65535" in problems
    assert "meter 6: type 'nothing' has no usable registers; nothing to read" in problems


def test_disabled_meters_and_explicit_ids(migrated):
    queries.add_meter(migrated, {"host": "a", "port": 502, "slave_address": 1,
                                 "type": "virtual_modbustcp", "id": 3})  # fmt: skip
    queries.set_meter_enabled(migrated, 0, False)
    assert [m.meter_id for m in load_definitions(migrated).meters] == [3]
    explicit = load_definitions(migrated, meter_ids=[0, 9])
    assert [m.meter_id for m in explicit.meters] == [0]
    assert explicit.problems == ["meter 9: does not exist"]


def test_meters_of_one_type_share_one_register_tuple(migrated):
    # a read plans each tuple once for all its meters (plan.SharedPlans)
    queries.add_meter(migrated, {"host": "a", "port": 502, "slave_address": 1,
                                 "type": "virtual_modbustcp", "id": 3})  # fmt: skip
    first, second = load_definitions(migrated).meters
    assert first.registers is second.registers


def test_per_meter_overrides(migrated):
    with migrated.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE energy_meters SET timeout_s = 0.5, retries = 0, framer = 'rtu', "
                "max_gap = 0, max_registers_per_request = 20, single_register_reads = :t, "
                "request_delay_s = 0.2 WHERE id = 0"
            ),
            {"t": True},
        )
    [meter] = load_definitions(migrated).meters
    assert (meter.endpoint.timeout_s, meter.endpoint.retries, meter.endpoint.framer) == (
        0.5,
        0,
        "rtu",
    )
    assert meter.endpoint.request_delay_s == 0.2
    options = meter.plan_options
    assert (options.max_gap, options.max_registers_per_request, options.single_register_reads) == (
        0,
        20,
        True,
    )


def test_out_of_range_override_skips_only_that_meter(migrated):
    queries.add_meter(migrated, {"host": "a", "port": 502, "slave_address": 1,
                                 "type": "virtual_modbustcp", "id": 3})  # fmt: skip
    with migrated.begin() as connection:
        connection.execute(sa.text("UPDATE energy_meters SET max_gap = -1 WHERE id = 0"))
    definitions = load_definitions(migrated)
    assert [m.meter_id for m in definitions.meters] == [3]
    assert definitions.problems == [
        "meter 0: skipped: max_gap -1 is not allowed; allowed: 0 or more (unread addresses a "
        "read may span)"
    ]
