"""No two runs talk to one link at once: each link is a Dagster concurrency pool.

A poll run, a second poll group, a connectivity check or a manual run may all want the same
gateway or serial port. Dagster's run-level controls (tag_concurrency_limits) match tag keys
exactly and one run carries one value per key, and an op's `pool=` is fixed when the job is
defined (dagster 1.13: ExecutionStep.pool comes from the op definition), so neither can name
the links a run touches, which the registry decides at run time. Dagster's pools themselves
are dynamic: any name can be claimed, and the instance's `concurrency: pools: default_limit`
(1 in dagster.yaml and config/dagster.local.yaml) gives every new pool its limit. So the op
that reads a link claims a slot of the pool `energymon/link/<link>` in the instance's own
concurrency storage (the storage calls the step executor uses for `pool=`), holds it while it
reads one sample of the link and frees it after (between a run's samples, another run may use
the link). A run that finds the slot taken waits in the pool's queue
(first come, first served) and says so in its log; the Deployment > Concurrency page of the UI
lists the pool with the run holding it and the runs waiting. Links that are free are read at
once, so poll groups on different links run in parallel.

A pool's limit can be raised in the UI or with `dagster instance concurrency set`; without a
limit (an instance configured without `default_limit`, like a test's ephemeral one) the links
are not guarded across runs, and the first claim says so in the log. A slot left behind by a
crashed run is freed by the run monitoring daemon (`run_monitoring:
free_slots_after_run_end_seconds`). Every wait is bounded: a link still busy after the op's
`link_wait_s` is not read in this run (its meters fail with "link busy").

Two claims racing for a pool's last free slot could both win with Dagster's own
`claim_concurrency_slot` (dagster 1.13.27: it picks a free slot, then takes it by id without
checking it is still free, so the later claim overwrites the earlier one's row and both runs read
the link), and first uses racing to create a pool make the losers' creation fail on
PostgreSQL. So the slot is taken with one conditional update that only a free slot satisfies, and
a pool another process created first is simply read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa

from energymon_pipeline.modbus.links import Link, LinkUnavailable

if TYPE_CHECKING:
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

# Dagster's storage modules (and Alembic with them) are imported where a claim is made, not
# with the code location: the code server, the daemon and the webserver load it too.


def _sql_storage(storage) -> SqlEventLogStorage | None:
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    return storage if isinstance(storage, SqlEventLogStorage) else None


POOL_PREFIX = "energymon/link/"
#: How often a waiting claim asks again (Dagster's own step executor backs off to 15 s).
POLL_INTERVAL_S = 0.25


def pool_name(link_key: str) -> str:
    """The link's pool: Dagster pool names are any non-whitespace characters."""
    return POOL_PREFIX + "".join("_" if c.isspace() else c for c in link_key)


def _take(conn, steps: dict[str, str], run_id: str) -> set[str]:
    """Dagster's slot claim with its race closed, for each pool of `steps` (pool -> this run's
    step key): one free slot per pool, by an update that itself requires the slot to be free,
    so of two claims that picked the same slot only one changes a row (SQLite serializes the
    writes; PostgreSQL re-checks the condition after waiting for the other's row lock).
    Returns the pools whose slot was taken."""
    from dagster._core.storage.event_log.schema import ConcurrencySlotsTable as slots

    first_free = (
        sa.select(sa.func.min(slots.c.id))
        .where(
            slots.c.concurrency_key.in_(list(steps)),
            slots.c.step_key.is_(None),
            slots.c.deleted == sa.false(),
        )
        .group_by(slots.c.concurrency_key)
    )
    conn.execute(
        slots.update()
        .where(slots.c.id.in_(first_free), slots.c.step_key.is_(None))
        .values(run_id=run_id, step_key=sa.case(steps, value=slots.c.concurrency_key))
    )
    return {
        row[0]
        for row in conn.execute(
            sa.select(slots.c.concurrency_key).where(
                slots.c.run_id == run_id, slots.c.step_key.in_(list(steps.values()))
            )
        )
    }


def _take_free_slot(storage: SqlEventLogStorage, pool: str, run_id: str, step_key: str) -> bool:
    """`_take` for one pool whose queue assigned this run a slot."""
    with storage.index_transaction() as conn:
        return bool(_take(conn, {pool: step_key}, run_id))


def _take_free_slots(storage: SqlEventLogStorage, steps: dict[str, str], run_id: str) -> set[str]:
    """`_take` for many pools in one transaction (a read's links all start at once:
    Dagster's own claim costs a link several statements and commits, ~9 ms of CPU each on
    SQLite, which the read's first requests waited behind). A pool another run is queued for
    is left out (its queue decides, `claim`), so a run never jumps that queue. `steps` maps
    each pool to this run's step key for it; returns the pools whose slot was taken."""
    from dagster._core.storage.event_log.schema import PendingStepsTable as pending

    pools = sorted(steps)
    with storage.index_transaction() as conn:
        queued = {
            row[0]
            for row in conn.execute(
                sa.select(pending.c.concurrency_key)
                .where(pending.c.concurrency_key.in_(pools), pending.c.run_id != run_id)
                .distinct()
            )
        }
        free = {pool: steps[pool] for pool in pools if pool not in queued}
        if not free:
            return set()
        taken = _take(conn, free, run_id)
        if taken:
            # An assigned entry in the pool's queue, as Dagster's claim leaves: the queue
            # counts the slot as assigned, so a run that comes next waits unassigned (the UI
            # shows it waiting) until this run frees it.
            mine = sa.and_(
                pending.c.run_id == run_id,
                pending.c.step_key.in_([steps[p] for p in taken]),
            )
            conn.execute(pending.delete().where(mine))
            conn.execute(
                pending.insert().values(
                    [
                        dict(
                            run_id=run_id,
                            step_key=steps[pool],
                            concurrency_key=pool,
                            priority=0,
                            assigned_timestamp=sa.func.now(),
                        )
                        for pool in sorted(taken)
                    ]
                )
            )
        return taken


def _free_slots(storage: SqlEventLogStorage, run_id: str, step_keys: list[str]) -> None:
    """Dagster's `free_concurrency_slot_for_step` for several steps in one transaction: the
    slots are freed (a slot the pool's limit no longer has is deleted), this run's queue entries
    removed, and the next queued run of each pool whose assigned entry was removed assigned."""
    from dagster._core.storage.event_log.schema import ConcurrencySlotsTable as slots
    from dagster._core.storage.event_log.schema import PendingStepsTable as pending

    ours = sa.and_(slots.c.run_id == run_id, slots.c.step_key.in_(step_keys))
    queued = sa.and_(pending.c.run_id == run_id, pending.c.step_key.in_(step_keys))
    with storage.index_transaction() as conn:
        conn.execute(slots.delete().where(ours, slots.c.deleted == sa.true()))
        conn.execute(slots.update().where(ours).values(run_id=None, step_key=None))
        assigned = sorted(
            {
                row[0]
                for row in conn.execute(
                    sa.select(pending.c.concurrency_key).where(
                        queued, pending.c.assigned_timestamp.isnot(None)
                    )
                )
            }
        )
        conn.execute(pending.delete().where(queued))
    if assigned:
        storage.assign_pending_steps(assigned)


class LinkPools:
    """Claims of link pools for one op of one run."""

    def __init__(
        self, instance: dg.DagsterInstance, run_id: str, op: str, log, wait_s: float
    ) -> None:
        self._instance = instance
        self._run_id = run_id
        self._op = op
        self._log = log
        self._wait_s = wait_s
        self._said_unguarded = False
        #: Whether each link's pool has a limit, asked once per op (`prepare`), not per claim.
        self._limited_pools: dict[str, bool] = {}
        #: `hold`'s claims and releases made in one event loop turn, gathered for one
        #: transaction: (link key, link name, future of the claim) and (link key, future).
        self._to_claim: list[tuple[str, str, asyncio.Future]] = []
        self._to_release: list[tuple[str, asyncio.Future]] = []
        self._batches: set[asyncio.Task] = set()

    @classmethod
    def of(cls, context: dg.OpExecutionContext, wait_s: float) -> LinkPools:
        """The link pools of the op `context` runs, waiting at most `wait_s` for each."""
        return cls(context.instance, context.run_id, context.op.name, context.log, wait_s)

    def _step_key(self, link_key: str) -> str:
        return f"{self._op}[{link_key}]"

    def prepare(self, link_keys: Iterable[str]) -> None:
        """Find out once, before the links are read, which of their pools have a limit,
        giving each the instance's default limit the first time (as Dagster's step executor
        does for an op's pool): two queries for all the op's links instead of two per claim,
        so the links' first requests are not held up behind the instance's database."""
        self._prepare_pools([pool_name(key) for key in link_keys])

    def _prepare_pools(self, pools: list[str]) -> None:
        storage = self._instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            self._limited_pools.update(dict.fromkeys(pools, False))
            return
        default = storage.get_pool_config().default_pool_limit
        limits = {p.name: p for p in storage.get_pool_limits()}
        changed = False
        raced: dict[str, sa.exc.DBAPIError] = {}
        for pool in pools:
            current = limits.get(pool)
            if (current is None and default is not None) or (
                current is not None and current.from_default and current.limit != default
            ):
                try:
                    storage.initialize_concurrency_limit_to_default(pool)
                except sa.exc.DBAPIError as error:
                    # On PostgreSQL, a pool another process inserted first makes the insert
                    # abort the whole transaction: that pool is read back below instead.
                    raced[pool] = error
                changed = True
        if changed:
            limits = {p.name: p for p in storage.get_pool_limits()}
        for pool, error in raced.items():
            if pool not in limits:  # not a race: the storage itself failed
                raise error
        self._limited_pools.update({pool: pool in limits for pool in pools})

    def _limited(self, pool: str) -> bool:
        if pool not in self._limited_pools:
            self._prepare_pools([pool])
        return self._limited_pools[pool]

    def _say_unguarded(self, pool: str) -> None:
        if not self._said_unguarded:
            self._said_unguarded = True
            self._log.warning(
                f"link pool {pool} has no limit on this Dagster instance (set "
                "concurrency: pools: default_limit: 1): links are not guarded across runs"
            )

    def _holders(self, pool: str) -> str:
        info = self._instance.event_log_storage.get_concurrency_info(pool)
        runs = sorted({s.run_id for s in info.claimed_slots if s.run_id != self._run_id})
        return ", ".join(runs) or "another run"

    def _claim_once(self, pool: str, step_key: str) -> bool:
        """One attempt, as `claim_concurrency_slot` makes it (join the pool's queue, take a slot
        once the queue assigns one) but taking the slot with `_take_free_slot`."""
        storage = _sql_storage(self._instance.event_log_storage)
        if storage is None:
            storage = self._instance.event_log_storage
            return storage.claim_concurrency_slot(pool, self._run_id, step_key).is_claimed
        if not storage.has_pending_step(pool, self._run_id, step_key):
            storage.add_pending_step(
                pool, self._run_id, step_key, should_assign=storage.has_unassigned_slots(pool)
            )
        status = storage.check_concurrency_claim(pool, self._run_id, step_key)
        if status.is_claimed:
            return True
        if not status.is_assigned and storage.has_unassigned_slots(pool):
            # A slot nobody is assigned: a release that came between this run's look at the
            # queue and its joining it assigned no one, and no later release will (a wakeup
            # lost, seen with six racing runs). Let the queue assign its head (this run or
            # one before it) and look again; the conditional take keeps the slot single.
            storage.assign_pending_steps([pool])
            status = storage.check_concurrency_claim(pool, self._run_id, step_key)
        return status.is_assigned and _take_free_slot(storage, pool, self._run_id, step_key)

    def claim(self, link_key: str, name: str) -> bool:
        """Block until this run holds a slot of the link's pool (True), or the pool has no
        limit (False: not guarded). LinkUnavailable after `wait_s`."""
        pool = pool_name(link_key)
        if not self._limited(pool):
            self._say_unguarded(pool)
            return False
        storage = self._instance.event_log_storage
        step_key = self._step_key(link_key)
        deadline = time.monotonic() + self._wait_s
        waiting_since = None
        while True:
            if self._claim_once(pool, step_key):
                if waiting_since is not None:
                    self._log.info(
                        f"link {name}: got pool {pool} after "
                        f"{time.monotonic() - waiting_since:.1f} s"
                    )
                return True
            if waiting_since is None:
                waiting_since = time.monotonic()
                self._log.info(
                    f"link {name}: waiting for pool {pool}, held by run {self._holders(pool)}"
                )
            if time.monotonic() >= deadline:
                holders = self._holders(pool)
                storage.free_concurrency_slot_for_step(self._run_id, step_key)
                raise LinkUnavailable(
                    f"link busy: pool {pool} still held by run {holders} after {self._wait_s:g} s"
                )
            time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    def release(self, link_key: str) -> None:
        self._instance.event_log_storage.free_concurrency_slot_for_step(
            self._run_id, self._step_key(link_key)
        )

    @contextlib.contextmanager
    def hold_sync(self, link_key: str, name: str) -> Iterator[None]:
        claimed = self.claim(link_key, name)
        try:
            yield
        finally:
            if claimed:
                self.release(link_key)

    @contextlib.asynccontextmanager
    async def hold(self, link: Link) -> AsyncIterator[None]:
        """For modbus.reader's `link_guard`: the database calls run in a thread, so the links
        already held are read meanwhile. The claims (and the releases) of the links that ask
        in one event loop turn, as all of a read's links do when it starts, are made in one
        transaction; a link that finds its pool busy or queued for waits in `claim`."""
        name = link.endpoint.link_name
        claimed = await self._batched(self._to_claim, (link.key, name), self._claim_batch)
        if claimed is None:
            claimed = await asyncio.to_thread(self.claim, link.key, name)
        try:
            yield
        finally:
            if claimed:
                await self._batched(self._to_release, (link.key,), self._release_batch)

    async def _batched(self, queue: list, item: tuple, flush) -> bool | None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        queue.append((*item, future))
        if len(queue) == 1:  # the first of this turn: the batch goes after the others joined
            loop.call_soon(self._start_batch, flush)
        return await future

    def _start_batch(self, flush) -> None:
        task = asyncio.get_running_loop().create_task(flush())
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _claim_batch(self) -> None:
        batch, self._to_claim = self._to_claim, []
        links = [(key, name) for key, name, _ in batch]
        outcome = await self._in_thread(lambda: self._claim_now(links), [f for *_, f in batch])
        if outcome is not None:
            for key, _, future in batch:
                if not future.done():
                    future.set_result(outcome[key])

    async def _release_batch(self) -> None:
        batch, self._to_release = self._to_release, []
        keys = [key for key, _ in batch]
        if await self._in_thread(lambda: self._release_now(keys), [f for _, f in batch]):
            for _, future in batch:
                if not future.done():
                    future.set_result(True)

    @staticmethod
    async def _in_thread(work, futures: list[asyncio.Future]):
        """`work()` in a thread; None if it failed, after each waiting link got its error (it
        raises where that link waits: the batch task's own exception would go unseen)."""
        try:
            return await asyncio.to_thread(work)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - handed to every waiting link
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return None

    def _claim_now(self, links: list[tuple[str, str]]) -> dict[str, bool | None]:
        """Each link: True (held), False (not guarded) or None (`claim` must wait for it)."""
        outcome: dict[str, bool | None] = {}
        steps: dict[str, str] = {}
        for key, _name in links:
            pool = pool_name(key)
            if self._limited(pool):
                steps[pool] = self._step_key(key)
                outcome[key] = None
            else:
                self._say_unguarded(pool)
                outcome[key] = False
        storage = _sql_storage(self._instance.event_log_storage)
        if steps and storage is not None:
            taken = _take_free_slots(storage, steps, self._run_id)
            for key, _name in links:
                if pool_name(key) in taken:
                    outcome[key] = True
        return outcome

    def _release_now(self, link_keys: list[str]) -> bool:
        """Frees the links' slots; True when done (`_in_thread`'s None means failed)."""
        storage = _sql_storage(self._instance.event_log_storage)
        if storage is None:
            for key in link_keys:
                self.release(key)
        else:
            _free_slots(storage, self._run_id, [self._step_key(key) for key in link_keys])
        return True
