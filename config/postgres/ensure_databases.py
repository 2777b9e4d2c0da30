"""Create, or adopt, the PostgreSQL roles and databases of the compose stack, each role owning
its own database and nothing else; change nothing when that is already so.

Why: the postgres image creates only its superuser and POSTGRES_DB, and only when its data
directory is empty. The pipeline and Dagster must not connect as that superuser, and a stack
that takes over existing data (the original system's registry, an earlier energymon whose
tables the superuser made) must still end up least-privileged. The compose stack runs this in
its one-shot `postgres-init` service on every start, before any Dagster service; it is the only
place besides the `postgres` service that holds the superuser's password.

Connects as POSTGRES_USER / POSTGRES_PASSWORD (a superuser) to the `postgres` maintenance
database on POSTGRES_HOST:POSTGRES_PORT, waiting up to ENSURE_DATABASES_TIMEOUT_S (default 60)
seconds for the server, and makes sure that:

- role ENERGYMON_REGISTRY_USER (password ENERGYMON_REGISTRY_PASSWORD) owns the registry
  database POSTGRES_DB: the code server and its runs (registry migrations, meters, states);
- role DAGSTER_POSTGRES_USER (password DAGSTER_POSTGRES_PASSWORD) owns Dagster's storage
  database DAGSTER_POSTGRES_DB: the webserver, the daemon and the runs' event logs;
- both roles may log in and nothing more (no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION,
  BYPASSRLS); their passwords are the env file's (set again only when they differ);
- PUBLIC may not connect to either database: each role reaches only its own;
- in each database, what a superuser owns (schemas, tables, views, sequences, functions,
  types: e.g. the original system's tables, restored or adopted) is handed to its role, so the
  role can migrate it. Objects of other roles and of extensions are left alone.

Without ENERGYMON_REGISTRY_USER and DAGSTER_POSTGRES_USER (the project image's default
command, a compose file older than the roles) it only creates missing databases, as before.
Exits 1 with one line naming the problem.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
import unicodedata

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import encrypt_password

MAINTENANCE_DB = "postgres"
ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
# Role names go unquoted into the code server's ENERGYMON_DATABASE_URL; `pg_` is reserved.
ROLE_NAME = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,62}")

# Objects owned by a superuser in the database's own schemas, each with the ALTER statement
# kind that hands it over. Sequences that belong to a table column (serial, identity) follow
# their table; objects of extensions stay with the extension. (`%%`: the query takes
# parameters, so psycopg2 reads `%` as a placeholder.)
_OWN_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"
_NOT_IN_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
    "AND d.objid = {oid} AND d.deptype = 'e')"
)
SUPERUSER_OBJECTS = f"""
SELECT o.kind, o.name FROM (
    SELECT 0 AS rank, 'SCHEMA' AS kind, format('%%I', n.nspname) AS name, n.nspowner AS owner
      FROM pg_namespace n
     WHERE {_OWN_SCHEMA} AND {_NOT_IN_EXTENSION.format(catalog="pg_namespace", oid="n.oid")}
    UNION ALL
    SELECT 1, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                             WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
           format('%%I.%%I', n.nspname, c.relname), c.relowner
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'c') AND {_OWN_SCHEMA}
       AND {_NOT_IN_EXTENSION.format(catalog="pg_class", oid="c.oid")}
       AND NOT (c.relkind = 'S' AND EXISTS (
           SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
              AND d.objid = c.oid AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')))
    UNION ALL
    SELECT 2, 'ROUTINE',
           format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
           p.proowner
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE {_OWN_SCHEMA} AND {_NOT_IN_EXTENSION.format(catalog="pg_proc", oid="p.oid")}
    UNION ALL
    SELECT 3, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
           format('%%I.%%I', n.nspname, t.typname), t.typowner
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE t.typtype IN ('d', 'e', 'r') AND {_OWN_SCHEMA}
       AND {_NOT_IN_EXTENSION.format(catalog="pg_type", oid="t.oid")}
) o
JOIN pg_roles r ON r.oid = o.owner
WHERE r.rolsuper AND r.rolname <> %(role)s
ORDER BY o.rank, o.name
"""


class Failure(Exception):
    """One line for the log: what went wrong, naming the variable, role or database."""


def log(message: str) -> None:
    print(f"ensure_databases: {message}", flush=True)


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise Failure(f"{name} is not set")
    return value


def _connect(dbname: str, deadline: float):
    while True:
        try:
            return psycopg2.connect(
                host=_required("POSTGRES_HOST"),
                port=int(os.environ.get("POSTGRES_PORT", "").strip() or 5432),
                user=_required("POSTGRES_USER"),
                password=os.environ.get("POSTGRES_PASSWORD") or None,
                dbname=dbname,
                connect_timeout=5,
            )
        except psycopg2.OperationalError as error:
            if time.monotonic() >= deadline:
                detail = " ".join(str(error).split())
                raise Failure(f"PostgreSQL not reachable: {detail}") from None
            time.sleep(1)


def _roles() -> list[tuple[str, str, str, str]] | None:
    """(role, its password, the database it owns, the variable naming the role) for the
    registry and Dagster's storage; None when no role is configured (create databases only)."""
    names = {
        variable: os.environ.get(variable, "").strip()
        for variable in ("ENERGYMON_REGISTRY_USER", "DAGSTER_POSTGRES_USER")
    }
    if not any(names.values()):
        return None
    for variable, name in names.items():
        if not name:
            other = next(v for v in names if v != variable)
            raise Failure(f"{variable} is not set (it is needed with {other})")
        if not ROLE_NAME.fullmatch(name):
            raise Failure(
                f"{variable}={name!r} is not a plain role name; allowed: lowercase letters, "
                "digits and _ (at most 63, not starting with a digit or pg_)"
            )
    registry, dagster = names["ENERGYMON_REGISTRY_USER"], names["DAGSTER_POSTGRES_USER"]
    superuser = _required("POSTGRES_USER")
    if registry == dagster:
        raise Failure(
            f"ENERGYMON_REGISTRY_USER and DAGSTER_POSTGRES_USER are both {registry!r}; the "
            "registry and Dagster's storage need separate roles"
        )
    for variable, name in names.items():
        if name == superuser:
            raise Failure(
                f"{variable} is {name!r}, the superuser POSTGRES_USER; give the pipeline and "
                "Dagster roles of their own"
            )
    return [
        (registry, _required("ENERGYMON_REGISTRY_PASSWORD"), _required("POSTGRES_DB"),
         "ENERGYMON_REGISTRY_PASSWORD"),
        (dagster, _required("DAGSTER_POSTGRES_PASSWORD"), _required("DAGSTER_POSTGRES_DB"),
         "DAGSTER_POSTGRES_PASSWORD"),
    ]  # fmt: skip


def password_matches(verifier: str | None, password: str, role: str) -> bool:
    """Whether PostgreSQL's stored verifier (pg_authid.rolpassword) is of this password, so an
    unchanged password is not set again. SASLprep is approximated by NFKC: a password it
    treats otherwise is merely set again on every start."""
    if not verifier:
        return False
    if verifier.startswith("md5"):
        expected = "md5" + hashlib.md5((password + role).encode()).hexdigest()
        return hmac.compare_digest(verifier, expected)
    scram = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    if not scram:
        return False
    iterations, salt, stored_key, server_key = scram.groups()
    salted = hashlib.pbkdf2_hmac(
        "sha256",
        unicodedata.normalize("NFKC", password).encode(),
        base64.b64decode(salt),
        int(iterations),
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    expected_stored = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    expected_server = base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest())
    return hmac.compare_digest(stored_key, expected_stored) and hmac.compare_digest(
        server_key.encode(), expected_server
    )


def ensure_role(connection, role: str, password: str, password_variable: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolcanlogin AND NOT (rolsuper OR rolcreatedb OR rolcreaterole "
            "OR rolreplication OR rolbypassrls), rolpassword FROM pg_authid WHERE rolname = %s",
            (role,),
        )
        row = cursor.fetchone()
        # The password travels as the server's own verifier (scram-sha-256), never as text
        # a statement log could show.
        verifier = sql.Literal(encrypt_password(password, role, connection))
        if row is None:
            cursor.execute(
                sql.SQL("CREATE ROLE {} WITH " + ROLE_ATTRIBUTES + " PASSWORD {}").format(
                    sql.Identifier(role), verifier
                )
            )
            log(f"created role {role!r} ({ROLE_ATTRIBUTES}, password {password_variable})")
            return
        least_privileged, stored = row
        changes = []
        if not least_privileged:
            cursor.execute(
                sql.SQL("ALTER ROLE {} WITH " + ROLE_ATTRIBUTES).format(sql.Identifier(role))
            )
            changes.append(f"attributes set to {ROLE_ATTRIBUTES}")
        if not password_matches(stored, password, role):
            cursor.execute(
                sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), verifier)
            )
            changes.append(f"password set from {password_variable}")
        log(f"role {role!r}: {'; '.join(changes)}" if changes else f"role {role!r} unchanged")


def ensure_database(connection, name: str, role: str) -> None:
    """The database exists, belongs to `role`, and PUBLIC may not connect to it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        )
        row = cursor.fetchone()
        changes = []
        if row is None:
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(role)
                )
            )
            changes.append(f"created, owned by {role!r}")
        elif row[0] != role:
            cursor.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(name), sql.Identifier(role)
                )
            )
            changes.append(f"owner {row[0]!r} -> {role!r}")
        cursor.execute(
            "SELECT has_database_privilege('public', %s, 'CONNECT') "
            "OR has_database_privilege('public', %s, 'TEMPORARY')",
            (name, name),
        )
        if cursor.fetchone()[0]:
            cursor.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
            )
            changes.append("PUBLIC may no longer connect")
        log(
            f"database {name!r}: {'; '.join(changes)}"
            if changes
            else f"database {name!r} unchanged (owner {role!r})"
        )


def hand_over_objects(connection, name: str, role: str) -> None:
    """Whatever a superuser owns in the database's own schemas becomes `role`'s."""
    with connection.cursor() as cursor:
        cursor.execute(SUPERUSER_OBJECTS, {"role": role})
        objects = cursor.fetchall()
        for kind, qualified in objects:
            # `qualified` comes from format('%I...'): already quoted by the server.
            cursor.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(kind), sql.SQL(qualified), sql.Identifier(role)
                )
            )
    if objects:
        listed = ", ".join(f"{kind.lower()} {qualified}" for kind, qualified in objects[:8])
        more = f" and {len(objects) - 8} more" if len(objects) > 8 else ""
        log(f"database {name!r}: handed to {role!r} from a superuser: {listed}{more}")


def create_missing_databases(connection, names: tuple[str, str]) -> None:
    """Without roles (the behaviour before them): create what is missing, as POSTGRES_USER."""
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                log(f"database {name!r} exists")
                continue
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log(f"created database {name!r}")


def run() -> None:
    registry, dagster = _required("POSTGRES_DB"), _required("DAGSTER_POSTGRES_DB")
    if registry == dagster:
        raise Failure(
            f"POSTGRES_DB and DAGSTER_POSTGRES_DB are both {registry!r}; "
            "the registry and Dagster's storage need separate databases"
        )
    roles = _roles()
    timeout = float(os.environ.get("ENSURE_DATABASES_TIMEOUT_S", "").strip() or 60)
    deadline = time.monotonic() + timeout
    connection = _connect(MAINTENANCE_DB, deadline)
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        if roles is None:
            create_missing_databases(connection, (registry, dagster))
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            if not cursor.fetchone()[0]:
                raise Failure(
                    f"POSTGRES_USER {_required('POSTGRES_USER')!r} is not a superuser; the "
                    "roles and databases are set up by the postgres image's superuser"
                )
        for role, password, database, password_variable in roles:
            ensure_role(connection, role, password, password_variable)
            ensure_database(connection, database, role)
    finally:
        connection.close()
    for role, _, database, _ in roles:
        inside = _connect(database, deadline)
        inside.autocommit = True
        try:
            hand_over_objects(inside, database, role)
        finally:
            inside.close()


def main() -> None:
    try:
        run()
    except Failure as failure:
        raise SystemExit(f"ensure_databases: {failure}") from None
    except psycopg2.Error as error:
        detail = " ".join(str(error).split())
        raise SystemExit(f"ensure_databases: {detail}") from None


if __name__ == "__main__":
    main()
