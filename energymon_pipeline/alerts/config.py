"""ENERGYMON_ALERT_* and ENERGYMON_SMTP_*: every alert setting, read and checked here only.

A bad value is one line naming the variable, its value and what is allowed. Secrets (the
webhook URL may hold a token, the SMTP password) are read like the rest, but the Dagster
definitions hand them to the sensors as dg.EnvVar, so they never reach run config or the UI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from energymon_pipeline.errors import SettingsError
from energymon_pipeline.settings import env_bool, env_int

SMTP_SECURITY = ("starttls", "tls", "none")
#: The port each SMTP security mode uses unless ENERGYMON_SMTP_PORT says otherwise.
SMTP_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
WEBHOOK_URL = "ENERGYMON_ALERT_WEBHOOK_URL"
SMTP_PASSWORD = "ENERGYMON_SMTP_PASSWORD"
#: ENERGYMON_ALERT_DOWN_AFTER's largest value.
DOWN_AFTER_MAX = 10000
#: ENERGYMON_ALERT_HISTORY_DAYS's largest value (a hundred years: "keep it").
HISTORY_DAYS_MAX = 36500


@dataclass(frozen=True)
class WebhookSettings:
    url: str = field(repr=False)
    timeout_s: int = 10
    retries: int = 2


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: int = 10
    #: A PEM file of the certificate authorities to trust (None: the system's).
    ca_file: str | None = None


@dataclass(frozen=True)
class AlertSettings:
    down_after: int = 3
    #: Hours between reminders while a meter stays down (or the spool stays backed up); 0 = none.
    repeat_hours: int = 24
    degraded: bool = False
    spool_minutes: int = 15
    interval_s: int = 60
    #: Days the alert history is kept (purge_old_runs_job deletes older alerts daily).
    history_days: int = 365
    webhook: WebhookSettings | None = None
    smtp: SmtpSettings | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(name for name, on in (("webhook", self.webhook), ("email", self.smtp)) if on)


def alert_settings(env: Mapping[str, str] | None = None) -> AlertSettings:
    env = os.environ if env is None else env
    return AlertSettings(
        down_after=env_int(env, "ENERGYMON_ALERT_DOWN_AFTER", 3, 1, DOWN_AFTER_MAX),
        repeat_hours=env_int(env, "ENERGYMON_ALERT_REPEAT_HOURS", 24, 0, 8760),
        degraded=env_bool(env, "ENERGYMON_ALERT_DEGRADED", False),
        spool_minutes=env_int(env, "ENERGYMON_ALERT_SPOOL_MINUTES", 15, 1, 100000),
        interval_s=env_int(env, "ENERGYMON_ALERT_INTERVAL_S", 60, 5, 86400),
        history_days=env_int(env, "ENERGYMON_ALERT_HISTORY_DAYS", 365, 1, HISTORY_DAYS_MAX),
        webhook=webhook_settings(env),
        smtp=smtp_settings(env),
    )


def webhook_settings(env: Mapping[str, str]) -> WebhookSettings | None:
    url = env.get(WEBHOOK_URL, "").strip()
    timeout_s = env_int(env, "ENERGYMON_ALERT_WEBHOOK_TIMEOUT_S", 10, 1, 300)
    retries = env_int(env, "ENERGYMON_ALERT_WEBHOOK_RETRIES", 2, 0, 10)
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value may hold a token: name the variable, never echo it.
        raise SettingsError(
            f"{WEBHOOK_URL} is not an http(s) URL; allowed: http://host/path or https://host/path"
        )
    return WebhookSettings(url=url, timeout_s=timeout_s, retries=retries)


def smtp_settings(env: Mapping[str, str]) -> SmtpSettings | None:
    host = env.get("ENERGYMON_SMTP_HOST", "").strip()
    security = env.get("ENERGYMON_SMTP_SECURITY", "").strip().lower() or "starttls"
    if security not in SMTP_SECURITY:
        raise SettingsError(
            f"ENERGYMON_SMTP_SECURITY={security!r} is not a security mode; allowed: "
            f"{', '.join(SMTP_SECURITY)}"
        )
    port = env_int(env, "ENERGYMON_SMTP_PORT", SMTP_DEFAULT_PORTS[security], 1, 65535)
    timeout_s = env_int(env, "ENERGYMON_SMTP_TIMEOUT_S", 10, 1, 300)
    if not host:
        return None
    sender = env.get("ENERGYMON_SMTP_FROM", "").strip()
    recipients = tuple(r.strip() for r in env.get("ENERGYMON_SMTP_TO", "").split(",") if r.strip())
    for name, values in (("ENERGYMON_SMTP_FROM", [sender]), ("ENERGYMON_SMTP_TO", recipients)):
        if not values or not all(_is_address(v) for v in values):
            raise SettingsError(
                f"{name}={','.join(values)!r} is not set or not an e-mail address; allowed: "
                "name@domain (ENERGYMON_SMTP_TO: a comma-separated list); needed because "
                "ENERGYMON_SMTP_HOST is set"
            )
    user = env.get("ENERGYMON_SMTP_USER", "").strip() or None
    password = env.get(SMTP_PASSWORD) or None
    if password and not user:
        raise SettingsError(f"{SMTP_PASSWORD} is set but ENERGYMON_SMTP_USER is not")
    ca_file = env.get("ENERGYMON_SMTP_CA_FILE", "").strip() or None
    if ca_file and not os.path.isfile(ca_file):
        raise SettingsError(
            f"ENERGYMON_SMTP_CA_FILE={ca_file!r} is not a file; allowed: a PEM file of "
            "certificate authorities"
        )
    return SmtpSettings(
        ca_file=ca_file,
        host=host,
        port=port,
        security=security,
        sender=sender,
        recipients=recipients,
        user=user,
        password=password,
        timeout_s=timeout_s,
    )


def _is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and local and domain and " " not in text)
