"""`energymon profiles`: list the shipped register maps and import one into the registry."""

from __future__ import annotations

import click

from energymon_pipeline.commands.configured import registry_engine
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.registry import db
from energymon_pipeline.registry.profiles import import_profile, list_profiles, profile_rows


@click.group(cls=UserErrorGroup)
def profiles() -> None:
    """Shipped register maps (device profiles) for common meters."""


@profiles.command("list")
def profiles_list() -> None:
    """List the profiles: name, number of registers, what it is."""
    rows = [(p.name, str(p.registers), p.description) for p in list_profiles()]
    widths = [max(len(row[i]) for row in [("NAME", "REGISTERS", ""), *rows]) for i in range(2)]
    click.echo(f"{'NAME'.ljust(widths[0])}  {'REGISTERS'.ljust(widths[1])}  DESCRIPTION")
    for name, count, description in rows:
        click.echo(f"{name.ljust(widths[0])}  {count.ljust(widths[1])}  {description}".rstrip())


@profiles.command("import")
@click.argument("name")
@click.option(
    "--as",
    "as_type",
    metavar="TYPE",
    default=None,
    help="Store the rows under this meter type instead of the profile's name (1-32 "
    "characters); meters of that type then read these registers.",
)
def profiles_import(name: str, as_type: str | None) -> None:
    """Import profile NAME into the registry's registers, all or nothing.

    Rows already stored identically are left alone, so importing twice is harmless; a stored
    row with the same type, function code, address and measurement name but other values
    refuses the whole import."""
    rows = profile_rows(name, as_type)
    type_ = rows[0][1]["type"]
    engine = registry_engine()
    try:
        result = import_profile(engine, name, as_type)
    finally:
        engine.dispose()
    click.echo(
        f"profile {name}: imported {len(result.ids)} of {len(rows)} register row(s) as type "
        f"{type_!r} into {db.describe(engine)}"
    )
    for note in result.warnings:  # e.g. "27 identical row(s) were already present"
        click.echo(note)
