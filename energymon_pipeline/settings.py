"""Environment variables -> validated settings.

The original system's variable names are a compatibility contract (users keep their env file),
so they are read here under those names. Every option is documented once, with its default, in
docs/configuration.md.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import URL

from energymon_pipeline.cron import CronTrigger, cron_trigger
from energymon_pipeline.errors import RegistryError, SettingsError
from energymon_pipeline.influx.retention import RETENTION_ALLOWED, is_retention_period
from energymon_pipeline.registry import db
from energymon_pipeline.registry.validation import POLL_GROUP_ALLOWED, is_poll_group

DEFAULT_DATA_DIR = ".energymon"


def env_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole number from `name` in `low`..`high` (`default` when unset), or a SettingsError
    naming the variable, its value and what is allowed."""
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not an integer; allowed: a whole number from {low} to {high}"
        ) from None
    return in_range(name, value, low, high)


def in_range(name: str, value: int, low: int, high: int) -> int:
    """`value`, or a SettingsError naming `name`, the value and the range allowed (for
    variables and for run config fields alike)."""
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range; allowed: {low} to {high}")
    return value


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local data folder of the embedded defaults (SQLite registry, Dagster storage,
    spool). Relative paths are taken from the current directory."""
    env = os.environ if env is None else env
    return Path(env.get("ENERGYMON_DATA_DIR", "").strip() or DEFAULT_DATA_DIR)


def registry_url(text: str, variable: str = "ENERGYMON_DATABASE_URL") -> URL:
    """A registry URL typed into `variable`, made usable (see registry.db.engine_url: which
    URLs the registry can use is the registry's to say)."""
    try:
        return db.engine_url(text, variable)
    except RegistryError as error:
        raise SettingsError(str(error)) from None


def database_url(env: Mapping[str, str] | None = None) -> URL:
    """Where the meter/register registry lives.

    1. ENERGYMON_DATABASE_URL (see `registry_url`), else
    2. PostgreSQL from the original POSTGRES_HOST/PORT/USER/PASSWORD/DB when POSTGRES_HOST is
       set, else
    3. an SQLite file in the local data folder (the embedded default).
    """
    env = os.environ if env is None else env
    explicit = env.get("ENERGYMON_DATABASE_URL", "").strip()
    if explicit:
        return registry_url(explicit)
    host = env.get("POSTGRES_HOST", "").strip()
    if host:
        return URL.create(
            "postgresql+psycopg2",
            username=env.get("POSTGRES_USER", "").strip() or None,
            password=env.get("POSTGRES_PASSWORD") or None,
            host=host,
            port=env_int(env, "POSTGRES_PORT", 5432, 1, 65535),
            database=env.get("POSTGRES_DB", "").strip() or None,
        )
    return URL.create("sqlite", database=str(data_dir(env) / "registry.sqlite"))


@dataclass(frozen=True)
class VirtualServerSettings:
    """Where the pipeline finds the virtual Modbus TCP server: the registry's virtual meter is
    seeded with it, and the server listens there unless told otherwise (virtual_server's own
    settings are in virtual_server/settings.py)."""

    host: str = "localhost"
    port: int = 5020


def virtual_server(env: Mapping[str, str] | None = None) -> VirtualServerSettings:
    env = os.environ if env is None else env
    host = env.get("VIRTUAL_SERVER_HOST", "").strip() or VirtualServerSettings.host
    port = env_int(env, "VIRTUAL_SERVER_PORT", VirtualServerSettings.port, 1, 65535)
    return VirtualServerSettings(host=host, port=port)


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no from `name` (1/true/yes/on, 0/false/no/off; `default` when unset), or a
    SettingsError naming the variable and its value."""
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; allowed: true or false")


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    """Bytes, from a number with an optional K/M/G suffix (binary units)."""
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    number, unit = raw[:-1] if raw[-1:].upper() in "KMG" else raw, raw[-1:].upper()
    unit = unit if unit in ("K", "M", "G") else ""
    try:
        value = int(number) * units[unit]
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a size; allowed: bytes as a whole number, optionally "
            "with K, M or G (e.g. 512M)"
        ) from None
    if value < 1024 * 1024:
        raise SettingsError(f"{name}={raw!r} is too small; allowed: at least 1M")
    return value


def _duration(env: Mapping[str, str], name: str, default: int) -> int:
    """Seconds, from a number with an optional s/m/h/d suffix."""
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    unit = raw[-1].lower() if raw[-1].lower() in units else "s"
    number = raw[:-1] if raw[-1].lower() in units else raw
    try:
        value = int(number) * units[unit]
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a duration; allowed: a whole number with s, m, h or d (e.g. 7d)"
        ) from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class InfluxSettings:
    """Where readings go. The pipeline writes as INFLUXDB_WRITE_USER when it is set (least
    privilege); the original wrote as the admin, which stays the fallback."""

    host: str
    port: int
    database: str
    username: str | None
    password: str | None
    password_variable: str | None
    timeout_s: float = 10.0
    #: INFLUXDB_RAW_RETENTION: raw readings go to retention policy `energymon_raw` with this
    #: duration (InfluxQL, e.g. 90d); None = raw readings in the default policy, kept forever.
    raw_retention: str | None = None


def influx(env: Mapping[str, str] | None = None) -> InfluxSettings:
    env = os.environ if env is None else env
    auth = env_bool(env, "INFLUXDB_HTTP_AUTH_ENABLED", False)
    writer = env.get("INFLUXDB_WRITE_USER", "").strip()
    if writer:
        username, password_variable = writer, "INFLUXDB_WRITE_USER_PASSWORD"
    elif auth or env.get("INFLUXDB_ADMIN_USER", "").strip():
        username = env.get("INFLUXDB_ADMIN_USER", "").strip() or None
        password_variable = "INFLUXDB_ADMIN_PASSWORD"
    else:
        username, password_variable = None, None
    password = env.get(password_variable) if password_variable else None
    if username and not password and auth:
        raise SettingsError(
            f"{password_variable} is not set; InfluxDB auth is on "
            "(INFLUXDB_HTTP_AUTH_ENABLED=true), so the pipeline needs the password of "
            f"user {username!r}"
        )
    database = env.get("INFLUXDB_DB", "").strip() or "influx_default"
    raw_retention = env.get("INFLUXDB_RAW_RETENTION", "").strip() or None
    if raw_retention is not None and not is_retention_period(raw_retention):
        raise SettingsError(
            f"INFLUXDB_RAW_RETENTION={raw_retention!r} is not a retention period; allowed: "
            f"{RETENTION_ALLOWED}"
        )
    return InfluxSettings(
        raw_retention=raw_retention,
        host=env.get("INFLUXDB_HOSTNAME", "").strip() or "localhost",
        port=env_int(env, "INFLUXDB_PORT", 8086, 1, 65535),
        database=database,
        username=username,
        password=password or None,
        password_variable=password_variable,
    )


@dataclass(frozen=True)
class SpoolSettings:
    path: Path
    max_bytes: int
    max_age_s: int


def spool(env: Mapping[str, str] | None = None) -> SpoolSettings:
    env = os.environ if env is None else env
    path = env.get("ENERGYMON_SPOOL_DIR", "").strip()
    return SpoolSettings(
        path=Path(path) if path else data_dir(env) / "spool",
        max_bytes=_size(env, "ENERGYMON_SPOOL_MAX_BYTES", 512 * 1024**2),
        max_age_s=_duration(env, "ENERGYMON_SPOOL_MAX_AGE", 30 * 86400),
    )


@dataclass(frozen=True)
class PipelineSettings:
    """Everything the Dagster definitions are built from, validated at load."""

    poll: CronTrigger
    discovery: CronTrigger
    timezone: str
    read_concurrency: int
    run_retention_days: int
    sensor_interval_s: int
    rollup_start: str
    #: Poll groups with a schedule each; empty = one schedule for every meter.
    poll_groups: tuple[str, ...] = ()
    #: ENERGYMON_GROUP_TAGS: extra run tags per poll group (where its runs go), as strings.
    group_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def timezone(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    name = env.get("TZ", "").strip().lstrip(":") or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"TZ={name!r} is not a known time zone; allowed: an IANA name such as "
            "Europe/Warsaw or UTC"
        ) from None
    return name


def pipeline(env: Mapping[str, str] | None = None) -> PipelineSettings:
    env = os.environ if env is None else env
    discovery = cron_trigger(env, "SCHEDULER_CRON", ("*", "*/1", "50"))
    return PipelineSettings(
        poll=cron_trigger(env, "INFLUX_UPDATER_CRON", ("*", "*/1", "0")),
        discovery=discovery,
        # The sensor runs at the period the original's discovery cron implies.
        sensor_interval_s=env_int(
            env, "ENERGYMON_SENSOR_INTERVAL_S", max(5, discovery.period_s), 5, 86400
        ),
        timezone=timezone(env),
        read_concurrency=env_int(env, "ENERGYMON_READ_CONCURRENCY", 64, 1, 4096),
        rollup_start=_date(env, "ENERGYMON_ROLLUP_START", "2026-01-01"),
        poll_groups=_groups(env, "ENERGYMON_POLL_GROUPS"),
        group_tags=group_tags(env, _groups(env, "ENERGYMON_POLL_GROUPS")),
        run_retention_days=env_int(env, "DAGSTER_RUN_RETENTION_DAYS", 14, 1, 3650),
    )


def _date(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    try:
        datetime.strptime(raw, "%Y-%m-%d")
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a date; allowed: YYYY-MM-DD") from None
    return raw


def _groups(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    groups = [g.strip() for g in raw.split(",") if g.strip()]
    for group in groups:
        if not is_poll_group(group):
            raise SettingsError(
                f"{name}={raw!r} has the group {group!r}; allowed: a comma-separated list of "
                f"names of {POLL_GROUP_ALLOWED} (`default` = meters without a group)"
            )
    if len(set(groups)) != len(groups):
        raise SettingsError(f"{name}={raw!r} names a group twice")
    return tuple(groups)


#: Dagster's rule for a tag key (dagster._utils.tags.VALID_TAG_KEY_REGEX): an optional
#: `namespace/`, then a name, each 1-63 letters, digits, '_', '-' or '.'.
_TAG_KEY = re.compile(r"([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}")
#: Tags energymon sets itself, and Dagster's own namespace.
_RESERVED_TAG_PREFIXES = ("dagster/", "energymon/")
GROUP_TAGS_ALLOWED = (
    'a JSON object of poll group -> {tag: value}, e.g. {"site-a": {"dagster-k8s/config": '
    '{"pod_spec_config": {"node_selector": {"energymon/site": "a"}}}}}; groups from '
    "ENERGYMON_POLL_GROUPS, tag keys [namespace/]name (letters, digits, '_', '-', '.'), not "
    "dagster/ or energymon/, values text or JSON"
)


def group_tags(env: Mapping[str, str], groups: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """ENERGYMON_GROUP_TAGS: run tags added to each poll run of a group, which is how a run
    launcher is told where the group runs (dagster-k8s reads `dagster-k8s/config`: node
    selector, resources). A value that is JSON (an object) is passed as its JSON text, as
    Dagster's launchers expect."""
    name = "ENERGYMON_GROUP_TAGS"
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise SettingsError(
            f"{name} is not JSON ({error.msg} at character {error.pos}); allowed: "
            f"{GROUP_TAGS_ALLOWED}"
        ) from None
    if not isinstance(data, dict):
        raise SettingsError(f"{name} is not a JSON object; allowed: {GROUP_TAGS_ALLOWED}")
    result: dict[str, dict[str, str]] = {}
    for group, tags in data.items():
        if group not in groups:
            listed = ", ".join(groups) or "none: it is empty"
            raise SettingsError(
                f"{name} has tags for group {group!r}, which is not in ENERGYMON_POLL_GROUPS "
                f"({listed}); allowed: {GROUP_TAGS_ALLOWED}"
            )
        if not isinstance(tags, dict):
            raise SettingsError(
                f"{name}: the tags of group {group!r} are not an object; allowed: "
                f"{GROUP_TAGS_ALLOWED}"
            )
        result[group] = {}
        for key, value in tags.items():
            if not _TAG_KEY.fullmatch(key) or key.startswith(_RESERVED_TAG_PREFIXES):
                raise SettingsError(
                    f"{name}: group {group!r} has the tag key {key!r}; allowed: "
                    f"{GROUP_TAGS_ALLOWED}"
                )
            if value is None or isinstance(value, bool | int | float):
                raise SettingsError(
                    f"{name}: group {group!r}, tag {key!r} has the value {value!r}; allowed: "
                    f"{GROUP_TAGS_ALLOWED}"
                )
            result[group][key] = value if isinstance(value, str) else json.dumps(value)
    return result
