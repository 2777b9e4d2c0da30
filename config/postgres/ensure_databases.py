"""Create the registry database (POSTGRES_DB) and Dagster's storage database
(DAGSTER_POSTGRES_DB) on the PostgreSQL server when they are missing; leave existing ones alone.

Why: the postgres image creates only POSTGRES_DB, and only when its data directory is empty.
A stack that takes over the original system's PostgreSQL data (whose `default` database
already exists) would otherwise start without Dagster's database. The code server's container
runs this before `energymon db upgrade`, on every start (it is idempotent).

Connects as POSTGRES_USER (the postgres image's superuser) to the `postgres` maintenance
database on POSTGRES_HOST:POSTGRES_PORT, waiting up to ENSURE_DATABASES_TIMEOUT_S (default
60) seconds for the server. Exits 1 with one line naming the problem.
"""

from __future__ import annotations

import os
import time

import psycopg2
from psycopg2 import sql

MAINTENANCE_DB = "postgres"


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SystemExit(f"ensure_databases: {name} is not set")
    return value


def _connect(deadline: float):
    while True:
        try:
            return psycopg2.connect(
                host=_required("POSTGRES_HOST"),
                port=int(os.environ.get("POSTGRES_PORT", "").strip() or 5432),
                user=_required("POSTGRES_USER"),
                password=os.environ.get("POSTGRES_PASSWORD") or None,
                dbname=MAINTENANCE_DB,
                connect_timeout=5,
            )
        except psycopg2.OperationalError as error:
            if time.monotonic() >= deadline:
                detail = " ".join(str(error).split())
                raise SystemExit(f"ensure_databases: PostgreSQL not reachable: {detail}") from None
            time.sleep(1)


def main() -> None:
    registry, dagster = _required("POSTGRES_DB"), _required("DAGSTER_POSTGRES_DB")
    if registry == dagster:
        raise SystemExit(
            f"ensure_databases: POSTGRES_DB and DAGSTER_POSTGRES_DB are both {registry!r}; "
            "the registry and Dagster's storage need separate databases"
        )
    timeout = float(os.environ.get("ENSURE_DATABASES_TIMEOUT_S", "").strip() or 60)
    connection = _connect(time.monotonic() + timeout)
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            for name in (registry, dagster):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone():
                    print(f"ensure_databases: database {name!r} exists")
                    continue
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"ensure_databases: created database {name!r}")
    except psycopg2.Error as error:
        detail = " ".join(str(error).split())
        raise SystemExit(f"ensure_databases: {detail}") from None
    finally:
        connection.close()


if __name__ == "__main__":
    main()
