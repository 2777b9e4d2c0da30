"""Alembic environment: runs the registry migrations on the connection the caller passes
(`energymon db upgrade`), or on the configured registry database when run by the alembic CLI."""

from alembic import context

from energymon_pipeline.registry.db import VERSION_TABLE, create_engine


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
if connection is not None:
    _run(connection)
else:
    engine = create_engine()
    with engine.begin() as conn:
        _run(conn)
