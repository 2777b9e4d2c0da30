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


def test_without_a_pool_limit_links_are_not_guarded(caplog):
    with dg.instance_for_test() as instance:
        unguarded = pools(instance, "run-a")
        with caplog.at_level(logging.WARNING, logger="test"):
            assert unguarded.claim(KEY, "10.0.0.5:502") is False
            assert unguarded.claim("serial:/dev/ttyUSB0", "/dev/ttyUSB0") is False
    assert caplog.text.count("links are not guarded across runs") == 1
