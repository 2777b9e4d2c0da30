"""LinkPools against a real Dagster instance's concurrency storage: a held link makes another
run wait (bounded, naming the holder), a released one is taken again sample after sample, and
an instance without a pool limit leaves links unguarded with one warning."""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from energymon_pipeline.modbus.links import LinkUnavailable
from energymon_pipeline.ops.link_pools import LinkPools, pool_name

KEY = "tcp:10.0.0.5:502:socket"


@pytest.fixture
def instance():
    with dg.instance_for_test(
        overrides={"concurrency": {"pools": {"default_limit": 1}}}
    ) as instance:
        yield instance


def pools(instance, run_id: str, wait_s: float = 0.3) -> LinkPools:
    return LinkPools(instance, run_id, "read_meters", logging.getLogger("test"), wait_s)


def test_a_held_link_makes_another_run_wait_then_pass(instance, caplog):
    first, second = pools(instance, "run-a"), pools(instance, "run-b")
    assert first.claim(KEY, "10.0.0.5:502") is True
    info = instance.event_log_storage.get_concurrency_info(pool_name(KEY))
    assert info.limit == 1 and [s.run_id for s in info.claimed_slots] == ["run-a"]
    with (
        caplog.at_level(logging.INFO, logger="test"),
        pytest.raises(LinkUnavailable, match="held by run run-a after 0.3 s"),
    ):
        second.claim(KEY, "10.0.0.5:502")
    assert "waiting for pool energymon/link/tcp:10.0.0.5:502:socket, held by run run-a" in (
        caplog.text
    )
    # The run that gave up left nothing queued.
    pending = instance.event_log_storage.get_concurrency_info(pool_name(KEY)).pending_steps
    assert "run-b" not in {p.run_id for p in pending}
    first.release(KEY)
    for _sample in range(3):  # held per sample: taken and given back again and again
        with second.hold_sync(KEY, "10.0.0.5:502"):
            holders = instance.event_log_storage.get_concurrency_info(pool_name(KEY))
            assert [s.run_id for s in holders.claimed_slots] == ["run-b"]
    assert instance.event_log_storage.get_concurrency_info(pool_name(KEY)).claimed_slots == []


def test_a_free_slot_nobody_was_assigned_is_taken_by_the_waiting_run(instance):
    """The lost wakeup: run-b looked at the queue while run-a held the slot (nothing to
    assign), run-a released (nobody queued to assign), then run-b joined the queue unassigned.
    Nothing else will ever assign it: its own next look must."""
    first, second = pools(instance, "run-a", wait_s=2.0), pools(instance, "run-b", wait_s=2.0)
    pool, step = pool_name(KEY), "read_meters[" + KEY + "]"
    assert first.claim(KEY, "10.0.0.5:502") is True
    storage = instance.event_log_storage
    assert storage.has_unassigned_slots(pool) is False  # run-b's look: no slot to assign
    first.release(KEY)
    storage.add_pending_step(pool, "run-b", step, should_assign=False)  # ...then it joins
    assert second.claim(KEY, "10.0.0.5:502") is True
    assert [s.run_id for s in storage.get_concurrency_info(pool).claimed_slots] == ["run-b"]


def test_without_a_pool_limit_links_are_not_guarded(caplog):
    with dg.instance_for_test() as instance:
        unguarded = pools(instance, "run-a")
        with caplog.at_level(logging.WARNING, logger="test"):
            assert unguarded.claim(KEY, "10.0.0.5:502") is False
            assert unguarded.claim("serial:/dev/ttyUSB0", "/dev/ttyUSB0") is False
    assert caplog.text.count("links are not guarded across runs") == 1


def test_prepare_gives_every_link_its_pool_once_and_claims_need_no_more_lookups(instance):
    keys = [f"tcp:10.0.0.{n}:502:socket" for n in range(1, 21)]
    storage = instance.event_log_storage
    first = pools(instance, "run-a")
    first.prepare(keys)
    limits = {p.name: p.limit for p in storage.get_pool_limits()}
    assert {pool_name(k): 1 for k in keys}.items() <= limits.items()
    # Claims after prepare do not ask the instance for its pool limits again.
    asked = []
    original = storage.get_pool_limits

    def counting():
        asked.append(1)
        return original()

    storage.get_pool_limits = counting
    try:
        for key in keys:
            with first.hold_sync(key, key):
                pass
    finally:
        storage.get_pool_limits = original
    assert asked == []
    # A link the op did not prepare is still guarded (found out on its first claim).
    late = "serial:/dev/ttyUSB9"
    assert first.claim(late, late) is True
    with pytest.raises(LinkUnavailable):
        pools(instance, "run-b", wait_s=0.1).claim(late, late)


def test_pools_found_with_their_limit_cost_one_lookup_for_all(instance):
    keys = [f"tcp:10.0.0.{n}:502:socket" for n in range(1, 11)]
    pools(instance, "run-a").prepare(keys)
    storage = instance.event_log_storage
    asked = []

    def counted(name):
        original = getattr(storage, name)

        def call(*args):
            asked.append(name)
            return original(*args)

        return call

    watched = ("get_pool_limits", "initialize_concurrency_limit_to_default")
    for name in watched:
        setattr(storage, name, counted(name))
    try:
        pools(instance, "run-b").prepare(keys)
    finally:
        for name in watched:
            delattr(storage, name)  # the storage's own methods again
    assert asked == ["get_pool_limits"]


def test_a_limit_raised_by_hand_is_kept_and_used_in_full(instance):
    storage = instance.event_log_storage
    storage.set_concurrency_slots(pool_name(KEY), 2)  # as the UI or `dagster instance concurrency`
    first, second = pools(instance, "run-a"), pools(instance, "run-b")
    first.prepare([KEY])
    info = storage.get_concurrency_info(pool_name(KEY))
    assert (info.limit, info.slot_count, info.using_default_limit) == (2, 2, False)
    assert first.claim(KEY, "10.0.0.5:502") and second.claim(KEY, "10.0.0.5:502")
    with pytest.raises(LinkUnavailable, match="held by run run-a, run-b"):
        pools(instance, "run-c", wait_s=0.1).claim(KEY, "10.0.0.5:502")


def test_links_asking_together_are_claimed_and_released_in_one_transaction_each(
    instance, monkeypatch
):
    """A read's links all ask for their pools in one event loop turn: one transaction takes
    the free ones; one busy link waits in the queue as before; releases made together are one
    transaction too. Nothing is held afterwards and the queue is empty."""
    import asyncio
    from types import SimpleNamespace

    from energymon_pipeline.ops import link_pools

    keys = [f"tcp:10.0.0.{i}:502:socket" for i in range(1, 11)]
    other = pools(instance, "run-other")
    other.prepare(keys)
    assert other.claim(keys[0], "busy") is True  # another run holds the first link
    mine = pools(instance, "run-mine", wait_s=5)
    mine.prepare(keys)
    calls = {"take": 0, "free": 0}
    take, free = link_pools._take_free_slots, link_pools._free_slots

    def counted_take(*args):
        calls["take"] += 1
        return take(*args)

    def counted_free(*args):
        calls["free"] += 1
        return free(*args)

    monkeypatch.setattr(link_pools, "_take_free_slots", counted_take)
    monkeypatch.setattr(link_pools, "_free_slots", counted_free)
    inside: list[str] = []
    held_together: list[int] = []

    async def read(key: str) -> None:
        link = SimpleNamespace(key=key, endpoint=SimpleNamespace(link_name=key))
        async with mine.hold(link):
            inside.append(key)
            if len(inside) == 9:  # the nine free links are held at once: count them once
                storage = instance.event_log_storage
                infos = storage.get_concurrency_infos([pool_name(k) for k in keys])
                held_together.append(
                    sum(any(s.run_id == "run-mine" for s in i.claimed_slots)
                        for i in infos.values())
                )  # fmt: skip
            await asyncio.sleep(0.05)

    async def release_busy_link_later() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(other.release, keys[0])

    async def main() -> None:
        await asyncio.gather(*(read(k) for k in keys), release_busy_link_later())

    asyncio.run(main())
    assert calls["take"] == 1  # the nine free links, in one transaction
    assert held_together == [9]  # the busy one came later, through the queue
    assert len(inside) == 10
    # Released as they end: the nine in one or two transactions (the one that counted ends a
    # little later), the late one alone; one per link would be ten.
    assert 2 <= calls["free"] <= 3
    infos = instance.event_log_storage.get_concurrency_infos([pool_name(k) for k in keys])
    assert all(i.claimed_slots == [] and i.pending_steps == [] for i in infos.values())


def test_a_failed_batch_claim_is_raised_where_each_link_waits(instance, monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from energymon_pipeline.ops import link_pools

    def database_down(*_args):
        raise RuntimeError("database down")

    monkeypatch.setattr(link_pools, "_take_free_slots", database_down)
    keys = [f"tcp:10.0.1.{i}:502:socket" for i in range(3)]
    mine = pools(instance, "run-mine")
    mine.prepare(keys)

    async def read(key: str) -> str:
        link = SimpleNamespace(key=key, endpoint=SimpleNamespace(link_name=key))
        try:
            async with mine.hold(link):
                return "read"
        except RuntimeError as error:
            return str(error)

    async def main() -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(read(k) for k in keys)), timeout=10)

    assert asyncio.run(main()) == ["database down"] * 3
