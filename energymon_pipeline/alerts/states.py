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


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


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


def update_states(
    engine: Engine, outcomes: Iterable[PollOutcome], now: datetime, down_after: int
) -> int:
    """Record one poll's outcomes (one statement); returns the number of meters updated.
    A meter removed from the registry meanwhile is left out."""
    rows = [(o.meter_id, o.outcome, (o.error or None) and o.error[:ERROR_LENGTH]) for o in outcomes]
    if not rows:
        return 0

    def work(connection: Connection) -> int:
        try:
            with connection.begin_nested():
                _execute(connection, rows, now, down_after)
        except IntegrityError:  # a meter was removed while it was read
            existing = set(
                connection.scalars(
                    sa.select(energy_meters.c.id).where(
                        energy_meters.c.id.in_([r[0] for r in rows])
                    )
                )
            )
            rows[:] = [r for r in rows if r[0] in existing]
            if rows:
                _execute(connection, rows, now, down_after)
        return len(rows)

    return queries.run_in_transaction(engine, work)


def _execute(connection: Connection, rows: list[tuple], now: datetime, down_after: int) -> None:
    """PostgreSQL: one INSERT .. SELECT FROM unnest(three arrays), whatever the number of
    meters (psycopg2's executemany would send one statement per row). SQLite: one prepared
    statement stepped over the rows in-process (executemany). Both compiled once, cached."""
    if connection.dialect.name == "postgresql":
        ids, outcomes, errors = (list(column) for column in zip(*rows, strict=True))
        connection.execute(
            _pg_upsert(),
            {"ids": ids, "outcomes": outcomes, "errors": errors, "now": now,
             "down_after": down_after},
        )  # fmt: skip
        return
    connection.execute(
        _sqlite_upsert(),
        [
            {
                "meter_id": meter_id,
                "state": (DOWN if down_after <= 1 else FAILING) if outcome == FAILED else outcome,
                "since": now,
                "failures": 1 if outcome == FAILED else 0,
                "last_poll_at": now,
                "last_outcome": outcome,
                "last_ok_at": None if outcome == FAILED else now,
                "error": error,
                "down_after": down_after,
            }
            for meter_id, outcome, error in rows
        ],
    )


COLUMNS = ("meter_id", "state", "since", "failures", "last_poll_at", "last_outcome",
           "last_ok_at", "error")  # fmt: skip


def _on_conflict(insert):
    """The new state from the stored row (`meter_states`) and this poll's (`excluded`)."""
    new, old = insert.excluded, meter_states.c
    failed = new.last_outcome == FAILED
    down_after = sa.bindparam("down_after", type_=sa.Integer)
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


def _sqlite_upsert():
    return _on_conflict(sqlite.insert(meter_states))


def _pg_upsert():
    polled = (
        sa.func.unnest(
            sa.bindparam("ids", type_=postgresql.ARRAY(sa.Integer)),
            sa.bindparam("outcomes", type_=postgresql.ARRAY(sa.String)),
            sa.bindparam("errors", type_=postgresql.ARRAY(sa.String)),
        )
        .table_valued(
            sa.column("meter_id", sa.Integer),
            sa.column("outcome", sa.String),
            sa.column("error", sa.String),
        )
        .render_derived(name="polled")
    )
    now = sa.bindparam("now", type_=sa.DateTime(timezone=True))
    failed = polled.c.outcome == FAILED
    first_failure = sa.case(
        (sa.bindparam("down_after", type_=sa.Integer) <= 1, DOWN), else_=FAILING
    )
    rows = sa.select(
        polled.c.meter_id,
        sa.case((failed, first_failure), else_=polled.c.outcome),
        now,
        sa.case((failed, 1), else_=0),
        now,
        polled.c.outcome,
        sa.case((failed, sa.null()), else_=now),
        polled.c.error,
    )
    return _on_conflict(postgresql.insert(meter_states).from_select(COLUMNS, rows))


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
        times = ("since", "last_poll_at", "last_ok_at", "alerted_at")
        return [{k: utc(v) if k in times else v for k, v in row.items()} for row in rows]

    return queries.run_in_transaction(engine, work)
