"""The alert history and its outbox, in the registry.

Raising an alert writes its row in `alerts` and one `queued` row per configured channel in
`alert_deliveries`, in the caller's transaction (with the state change that caused it: both
happen or neither). Delivering takes the queued rows oldest first; a row is leased before it
is sent (so two sensors never send it at once), marked `sent` when the channel took it and
never sent again; a failure leaves it queued with its error for the next evaluation. A
channel that fails is not tried again in the same evaluation: its later rows wait, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from energymon_pipeline.alerts.delivery import DeliveryError, Notification
from energymon_pipeline.alerts.states import utc
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.tables import alert_deliveries, alerts

QUEUED, SENT = "queued", "sent"
#: How long a delivery is held by whoever is sending it (longer than any send can take).
LEASE = timedelta(minutes=10)
#: Seconds after which one evaluation starts no new send.
BUDGET_S = 15.0

#: A channel's sender: sends one notification, returns a note (or None), or raises
#: DeliveryError.
Sender = Callable[[Notification], "str | None"]


@dataclass(frozen=True)
class Alert:
    key: str
    kind: str
    text: str
    reason: str | None = None
    meter: Mapping[str, Any] | None = None


def raise_alert(
    connection: Connection, alert: Alert, now: datetime, channels: tuple[str, ...]
) -> int | None:
    """Records `alert` and queues it on `channels`; returns its id, or None when an alert of
    that key was raised before (raising twice is a no-op)."""
    exists = connection.scalar(sa.select(alerts.c.id).where(alerts.c.key == alert.key))
    if exists is not None:
        return None
    meter = alert.meter or {}
    alert_id = connection.execute(
        alerts.insert().values(
            key=alert.key[:200],
            kind=alert.kind,
            raised_at=now,
            meter_id=meter.get("id"),
            meter_description=meter.get("description"),
            meter_host=meter.get("host"),
            meter_unit=meter.get("unit"),
            reason=(alert.reason or None) and alert.reason[:1024],
            text=alert.text[:2048],
        )
    ).inserted_primary_key[0]
    if channels:
        connection.execute(
            alert_deliveries.insert(),
            [
                {"alert_id": alert_id, "channel": channel, "status": QUEUED, "attempts": 0}
                for channel in channels
            ],
        )
    return alert_id


def notification_of(row: Mapping[str, Any]) -> Notification:
    meter = None
    if row["meter_id"] is not None:
        meter = {
            "id": row["meter_id"],
            "description": row["meter_description"],
            "host": row["meter_host"],
            "unit": row["meter_unit"],
        }
    return Notification(
        kind=row["kind"],
        text=row["text"],
        raised_at=utc(row["raised_at"]).isoformat(),
        reason=row["reason"],
        meter=meter,
        alert_id=row["id"],
    )


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: Deliveries still queued after this pass, per channel.
    waiting: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [f"sent {s}" for s in self.sent] + [f"not sent {f}" for f in self.failed]
        lines += [f"{n} waiting for {channel}" for channel, n in sorted(self.waiting.items()) if n]
        return lines


def deliver(
    engine: Engine,
    senders: Mapping[str, Sender],
    now: datetime,
    budget_s: float = BUDGET_S,
) -> DeliveryReport:
    """Sends what is queued on the channels in `senders`, oldest first. No new send starts
    once `budget_s` has passed (a sensor tick must end within Dagster's 60 s): the rest
    waits, queued, for the next evaluation."""
    report = DeliveryReport()
    deadline = time.monotonic() + budget_s
    queued = sa.select(
        alert_deliveries.c.alert_id,
        alert_deliveries.c.channel,
        alerts.c.id,
        alerts.c.kind,
        alerts.c.text,
        alerts.c.raised_at,
        alerts.c.reason,
        alerts.c.meter_id,
        alerts.c.meter_description,
        alerts.c.meter_host,
        alerts.c.meter_unit,
    ).join(alerts, alerts.c.id == alert_deliveries.c.alert_id)
    rows = queries.run_in_transaction(
        engine,
        lambda c: [
            dict(r._mapping)
            for r in c.execute(
                queued.where(alert_deliveries.c.status == QUEUED).order_by(
                    alert_deliveries.c.alert_id, alert_deliveries.c.channel
                )
            )
        ],
    )
    broken: set[str] = set()
    for row in rows:
        channel = row["channel"]
        if channel not in senders or channel in broken:
            continue
        if time.monotonic() > deadline:
            break
        if not _lease(engine, row["alert_id"], channel, now):
            continue  # another sensor is sending it right now
        notification = notification_of(row)
        label = f"alert {row['alert_id']} ({row['kind']}) by {channel}"
        try:
            note = senders[channel](notification)
        except DeliveryError as error:
            broken.add(channel)
            report.failed.append(f"{label}: {error}")
            _finish(engine, row["alert_id"], channel, now, QUEUED, str(error))
            continue
        _finish(engine, row["alert_id"], channel, now, SENT, note)
        report.sent.append(label + (f" ({note})" if note else ""))
    report.waiting = queries.run_in_transaction(
        engine,
        lambda c: dict(
            c.execute(
                sa.select(alert_deliveries.c.channel, sa.func.count())
                .where(alert_deliveries.c.status == QUEUED)
                .group_by(alert_deliveries.c.channel)
            ).all()
        ),
    )
    return report


def _mine(alert_id: int, channel: str):
    return sa.and_(
        alert_deliveries.c.alert_id == alert_id,
        alert_deliveries.c.channel == channel,
    )


def _lease(engine: Engine, alert_id: int, channel: str, now: datetime) -> bool:
    def work(connection: Connection) -> bool:
        return (
            connection.execute(
                alert_deliveries.update()
                .where(
                    _mine(alert_id, channel),
                    alert_deliveries.c.status == QUEUED,
                    sa.or_(
                        alert_deliveries.c.lease_until.is_(None),
                        alert_deliveries.c.lease_until < now,
                    ),
                )
                .values(lease_until=now + LEASE)
            ).rowcount
            == 1
        )

    return queries.run_in_transaction(engine, work)


def _finish(
    engine: Engine, alert_id: int, channel: str, now: datetime, status: str, error: str | None
) -> None:
    def work(connection: Connection) -> None:
        connection.execute(
            alert_deliveries.update()
            .where(_mine(alert_id, channel))
            .values(
                status=status,
                attempts=alert_deliveries.c.attempts + 1,
                last_attempt_at=now,
                last_error=(error or None) and error[:512],
                delivered_at=now if status == SENT else None,
                lease_until=None,
            )
        )

    queries.run_in_transaction(engine, work)


def prune_history(engine: Engine, before: datetime) -> int:
    """Deletes the alerts raised before `before` with their deliveries, except those still
    queued on a channel (they are sent first). Returns how many alerts were deleted."""

    def work(connection: Connection) -> int:
        queued = sa.select(alert_deliveries.c.alert_id).where(alert_deliveries.c.status == QUEUED)
        old = sa.select(alerts.c.id).where(alerts.c.raised_at < before, alerts.c.id.not_in(queued))
        ids = list(connection.scalars(old))
        for start in range(0, len(ids), _PRUNE_BATCH):
            batch = ids[start : start + _PRUNE_BATCH]
            # Deliveries first: the foreign key cascades too, where the database enforces it.
            connection.execute(
                alert_deliveries.delete().where(alert_deliveries.c.alert_id.in_(batch))
            )
            connection.execute(alerts.delete().where(alerts.c.id.in_(batch)))
        return len(ids)

    return queries.run_in_transaction(engine, work)


#: Ids per DELETE statement (SQLite's bound-parameter limit is 32766 at least).
_PRUNE_BATCH = 1000


def history(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The latest alerts, newest first, each with its deliveries (channel: status)."""

    def work(connection: Connection) -> list[dict[str, Any]]:
        rows = [
            dict(r._mapping)
            for r in connection.execute(sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit))
        ]
        ids = [r["id"] for r in rows]
        deliveries: dict[int, dict[str, Any]] = {}
        if ids:
            for d in connection.execute(
                sa.select(alert_deliveries).where(alert_deliveries.c.alert_id.in_(ids))
            ):
                deliveries.setdefault(d.alert_id, {})[d.channel] = {
                    "status": d.status,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "delivered_at": utc(d.delivered_at),
                }
        for row in rows:
            row["raised_at"] = utc(row["raised_at"])
            row["deliveries"] = deliveries.get(row["id"], {})
        return rows

    return queries.run_in_transaction(engine, work)
