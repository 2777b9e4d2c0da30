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

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

from energymon_pipeline.modbus.links import Link, LinkUnavailable

POOL_PREFIX = "energymon/link/"
#: How often a waiting claim asks again (Dagster's own step executor backs off to 15 s).
POLL_INTERVAL_S = 0.25


def pool_name(link_key: str) -> str:
    """The link's pool: Dagster pool names are any non-whitespace characters."""
    return POOL_PREFIX + "".join("_" if c.isspace() else c for c in link_key)


def _take_free_slot(storage: SqlEventLogStorage, pool: str, run_id: str, step_key: str) -> bool:
    """Dagster's slot claim with its race closed: the update itself requires the slot to be
    free, so of two claims that picked the same slot only one changes a row (SQLite serializes
    the writes; PostgreSQL re-checks the condition after waiting for the other's row lock)."""
    slots = ConcurrencySlotsTable
    free = (
        sa.select(slots.c.id)
        .where(
            slots.c.concurrency_key == pool,
            slots.c.step_key.is_(None),
            slots.c.deleted == sa.false(),
        )
        .limit(1)
        .scalar_subquery()
    )
    with storage.index_transaction() as conn:
        taken = conn.execute(
            slots.update()
            .where(slots.c.id == free, slots.c.step_key.is_(None))
            .values(run_id=run_id, step_key=step_key)
        )
        return taken.rowcount == 1


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

    def _holders(self, pool: str) -> str:
        info = self._instance.event_log_storage.get_concurrency_info(pool)
        runs = sorted({s.run_id for s in info.claimed_slots if s.run_id != self._run_id})
        return ", ".join(runs) or "another run"

    def _claim_once(self, pool: str, step_key: str) -> bool:
        """One attempt, as `claim_concurrency_slot` makes it (join the pool's queue, take a slot
        once the queue assigns one) but taking the slot with `_take_free_slot`."""
        storage = self._instance.event_log_storage
        if not isinstance(storage, SqlEventLogStorage):
            return storage.claim_concurrency_slot(pool, self._run_id, step_key).is_claimed
        if not storage.has_pending_step(pool, self._run_id, step_key):
            storage.add_pending_step(
                pool, self._run_id, step_key, should_assign=storage.has_unassigned_slots(pool)
            )
        status = storage.check_concurrency_claim(pool, self._run_id, step_key)
        if status.is_claimed:
            return True
        return status.is_assigned and _take_free_slot(storage, pool, self._run_id, step_key)

    def claim(self, link_key: str, name: str) -> bool:
        """Block until this run holds a slot of the link's pool (True), or the pool has no
        limit (False: not guarded). LinkUnavailable after `wait_s`."""
        pool = pool_name(link_key)
        if not self._limited(pool):
            if not self._said_unguarded:
                self._said_unguarded = True
                self._log.warning(
                    f"link pool {pool} has no limit on this Dagster instance (set "
                    "concurrency: pools: default_limit: 1): links are not guarded across runs"
                )
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
        """For modbus.reader's `link_guard`: the claim's waits and database calls run in a
        thread, so the links already held are read meanwhile."""
        name = link.endpoint.link_name
        claimed = await asyncio.to_thread(self.claim, link.key, name)
        try:
            yield
        finally:
            if claimed:
                await asyncio.to_thread(self.release, link.key)
