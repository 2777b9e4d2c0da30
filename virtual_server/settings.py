"""The virtual server's own environment variables -> validated settings.

Where the server listens defaults to where the pipeline looks for it (VIRTUAL_SERVER_HOST and
VIRTUAL_SERVER_PORT, read by `energymon_pipeline.settings.virtual_server`, which also seeds the
registry's virtual meter); the rest is the simulator's alone. Errors name the variable, its
value and what is allowed, with the pipeline's own rules for numbers and cron fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from energymon_pipeline import settings
from energymon_pipeline.cron import CronTrigger, cron_trigger
from energymon_pipeline.errors import SettingsError

__all__ = [
    "InverterSettings",
    "RunSettings",
    "run_settings",
    "tlc10000_inverter",
    "update_trigger",
]


def update_trigger(env: Mapping[str, str] | None = None) -> CronTrigger:
    """When the virtual server refreshes its values (second resolution, in TZ); the
    original's defaults: every minute at second 50."""
    env = os.environ if env is None else env
    return cron_trigger(env, "VIRTUAL_SERVER_UPDATE_CRON", ("*", "*/1", "50"))


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails this too
        raise SettingsError(
            f"{name}={raw!r} is not allowed; allowed: a number from {low:g} to {high:g}"
        )
    return value


@dataclass(frozen=True)
class RunSettings:
    """How `python -m virtual_server` runs when no command-line flag says otherwise.

    `devices` holds the raw `NAME[@UNIT]` entries of VIRTUAL_SERVER_DEVICES; the options
    module checks the names (it knows which devices exist)."""

    listen_host: str
    port: int
    devices: tuple[str, ...]
    fleet_size: int
    units_per_port: int
    response_delay_ms: float
    gateway: bool = False
    max_connections: int = 0
    status_file: str | None = None


def run_settings(env: Mapping[str, str] | None = None) -> RunSettings:
    env = os.environ if env is None else env
    where = settings.virtual_server(env)
    devices = tuple(
        entry.strip() for entry in env.get("VIRTUAL_SERVER_DEVICES", "").split(",") if entry.strip()
    )
    return RunSettings(
        # Where the pipeline looks for the server is also where it listens, unless told.
        listen_host=env.get("VIRTUAL_SERVER_LISTEN_HOST", "").strip() or where.host,
        port=where.port,
        devices=devices or ("test",),
        fleet_size=settings.env_int(env, "VIRTUAL_SERVER_FLEET_SIZE", 0, 0, 100_000),
        units_per_port=settings.env_int(env, "VIRTUAL_SERVER_FLEET_UNITS_PER_PORT", 247, 1, 247),
        response_delay_ms=_float(env, "VIRTUAL_SERVER_RESPONSE_DELAY_MS", 0.0, 0.0, 60_000.0),
        gateway=settings.env_bool(env, "VIRTUAL_SERVER_GATEWAY", False),
        max_connections=settings.env_int(env, "VIRTUAL_SERVER_MAX_CONNECTIONS", 0, 0, 10_000),
        status_file=env.get("VIRTUAL_SERVER_STATUS_FILE", "").strip() or None,
    )


@dataclass(frozen=True)
class InverterSettings:
    """Where the Zeversolar TLC10000 bridge fetches `home.cgi` (host None: not configured)."""

    host: str | None
    port: int = 80


def tlc10000_inverter(env: Mapping[str, str] | None = None) -> InverterSettings:
    env = os.environ if env is None else env
    host = env.get("VIRTUAL_TLC10000_INVERTER_HOST", "").strip() or None
    if host is not None and ("/" in host or " " in host):
        raise SettingsError(
            f"VIRTUAL_TLC10000_INVERTER_HOST={host!r} is not a host; allowed: a hostname or IP "
            "address without scheme or path (the port goes in VIRTUAL_TLC10000_INVERTER_PORT)"
        )
    return InverterSettings(
        host=host, port=settings.env_int(env, "VIRTUAL_TLC10000_INVERTER_PORT", 80, 1, 65535)
    )
