"""The write-ahead spool: durable appends, ordered drains, crash recovery, bounds, quarantine of
bad batches, locking between processes, and an InfluxDB outage against the real influxd."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from energymon_pipeline.influx.points import reading_lines
from energymon_pipeline.influx.spool import BatchId, FlushResult, Spool, SpoolBusy, SpoolError
from energymon_pipeline.influx.writer import (
    InfluxBadRequest,
    InfluxUnreachable,
    InfluxWriter,
)

BIG = 1 << 30
DAY = 86_400.0


def lines_of(batch: int, count: int = 3) -> list[str]:
    return [f"m,id={batch} value={float(i)} {1_000 * batch + i}" for i in range(count)]


def batch_files(spool: Spool) -> list[str]:
    return sorted(p.name for p in spool.path.iterdir() if p.suffix == ".lp")


class RecordingWriter:
    """Accepts batches and remembers them; `fail_on` maps a call number (1-based) to the error
    raised instead."""

    def __init__(self, fail_on: dict[int, Exception] | None = None):
        self.batches: list[list[str]] = []
        self.calls = 0
        self.fail_on = fail_on or {}

    def write(self, lines: Sequence[str]) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.fail_on[self.calls]
        self.batches.append(list(lines))


class Clock:
    def __init__(self, now: float = 1_717_243_200.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def unreachable() -> InfluxUnreachable:
    return InfluxUnreachable(
        "InfluxDB at http://127.0.0.1:1/energy is unreachable: connection refused"
    )


def test_append_is_synced_to_disk_before_it_returns(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool", BIG, DAY)
    synced: list[tuple[str, list[str]]] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append((kind, batch_files(spool)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    batch = spool.append(lines_of(1))
    assert batch == BatchId(seq=1, created_ms=batch.created_ms, points=3)
    # The file is synced under its temp name, renamed into place, then the folder is synced.
    assert synced == [("file", []), ("dir", [batch.name])]
    assert (spool.path / batch.name).read_text() == "\n".join(lines_of(1)) + "\n"
    assert [p.name for p in spool.path.iterdir() if p.name.startswith(".tmp")] == []


def test_flush_sends_oldest_first_and_removes_what_was_acknowledged(tmp_path):
    spool = Spool(tmp_path, BIG, DAY)
    for batch in (1, 2, 3):
        spool.append(lines_of(batch))
    writer = RecordingWriter()
    assert spool.flush(writer) == FlushResult(sent_batches=3, sent_points=9, remaining_batches=0)
    assert writer.batches == [lines_of(1), lines_of(2), lines_of(3)]
    assert batch_files(spool) == []
    assert spool.append([]) is None
    assert spool.flush(writer) == FlushResult(0, 0, 0)


def test_order_holds_beyond_ten_batches_and_across_instances(tmp_path):
    for batch in range(1, 13):
        Spool(tmp_path, BIG, DAY).append(lines_of(batch, count=1))
    writer = RecordingWriter()
    Spool(tmp_path, BIG, DAY).flush(writer)
    assert writer.batches == [lines_of(batch, count=1) for batch in range(1, 13)]


def test_flush_stops_at_the_first_failure_and_keeps_the_rest_in_order(tmp_path):
    spool = Spool(tmp_path, BIG, DAY)
    for batch in (1, 2, 3):
        spool.append(lines_of(batch))
    error = unreachable()
    result = spool.flush(RecordingWriter(fail_on={2: error}))
    assert result == FlushResult(sent_batches=1, sent_points=3, remaining_batches=2, error=error)
    assert not result.ok
    writer = RecordingWriter()
    assert spool.flush(writer).sent_batches == 2
    assert writer.batches == [lines_of(2), lines_of(3)]


def test_write_through_sends_older_batches_first(tmp_path):
    spool = Spool(tmp_path, BIG, DAY)
    result = spool.write_through(lines_of(1), RecordingWriter(fail_on={1: unreachable()}))
    assert (result.sent_batches, result.remaining_batches) == (0, 1)
    writer = RecordingWriter()
    assert spool.write_through(lines_of(2), writer) == FlushResult(2, 6, 0)
    assert writer.batches == [lines_of(1), lines_of(2)]


def test_a_crash_before_the_acknowledgement_loses_nothing(tmp_path):
    class Crash(BaseException):
        pass

    class CrashingWriter:
        """InfluxDB got the batch, then the process died before removing it."""

        def __init__(self):
            self.batches = []

        def write(self, lines):
            self.batches.append(list(lines))
            raise Crash

    spool = Spool(tmp_path, BIG, DAY)
    spool.append(lines_of(1))
    with pytest.raises(Crash):
        spool.write_through(lines_of(2), CrashingWriter())
    # A crash in the middle of an append leaves only a temp file, never a half batch.
    (tmp_path / ".tmp-000000000003-1717243200000-3.lp.4242").write_text("m value=1 1\nm val")

    restarted = Spool(tmp_path, BIG, DAY)
    assert restarted.status().batches == 2
    writer = RecordingWriter()
    assert restarted.flush(writer) == FlushResult(2, 6, 0)
    assert writer.batches == [lines_of(1), lines_of(2)]  # re-sent: points carry their timestamps
    assert sorted(os.listdir(tmp_path)) == [".flush.lock", ".lock"]  # the torn temp file is gone


def test_status_counts_the_backlog(tmp_path):
    clock = Clock()
    spool = Spool(tmp_path, BIG, DAY, clock=clock)
    assert spool.status().batches == 0
    assert spool.status().oldest_age_s is None
    spool.append(lines_of(1, count=2))
    clock.now += 90
    spool.append(lines_of(2, count=5))
    clock.now += 30
    status = spool.status()
    assert (status.batches, status.points, status.rejected_batches) == (2, 7, 0)
    assert status.bytes == sum(
        len(("\n".join(lines_of(b, n)) + "\n").encode()) for b, n in [(1, 2), (2, 5)]
    )
    assert status.oldest_age_s == pytest.approx(120.0, abs=0.01)


def test_over_the_size_bound_the_oldest_are_dropped_with_one_error_line(tmp_path, caplog):
    one = len(("\n".join(lines_of(1)) + "\n").encode())
    spool = Spool(tmp_path, max_bytes=3 * one, max_age_s=DAY)
    for batch in (1, 2, 3):
        spool.append(lines_of(batch))
    assert caplog.records == []
    with caplog.at_level(logging.ERROR, logger="energymon_pipeline.influx.spool"):
        spool.append(lines_of(4) + lines_of(5))  # twice the size of one: two must go
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"spool {tmp_path}: dropped 2 batches, oldest first (6 points, {2 * one} bytes), never to be "
        f"written to InfluxDB: 2 batches over max_bytes={3 * one} in total"
    ]
    writer = RecordingWriter()
    spool.flush(writer)
    assert writer.batches == [lines_of(3), lines_of(4) + lines_of(5)]


def test_a_batch_bigger_than_the_bound_by_itself_is_kept(tmp_path, caplog):
    spool = Spool(tmp_path, max_bytes=10, max_age_s=DAY)
    spool.append(lines_of(1))
    with caplog.at_level(logging.ERROR):
        spool.append(lines_of(2))
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert spool.status().batches == 1
    writer = RecordingWriter()
    spool.flush(writer)
    assert writer.batches == [lines_of(2)]


def test_over_the_age_bound_the_oldest_are_dropped_with_one_error_line(tmp_path, caplog):
    clock = Clock()
    spool = Spool(tmp_path, BIG, max_age_s=3600, clock=clock)
    spool.append(lines_of(1))
    clock.now += 1800
    spool.append(lines_of(2))
    clock.now += 1800
    spool.append(lines_of(3))
    clock.now += 1
    with caplog.at_level(logging.ERROR, logger="energymon_pipeline.influx.spool"):
        writer = RecordingWriter()
        result = spool.flush(writer)  # InfluxDB is back after an hour: batch 1 is too old
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "dropped 1 batch, oldest first (3 points" in errors[0]
    assert errors[0].endswith("1 batch older than max_age_s=3600")
    assert (result.sent_batches, writer.batches) == (2, [lines_of(2), lines_of(3)])


def test_a_rejected_batch_is_quarantined_and_does_not_block_the_queue(tmp_path, caplog):
    spool = Spool(tmp_path, BIG, DAY)
    for batch in (1, 2, 3):
        spool.append(lines_of(batch))
    bad = InfluxBadRequest(
        "InfluxDB at http://127.0.0.1:8086/energy rejected the points on write (HTTP 400: unable to parse)"
    )
    writer = RecordingWriter(fail_on={2: bad})
    with caplog.at_level(logging.ERROR, logger="energymon_pipeline.influx.spool"):
        result = spool.flush(writer)
    rejected = list((tmp_path / "rejected").iterdir())
    expected = (
        f"spool {tmp_path}: batch {rejected[0].name} was refused by InfluxDB as a bad request: "
        f"{bad}; moved it to {rejected[0]} and will not retry it"
    )
    assert result == FlushResult(2, 6, 0, None, rejected=(expected,))
    assert result.rejected_batches == 1
    assert writer.batches == [lines_of(1), lines_of(3)]
    assert [p.read_text() for p in rejected] == ["\n".join(lines_of(2)) + "\n"]
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert message == expected
    assert spool.status().rejected_batches == 1
    assert spool.status().batches == 0


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(os.urandom(200) + b"\xff\xfe"), id="random"),
        pytest.param(lambda path: path.write_bytes(b"m value=1 1\n\xc3(\n"), id="bad-utf8"),
        pytest.param(lambda path: (path.unlink(), path.mkdir()), id="a-folder"),
    ],
)
def test_an_unreadable_batch_is_set_aside_and_the_rest_flows(tmp_path, caplog, damage):
    # A full disk or a bad sector can leave a batch that is not text: it must cost only itself.
    spool = Spool(tmp_path, BIG, DAY)
    for batch in (1, 2, 3):
        spool.append(lines_of(batch))
    broken = tmp_path / batch_files(spool)[1]
    damage(broken)
    writer = RecordingWriter()
    with caplog.at_level(logging.ERROR, logger="energymon_pipeline.influx.spool"):
        result = spool.flush(writer)
    assert writer.batches == [lines_of(1), lines_of(3)]
    assert (result.sent_batches, result.sent_points, result.remaining_batches) == (2, 6, 0)
    assert result.ok
    [message] = result.rejected
    assert message.startswith(f"spool {tmp_path}: batch {broken.name} cannot be read (")
    assert f"moved it to {tmp_path / 'rejected' / broken.name}" in message
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [message]
    assert (tmp_path / "rejected" / broken.name).exists()
    assert (spool.status().batches, spool.status().rejected_batches) == (0, 1)
    spool.append(lines_of(4))  # later batches flow as usual
    assert spool.flush(writer).sent_batches == 1


def test_points_sent_are_counted_from_the_batch_not_its_name(tmp_path):
    spool = Spool(tmp_path, BIG, DAY)
    spool.append(lines_of(1, count=3))
    (tmp_path / batch_files(spool)[0]).write_text("\n".join(lines_of(1, count=5)) + "\n")
    assert spool.flush(RecordingWriter()).sent_points == 5


def test_losses_are_handed_to_the_caller(tmp_path):
    clock = Clock()
    spool = Spool(tmp_path, BIG, 3600, clock=clock)
    spool.append(lines_of(1))
    spool.append(lines_of(2, count=4))
    clock.now += 7200
    spool.append(lines_of(3))
    [loss] = spool.losses
    assert (loss.batches, loss.points) == (2, 7)
    assert loss.reason == "2 batches older than max_age_s=3600"
    assert str(loss).startswith("dropped 2 batches, oldest first (7 points, ")


def test_a_concurrent_flusher_waits_its_turn_and_nothing_is_sent_twice(tmp_path):
    first = Spool(tmp_path, BIG, DAY)
    second = Spool(tmp_path, BIG, DAY, lock_timeout_s=0.2)
    first.append(lines_of(1))
    first.append(lines_of(2))
    entered, release = threading.Event(), threading.Event()

    class SlowWriter(RecordingWriter):
        def write(self, lines):
            entered.set()
            assert release.wait(10)
            super().write(lines)

    slow = SlowWriter()
    results = []
    flusher = threading.Thread(target=lambda: results.append(first.flush(slow)))
    flusher.start()
    try:
        assert entered.wait(10)
        busy = second.flush(RecordingWriter())
        assert isinstance(busy.error, SpoolBusy)
        assert (busy.sent_batches, busy.remaining_batches) == (0, 2)
        assert "another process has held the flush lock (.flush.lock) for more than 0.2 s" in str(
            busy.error
        )
        second.append(lines_of(3))  # appends do not wait for a flush to finish
    finally:
        release.set()
        flusher.join(10)
    assert results == [FlushResult(3, 9, 0)]
    assert slow.batches == [lines_of(1), lines_of(2), lines_of(3)]


def test_the_lock_holds_against_another_process(tmp_path):
    spool = Spool(tmp_path, BIG, DAY, lock_timeout_s=0.3)
    spool.append(lines_of(1))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(tmp_path / ".flush.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = spool.flush(RecordingWriter())
        assert isinstance(result.error, SpoolBusy)
        assert result.remaining_batches == 1
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert spool.flush(RecordingWriter()) == FlushResult(1, 3, 0)


def test_bad_bounds_and_lines_are_refused(tmp_path):
    with pytest.raises(SpoolError, match="max_bytes must be positive"):
        Spool(tmp_path, 0, DAY)
    with pytest.raises(SpoolError, match="max_age_s must be positive"):
        Spool(tmp_path, BIG, 0)
    with pytest.raises(SpoolError, match="line break"):
        Spool(tmp_path, BIG, DAY).append(["m value=1 1\nm value=2 2"])


def test_an_influxdb_outage_loses_nothing_and_drains_in_order(influxd, influx_db, tmp_path):
    t0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

    def run_readings(run: int) -> list[str]:
        rows = [
            {
                "time": t0 + timedelta(minutes=run, seconds=second),
                "meter_id": meter,
                "description": f"meter {meter}",
                "meter_type": "sdm630",
                "measurement": "voltageL1",
                "unit": "V",
                "value": 1000.0 * run + 10 * meter + second,
            }
            for meter in (1, 2)
            for second in range(0, 60, 10)
        ]
        frame = pd.DataFrame(rows)
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
        return reading_lines(frame)

    sent: list[list[str]] = []

    class Recording(InfluxWriter):
        def write(self, lines):
            super().write(lines)
            sent.append(list(lines))

    spool = Spool(tmp_path / "spool", BIG, DAY)
    with Recording(influxd.target(influx_db, timeout_s=2)) as writer:
        assert spool.write_through(run_readings(0), writer) == FlushResult(1, 12, 0)
        influxd.stop()
        try:
            for run in (1, 2):
                result = spool.write_through(run_readings(run), writer)
                assert isinstance(result.error, InfluxUnreachable)
                assert "connection refused" in str(result.error)
                assert (result.sent_batches, result.remaining_batches) == (0, run)
        finally:
            influxd.start()
        assert spool.status().points == 24
        assert spool.flush(writer) == FlushResult(2, 24, 0)

    assert sent == [run_readings(0), run_readings(1), run_readings(2)]
    rows = influxd.query('SELECT "value", "id" FROM "voltageL1" ORDER BY time', influx_db)
    assert len(rows) == 36
    expected = sorted(
        (
            int((t0 + timedelta(minutes=run, seconds=second)).timestamp() * 1000),
            str(meter),
            1000.0 * run + 10 * meter + second,
        )
        for run in range(3)
        for meter in (1, 2)
        for second in range(0, 60, 10)
    )
    assert sorted((row["time"], row["id"], row["value"]) for row in rows) == expected
    assert spool.status().batches == 0
