"""The one way readings reach InfluxDB: spool first, then send, oldest first.

The poll op, the connectivity check, `energymon spool status|flush` and the benchmark all go
through `WritePath`, so they see the same spools. With INFLUXDB_RAW_RETENTION set, raw readings
queue in a spool of their own (`<spool>/raw`) bound for the `energymon_raw` retention policy,
and everything else (health points) in the main spool for the default policy; without it, one
spool holds both.

Nothing here imports dagster: the op adds only Dagster's part (events, metadata, retry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.influx.points import spool_health_line
from energymon_pipeline.influx.spool import FlushResult, Spool, SpoolLoss, SpoolStatus
from energymon_pipeline.influx.writer import InfluxError, InfluxTarget, InfluxWriter

RAW_RETENTION_POLICY = "energymon_raw"
RAW_SPOOL_DIR = "raw"


@dataclass
class WriteOutcome:
    """What one `WritePath.flush` did, over every spool."""

    sent_points: int = 0
    sent_batches: int = 0
    #: The backlog left, summed over the spools.
    backlog_batches: int = 0
    backlog_points: int = 0
    backlog_bytes: int = 0
    #: Why sending stopped early (the first error); the rest waits in the spool.
    error: EnergymonError | None = None
    #: One line per batch moved to rejected/ (refused by InfluxDB, or unreadable).
    rejected: list[str] = field(default_factory=list)
    #: Batches the spools' size/age bounds deleted unsent (appends and flushes together).
    losses: list[SpoolLoss] = field(default_factory=list)
    #: Why the `energymon_spool` point could not be written or spooled, if it could not.
    backlog_point_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def lost_points(self) -> int:
        return sum(loss.points for loss in self.losses)

    @property
    def lost_batches(self) -> int:
        return sum(loss.batches for loss in self.losses)


class WritePath:
    """The spool(s) in front of one InfluxDB database."""

    def __init__(
        self,
        target: InfluxTarget,
        spool_dir: str | Path,
        max_bytes: int,
        max_age_s: float,
        raw_retention: str | None = None,
    ) -> None:
        self.target = target
        self.raw_retention = raw_retention or None
        self.spool = Spool(Path(spool_dir), max_bytes, max_age_s)
        self.raw_spool = (
            Spool(Path(spool_dir) / RAW_SPOOL_DIR, max_bytes, max_age_s)
            if self.raw_retention
            else self.spool
        )

    @classmethod
    def from_settings(cls, influx, spool) -> WritePath:
        """The write path of `settings.influx()` and `settings.spool()` (an InfluxSettings and
        a SpoolSettings), which the caller reads: this layer does not."""
        return cls(
            InfluxTarget.from_settings(influx),
            spool.path,
            spool.max_bytes,
            spool.max_age_s,
            influx.raw_retention,
        )

    def spools(self) -> list[Spool]:
        """Every spool, in the order they are flushed (raw readings first)."""
        return [self.raw_spool, self.spool] if self.raw_retention else [self.spool]

    def writer(self) -> InfluxWriter:
        return InfluxWriter(self.target)

    def append(self, readings: Sequence[str], health: Sequence[str] = ()) -> None:
        """Store a run's readings and health points durably, before anything is sent."""
        if self.raw_retention:
            self.raw_spool.append(readings)
            self.spool.append(health)
        else:
            self.spool.append([*readings, *health])

    def status(self) -> list[tuple[Spool, SpoolStatus]]:
        return [(spool, spool.status()) for spool in self.spools()]

    def flush(self, now: datetime | None = None) -> WriteOutcome:
        """Send every spool's pending batches, oldest first. With `now`, then write the
        `energymon_spool` backlog point for that time (straight out when InfluxDB took
        everything, else spooled to follow the backlog, so a loss is never unrecorded)."""
        results = []
        if self.raw_retention:
            results.append(self._flush_raw())
        with self.writer() as writer:
            results.append(self.spool.flush(writer))
            outcome = self._outcome(results)
            if now is not None:
                outcome.backlog_point_error = self._record_backlog(writer, outcome, now)
        return outcome

    def _flush_raw(self) -> FlushResult:
        with InfluxWriter(replace(self.target, retention_policy=RAW_RETENTION_POLICY)) as writer:
            try:
                # One query per run: each run is a new process, so there is nothing to cache.
                writer.ensure_retention_policy(RAW_RETENTION_POLICY, self.raw_retention)
            except InfluxError as error:
                return FlushResult(0, 0, self.raw_spool.status().batches, error=error)
            return self.raw_spool.flush(writer)

    def _outcome(self, results: list[FlushResult]) -> WriteOutcome:
        outcome = WriteOutcome(
            sent_points=sum(r.sent_points for r in results),
            sent_batches=sum(r.sent_batches for r in results),
            error=next((r.error for r in results if r.error is not None), None),
            rejected=[line for r in results for line in r.rejected],
            losses=[loss for spool in self.spools() for loss in spool.losses],
        )
        for _, status in self.status():
            outcome.backlog_batches += status.batches
            outcome.backlog_points += status.points
            outcome.backlog_bytes += status.bytes
        return outcome

    def _record_backlog(
        self, writer: InfluxWriter, outcome: WriteOutcome, now: datetime
    ) -> str | None:
        line = spool_health_line(
            time=now,
            batches=outcome.backlog_batches,
            points=outcome.backlog_points,
            bytes_=outcome.backlog_bytes,
            lost_batches=outcome.lost_batches,
            lost_points=outcome.lost_points,
            rejected_batches=len(outcome.rejected),
        )
        if outcome.ok:
            try:
                writer.write([line])
                return None
            except EnergymonError:
                pass
        try:
            self.spool.append([line])
        except EnergymonError as error:  # a health point must never cost the run
            return str(error)
        return None
