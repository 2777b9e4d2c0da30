"""meter_states after polls, on SQLite and PostgreSQL: ok, degraded, failing, down after
ENERGYMON_ALERT_DOWN_AFTER failed polls in a row, since when, the last good reading; one
statement for a whole poll (measured at 500 meters)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from energymon_pipeline.alerts.states import PollOutcome, forget_disabled, update_states, utc
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.tables import energy_meters, meter_states

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def add_meters(engine, ids):
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            energy_meters.insert(),
            [{"id": i, "host": "127.0.0.1", "port": 5020, "slave_address": 1, "type": "sdm630",
              "description": f"meter {i}", "created_at": now, "updated_at": now} for i in ids],
        )  # fmt: skip


def states(engine) -> dict[int, dict]:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(meter_states)).mappings().all()
    times = ("since", "last_poll_at", "last_ok_at")
    return {r["meter_id"]: {k: utc(v) if k in times else v for k, v in r.items()} for r in rows}


def poll(engine, outcomes: dict[int, str], at: datetime, down_after: int = 3) -> int:
    return update_states(
        engine,
        [PollOutcome(i, o, None if o == "ok" else f"error of {i}") for i, o in outcomes.items()],
        at,
        down_after,
    )


def test_failing_then_down_after_the_threshold_then_ok(migrated):
    add_meters(migrated, [1, 2, 3])
    poll(migrated, {1: "ok", 2: "failed", 3: "degraded"}, T0)
    s = states(migrated)
    assert {i: s[i]["state"] for i in s} == {1: "ok", 2: "failing", 3: "degraded"}
    assert s[2]["failures"] == 1 and s[2]["last_ok_at"] is None and s[2]["error"] == "error of 2"
    assert s[3]["last_ok_at"] == T0  # it answered: a good reading

    poll(migrated, {1: "ok", 2: "failed", 3: "degraded"}, T0 + timedelta(minutes=1))
    s = states(migrated)
    assert s[2]["state"] == "failing" and s[2]["failures"] == 2 and s[2]["since"] == T0
    assert s[1]["since"] == T0 and s[1]["last_ok_at"] == T0 + timedelta(minutes=1)

    poll(migrated, {2: "failed"}, T0 + timedelta(minutes=2))
    s = states(migrated)
    assert s[2]["state"] == "down" and s[2]["failures"] == 3
    assert s[2]["since"] == T0 + timedelta(minutes=2)  # since when it is down
    poll(migrated, {2: "failed"}, T0 + timedelta(minutes=3))
    assert states(migrated)[2]["since"] == T0 + timedelta(minutes=2)

    poll(migrated, {2: "ok"}, T0 + timedelta(minutes=4))
    s = states(migrated)[2]
    assert (s["state"], s["failures"], s["error"]) == ("ok", 0, None)
    assert s["since"] == s["last_ok_at"] == T0 + timedelta(minutes=4)


def test_down_after_one(migrated):
    add_meters(migrated, [1])
    poll(migrated, {1: "failed"}, T0, down_after=1)
    assert states(migrated)[1]["state"] == "down"


def test_a_meter_removed_meanwhile_is_left_out(migrated):
    add_meters(migrated, [1, 2])
    assert poll(migrated, {1: "ok", 2: "failed", 9: "failed"}, T0) == 2
    assert set(states(migrated)) == {1, 2}
    queries.remove_meter(migrated, 2)
    assert set(states(migrated)) == {1}  # the state goes with the meter


def test_a_disabled_meter_has_no_state(migrated):
    add_meters(migrated, [1, 2])
    poll(migrated, {1: "failed", 2: "failed"}, T0)
    queries.set_meter_enabled(migrated, 2, False)
    with migrated.begin() as connection:
        assert forget_disabled(connection) == 1
    assert set(states(migrated)) == {1}


def test_500_meters_in_one_statement(migrated):
    ids = list(range(1, 501))
    add_meters(migrated, ids)
    statements: list[str] = []
    sa.event.listen(migrated, "before_cursor_execute", lambda *args: statements.append(args[2]))
    timings = []
    for n in range(4):
        outcomes = {i: ("failed" if i % 10 == 0 else "ok") for i in ids}
        statements.clear()
        started = time.perf_counter()
        assert poll(migrated, outcomes, T0 + timedelta(minutes=n)) == 500
        timings.append(time.perf_counter() - started)
        upserts = [s for s in statements if "meter_states" in s]
        assert len(upserts) == 1, upserts
    s = states(migrated)
    assert sum(row["state"] == "down" for row in s.values()) == 50
    print(f"\n500 meter states, {migrated.url.get_backend_name()}: "
          + ", ".join(f"{1000 * t:.1f} ms" for t in timings))  # fmt: skip
    assert max(timings[1:]) < 1.0  # a poll's budget is a minute; this is a few ms
