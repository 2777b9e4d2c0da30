"""Runs racing for a link nobody has used yet: several processes, each with its own Dagster
instance on one storage (SQLite under a DAGSTER_HOME as in `make run`, or PostgreSQL through
dagster-postgres as in production), wait at a barrier, then prepare and claim the same new pool
at once, round after round. However they interleave, the pool ends with the default's one slot,
no run's prepare fails, and at most one run holds the link at any moment.

Measured before the fix (4 to 6 processes, 0.3 s holds): the slot count never exceeded the limit
on either backend, but with Dagster's `claim_concurrency_slot` two or three runs held the one
slot at once in 7 of 12 SQLite rounds, and on PostgreSQL every round's losers failed to create
the pool (InFailedSqlTransaction)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from energymon_pipeline.ops.link_pools import LinkPools, pool_name

pytestmark = pytest.mark.timeout(240)

WORKERS = 6
ROUNDS = 8
#: Long enough for every other worker's claim attempt to meet the holder.
HOLD_S = 0.05
#: A link held longer than this by another worker is a failure (a slot never freed).
WAIT_S = 20.0
BARRIER_S = 60.0


def link_key(round_: int) -> str:
    return f"tcp:10.0.1.{round_}:502:socket"


def _count(holding, most, by: int) -> None:
    with holding.get_lock():
        holding.value += by
        most.value = max(most.value, holding.value)


def _held_by_claim(pools: LinkPools, key: str, counters) -> bool:
    """Dagster-style, one link: `claim` (the connectivity check's `hold_sync`)."""
    claimed = pools.claim(key, key)
    if claimed:
        _count(*counters[0], 1)
        time.sleep(HOLD_S)
        _count(*counters[0], -1)
        pools.release(key)
    return claimed


def _held_by_hold(pools: LinkPools, key: str, counters) -> bool:
    """As a poll's read does: two links asking in one event loop turn (one transaction for
    both when both are free), each held while it is read."""
    keys = (key, key.replace("10.0.1.", "10.0.2."))

    async def read(index: int) -> None:
        link = SimpleNamespace(key=keys[index], endpoint=SimpleNamespace(link_name=keys[index]))
        async with pools.hold(link):
            _count(*counters[index], 1)
            await asyncio.sleep(HOLD_S)
            _count(*counters[index], -1)

    async def both() -> None:
        await asyncio.gather(read(0), read(1))

    pools.prepare(keys)
    asyncio.run(both())
    return True


def race(home: str, mode: str, barrier, counters, results) -> None:
    """One worker: every round, prepare and claim that round's new pool(s) with the others.
    Whatever happens, it reports what it got (a failure ends its rounds and breaks the
    barrier, so the others stop too and the test fails with the reason, not a timeout)."""
    os.environ["DAGSTER_HOME"] = home
    outcomes: list = []
    held = _held_by_claim if mode == "claim" else _held_by_hold
    try:
        with dg.DagsterInstance.get() as instance:
            instance.event_log_storage.get_pool_limits()  # schema checks done before the race
            for round_ in range(ROUNDS):
                pools = LinkPools(
                    instance, uuid.uuid4().hex, "read_meters", logging.getLogger("race"), WAIT_S
                )
                key = link_key(round_)
                barrier.wait(timeout=BARRIER_S)
                pools.prepare([key])
                outcomes.append(held(pools, key, counters))
    except Exception as error:  # reported to the test, which fails on it
        outcomes.append(f"round {len(outcomes) + 1}: {error!r}"[:300])
        barrier.abort()
    finally:
        results.put(outcomes)


@pytest.fixture(params=["sqlite", "postgresql"])
def dagster_home(request, tmp_path: Path) -> Path:
    """A DAGSTER_HOME with `default_limit: 1`, on SQLite or on a fresh PostgreSQL database."""
    config = {"concurrency": {"pools": {"default_limit": 1}}, "telemetry": {"enabled": False}}
    name = None
    if request.param == "postgresql":
        admin = request.getfixturevalue("postgres_admin")
        name = f"energymon_dagster_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        config["storage"] = {"postgres": {"postgres_url": url}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    yield tmp_path
    if name is not None:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("mode", ["claim", "hold"])
def test_runs_racing_for_a_new_link_pool_hold_it_one_at_a_time(dagster_home, mode, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.get_pool_limits()  # creates the schema once
    context = multiprocessing.get_context("spawn")  # no forked copies of Dagster's threads
    barrier = context.Barrier(WORKERS)
    # Per link: (holders now, most holders at once).
    counters = [(context.Value("i", 0), context.Value("i", 0)) for _ in range(2)]
    results = context.Queue()
    workers = [
        context.Process(target=race, args=(str(dagster_home), mode, barrier, counters, results))
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=200) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert outcomes == [[True] * ROUNDS] * WORKERS
    assert [most.value for _, most in counters] == ([1, 1] if mode == "hold" else [1, 0])
    keys = [link_key(r) for r in range(ROUNDS)]
    if mode == "hold":
        keys += [key.replace("10.0.1.", "10.0.2.") for key in keys]
    with dg.DagsterInstance.get() as instance:
        infos = instance.event_log_storage.get_concurrency_infos([pool_name(k) for k in keys])
    assert len(infos) == len(keys)
    for info in infos.values():
        assert (info.limit, info.slot_count, info.using_default_limit) == (1, 1, True)
        assert info.claimed_slots == [] and info.pending_steps == []
