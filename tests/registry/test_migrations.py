"""`energymon db upgrade`: creating a registry, adopting the original system's tables, and
running twice without change. Every test runs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.registry import db

# The original system's DDL (ORIGINAL-SYSTEM.md): no sequence on energy_meters.id, no key on
# registers, CHECKs that let NULL through, description NOT NULL.
ORIGINAL_DDL = [
    """CREATE TABLE energy_meters (
        id int PRIMARY KEY,
        host varchar(64) NOT NULL,
        port int NOT NULL,
        slave_address int NOT NULL,
        type varchar(32) NOT NULL,
        description varchar(64) NOT NULL)""",
    """CREATE TABLE registers (
        type varchar(32) NOT NULL,
        register_address int NOT NULL,
        measurement_name varchar(64) NOT NULL,
        data_unit varchar(8) NULL,
        data_type int CHECK (data_type >= 1 AND data_type <= 3),
        function_code int CHECK (function_code >= 3 AND function_code <= 4),
        word_order int CHECK (word_order >= 1 AND word_order <= 2),
        byte_order int CHECK (byte_order >= 1 AND byte_order <= 2))""",
]
ORIGINAL_METERS = [
    (0, "virtual_modbustcp_server", 502, 0, "virtual_modbustcp", "test_energy_meter"),
    (1, "192.168.1.113", 502, 1, "sdm630", "example"),
    (2, "remote_with_open_ports", 8502, 1, "sdm630", "example"),
    (7, "10.1.2.3", 502, 17, "sdm630", "hall: öst, 'quoted'"),
]
ORIGINAL_REGISTERS = [
    ("virtual_modbustcp", 0, "test_measurement", "test_u", 1, 3, 2, 2),
    ("sdm630", 0, "voltageL1", "V", 3, 4, 2, 2),
    ("sdm630", 2, "voltageL2", "V", 3, 4, 2, 2),
    ("sdm630", 52, "activePower", "W", 3, 4, 1, 1),
    ("sdm630", 70, "frequency", None, 2, 3, 2, 1),
    # The original's CHECKs let NULL through; such a row must survive adoption untouched.
    ("sdm630", 72, "broken", None, None, None, None, None),
]
METER_COLUMNS = "id, host, port, slave_address, type, description"
REGISTER_COLUMNS = (
    "type, register_address, measurement_name, data_unit, data_type, function_code, "
    "word_order, byte_order"
)


def make_original(engine, meters=ORIGINAL_METERS, registers=ORIGINAL_REGISTERS) -> None:
    with engine.begin() as connection:
        for statement in ORIGINAL_DDL:
            connection.execute(sa.text(statement))
        for meter in meters:
            connection.execute(
                sa.text(f"INSERT INTO energy_meters ({METER_COLUMNS}) VALUES (:a,:b,:c,:d,:e,:f)"),
                dict(zip("abcdef", meter, strict=False)),
            )
        for register in registers:
            connection.execute(
                sa.text(
                    f"INSERT INTO registers ({REGISTER_COLUMNS}) VALUES (:a,:b,:c,:d,:e,:f,:g,:h)"
                ),
                dict(zip("abcdefgh", register, strict=False)),
            )


def snapshot(engine, fetch) -> tuple[list, list]:
    meters = fetch(engine, f"SELECT {METER_COLUMNS} FROM energy_meters ORDER BY id")
    registers = fetch(
        engine,
        f"SELECT {REGISTER_COLUMNS} FROM registers ORDER BY type, register_address",
    )
    return meters, registers


def test_new_database_gets_tables_and_the_virtual_meter(registry, fetch):
    assert db.upgrade(registry, virtual_meter=("virtual-server", 1502)) == db.revisions()
    assert fetch(registry, f"SELECT {METER_COLUMNS}, enabled, framer FROM energy_meters") == [
        (0, "virtual-server", 1502, 0, "virtual_modbustcp", "test_energy_meter", True, "socket")
    ]
    assert fetch(registry, f'SELECT {REGISTER_COLUMNS}, scale, "offset" FROM registers') == [
        ("virtual_modbustcp", 0, "test_measurement", "test_u", 1, 3, 2, 2, 1.0, 0.0)
    ]


def test_virtual_meter_defaults_to_localhost_5020(registry, fetch, monkeypatch):
    monkeypatch.setenv("VIRTUAL_SERVER_HOST", "not-read-by-the-registry")
    db.upgrade(registry)
    assert fetch(registry, "SELECT host, port FROM energy_meters WHERE id = 0") == [
        ("localhost", 5020)
    ]


def test_db_upgrade_points_the_virtual_meter_at_the_configured_server(
    energymon, fetch, registry, monkeypatch
):
    monkeypatch.setenv("VIRTUAL_SERVER_HOST", "virtual-server")
    monkeypatch.setenv("VIRTUAL_SERVER_PORT", "1502")
    assert energymon("db", "upgrade").exit_code == 0
    assert fetch(registry, "SELECT host, port FROM energy_meters WHERE id = 0") == [
        ("virtual-server", 1502)
    ]


def test_migrations_run_only_through_upgrade():
    from alembic import command

    with pytest.raises(RegistryError, match="run through `energymon db upgrade`"):
        command.upgrade(db.alembic_config(), "head")


def test_registry_urls_as_users_type_them():
    assert db.engine_url("postgres://u:pw@h/reg").drivername == "postgresql+psycopg2"
    assert db.engine_url("sqlite:///x.sqlite").drivername == "sqlite"
    with pytest.raises(RegistryError) as error:
        db.create_engine("mysql://u:topsecret@h/reg")
    assert str(error.value).startswith(
        "the registry URL uses the scheme 'mysql', which energymon cannot use; allowed: "
    )
    assert "topsecret" not in str(error.value)


def test_upgrade_twice_changes_nothing(registry, fetch):
    db.upgrade(registry)
    before = snapshot(registry, fetch), fetch(registry, "SELECT updated_at FROM energy_meters")
    assert db.upgrade(registry) == []
    after = snapshot(registry, fetch), fetch(registry, "SELECT updated_at FROM energy_meters")
    assert before == after
    assert db.current_revision(registry) == db.revisions()[-1]


def test_adopts_original_tables_without_changing_a_row(registry, fetch):
    make_original(registry)
    before = snapshot(registry, fetch)
    assert db.upgrade(registry) == db.revisions()
    assert snapshot(registry, fetch) == before
    # Extensions arrive with defaults every old row satisfies; nothing is seeded.
    assert fetch(
        registry,
        "SELECT enabled, framer, timeout_s, single_register_reads FROM energy_meters",
    ) == [(True, "socket", None, False)] * len(ORIGINAL_METERS)
    assert fetch(registry, 'SELECT DISTINCT scale, "offset" FROM registers') == [(1.0, 0.0)]
    ids = [r[0] for r in fetch(registry, "SELECT id FROM registers")]
    assert len(set(ids)) == len(ORIGINAL_REGISTERS) and None not in ids
    assert db.upgrade(registry) == []
    assert snapshot(registry, fetch) == before


def test_adopted_database_takes_extended_codes_and_generated_ids(registry, fetch):
    make_original(registry)
    db.upgrade(registry)
    with registry.begin() as connection:
        # Types 4-8 and function codes 1-2 were refused by the original CHECKs.
        connection.execute(
            sa.text(
                f"INSERT INTO registers ({REGISTER_COLUMNS}) "
                "VALUES ('x', 0, 'coil', NULL, 8, 1, 1, 1)"
            )
        )
        # An insert without id (as a user would do with psql) gets the next free id.
        connection.execute(
            sa.text(
                "INSERT INTO energy_meters (host, port, slave_address, type) "
                "VALUES ('h', 502, 1, 'x')"
            )
        )
    assert fetch(registry, "SELECT id, description FROM energy_meters WHERE host = 'h'") == [
        (8, None)
    ]


def test_adoption_refuses_duplicate_registers_and_changes_nothing(registry, fetch):
    duplicate = ("sdm630", 0, "voltageL1", "V", 3, 4, 2, 2)
    make_original(registry, registers=[*ORIGINAL_REGISTERS, duplicate])
    before = snapshot(registry, fetch)
    with pytest.raises(RegistryError) as error:
        db.upgrade(registry)
    message = str(error.value)
    assert "duplicates: type=sdm630 function_code=4 register_address=0" in message
    assert "measurement_name=voltageL1 (2 rows)" in message
    assert "\n" not in message
    assert snapshot(registry, fetch) == before
    columns = {c["name"] for c in sa.inspect(registry).get_columns("energy_meters")}
    assert "enabled" not in columns, "a refused adoption must leave the schema untouched"
    assert db.current_revision(registry) is None


def test_updated_at_moves_on_real_edits_only(migrated, fetch):
    def stamps():
        return fetch(migrated, "SELECT created_at, updated_at FROM energy_meters WHERE id = 0")[0]

    created, updated = stamps()
    assert created == updated
    time.sleep(0.01)
    with migrated.begin() as connection:
        connection.execute(sa.text("UPDATE energy_meters SET host = host WHERE id = 0"))
    assert stamps() == (created, updated), "a no-op update is not a new version"
    with migrated.begin() as connection:
        connection.execute(sa.text("UPDATE energy_meters SET port = 1502 WHERE id = 0"))
    created_after, updated_after = stamps()
    assert created_after == created
    assert updated_after > updated


def test_unreachable_database_is_one_line():
    engine = db.create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with pytest.raises(RegistryError) as error:
        db.upgrade(engine)
    assert str(error.value).startswith(
        "cannot use the registry database postgresql+psycopg2://nobody@127.0.0.1:1/none: "
    )
    assert "\n" not in str(error.value)
