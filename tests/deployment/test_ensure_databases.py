"""config/postgres/ensure_databases.py, which the compose stack's `postgres-init` service runs
as the superuser, against the real PostgreSQL server, with uniquely named scratch roles and
databases (dropped afterwards):

- with the environment compose gives each service, the pipeline's role owns the registry and
  runs its migrations (`energymon db upgrade` with the code server's ENERGYMON_DATABASE_URL and
  PGPASSWORD), Dagster's role creates Dagster's storage from dagster.yaml, and neither can
  connect to the other's database, create databases or roles;
- a registry the superuser owns (the original system's tables) cannot be migrated by the
  pipeline's role until the script hands it over, and then keeps its rows;
- a second start changes nothing; a changed password is set; bad settings are refused in
  one line;
- without the role variables it only creates missing databases (the behaviour before them).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass

import psycopg2
import pytest
import sqlalchemy as sa
from deployment_files import ROOT, load_compose, read_env_file, resolved_compose

SCRIPT = ROOT / "config" / "postgres" / "ensure_databases.py"
IN_IMAGE = "/opt/energymon/ensure_databases.py"  # where the Dockerfile copies it
ENERGYMON = shutil.which("energymon", path=os.path.dirname(sys.executable)) or "energymon"


def run_script(url: sa.URL, registry: str, dagster: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "POSTGRES_HOST": url.host or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_DB": registry,
        "DAGSTER_POSTGRES_DB": dagster,
        "ENSURE_DATABASES_TIMEOUT_S": "5",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


def existing(admin: sa.Engine, names: list[str]) -> set[str]:
    with admin.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
            {"names": names},
        )
        return {row[0] for row in rows}


def test_creates_missing_databases_once_and_keeps_existing_ones(postgres_url):
    # postgres_url: this session's throwaway database (exists), and a server that answers.
    url = sa.make_url(postgres_url)
    registry, dagster = url.database, f"energymon_dagster_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        first = run_script(url, registry, dagster)
        assert first.returncode == 0, first.stderr
        assert f"database {registry!r} exists" in first.stdout
        assert f"created database {dagster!r}" in first.stdout
        assert existing(admin, [registry, dagster]) == {registry, dagster}
        second = run_script(url, registry, dagster)
        assert second.returncode == 0, second.stderr
        assert "created" not in second.stdout
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{dagster}" WITH (FORCE)'))
        admin.dispose()


def test_refuses_one_database_for_registry_and_dagster(postgres_url):
    url = sa.make_url(postgres_url)
    result = run_script(url, url.database, url.database)
    assert result.returncode == 1
    assert "need separate databases" in result.stderr


@pytest.mark.timeout(60)
def test_an_unreachable_server_is_reported_after_the_timeout(refused_port):
    url = sa.make_url(f"postgresql://nobody@127.0.0.1:{refused_port}/postgres")
    result = run_script(url, "registry", "dagster")
    assert result.returncode == 1
    assert result.stderr.startswith("ensure_databases: PostgreSQL not reachable:")


# -- roles: the compose stack's least privilege ---------------------------------------------


@dataclass
class Scratch:
    """This test's own roles and databases on the real server (unique names)."""

    url: sa.URL  # the superuser's
    admin: sa.Engine
    registry_db: str
    dagster_db: str
    registry_role: str
    dagster_role: str

    def compose_env(self, **overrides: str) -> dict[str, str]:
        """config/.env.dev pointed at the test server and these names, as an env file."""
        return {
            **read_env_file(),
            "POSTGRES_HOST": self.url.host or "127.0.0.1",
            "POSTGRES_PORT": str(self.url.port or 5432),
            "POSTGRES_USER": self.url.username or "postgres",
            # Kept when the test server has one; trust auth ignores the env file's.
            "POSTGRES_PASSWORD": self.url.password or read_env_file()["POSTGRES_PASSWORD"],
            "POSTGRES_DB": self.registry_db,
            "DAGSTER_POSTGRES_DB": self.dagster_db,
            "ENERGYMON_REGISTRY_USER": self.registry_role,
            "DAGSTER_POSTGRES_USER": self.dagster_role,
            **overrides,
        }

    def service_env(self, service: str, **overrides: str) -> dict[str, str]:
        environment = resolved_compose(self.compose_env(**overrides))["services"][service]
        return {key: str(value) for key, value in environment["environment"].items()}

    def connect(self, user: str, database: str):
        return psycopg2.connect(
            host=self.url.host, port=self.url.port or 5432, user=user, dbname=database
        )

    def query(self, database: str, statement: str, **params) -> list[tuple]:
        engine = sa.create_engine(self.url.set(database=database), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                return [tuple(r) for r in connection.execute(sa.text(statement), params)]
        finally:
            engine.dispose()

    def execute(self, database: str, *statements: str) -> None:
        engine = sa.create_engine(
            self.url.set(database=database),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.pool.NullPool,
        )
        try:
            with engine.connect() as connection:
                for statement in statements:
                    connection.execute(sa.text(statement))
        finally:
            engine.dispose()


@pytest.fixture
def scratch(postgres_url):
    url = sa.make_url(postgres_url)
    suffix = uuid.uuid4().hex[:10]
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    names = Scratch(
        url=url,
        admin=admin,
        registry_db=f"energymon_reg_{suffix}",
        dagster_db=f"energymon_dag_{suffix}",
        registry_role=f"energymon_r_{suffix}",
        dagster_role=f"energymon_d_{suffix}",
    )
    try:
        yield names
    finally:
        with admin.connect() as connection:
            for database in (names.registry_db, names.dagster_db):
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            for role in (names.registry_role, names.dagster_role):
                connection.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def run_init(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """The postgres-init service: its command (the script the image copies is this one, run
    by this Python), with its environment."""
    command = load_compose()["services"]["postgres-init"]["command"]
    assert command == ["python", IN_IMAGE]
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"PATH": os.environ["PATH"], "ENSURE_DATABASES_TIMEOUT_S": "5", **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )


def db_upgrade(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """`energymon db upgrade` as the code server runs it, with its environment."""
    return subprocess.run(
        [ENERGYMON, "db", "upgrade"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **environment},
        capture_output=True,
        text=True,
        timeout=180,
    )


def open_dagster_storage(environment: dict[str, str], tmp_path) -> int:
    """Opens Dagster's storage as the Dagster services do (dagster.yaml as shipped, with the
    service's environment), creating its tables on first use; returns the number of runs."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_bytes((ROOT / "dagster.yaml").read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            return instance.get_runs_count()
        finally:
            instance.dispose()


def refused_connection(scratch: Scratch, user: str, database: str) -> str:
    with pytest.raises(psycopg2.OperationalError) as refused:
        scratch.connect(user, database).close()
    return str(refused.value)


def owners(scratch: Scratch, database: str) -> set[str]:
    """Owners of the tables, sequences and views in the database's public schema."""
    rows = scratch.query(
        database,
        "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v', 'm')",
    )
    return {row[0] for row in rows}


def test_the_stack_s_roles_own_their_databases_and_reach_nothing_else(scratch, tmp_path):
    init = run_init(scratch.service_env("postgres-init"))
    assert init.returncode == 0, init.stderr
    assert f"created role {scratch.registry_role!r}" in init.stdout
    assert f"database {scratch.dagster_db!r}: created, owned by {scratch.dagster_role!r}" in (
        init.stdout
    )
    roles = scratch.query(
        "postgres",
        "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
        "rolbypassrls FROM pg_roles WHERE rolname IN (:r, :d)",
        r=scratch.registry_role,
        d=scratch.dagster_role,
    )
    assert sorted(roles) == sorted(
        (role, True, False, False, False, False, False)
        for role in (scratch.registry_role, scratch.dagster_role)
    )
    for database, role in (
        (scratch.registry_db, scratch.registry_role),
        (scratch.dagster_db, scratch.dagster_role),
    ):
        [(owner, public)] = scratch.query(
            "postgres",
            "SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, "
            "'CONNECT') FROM pg_database WHERE datname = :name",
            name=database,
        )
        assert (owner, public) == (role, False)

    # The code server: its registry migrations run as the pipeline's role.
    code = scratch.service_env("dagster-code")
    assert code["POSTGRES_USER"] == scratch.dagster_role  # dagster.yaml's, not the registry's
    upgraded = db_upgrade(code)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "applied migration(s) 0001" in upgraded.stdout
    assert owners(scratch, scratch.registry_db) == {scratch.registry_role}

    # The webserver and daemon (and the runs): Dagster's storage as Dagster's role.
    assert open_dagster_storage(scratch.service_env("dagster-daemon"), tmp_path) == 0
    assert owners(scratch, scratch.dagster_db) == {scratch.dagster_role}

    # Each role reaches its own database only, and creates no database and no role.
    denied = "permission denied for database"
    assert denied in refused_connection(scratch, scratch.registry_role, scratch.dagster_db)
    assert denied in refused_connection(scratch, scratch.dagster_role, scratch.registry_db)
    for role, database in (
        (scratch.registry_role, scratch.registry_db),
        (scratch.dagster_role, scratch.dagster_db),
    ):
        connection = scratch.connect(role, database)
        connection.autocommit = True
        try:
            for statement in (
                f'CREATE DATABASE "{role}_more"',
                f'CREATE ROLE "{role}_more"',
                f'ALTER ROLE "{role}" CREATEDB',
            ):
                with connection.cursor() as cursor, pytest.raises(psycopg2.Error) as error:
                    cursor.execute(statement)
                assert "permission denied" in str(error.value), statement
        finally:
            connection.close()

    # A second start changes nothing.
    again = run_init(scratch.service_env("postgres-init"))
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == 4 and all("unchanged" in line for line in lines), again.stdout


ORIGINAL_REGISTRY = (
    # The original system's DDL (seed/ORIGINAL-SYSTEM.md) and a row of each, as its superuser.
    "CREATE TABLE energy_meters (id int PRIMARY KEY, host varchar(64) NOT NULL, port int NOT "
    "NULL, slave_address int NOT NULL, type varchar(32) NOT NULL, description varchar(64) NOT "
    "NULL)",
    "CREATE TABLE registers (type varchar(32) NOT NULL, register_address int NOT NULL, "
    "measurement_name varchar(64) NOT NULL, data_unit varchar(8), data_type int CHECK "
    "(data_type BETWEEN 1 AND 3), function_code int CHECK (function_code BETWEEN 3 AND 4), "
    "word_order int CHECK (word_order BETWEEN 1 AND 2), byte_order int CHECK (byte_order "
    "BETWEEN 1 AND 2))",
    "INSERT INTO energy_meters VALUES (7, '10.0.0.7', 502, 1, 'sdm630', 'hall A')",
    "INSERT INTO registers VALUES ('sdm630', 0, 'voltageL1', 'V', 3, 4, 2, 2)",
)
# Every kind of object an earlier install's superuser may own in Dagster's database.
SUPERUSER_OBJECTS = (
    "CREATE SCHEMA extra",
    "CREATE TABLE runs (id serial PRIMARY KEY, body text)",
    "CREATE TABLE extra.events (id int GENERATED BY DEFAULT AS IDENTITY, run_id int)",
    "CREATE SEQUENCE loose_sequence",
    "CREATE VIEW run_view AS SELECT id FROM runs",
    "CREATE MATERIALIZED VIEW run_counts AS SELECT count(*) FROM runs",
    "CREATE FUNCTION extra.touch(a int, b text) RETURNS int LANGUAGE sql AS 'SELECT a'",
    "CREATE TYPE status AS ENUM ('queued', 'done')",
    "CREATE TYPE pair AS (a int, b int)",
    "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
)
LEFT_TO_A_SUPERUSER = """
SELECT 'relation ' || c.oid::regclass::text FROM pg_class c JOIN pg_namespace n
  ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner
 WHERE r.rolsuper AND n.nspname IN ('public', 'extra')
UNION ALL SELECT 'schema ' || nspname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
 WHERE r.rolsuper AND nspname = 'extra'
UNION ALL SELECT 'routine ' || p.oid::regprocedure::text FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner
 WHERE r.rolsuper AND n.nspname IN ('public', 'extra')
UNION ALL SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n
  ON n.oid = t.typnamespace JOIN pg_roles r ON r.oid = t.typowner
 WHERE r.rolsuper AND n.nspname IN ('public', 'extra')
"""


def test_a_registry_the_superuser_owns_is_handed_to_the_pipeline_s_role(scratch):
    # The original system's registry, restored by (or taken over from) the superuser; an
    # earlier energymon's Dagster database, made by the superuser too; and a role a user made
    # by hand for the pipeline, with more than it needs, no password, and CREATE on the
    # registry's schema (so what stops it below is the tables' owner).
    scratch.execute("postgres", f'CREATE DATABASE "{scratch.registry_db}"')
    scratch.execute("postgres", f'CREATE DATABASE "{scratch.dagster_db}"')
    scratch.execute(scratch.dagster_db, *SUPERUSER_OBJECTS)
    scratch.execute(
        "postgres",
        f'CREATE ROLE "{scratch.registry_role}" LOGIN CREATEDB',
        f'GRANT CONNECT ON DATABASE "{scratch.registry_db}" TO "{scratch.registry_role}"',
    )
    scratch.execute(
        scratch.registry_db,
        *ORIGINAL_REGISTRY,
        f'GRANT CREATE ON SCHEMA public TO "{scratch.registry_role}"',
    )
    code = scratch.service_env("dagster-code")

    # Owned by the superuser, the original tables cannot be migrated by the pipeline's role.
    refused = db_upgrade(code)
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()  # one line, no traceback
    assert line.startswith("error: cannot upgrade the registry database postgresql+psycopg2://")
    assert line.endswith("(nothing was changed): must be owner of table energy_meters")

    init = run_init(scratch.service_env("postgres-init"))
    assert init.returncode == 0, init.stderr
    superuser = scratch.url.username or "postgres"
    assert (
        f"role {scratch.registry_role!r}: attributes set to LOGIN NOSUPERUSER NOCREATEDB "
        "NOCREATEROLE NOREPLICATION NOBYPASSRLS; password set from ENERGYMON_REGISTRY_PASSWORD"
    ) in init.stdout
    assert f"owner {superuser!r} -> {scratch.registry_role!r}" in init.stdout
    assert (
        f"database {scratch.registry_db!r}: handed to {scratch.registry_role!r} from a "
        "superuser: table public.energy_meters, table public.registers"
    ) in init.stdout
    assert not scratch.query(scratch.registry_db, LEFT_TO_A_SUPERUSER)
    assert not scratch.query(scratch.dagster_db, LEFT_TO_A_SUPERUSER)
    assert owners(scratch, scratch.dagster_db) == {scratch.dagster_role}

    upgraded = db_upgrade(code)
    assert upgraded.returncode == 0, upgraded.stderr
    assert scratch.query(
        scratch.registry_db, "SELECT id, host, port, slave_address, type, description "
        "FROM energy_meters"
    ) == [(7, "10.0.0.7", 502, 1, "sdm630", "hall A")]  # fmt: skip
    assert owners(scratch, scratch.registry_db) == {scratch.registry_role}


def load_script():
    spec = importlib.util.spec_from_file_location("ensure_databases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_changed_password_is_set_and_checked_against_the_server_s_verifier(scratch):
    assert run_init(scratch.service_env("postgres-init")).returncode == 0
    verifier = "SELECT rolpassword FROM pg_authid WHERE rolname = :role"
    [(before,)] = scratch.query("postgres", verifier, role=scratch.registry_role)
    changed = run_init(scratch.service_env("postgres-init", ENERGYMON_REGISTRY_PASSWORD="n3w!"))
    assert changed.returncode == 0, changed.stderr
    assert (
        f"role {scratch.registry_role!r}: password set from ENERGYMON_REGISTRY_PASSWORD"
    ) in changed.stdout
    assert f"role {scratch.dagster_role!r} unchanged" in changed.stdout
    [(after,)] = scratch.query("postgres", verifier, role=scratch.registry_role)
    assert after != before and after.startswith("SCRAM-SHA-256$")
    matches = load_script().password_matches
    assert matches(after, "n3w!", scratch.registry_role)
    assert not matches(after, read_env_file()["ENERGYMON_REGISTRY_PASSWORD"], scratch.registry_role)


def test_a_superuser_is_needed_to_set_up_the_roles(scratch):
    scratch.execute("postgres", f'CREATE ROLE "{scratch.registry_role}" LOGIN CREATEDB CREATEROLE')
    result = run_init(
        scratch.service_env(
            "postgres-init",
            POSTGRES_USER=scratch.registry_role,
            ENERGYMON_REGISTRY_USER=scratch.dagster_role,
            DAGSTER_POSTGRES_USER=f"{scratch.dagster_role}_x",
        )
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"ensure_databases: POSTGRES_USER {scratch.registry_role!r} is not a superuser; the "
        "roles and databases are set up by the postgres image's superuser\n"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"DAGSTER_POSTGRES_USER": "same"},
            "ENERGYMON_REGISTRY_USER and DAGSTER_POSTGRES_USER are both 'same'",
        ),
        ({"DAGSTER_POSTGRES_USER": "admin"}, "DAGSTER_POSTGRES_USER is 'admin', the superuser"),
        ({"ENERGYMON_REGISTRY_USER": "Energy-Mon"}, "ENERGYMON_REGISTRY_USER='Energy-Mon' is not"),
        ({"ENERGYMON_REGISTRY_USER": "pg_energymon"}, "ENERGYMON_REGISTRY_USER='pg_energymon'"),
        ({"DAGSTER_POSTGRES_USER": ""}, "DAGSTER_POSTGRES_USER is not set (it is needed with"),
        ({"ENERGYMON_REGISTRY_PASSWORD": ""}, "ENERGYMON_REGISTRY_PASSWORD is not set"),
    ],
)
def test_bad_role_settings_are_refused_in_one_line(refused_port, overrides, message):
    env = {
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(refused_port),  # refused before connecting
        "POSTGRES_USER": "admin",
        "POSTGRES_DB": "registry",
        "DAGSTER_POSTGRES_DB": "dagster",
        "ENERGYMON_REGISTRY_USER": "same",
        "ENERGYMON_REGISTRY_PASSWORD": "r-secret",
        "DAGSTER_POSTGRES_USER": "dagster",
        "DAGSTER_POSTGRES_PASSWORD": "d-secret",
        **overrides,
    }
    result = run_init(env)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("ensure_databases: ") and message in line
    assert "not reachable" not in line


def test_dagster_yaml_storage_opens_with_the_locked_drivers(scratch, tmp_path):
    # dagster-postgres builds postgresql:// URLs, which SQLAlchemy 2.1 maps to psycopg 3 (not
    # installed): dagster.yaml names psycopg2, or the Dagster services cannot start.
    assert run_init(scratch.service_env("postgres-init")).returncode == 0
    assert open_dagster_storage(scratch.service_env("dagster-webserver"), tmp_path) == 0
