"""Each meter's state after a poll, kept in `meter_states` by one statement per run.

A poll tells each meter's outcome: `ok` (every value read), `degraded` (it answered but some
values were lost, e.g. a Modbus exception on one request) or `failed` (nothing read). The
state it leaves: `ok`, `degraded`, `failing` (failed the last poll) or `down` (failed
`down_after` polls in a row), with since when it is in that state and when it last answered.

The new state is computed by the database from the stored row, in one INSERT .. ON CONFLICT
DO UPDATE for every meter of the run (SQLite and PostgreSQL both have it): one round trip
whatever the number of meters, and no read-modify-write race with another run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from energymon_pipeline.registry import queries
from energymon_pipeline.registry.tables import energy_meters, meter_states

if TYPE_CHECKING:
    from energymon_pipeline.modbus.reader import MeterResult

OK, DEGRADED, FAILING, DOWN = "ok", "degraded", "failing", "down"
FAILED = "failed"
STATES = (OK, DEGRADED, FAILING, DOWN)
ERROR_LENGTH = 512
#: Rows per statement: 8 parameters a row stays under SQLite's 32766 bound parameters.
CHUNK = 2000


@dataclass(frozen=True)
class PollOutcome:
    meter_id: int
    outcome: str  # ok, degraded or failed
    error: str | None = None


def outcome_of(result: MeterResult) -> PollOutcome:
    """`failed` when nothing was read, `degraded` when something was read but not all."""
    lost = bool(result.errors) or result.failed_values > 0
    if not lost:
        outcome = OK
    elif result.values_read:
        outcome = DEGRADED
    else:
        outcome = FAILED
    return PollOutcome(result.meter.meter_id, outcome, result.error)


def _insert(connection: Connection):
    if connection.dialect.name == "postgresql":
        return postgresql.insert(meter_states)
    return sqlite.insert(meter_states)


def update_states(
    engine: Engine, outcomes: Iterable[PollOutcome], now: datetime, down_after: int
) -> int:
    """Record one poll's outcomes (one statement); returns the number of meters updated.
    A meter removed from the registry meanwhile is left out."""
    rows = [
        {
            "meter_id": o.meter_id,
            "state": (DOWN if down_after <= 1 else FAILING) if o.outcome == FAILED else o.outcome,
            "since": now,
            "failures": 1 if o.outcome == FAILED else 0,
            "last_poll_at": now,
            "last_outcome": o.outcome,
            "last_ok_at": None if o.outcome == FAILED else now,
            "error": (o.error or None) and o.error[:ERROR_LENGTH],
        }
        for o in outcomes
    ]
    if not rows:
        return 0

    def work(connection: Connection) -> int:
        try:
            with connection.begin_nested():
                for start in range(0, len(rows), CHUNK):
                    connection.execute(_upsert(connection, rows[start : start + CHUNK], down_after))
        except IntegrityError:  # a meter was removed while it was read
            existing = set(
                connection.scalars(
                    sa.select(energy_meters.c.id).where(
                        energy_meters.c.id.in_([r["meter_id"] for r in rows])
                    )
                )
            )
            kept = [r for r in rows if r["meter_id"] in existing]
            for start in range(0, len(kept), CHUNK):
                connection.execute(_upsert(connection, kept[start : start + CHUNK], down_after))
            return len(kept)
        return len(rows)

    return queries.run_in_transaction(engine, work)


def _upsert(connection: Connection, rows: list[dict], down_after: int):
    insert = _insert(connection).values(rows)
    new, old = insert.excluded, meter_states.c
    failed = new.last_outcome == FAILED
    state = sa.case(
        (sa.and_(failed, old.failures + 1 >= down_after), DOWN),
        (failed, FAILING),
        else_=new.last_outcome,
    )
    return insert.on_conflict_do_update(
        index_elements=[meter_states.c.meter_id],
        set_={
            "state": state,
            "since": sa.case((state == old.state, old.since), else_=new.since),
            "failures": sa.case((failed, old.failures + 1), else_=0),
            "last_poll_at": new.last_poll_at,
            "last_outcome": new.last_outcome,
            "last_ok_at": sa.case((failed, old.last_ok_at), else_=new.last_ok_at),
            "error": new.error,
        },
    )


def forget_disabled(connection: Connection) -> int:
    """A disabled meter has no state (and raises nothing): its row goes; enabled again, it
    starts afresh."""
    disabled = sa.select(energy_meters.c.id).where(energy_meters.c.enabled.is_(sa.false()))
    return connection.execute(
        meter_states.delete().where(meter_states.c.meter_id.in_(disabled))
    ).rowcount


def current_states(engine: Engine) -> list[dict]:
    """Every enabled meter's state (meters never polled yet have none), by meter id."""
    m = energy_meters.c

    def work(connection: Connection) -> list[dict]:
        rows = connection.execute(
            sa.select(meter_states, m.description, m.host, m.port, m.slave_address)
            .join(energy_meters, m.id == meter_states.c.meter_id)
            .where(m.enabled.is_(sa.true()))
            .order_by(meter_states.c.meter_id)
        ).mappings()
        result = []
        for row in rows:
            row = dict(row)
            for key in ("since", "last_poll_at", "last_ok_at", "alerted_at"):
                if row[key] is not None and row[key].tzinfo is None:
                    row[key] = row[key].replace(tzinfo=UTC)
            result.append(row)
        return result

    return queries.run_in_transaction(engine, work)
