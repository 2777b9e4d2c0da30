"""The `energymon` command: registry administration and ad-hoc checks from a shell.

User errors print one line on stderr and exit 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.csv_import import read_registers_csv

EXIT_USER_ERROR = 1


class _Group(click.Group):
    """Turns EnergymonError anywhere below into one line on stderr, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except queries.ImportRefused as error:
            for problem in error.problems:
                click.echo(f"error: {problem}", err=True)
            click.echo(
                f"error: nothing imported: {len({p.line for p in error.problems})} bad row(s)",
                err=True,
            )
            ctx.exit(EXIT_USER_ERROR)
        except EnergymonError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_USER_ERROR)


def _engine():
    return db.create_engine()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _print_json(rows: list[dict[str, Any]]) -> None:
    click.echo(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2))


def _print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """A plain aligned table: `columns` pairs a row key with its heading."""
    cells = [[heading for _, heading in columns]]
    for row in rows:
        cells.append(["" if row.get(key) is None else str(row.get(key)) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


@click.group(cls=_Group)
def cli() -> None:
    """energymon: Modbus TCP energy meter monitoring (registry and tools).

    The registry database is ENERGYMON_DATABASE_URL if set, else PostgreSQL from
    POSTGRES_HOST/PORT/USER/PASSWORD/DB if POSTGRES_HOST is set, else an SQLite file in the
    local data folder (ENERGYMON_DATA_DIR, default .energymon).
    """


@cli.group(cls=_Group, name="db")
def db_group() -> None:
    """The registry database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Create the registry, adopt the original system's tables, or apply new migrations.

    Running it again when the schema is current changes nothing."""
    engine = _engine()
    applied = db.upgrade(engine)
    target = db.describe(engine)
    if applied:
        click.echo(f"registry {target}: applied migration(s) {', '.join(applied)}")
    else:
        click.echo(f"registry {target}: already up to date ({db.current_revision(engine)})")


@cli.group(cls=_Group)
def meters() -> None:
    """Meters (rows of energy_meters)."""


METER_COLUMNS = [
    ("id", "ID"),
    ("host", "HOST"),
    ("port", "PORT"),
    ("slave_address", "UNIT"),
    ("type", "TYPE"),
    ("description", "DESCRIPTION"),
    ("enabled", "ENABLED"),
]


@meters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def meters_list(as_json: bool) -> None:
    """List every meter."""
    rows = queries.list_meters(_engine())
    if as_json:
        _print_json(rows)
    else:
        for row in rows:
            row["enabled"] = "yes" if row["enabled"] else "no"
        _print_table(rows, METER_COLUMNS)


@meters.command("add")
@click.option("--host", required=True, help="Hostname or IP address of the meter or gateway.")
@click.option("--port", required=True, type=int, help="TCP port, 1-65535 (usually 502).")
@click.option("--unit", required=True, type=int, help="Modbus unit id (slave address), 0-255.")
@click.option("--type", "type_", required=True, help="Meter type; joins to registers.type.")
@click.option("--description", default=None, help="Free text; becomes the InfluxDB tag.")
@click.option("--id", "meter_id", type=int, default=None, help="Explicit id (default: next free).")
@click.option(
    "--framer",
    type=click.Choice(["socket", "rtu"]),
    default="socket",
    help="socket (Modbus TCP) or rtu (RTU over TCP gateways).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    help="Per-request timeout in seconds (default 3).",
)
def meters_add(host, port, unit, type_, description, meter_id, framer, timeout_s) -> None:
    """Add a meter; it is polled from the next poll run on."""
    result = queries.add_meter(
        _engine(),
        {
            "id": meter_id,
            "host": host,
            "port": port,
            "slave_address": unit,
            "type": type_,
            "description": description,
            "framer": framer,
            "timeout_s": timeout_s,
        },
    )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"added meter {result.ids[0]}")


@meters.command("remove")
@click.argument("meter_id", type=int)
def meters_remove(meter_id: int) -> None:
    """Delete a meter (its registers stay: they belong to its type)."""
    queries.remove_meter(_engine(), meter_id)
    click.echo(f"removed meter {meter_id}")


@meters.command("disable")
@click.argument("meter_id", type=int)
def meters_disable(meter_id: int) -> None:
    """Stop polling a meter without deleting it."""
    changed = queries.set_meter_enabled(_engine(), meter_id, False)
    click.echo(f"meter {meter_id} {'disabled' if changed else 'was already disabled'}")


@meters.command("enable")
@click.argument("meter_id", type=int)
def meters_enable(meter_id: int) -> None:
    """Poll a disabled meter again."""
    changed = queries.set_meter_enabled(_engine(), meter_id, True)
    click.echo(f"meter {meter_id} {'enabled' if changed else 'was already enabled'}")


@cli.group(cls=_Group)
def registers() -> None:
    """Register maps (rows of registers, per meter type)."""


REGISTER_COLUMNS = [
    ("id", "ID"),
    ("type", "TYPE"),
    ("function_code", "FC"),
    ("register_address", "ADDRESS"),
    ("measurement_name", "MEASUREMENT"),
    ("data_unit", "UNIT"),
    ("data_type", "DATA_TYPE"),
    ("word_order", "WORD_ORDER"),
    ("byte_order", "BYTE_ORDER"),
    ("scale", "SCALE"),
    ("offset", "OFFSET"),
]


@registers.command("list")
@click.option("--type", "type_", default=None, help="Only registers of this meter type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def registers_list(type_: str | None, as_json: bool) -> None:
    """List register definitions (addresses are zero-based protocol addresses)."""
    rows = queries.list_registers(_engine(), type_)
    if as_json:
        _print_json(rows)
    else:
        _print_table(rows, REGISTER_COLUMNS)


@registers.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
def registers_import(file: str) -> None:
    """Import register rows from a CSV with the original header, all or nothing.

    Header: type,register_address,measurement_name,data_unit,data_type,function_code,
    word_order,byte_order (optional: scale,offset,min_value,max_value)."""
    rows, problems = read_registers_csv(file)
    result = queries.insert_registers(_engine(), rows, known_problems=problems)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"imported {len(result.ids)} register row(s) from {file}")


def main() -> None:
    cli.main(prog_name="energymon")


if __name__ == "__main__":
    sys.exit(main())
