"""One evaluation: from the meters' states (and the spool's age) to alerts, then delivery.

Told once when something breaks, once when it is back, reminded while it stays broken: each
meter's `alerted` column remembers what was last announced of it, and is changed in the same
transaction that records the alert, so an alert is never raised twice nor lost between the
two. `now` is the caller's (a test's clock); nothing here sleeps but the webhook's backoff.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from energymon_pipeline.alerts import states as st
from energymon_pipeline.alerts.config import AlertSettings
from energymon_pipeline.alerts.delivery import Notification, send_email, send_webhook
from energymon_pipeline.alerts.outbox import (
    Alert,
    DeliveryReport,
    Sender,
    deliver,
    raise_alert,
)
from energymon_pipeline.alerts.states import utc
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.tables import alerts, energy_meters, meter_states

METER_DOWN = "meter_down"
METER_DOWN_REMINDER = "meter_down_reminder"
METER_RECOVERED = "meter_recovered"
METER_DEGRADED = "meter_degraded"
SPOOL_BACKLOG = "spool_backlog"
SPOOL_BACKLOG_REMINDER = "spool_backlog_reminder"
SPOOL_RECOVERED = "spool_recovered"
POLL_FAILED = "poll_failed"
TEST = "test"
KINDS = (
    METER_DOWN,
    METER_DOWN_REMINDER,
    METER_RECOVERED,
    METER_DEGRADED,
    SPOOL_BACKLOG,
    SPOOL_BACKLOG_REMINDER,
    SPOOL_RECOVERED,
    POLL_FAILED,
    TEST,
)


def senders(
    settings: AlertSettings, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Sender]:
    """The configured channels, each as a function sending one notification (`sleep`: the
    webhook's pause between retries; a test's does not wait)."""
    result: dict[str, Sender] = {}
    if settings.webhook is not None:
        webhook = settings.webhook

        def post(notification: Notification) -> str | None:
            attempts = send_webhook(webhook, notification, sleep)
            return f"after {attempts} attempts" if attempts > 1 else None

        result["webhook"] = post
    if settings.smtp is not None:
        smtp = settings.smtp
        result["email"] = lambda notification: send_email(smtp, notification)
    return result


@dataclass
class Evaluation:
    """What one evaluation looked at, raised and sent: the sensor's tick shows it."""

    states: Counter = field(default_factory=Counter)
    raised: list[str] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    spool: str = "spool: not checked"

    def summary(self) -> str:
        counted = ", ".join(f"{n} {state}" for state, n in sorted(self.states.items()))
        parts = [f"{sum(self.states.values())} meter state(s) ({counted or 'none yet'})"]
        parts.append(self.spool)
        parts.append(f"raised {len(self.raised)}")
        parts.append(f"sent {len(self.delivery.sent)}")
        if self.delivery.failed:
            parts.append(f"not sent {len(self.delivery.failed)}")
        waiting = sum(self.delivery.waiting.values())
        if waiting:
            parts.append(f"{waiting} queued")
        return "evaluated " + "; ".join(parts)

    def lines(self) -> list[str]:
        return [f"raised: {r}" for r in self.raised] + self.delivery.lines()


def describe_meter(meter: Mapping[str, Any]) -> str:
    where = meter.get("serial_port") or f"{meter['host']}:{meter['port']}"
    name = f" {meter['description']}" if meter.get("description") else ""
    return f"meter {meter['id']}{name} ({where} unit {meter['unit']})"


def _time(value: datetime | None) -> str:
    return utc(value).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def evaluate(
    engine: Engine,
    settings: AlertSettings,
    now: datetime,
    send: Mapping[str, Sender],
    spool_age_s: float | None = None,
    spool_checked: bool = False,
) -> Evaluation:
    """Raises what the states call for, then delivers everything queued. `spool_age_s` is
    how long the oldest batch in the spool has waited (None: the spool is empty);
    `spool_checked` says whether the caller looked at it at all."""
    evaluation = Evaluation()
    channels = settings.channels

    def work(connection: Connection) -> None:
        st.forget_disabled(connection)
        _evaluate_meters(connection, settings, now, channels, evaluation)
        if spool_checked:
            _evaluate_spool(connection, settings, now, channels, spool_age_s, evaluation)

    queries.run_in_transaction(engine, work)
    evaluation.delivery = deliver(engine, send, now)
    return evaluation


def _evaluate_meters(
    connection: Connection,
    settings: AlertSettings,
    now: datetime,
    channels: tuple[str, ...],
    evaluation: Evaluation,
) -> None:
    repeat = timedelta(hours=settings.repeat_hours) if settings.repeat_hours else None
    m = energy_meters.c
    rows = connection.execute(
        sa.select(
            meter_states,
            m.description,
            m.host,
            m.port,
            m.slave_address,
            m.serial_port,
        )
        .join(energy_meters, m.id == meter_states.c.meter_id)
        .where(m.enabled.is_(sa.true()))
        .order_by(meter_states.c.meter_id)
    ).all()
    for row in rows:
        evaluation.states[row.state] += 1
        meter = {
            "id": row.meter_id,
            "description": row.description,
            "host": row.host,
            "port": row.port,
            "unit": row.slave_address,
            "serial_port": row.serial_port,
        }
        name = describe_meter(meter)
        since, alerted, alerted_at = utc(row.since), row.alerted, utc(row.alerted_at)
        error = row.error or "no error recorded"
        raised: list[Alert] = []
        new_alerted = alerted
        if row.state == st.DOWN:
            if alerted != st.DOWN:
                raised.append(Alert(
                    f"meter:{row.meter_id}:down:{since.isoformat()}", METER_DOWN,
                    f"{name} is down: {row.failures} failed polls in a row, down since "
                    f"{_time(since)}, last good reading {_time(row.last_ok_at)}. "
                    f"Last error: {error}", error, meter,
                ))  # fmt: skip
                new_alerted = st.DOWN
            elif repeat is not None and alerted_at is not None and now - alerted_at >= repeat:
                raised.append(Alert(
                    f"meter:{row.meter_id}:down-reminder:{now.isoformat()}", METER_DOWN_REMINDER,
                    f"{name} is still down, since {_time(since)} ({row.failures} failed polls "
                    f"in a row), last good reading {_time(row.last_ok_at)}. Last error: {error}",
                    error, meter,
                ))  # fmt: skip
        elif row.state in (st.OK, st.DEGRADED):
            if alerted == st.DOWN or (alerted == st.DEGRADED and row.state == st.OK):
                was = "down" if alerted == st.DOWN else "degraded"
                if alerted == st.DOWN or settings.degraded:
                    raised.append(Alert(
                        f"meter:{row.meter_id}:recovered:{since.isoformat()}", METER_RECOVERED,
                        f"{name} is back ({row.state}) since {_time(since)}, after being "
                        f"{was}.", None, meter,
                    ))  # fmt: skip
                new_alerted = None
            if row.state == st.DEGRADED and new_alerted is None and settings.degraded:
                raised.append(Alert(
                    f"meter:{row.meter_id}:degraded:{since.isoformat()}", METER_DEGRADED,
                    f"{name} is degraded since {_time(since)}: it answers but lost values. "
                    f"Last error: {error}", error, meter,
                ))  # fmt: skip
                new_alerted = st.DEGRADED
            elif row.state == st.DEGRADED and not settings.degraded and alerted == st.DEGRADED:
                new_alerted = None
        if not raised and new_alerted == alerted:
            continue
        for alert in raised:
            if raise_alert(connection, alert, now, channels) is not None:
                evaluation.raised.append(f"{alert.kind} {name}")
        connection.execute(
            meter_states.update()
            .where(meter_states.c.meter_id == row.meter_id)
            .values(alerted=new_alerted, alerted_at=now if raised else row.alerted_at)
        )


def _latest(connection: Connection, kinds: tuple[str, ...]):
    return connection.execute(
        sa.select(alerts.c.kind, alerts.c.raised_at)
        .where(alerts.c.kind.in_(kinds))
        .order_by(alerts.c.id.desc())
        .limit(1)
    ).first()


def _evaluate_spool(
    connection: Connection,
    settings: AlertSettings,
    now: datetime,
    channels: tuple[str, ...],
    age_s: float | None,
    evaluation: Evaluation,
) -> None:
    threshold_s = settings.spool_minutes * 60
    last = _latest(connection, (SPOOL_BACKLOG, SPOOL_BACKLOG_REMINDER, SPOOL_RECOVERED))
    backed_up = last is not None and last.kind != SPOOL_RECOVERED
    late = age_s is not None and age_s >= threshold_s
    minutes = f"{age_s / 60:.0f} min" if age_s is not None else "nothing"
    evaluation.spool = f"spool: oldest waiting {minutes}" if age_s is not None else "spool: empty"
    alert = None
    if late and not backed_up:
        alert = Alert(
            f"spool:backlog:{now.isoformat()}", SPOOL_BACKLOG,
            f"InfluxDB is not taking readings: the oldest batch has waited {minutes} in the "
            f"spool (threshold {settings.spool_minutes} min); they are sent when it answers.",
            f"spool backlog older than {settings.spool_minutes} min",
        )  # fmt: skip
    elif late and settings.repeat_hours:
        if now - utc(last.raised_at) >= timedelta(hours=settings.repeat_hours):
            alert = Alert(
                f"spool:backlog-reminder:{now.isoformat()}", SPOOL_BACKLOG_REMINDER,
                f"InfluxDB is still not taking readings: the oldest batch has waited "
                f"{minutes} in the spool.",
                f"spool backlog older than {settings.spool_minutes} min",
            )  # fmt: skip
    elif not late and backed_up:
        alert = Alert(
            f"spool:recovered:{now.isoformat()}",
            SPOOL_RECOVERED,
            f"InfluxDB takes readings again: the spool's oldest batch is {minutes} old.",
        )
    if alert is not None and raise_alert(connection, alert, now, channels) is not None:
        evaluation.raised.append(alert.kind)


def raise_poll_failure(
    engine: Engine,
    settings: AlertSettings,
    now: datetime,
    run_id: str,
    group: str,
    reason: str,
    succeeded_after: Callable[[str], bool],
) -> str | None:
    """Records a failed poll run of `group` unless that would repeat the last one: a failure
    is announced when it is the first, when a poll run of the group succeeded after the
    last announced one (`succeeded_after(run_id)` is the caller's to answer from the runs),
    or when the repeat interval has passed. Returns the alert's text, or None when it was
    held back (the reason is the caller's to log)."""
    prefix = f"poll:{group}:"

    def work(connection: Connection) -> str | None:
        last = connection.execute(
            sa.select(alerts.c.key, alerts.c.raised_at)
            .where(alerts.c.kind == POLL_FAILED, alerts.c.key.like(prefix + "%"))
            .order_by(alerts.c.id.desc())
            .limit(1)
        ).first()
        if last is not None:
            repeat = timedelta(hours=settings.repeat_hours)
            due = settings.repeat_hours and now - utc(last.raised_at) >= repeat
            if not due and not succeeded_after(last.key.removeprefix(prefix)):
                return None
        scope = "every meter" if group == "all" else f"poll group {group!r}"
        text = f"Poll run {run_id} ({scope}) failed: {reason}"
        alert = Alert(prefix + run_id, POLL_FAILED, text, reason)
        return text if raise_alert(connection, alert, now, settings.channels) else None

    return queries.run_in_transaction(engine, work)


def sample_notification(now: datetime) -> Notification:
    return Notification(
        kind=TEST,
        text="Test notification from energymon: this channel works.",
        raised_at=now.isoformat(),
        reason="energymon alerts test",
    )
