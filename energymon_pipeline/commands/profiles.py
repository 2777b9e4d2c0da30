"""`energymon profiles`: list the shipped register maps and import one into the registry."""

from __future__ import annotations

import click

from energymon_pipeline.commands.configured import registry_engine
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.modbus.types import DataType
from energymon_pipeline.registry import db
from energymon_pipeline.registry.profiles import (
    NUMBERINGS,
    import_profile,
    list_profiles,
    load_profile,
    profile_rows,
    profiles_markdown,
)

DATA_TYPE_NAMES = {str(t.value): t.name for t in DataType}


@click.group(cls=UserErrorGroup)
def profiles() -> None:
    """Shipped register maps (device profiles) for common meters."""


@profiles.command("list")
@click.option(
    "--markdown",
    is_flag=True,
    help="Print the table of docs/profiles.md instead (with each profile's numbering and "
    "signature).",
)
def profiles_list(markdown: bool) -> None:
    """List the profiles: name, number of registers, device (manufacturer and models) and
    the manufacturer's document the registers come from."""
    if markdown:
        click.echo(profiles_markdown(), nl=False)
        return
    header = ("NAME", "REGISTERS", "DEVICE", "SOURCE")
    rows = [(p.name, str(p.registers), p.device, str(p.source)) for p in list_profiles()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[3]]).rstrip())


@profiles.command("show")
@click.argument("name")
def profiles_show(name: str) -> None:
    """Show profile NAME: its device, source document, signature and registers (addresses
    are zero-based protocol addresses, as stored and sent)."""
    profile = load_profile(name)
    source = profile.source
    assert source is not None
    click.echo(f"profile:      {profile.name}")
    click.echo(f"device:       {profile.device}")
    click.echo(f"description:  {profile.description}")
    click.echo(f"source:       {source}")
    click.echo(f"numbering:    {source.numbering} ({NUMBERINGS[source.numbering]})")
    if source.note:
        click.echo(f"note:         {source.note}")
    if profile.signature is not None:
        click.echo(f"signature:    {profile.signature.describe()}")
    else:
        click.echo(f"signature:    none ({profile.no_signature})")
    click.echo(f"registers:    {profile.registers}")
    header = ("ADDRESS", "FC", "TYPE", "UNIT", "SCALE", "COUNTER", "MEASUREMENT")
    rows = []
    for _, row in profile_rows(profile.name):
        rows.append(
            (
                row["register_address"] or "",
                row["function_code"] or "",
                DATA_TYPE_NAMES.get(row["data_type"] or "", row["data_type"] or ""),
                row["data_unit"] or "",
                row.get("scale") or "1",
                "yes" if (row.get("cumulative") or "0") not in ("0", "false") else "",
                row["measurement_name"] or "",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


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
