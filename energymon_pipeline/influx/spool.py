"""The durable write-ahead spool in front of InfluxDB: readings survive an InfluxDB outage and
a crash of the process that read them.

Every batch becomes one file in the spool folder before anything is sent: written under a temp
name, fsync'd, renamed into place and the folder fsync'd. A batch file is removed only after
InfluxDB acknowledged the whole batch, so a crash anywhere in between leaves the batch to be
sent again by the next flush. Re-sending is harmless: points carry explicit timestamps, and a
point written twice with the same series and time is stored once.

Layout: `<seq>-<created_ms>-<points>.lp` files (line protocol, one point per line). `seq` is one
more than the highest sequence number in the folder, so the order survives restarts; files are
sent oldest `seq` first. `rejected/` holds batches that can never be sent: refused by InfluxDB
as bad requests (400), or unreadable (not UTF-8 text, say after a disk fault). They would fail
the same way forever and must not block the batches behind them.

Bounds: the pending batches are kept under `max_bytes` in total and younger than `max_age_s`;
beyond that the oldest go first, with one ERROR log line per clean-up saying how much was lost,
and a `SpoolLoss` in `Spool.losses` for the caller to report (a run's event log, the
`energymon_spool` health point). The newest batch is never dropped for size, even when it
alone exceeds `max_bytes`.

Two processes may use one folder (a poll run and `energymon spool flush`): `.lock` (held
briefly, for appends, removals and clean-ups) and `.flush.lock` (held while a flush drains the
queue, so batches go out once and in order) are `fcntl.flock` locks, waited for at most
`lock_timeout_s`. flock needs a local filesystem (not NFS).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.influx.writer import InfluxBadRequest

log = logging.getLogger(__name__)

REJECTED_DIR = "rejected"
_SUFFIX = ".lp"
_TEMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.lp$")
_LOCK = ".lock"
_FLUSH_LOCK = ".flush.lock"


class LineWriter(Protocol):
    """What the spool sends to: `InfluxWriter`, or anything that raises `InfluxBadRequest` for
    points that can never be written and another `EnergymonError` when it cannot write now."""

    def write(self, lines: Sequence[str]) -> None: ...


class SpoolError(EnergymonError):
    """The spool folder cannot be used."""


class SpoolBusy(SpoolError):
    """Another process held a spool lock for longer than the wait allowed."""


@dataclass(frozen=True, order=True)
class BatchId:
    """One spooled batch, as encoded in its file name."""

    seq: int
    created_ms: int
    points: int

    @property
    def name(self) -> str:
        return f"{self.seq:012d}-{self.created_ms:013d}-{self.points}{_SUFFIX}"

    @classmethod
    def parse(cls, name: str) -> BatchId | None:
        match = _NAME.match(name)
        if match is None:
            return None
        seq, created_ms, points = (int(group) for group in match.groups())
        return cls(seq, created_ms, points)


@dataclass(frozen=True)
class _Pending:
    batch: BatchId
    path: Path
    size: int


@dataclass(frozen=True)
class FlushResult:
    """What one flush did. `error` is why it stopped early (InfluxDB unreachable, a lock held
    by another flusher); the batches it did not send stay spooled, in order. `rejected` says,
    one line each, which batches were moved to rejected/ and why."""

    sent_batches: int
    sent_points: int
    remaining_batches: int
    error: EnergymonError | None = None
    rejected: tuple[str, ...] = ()

    @property
    def rejected_batches(self) -> int:
        return len(self.rejected)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class SpoolLoss:
    """Batches a bounds clean-up deleted unsent: data that will never reach InfluxDB."""

    batches: int
    points: int
    bytes: int
    reason: str

    def __str__(self) -> str:
        return (
            f"dropped {_plural(self.batches, 'batch')}, oldest first ({self.points} points, "
            f"{self.bytes} bytes), never to be written to InfluxDB: {self.reason}"
        )


@dataclass(frozen=True)
class SpoolStatus:
    batches: int
    points: int
    bytes: int
    oldest_age_s: float | None
    rejected_batches: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_lines(path: Path) -> list[str]:
    """A batch file's lines. Split on "\\n" only: str.splitlines would also split inside tag
    values holding characters such as U+2028."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _unreadable(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text: {error.reason} at byte {error.start}"
    return str(getattr(error, "strerror", None) or error)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('h') else 's'}"


class Spool:
    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int,
        max_age_s: float,
        *,
        lock_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0:
            raise SpoolError(f"spool {path}: max_bytes must be positive, not {max_bytes}")
        if max_age_s <= 0:
            raise SpoolError(f"spool {path}: max_age_s must be positive, not {max_age_s}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self.lock_timeout_s = float(lock_timeout_s)
        self._clock = clock
        #: What this object's bounds clean-ups deleted unsent, for the caller to report.
        self.losses: list[SpoolLoss] = []
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SpoolError(f"spool {self.path}: cannot create the folder: {error}") from error

    def __repr__(self) -> str:
        return (
            f"Spool({str(self.path)!r}, max_bytes={self.max_bytes}, max_age_s={self.max_age_s:g})"
        )

    @property
    def rejected_path(self) -> Path:
        return self.path / REJECTED_DIR

    # -- locking ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self, name: str, purpose: str) -> Iterator[None]:
        fd = os.open(self.path / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SpoolBusy(
                            f"spool {self.path}: another process has held the {purpose} lock "
                            f"({name}) for more than {self.lock_timeout_s:g} s"
                        ) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- reading the folder -----------------------------------------------------------------

    def _pending(self) -> list[_Pending]:
        pending = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                batch = BatchId.parse(entry.name)
                if batch is None:
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:  # sent or dropped by another process meanwhile
                    continue
                pending.append(_Pending(batch, Path(entry.path), size))
        pending.sort(key=lambda item: item.batch.seq)
        return pending

    def _remove_temps(self) -> None:
        # Appends write their temp file while holding the lock, so a temp file seen under the
        # lock was left by a crashed append that never returned a BatchId.
        with os.scandir(self.path) as entries:
            temps = [Path(entry.path) for entry in entries if entry.name.startswith(_TEMP_PREFIX)]
        for temp in temps:
            temp.unlink(missing_ok=True)

    def status(self) -> SpoolStatus:
        """The pending backlog (without waiting for any lock)."""
        pending = self._pending()
        oldest_age_s = None
        if pending:
            oldest_ms = min(item.batch.created_ms for item in pending)
            oldest_age_s = max(0.0, self._clock() - oldest_ms / 1000)
        rejected = 0
        if self.rejected_path.is_dir():
            rejected = sum(1 for p in self.rejected_path.iterdir() if p.suffix == _SUFFIX)
        return SpoolStatus(
            batches=len(pending),
            points=sum(item.batch.points for item in pending),
            bytes=sum(item.size for item in pending),
            oldest_age_s=oldest_age_s,
            rejected_batches=rejected,
        )

    # -- writing ----------------------------------------------------------------------------

    def append(self, lines: Sequence[str]) -> BatchId | None:
        """Stores the lines as one batch, durably (file and folder fsync'd) before returning.
        Returns None for no lines. Then drops the oldest batches if the bounds are exceeded."""
        lines = list(lines)
        if not lines:
            return None
        if any("\n" in line for line in lines):
            raise SpoolError(f"spool {self.path}: a line protocol line contains a line break")
        data = ("\n".join(lines) + "\n").encode("utf-8")
        with self._locked(_LOCK, "spool"):
            self._remove_temps()
            pending = self._pending()
            seq = pending[-1].batch.seq + 1 if pending else 1
            batch = BatchId(seq, int(self._clock() * 1000), len(lines))
            final = self.path / batch.name
            temp = self.path / f"{_TEMP_PREFIX}{batch.name}.{os.getpid()}"
            try:
                with open(temp, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.rename(temp, final)
                _fsync_dir(self.path)
            except OSError as error:
                temp.unlink(missing_ok=True)
                raise SpoolError(
                    f"spool {self.path}: cannot store a batch of {len(lines)} points: {error}"
                ) from error
            pending.append(_Pending(batch, final, len(data)))
            self._enforce_bounds(pending, keep=batch)
        return batch

    def _enforce_bounds(self, pending: list[_Pending], keep: BatchId | None = None) -> None:
        """Drops the oldest batches beyond the age and size bounds; called under `.lock`."""
        now_ms = self._clock() * 1000
        max_age_ms = self.max_age_s * 1000
        too_old, kept = [], []
        for item in pending:
            old = item.batch != keep and now_ms - item.batch.created_ms > max_age_ms
            (too_old if old else kept).append(item)
        total = sum(item.size for item in kept)
        too_big = []
        for item in kept[:-1]:  # oldest first; the newest batch stays, however big
            if total <= self.max_bytes:
                break
            too_big.append(item)
            total -= item.size
        dropped = too_old + too_big
        if not dropped:
            return
        for item in dropped:
            item.path.unlink(missing_ok=True)
        _fsync_dir(self.path)
        reasons = []
        if too_old:
            reasons.append(
                f"{_plural(len(too_old), 'batch')} older than max_age_s={self.max_age_s:g}"
            )
        if too_big:
            reasons.append(
                f"{_plural(len(too_big), 'batch')} over max_bytes={self.max_bytes} in total"
            )
        loss = SpoolLoss(
            batches=len(dropped),
            points=sum(item.batch.points for item in dropped),
            bytes=sum(item.size for item in dropped),
            reason="; ".join(reasons),
        )
        self.losses.append(loss)
        log.error("spool %s: %s", self.path, loss)

    def _quarantine(self, item: _Pending, why: str) -> str | None:
        """Moves a batch that can never be sent to rejected/; called under `.lock`. Returns the
        line saying so (None when the batch was gone already)."""
        self.rejected_path.mkdir(exist_ok=True)
        target = self.rejected_path / item.path.name
        if target.exists():
            target = target.with_name(f"{target.stem}-{uuid.uuid4().hex[:8]}{_SUFFIX}")
        try:
            os.rename(item.path, target)
        except FileNotFoundError:  # dropped by a bounds clean-up meanwhile
            return None
        _fsync_dir(self.rejected_path)
        _fsync_dir(self.path)
        message = (
            f"spool {self.path}: batch {item.path.name} {why}; moved it to {target} and will "
            "not retry it"
        )
        log.error("%s", message)
        return message

    def _acknowledge(self, item: _Pending) -> None:
        with self._locked(_LOCK, "spool"):
            item.path.unlink(missing_ok=True)
            _fsync_dir(self.path)

    # -- sending ----------------------------------------------------------------------------

    def flush(self, writer: LineWriter) -> FlushResult:
        """Sends the pending batches oldest first, removing each once acknowledged. Stops at the
        first failure (the rest stay, in order); a batch refused as a bad request is moved to
        rejected/ and the flush goes on. Batches appended meanwhile are sent too."""
        try:
            with self._locked(_FLUSH_LOCK, "flush"):
                return self._flush(writer)
        except SpoolBusy as error:
            return FlushResult(0, 0, len(self._pending()), error)

    def _flush(self, writer: LineWriter) -> FlushResult:
        sent_batches = sent_points = 0
        rejected: list[str] = []

        def set_aside(item: _Pending, why: str) -> None:
            with self._locked(_LOCK, "spool"):
                message = self._quarantine(item, why)
            if message is not None:
                rejected.append(message)

        with self._locked(_LOCK, "spool"):
            self._remove_temps()
            self._enforce_bounds(self._pending())
        while pending := self._pending():
            for item in pending:
                try:
                    lines = _read_lines(item.path)
                except FileNotFoundError:  # dropped by a bounds clean-up meanwhile
                    continue
                except (UnicodeDecodeError, OSError) as error:
                    set_aside(item, f"cannot be read ({_unreadable(error)})")
                    continue
                try:
                    writer.write(lines)
                except InfluxBadRequest as error:
                    set_aside(item, f"was refused by InfluxDB as a bad request: {error}")
                    continue
                except EnergymonError as error:
                    return FlushResult(
                        sent_batches, sent_points, len(self._pending()), error, tuple(rejected)
                    )
                self._acknowledge(item)
                sent_batches += 1
                sent_points += len(lines)
        return FlushResult(sent_batches, sent_points, 0, None, tuple(rejected))

    def write_through(self, lines: Sequence[str], writer: LineWriter) -> FlushResult:
        """Appends the lines as a batch, then flushes: older batches go out first, and the new
        one stays spooled if InfluxDB cannot take it now."""
        self.append(lines)
        return self.flush(writer)
