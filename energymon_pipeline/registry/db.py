"""Connecting to the registry database and bringing its schema up to date.

Which database is the caller's to say (the CLI and the Dagster resource take it from the
environment through settings.py); this module only knows which URLs it can use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from energymon_pipeline.errors import RegistryError

if TYPE_CHECKING:  # Alembic is imported where a migration runs: a poll run never needs it.
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
#: Alembic's version table, named for this project so it cannot collide with another
#: application's migrations in a shared database.
VERSION_TABLE = "energymon_alembic_version"
#: Where the seeded virtual meter (id 0) points unless the caller of `upgrade` says otherwise:
#: the virtual server's default address.
VIRTUAL_METER = ("localhost", 5020)

SUPPORTED_DATABASES = (
    "postgresql://user:password@host:5432/database (PostgreSQL through psycopg2; "
    "postgres:// and postgresql+psycopg2:// mean the same) or sqlite:///path/to/registry.sqlite"
)


def engine_url(text: str, name: str = "the registry URL") -> URL:
    """A registry URL as typed by a user, made usable: `postgresql://` and `postgres://` use
    psycopg2 (the driver energymon ships; SQLAlchemy 2.1 would pick psycopg 3). Any other
    scheme is refused with one line naming `name` (e.g. the variable it came from); the
    password is never echoed."""
    try:
        url = make_url(text.strip())
    except ArgumentError:
        scheme = text.strip().partition("://")[0] if "://" in text else ""
        shown = f"the scheme {scheme!r}" if scheme else "no scheme://"
        raise RegistryError(
            f"{name} is not a database URL ({shown}); allowed: {SUPPORTED_DATABASES}"
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg2"):
        return url.set(drivername="postgresql+psycopg2")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return url.set(drivername="sqlite")
    raise RegistryError(
        f"{name} uses the scheme {url.drivername!r}, which energymon cannot use; "
        f"allowed: {SUPPORTED_DATABASES}"
    )


def create_engine(url: URL | str) -> Engine:
    """An engine for the registry at `url` (a string goes through `engine_url`).

    An SQLite file's folder is created on demand, so the embedded default works on a fresh
    clone; connections are checked before use, so a restarted PostgreSQL is reconnected to
    instead of failing every later query (a fault of the original)."""
    if isinstance(url, str):
        url = engine_url(url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if url.get_backend_name() == "sqlite":
        _make_sqlite_transactional(engine)
    return engine


def _make_sqlite_transactional(engine: Engine) -> None:
    """pysqlite commits DDL implicitly; SQLAlchemy's documented recipe makes BEGIN explicit so
    a failed migration or import leaves nothing behind. WAL lets the CLI read while a poll run
    writes."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA busy_timeout=10000")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN")


def describe(engine: Engine) -> str:
    """The engine's URL with the password hidden, for messages."""
    return engine.url.render_as_string(hide_password=True)


def unreachable(engine: Engine, error: OperationalError) -> RegistryError:
    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    return RegistryError(f"cannot use the registry database {describe(engine)}: {reason}")


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, virtual_meter: tuple[str, int] = VIRTUAL_METER) -> list[str]:
    """Apply every pending migration in one transaction; returns the revisions applied
    (empty when the schema was already current, so running it twice changes nothing).

    `virtual_meter` (host, port) is where a new registry's virtual meter points; an existing
    registry keeps its rows as they are."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    try:
        with engine.begin() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            current = context.get_current_heads()
            pending = [
                rev.revision
                for rev in script.iterate_revisions("heads", current[0] if current else "base")
            ]
            config.attributes["connection"] = connection
            config.attributes["virtual_meter"] = virtual_meter
            command.upgrade(config, "head")
    except OperationalError as error:
        raise unreachable(engine, error) from None
    except DBAPIError as error:  # e.g. a role that does not own the tables: nothing applied
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise RegistryError(
            f"cannot upgrade the registry database {describe(engine)} (nothing was changed): "
            f"{reason}"
        ) from None
    return list(reversed(pending))


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    except OperationalError as error:
        raise unreachable(engine, error) from None


def revisions() -> list[str]:
    """Every migration, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]
