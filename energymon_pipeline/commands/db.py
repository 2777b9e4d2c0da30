"""`energymon db`: the registry database's schema."""

from __future__ import annotations

import click

from energymon_pipeline import settings
from energymon_pipeline.commands.configured import registry_engine
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.definitions import load_definitions


@click.group(cls=UserErrorGroup, name="db")
def db_group() -> None:
    """The registry database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Create the registry, adopt the original system's tables, or apply new migrations.

    Running it again when the schema is current changes nothing."""
    engine = registry_engine()
    virtual = settings.virtual_server()
    applied = db.upgrade(engine, virtual_meter=(virtual.host, virtual.port))
    target = db.describe(engine)
    if applied:
        click.echo(f"registry {target}: applied migration(s) {', '.join(applied)}")
    else:
        click.echo(f"registry {target}: already up to date ({db.current_revision(engine)})")
    # Rows written past validation (the original system, a SQL client) are kept as they are;
    # polls skip them, and this says which and why.
    for problem in load_definitions(engine, include_disabled=True).problems:
        click.echo(f"warning: {problem}", err=True)
    for problem in queries.split_link_problems(queries.list_meters(engine)):
        click.echo(f"warning: {problem}", err=True)
