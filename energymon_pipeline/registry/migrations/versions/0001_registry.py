"""The registry: create it, or adopt the original system's tables in place.

A new database gets `energy_meters` and `registers` with every extension, plus the original
README's virtual meter (id 0) and its register. A database that already holds the original
tables (made by the 2020 system's DDL) keeps every row exactly as it was: the extensions are
added as columns whose defaults every old row satisfies, and the original's CHECKs are widened
to the new codes. Nothing is seeded into an adopted database.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from energymon_pipeline.errors import RegistryError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQLITE_NOW = sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))")
CODE_CHECKS = {
    "data_type": "data_type BETWEEN 1 AND 8",
    "function_code": "function_code BETWEEN 1 AND 4",
    "word_order": "word_order BETWEEN 1 AND 2",
    "byte_order": "byte_order BETWEEN 1 AND 2",
}
UNIQUE_REGISTER = "uq_registers_type_fc_address_measurement"
UNIQUE_COLUMNS = ["type", "function_code", "register_address", "measurement_name"]
VERSIONED_METER_COLUMNS = [
    "id", "host", "port", "slave_address", "type", "description", "enabled", "timeout_s",
    "retries", "framer", "max_gap", "max_registers_per_request", "single_register_reads",
    "connect_delay_s", "request_delay_s",
]  # fmt: skip


def _now(dialect: str):
    return SQLITE_NOW if dialect == "sqlite" else sa.text("now()")


def _meter_extension_columns(dialect: str) -> list[sa.Column]:
    return [
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=_now(dialect),
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=_now(dialect),
        ),
        sa.Column("timeout_s", sa.Float, nullable=True),
        sa.Column("retries", sa.Integer, nullable=True),
        sa.Column("framer", sa.String(8), nullable=False, server_default="socket"),
        sa.Column("max_gap", sa.Integer, nullable=True),
        sa.Column("max_registers_per_request", sa.Integer, nullable=True),
        sa.Column("single_register_reads", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("connect_delay_s", sa.Float, nullable=True),
        sa.Column("request_delay_s", sa.Float, nullable=True),
    ]


def _register_extension_columns() -> list[sa.Column]:
    return [
        sa.Column("scale", sa.Float, nullable=False, server_default="1"),
        sa.Column("offset", sa.Float, nullable=False, server_default="0"),
        sa.Column("min_value", sa.Float, nullable=True),
        sa.Column("max_value", sa.Float, nullable=True),
    ]


def _meter_checks() -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint("framer IN ('socket', 'rtu')", name="ck_energy_meters_framer"),
        sa.CheckConstraint("timeout_s IS NULL OR timeout_s > 0", name="ck_energy_meters_timeout"),
    ]


def _register_checks() -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint(sql, name=f"ck_registers_{column}")
        for column, sql in CODE_CHECKS.items()
    ]


def _meters_table(dialect: str) -> list:
    return [
        sa.Column("id", sa.Integer, sa.Identity(start=1), primary_key=True),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("slave_address", sa.Integer, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("description", sa.String(64), nullable=True),
        *_meter_extension_columns(dialect),
        *_meter_checks(),
    ]


def _registers_table() -> list:
    return [
        sa.Column("id", sa.Integer, sa.Identity(start=1), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("register_address", sa.Integer, nullable=False),
        sa.Column("measurement_name", sa.String(64), nullable=False),
        sa.Column("data_unit", sa.String(8), nullable=True),
        sa.Column("data_type", sa.Integer, nullable=True),
        sa.Column("function_code", sa.Integer, nullable=True),
        sa.Column("word_order", sa.Integer, nullable=True),
        sa.Column("byte_order", sa.Integer, nullable=True),
        *_register_extension_columns(),
        *_register_checks(),
        sa.UniqueConstraint(*UNIQUE_COLUMNS, name=UNIQUE_REGISTER),
    ]


def _create_meters(dialect: str) -> None:
    op.create_table("energy_meters", *_meters_table(dialect))
    # Where the virtual meter points is the caller's (registry.db.upgrade's virtual_meter).
    host, port = op.get_context().config.attributes["virtual_meter"]
    op.execute(
        sa.text(
            "INSERT INTO energy_meters (id, host, port, slave_address, type, description) "
            "VALUES (0, :host, :port, 0, 'virtual_modbustcp', 'test_energy_meter')"
        ).bindparams(host=host, port=port)
    )


def _create_registers() -> None:
    op.create_table("registers", *_registers_table())
    op.execute(
        "INSERT INTO registers (type, register_address, measurement_name, data_unit, "
        "data_type, function_code, word_order, byte_order) "
        "VALUES ('virtual_modbustcp', 0, 'test_measurement', 'test_u', 1, 3, 2, 2)"
    )


def _refuse_duplicate_registers(bind) -> None:
    """The original had no unique key; adding one over duplicates would have to drop rows,
    so the upgrade stops (rolling back) and names them for the user to resolve."""
    rows = bind.execute(
        sa.text(
            "SELECT type, function_code, register_address, measurement_name, COUNT(*) "
            "FROM registers WHERE function_code IS NOT NULL "
            "GROUP BY type, function_code, register_address, measurement_name "
            "HAVING COUNT(*) > 1 ORDER BY type, function_code, register_address"
        )
    ).all()
    if rows:
        listed = "; ".join(
            f"type={r[0]} function_code={r[1]} register_address={r[2]} "
            f"measurement_name={r[3]} ({r[4]} rows)"
            for r in rows[:5]
        )
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise RegistryError(
            "cannot adopt the registers table: rows must be unique on (type, function_code, "
            f"register_address, measurement_name), duplicates: {listed}{more}; delete the "
            "extra copies and run `energymon db upgrade` again (nothing was changed)"
        )


def _adopt_postgresql(bind, tables: set[str]) -> None:
    inspector = sa.inspect(bind)
    if "energy_meters" in tables:
        op.alter_column("energy_meters", "description", nullable=True)
        for column in _meter_extension_columns("postgresql"):
            op.add_column("energy_meters", column)
        for check in _meter_checks():
            op.create_check_constraint(check.name, "energy_meters", check.sqltext)
        id_column = next(c for c in inspector.get_columns("energy_meters") if c["name"] == "id")
        if id_column.get("default") is None and not id_column.get("identity"):
            op.execute(
                "ALTER TABLE energy_meters ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"
            )
        op.execute(
            "SELECT setval(pg_get_serial_sequence('energy_meters', 'id'), "
            "COALESCE((SELECT MAX(id) FROM energy_meters), 0) + 1, false)"
        )
    if "registers" in tables:
        _refuse_duplicate_registers(bind)
        for check in inspector.get_check_constraints("registers"):
            if any(column in check["sqltext"] for column in CODE_CHECKS):
                op.drop_constraint(check["name"], "registers", type_="check")
        op.execute(
            "ALTER TABLE registers ADD COLUMN id integer GENERATED BY DEFAULT AS IDENTITY "
            "CONSTRAINT registers_pkey PRIMARY KEY"
        )
        for column in _register_extension_columns():
            op.add_column("registers", column)
        for check in _register_checks():
            op.create_check_constraint(check.name, "registers", check.sqltext)
        op.create_unique_constraint(UNIQUE_REGISTER, "registers", UNIQUE_COLUMNS)


def _adopt_by_copy(bind, tables: set[str]) -> None:
    """For databases without in-place ALTERs (SQLite): rename, create the new shape, copy
    every row column for column, drop the renamed original."""
    originals = {
        "energy_meters": "id, host, port, slave_address, type, description",
        "registers": (
            "type, register_address, measurement_name, data_unit, data_type, function_code, "
            "word_order, byte_order"
        ),
    }
    if "registers" in tables:
        _refuse_duplicate_registers(bind)
    for table in sorted(tables):
        op.rename_table(table, f"_original_{table}")
    dialect = bind.dialect.name
    for table in sorted(tables):
        if table == "energy_meters":
            op.create_table("energy_meters", *_meters_table(dialect))
        else:
            op.create_table("registers", *_registers_table())
        columns = originals[table]
        op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _original_{table}")
        op.drop_table(f"_original_{table}")


def _create_touch_trigger(dialect: str) -> None:
    """`updated_at` is set by the database on every real change, however the row is edited
    (CLI, psql, Grafana's SQL): the new-meter sensor uses it as the row's version."""
    if dialect == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION energymon_touch_updated_at() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW IS DISTINCT FROM OLD AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
                THEN
                    NEW.updated_at := clock_timestamp();
                END IF;
                RETURN NEW;
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER energy_meters_touch_updated_at BEFORE UPDATE ON energy_meters "
            "FOR EACH ROW EXECUTE FUNCTION energymon_touch_updated_at()"
        )
    elif dialect == "sqlite":
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in VERSIONED_METER_COLUMNS)
        op.execute(
            f"""
            CREATE TRIGGER energy_meters_touch_updated_at AFTER UPDATE ON energy_meters
            FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at AND ({changed})
            BEGIN
                UPDATE energy_meters SET updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
                WHERE id = NEW.id;
            END
            """
        )


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    existing = {"energy_meters", "registers"} & set(sa.inspect(bind).get_table_names())
    if existing:
        if dialect == "postgresql":
            _adopt_postgresql(bind, existing)
        else:
            _adopt_by_copy(bind, existing)
    if "energy_meters" not in existing:
        _create_meters(dialect)
    if "registers" not in existing:
        _create_registers()
    _create_touch_trigger(dialect)


def downgrade() -> None:
    raise RegistryError("downgrading the registry is not supported: restore a backup instead")
