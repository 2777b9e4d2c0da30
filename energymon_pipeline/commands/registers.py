"""`energymon registers`: register maps (rows of registers, per meter type), listed and
imported from CSV."""

from __future__ import annotations

import click

from energymon_pipeline.commands.configured import registry_engine
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.commands.output import print_json, print_table
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.csv_import import read_registers_csv

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


@click.group(cls=UserErrorGroup)
def registers() -> None:
    """Register maps (rows of registers, per meter type)."""


@registers.command("list")
@click.option("--type", "type_", default=None, help="Only registers of this meter type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def registers_list(type_: str | None, as_json: bool) -> None:
    """List register definitions (addresses are zero-based protocol addresses)."""
    rows = queries.list_registers(registry_engine(), type_)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, REGISTER_COLUMNS)


@registers.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
def registers_import(file: str) -> None:
    """Import register rows from a CSV with the original header, all or nothing.

    Header: type,register_address,measurement_name,data_unit,data_type,function_code,
    word_order,byte_order (optional: scale,offset,min_value,max_value)."""
    rows, problems = read_registers_csv(file)
    result = queries.insert_registers(registry_engine(), rows, known_problems=problems)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"imported {len(result.ids)} register row(s) from {file}")
