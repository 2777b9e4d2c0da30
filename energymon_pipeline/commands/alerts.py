"""`energymon alerts`: the meters' states and the alert history, and a test notification on
each configured channel (ENERGYMON_ALERT_WEBHOOK_URL, ENERGYMON_SMTP_*)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from energymon_pipeline.alerts.config import alert_settings
from energymon_pipeline.alerts.delivery import DeliveryError, send_email, send_webhook
from energymon_pipeline.alerts.evaluate import sample_notification
from energymon_pipeline.alerts.outbox import history
from energymon_pipeline.alerts.states import current_states
from energymon_pipeline.commands.configured import registry_engine
from energymon_pipeline.commands.errors import UserErrorGroup
from energymon_pipeline.commands.output import print_table
from energymon_pipeline.errors import EnergymonError

STATE_COLUMNS = [
    ("meter_id", "METER"),
    ("description", "DESCRIPTION"),
    ("state", "STATE"),
    ("since", "SINCE"),
    ("failures", "FAILED POLLS"),
    ("last_ok_at", "LAST GOOD READING"),
    ("error", "LAST ERROR"),
]
ALERT_COLUMNS = [
    ("id", "ID"),
    ("raised_at", "RAISED"),
    ("kind", "KIND"),
    ("meter_id", "METER"),
    ("delivery", "DELIVERY"),
    ("text", "TEXT"),
]


@click.group(cls=UserErrorGroup)
def alerts() -> None:
    """Meter states, alert history and test notifications."""


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _minute(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else None


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 100000),
    help="How many of the latest alerts to show.",
)  # fmt: skip
def alerts_list(as_json: bool, limit: int) -> None:
    """Each enabled meter's state after its last poll, then the latest alerts (newest first)
    with how each channel took them."""
    engine = registry_engine()
    states = current_states(engine)
    raised = history(engine, limit)
    if as_json:
        document = {"states": states, "alerts": raised}
        click.echo(json.dumps(document, indent=2, default=_iso))
        return
    if states:
        for row in states:
            row["since"], row["last_ok_at"] = _minute(row["since"]), _minute(row["last_ok_at"])
        print_table(states, STATE_COLUMNS)
    else:
        click.echo("no meter states yet: they are recorded by each poll run")
    click.echo("")
    if not raised:
        click.echo("no alerts raised")
        return
    for row in raised:
        row["raised_at"] = _minute(row["raised_at"])
        row["delivery"] = _delivery_text(row["deliveries"])
    print_table(raised, ALERT_COLUMNS)


def _delivery_text(deliveries: dict[str, Any]) -> str:
    if not deliveries:
        return "no channel"
    parts = []
    for channel, d in sorted(deliveries.items()):
        text = f"{channel} {d['status']}"
        if d["status"] != "sent" and d["attempts"]:
            text += f" ({d['attempts']} attempt(s): {d['last_error']})"
        parts.append(text)
    return ", ".join(parts)


@alerts.command("test")
def alerts_test() -> None:
    """Send a test notification on each configured channel now and say how it went (not
    queued: a failed test is not retried)."""
    settings = alert_settings()
    if not settings.channels:
        raise EnergymonError(
            "no alert channel is configured; set ENERGYMON_ALERT_WEBHOOK_URL and/or "
            "ENERGYMON_SMTP_HOST (with ENERGYMON_SMTP_FROM and ENERGYMON_SMTP_TO)"
        )
    notification = sample_notification(datetime.now(UTC))
    failed = []
    if settings.webhook is not None:
        try:
            attempts = send_webhook(settings.webhook, notification)
            click.echo(f"webhook: sent ({attempts} attempt(s))")
        except DeliveryError as error:
            failed.append(str(error))
    if settings.smtp is not None:
        smtp = settings.smtp
        try:
            note = send_email(smtp, notification)
            click.echo(
                f"e-mail: sent through {smtp.host}:{smtp.port} ({smtp.security}) to "
                f"{', '.join(smtp.recipients)}" + (f"; {note}" if note else "")
            )
        except DeliveryError as error:
            failed.append(str(error))
    if failed:
        for line in failed[:-1]:
            click.echo(f"error: {line}", err=True)
        raise EnergymonError(failed[-1])
