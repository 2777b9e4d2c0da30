"""Environment variables -> validated settings.

The original system's variable names are a compatibility contract (users keep their env file),
so they are read here under those names. Every option is documented once, with its default, in
docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from energymon_pipeline.errors import SettingsError

DEFAULT_DATA_DIR = ".energymon"


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not an integer; allowed: a whole number from {low} to {high}"
        ) from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range; allowed: {low} to {high}")
    return value


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local data folder of the embedded defaults (SQLite registry, Dagster storage,
    spool). Relative paths are taken from the current directory."""
    env = os.environ if env is None else env
    return Path(env.get("ENERGYMON_DATA_DIR", "").strip() or DEFAULT_DATA_DIR)


def database_url(env: Mapping[str, str] | None = None) -> URL:
    """Where the meter/register registry lives.

    1. ENERGYMON_DATABASE_URL (any SQLAlchemy URL), else
    2. PostgreSQL from the original POSTGRES_HOST/PORT/USER/PASSWORD/DB when POSTGRES_HOST is
       set, else
    3. an SQLite file in the local data folder (the embedded default).
    """
    env = os.environ if env is None else env
    explicit = env.get("ENERGYMON_DATABASE_URL", "").strip()
    if explicit:
        try:
            return make_url(explicit)
        except ArgumentError:
            raise SettingsError(
                f"ENERGYMON_DATABASE_URL={explicit!r} is not a database URL; allowed: an "
                "SQLAlchemy URL such as postgresql+psycopg2://user:pass@host:5432/db "
                "or sqlite:///path/to/registry.sqlite"
            ) from None
    host = env.get("POSTGRES_HOST", "").strip()
    if host:
        return URL.create(
            "postgresql+psycopg2",
            username=env.get("POSTGRES_USER", "").strip() or None,
            password=env.get("POSTGRES_PASSWORD") or None,
            host=host,
            port=_int(env, "POSTGRES_PORT", 5432, 1, 65535),
            database=env.get("POSTGRES_DB", "").strip() or None,
        )
    return URL.create("sqlite", database=str(data_dir(env) / "registry.sqlite"))


@dataclass(frozen=True)
class VirtualServerSettings:
    """Where the virtual Modbus TCP server listens; also seeds the registry's virtual meter."""

    host: str = "localhost"
    port: int = 5020


def virtual_server(env: Mapping[str, str] | None = None) -> VirtualServerSettings:
    env = os.environ if env is None else env
    host = env.get("VIRTUAL_SERVER_HOST", "").strip() or VirtualServerSettings.host
    port = _int(env, "VIRTUAL_SERVER_PORT", VirtualServerSettings.port, 1, 65535)
    return VirtualServerSettings(host=host, port=port)
