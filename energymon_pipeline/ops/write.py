"""The last op of a poll run: spool the batch, send it (older batches first), report.

The batch is on disk before anything is sent, and leaves the spool only when InfluxDB has
acknowledged it. When InfluxDB is down the op retries once (a transient blip), then lets the
run succeed with the readings waiting in the spool: polling goes on and nothing is lost. An
error that waiting will not fix (wrong password, no right to create the database) fails the
run with that message; the batch still waits in the spool.
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from energymon_pipeline.influx.points import reading_lines, spool_health_line
from energymon_pipeline.influx.spool import FlushResult, SpoolBusy
from energymon_pipeline.influx.writer import InfluxError
from energymon_pipeline.modbus.reader import MeterResult
from energymon_pipeline.ops.poll import PollPlan, ReadingsFrame, meter_table
from energymon_pipeline.readings import health_lines
from energymon_pipeline.resources import InfluxResource

WRITE_RETRIES = 1
RETRY_DELAY_S = 3


def _transient(error: Exception) -> bool:
    return isinstance(error, SpoolBusy) or bool(getattr(error, "retryable", False))


@dg.op(
    description="Append the readings and health points to the spool, then send every pending "
    "batch to InfluxDB in order.",
    # Transient failures outside InfluxDB (e.g. a full disk under the spool) are retried too.
    retry_policy=dg.RetryPolicy(max_retries=WRITE_RETRIES, delay=RETRY_DELAY_S),
)
def write_readings(
    context: dg.OpExecutionContext,
    plan: PollPlan,
    results: list[MeterResult],
    readings: ReadingsFrame,
    influx: InfluxResource,
) -> None:
    frame: pd.DataFrame = readings
    now = datetime.now(UTC)
    metadata: dict[str, object] = {
        "meters": meter_table(results, frame),
        "meters ok": sum(r.ok for r in results),
        "meters failed": sum(not r.ok for r in results),
        "values": len(frame),
    }
    if plan.dry_run:
        context.log.info(f"dry run: {len(frame)} value(s) validated, nothing written")
        context.add_output_metadata({**metadata, "written": 0, "dry run": True})
        _fail_if_every_meter_failed(results)
        return

    spool = influx.spool()
    raw_spool = influx.raw_spool()
    readings_lines, health = reading_lines(frame), health_lines(results, frame, now)
    if context.retry_number == 0:  # a retry must not spool the same batch twice
        if influx.raw_retention:  # raw readings go to their own retention policy
            raw_spool.append(readings_lines)
            spool.append(health)
        else:
            spool.append(readings_lines + health)
    queues = [raw_spool, spool] if influx.raw_retention else [spool]
    outcomes = [_flush_raw(influx, raw_spool)] if influx.raw_retention else []
    with influx.writer() as writer:
        outcomes.append(spool.flush(writer))
        statuses = [queue.status() for queue in queues]
        batches = sum(st.batches for st in statuses)
        points = sum(st.points for st in statuses)
        if all(outcome.ok for outcome in outcomes):
            # The backlog point goes straight out: it describes the spool, it is not data.
            try:
                backlog = spool_health_line(
                    time=now, batches=batches, points=points,
                    bytes_=sum(st.bytes for st in statuses),
                )  # fmt: skip
                writer.write([backlog])
            except Exception as error:  # noqa: BLE001 - a health point must never fail a run
                context.log.warning(f"spool health point not written: {error}")
    error = next((outcome.error for outcome in outcomes if outcome.error is not None), None)
    metadata.update(
        {
            "written points": sum(outcome.sent_points for outcome in outcomes),
            "sent batches": sum(outcome.sent_batches for outcome in outcomes),
            "spool backlog (batches)": batches,
            "spool backlog (points)": points,
            "influxdb": influx.target().where,
        }
    )
    if error is not None:
        metadata["influxdb error"] = str(error)
        if not _transient(error):
            context.add_output_metadata(metadata)
            raise dg.Failure(
                description=f"{error} ({batches} batch(es) wait in the spool)",
                metadata={"spool backlog (batches)": batches},
                allow_retries=False,
            )
        if context.retry_number < WRITE_RETRIES:
            context.log.warning(f"{error}; retrying in {RETRY_DELAY_S} s")
            raise dg.RetryRequested(
                max_retries=WRITE_RETRIES, seconds_to_wait=RETRY_DELAY_S
            ) from None
        context.log.warning(
            f"{error}; the readings wait in the spool ({batches} batch(es), "
            f"{points} point(s)) and are sent first when InfluxDB answers"
        )
    context.add_output_metadata(metadata)
    _fail_if_every_meter_failed(results)


def _flush_raw(influx: InfluxResource, raw_spool) -> FlushResult:
    """Send the raw readings' spool to their retention policy (created on first use)."""
    try:
        writer = influx.raw_writer()
    except InfluxError as error:
        return FlushResult(0, 0, raw_spool.status().batches, error=error)
    with writer:
        return raw_spool.flush(writer)


def _fail_if_every_meter_failed(results: list[MeterResult]) -> None:
    """A run in which some meters failed succeeds (their errors are in the table); a run in
    which every meter failed is red in the UI, after their health points were written."""
    if results and not any(r.readings for r in results):
        errors = "; ".join(f"meter {r.meter.meter_id}: {r.error}" for r in results[:5])
        raise dg.Failure(description=f"every meter failed: {errors}", allow_retries=False)
