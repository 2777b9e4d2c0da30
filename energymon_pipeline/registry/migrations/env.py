"""Alembic environment: runs the registry migrations on the connection `db.upgrade` hands
over in the config's attributes (with the values the migrations need, such as where the
virtual meter points); the registry's URL is the caller's, never read here."""

from alembic import context

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.registry.db import VERSION_TABLE


def _run(connection) -> None:
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RegistryError(
        "the registry migrations run through `energymon db upgrade` (registry.db.upgrade), "
        "which hands them the connection"
    )
_run(connection)
