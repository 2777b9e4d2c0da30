"""The last op of a poll run: spool the batch, send it (older batches first), report.

The write path itself (spools, sending, the backlog point) is influx/write_path.py, shared
with the CLI and the benchmark; this op adds Dagster's part: events, metadata, failure.

The batch is on disk before anything is sent, and leaves the spool only when InfluxDB has
acknowledged it. When InfluxDB is down the op tries once more after a short pause (a transient
blip), then lets the run succeed with one warning line and the readings waiting in the spool:
polling goes on and nothing is lost. An error that waiting will not fix (wrong password, no
right to create the database) fails the run with that message; the batch still waits in the
spool. Data the spool's bounds delete unsent, and batches set aside as unsendable, are error
events and metadata of the run, never only a log line.
"""

import time
from collections import Counter
from datetime import UTC, datetime

import dagster as dg

from energymon_pipeline.influx.poll_health import MeterCounts, meter_ok, poll_batch
from energymon_pipeline.influx.spool import SpoolBusy
from energymon_pipeline.influx.write_path import WriteOutcome
from energymon_pipeline.modbus.reader import MeterResult
from energymon_pipeline.ops import run_process
from energymon_pipeline.ops.types import PollPlan, ReadingsFrame
from energymon_pipeline.resources import InfluxResource

#: Retries of the whole op for failures outside InfluxDB (e.g. a full disk under the spool).
WRITE_RETRIES = 1
RETRY_DELAY_S = 3


def _transient(error: Exception) -> bool:
    return isinstance(error, SpoolBusy) or bool(getattr(error, "retryable", False))


@dg.op(
    description="Append the readings and health points to the spool, then send every pending "
    "batch to InfluxDB in order.",
    retry_policy=dg.RetryPolicy(max_retries=WRITE_RETRIES, delay=RETRY_DELAY_S),
)
def write_readings(
    context: dg.OpExecutionContext,
    plan: PollPlan,
    results: list[MeterResult],
    readings: ReadingsFrame,
    dropped: dict,
    influx: InfluxResource,
) -> None:
    frame = readings  # a pandas DataFrame (ReadingsFrame's check)
    run_process.freeze_heap()
    now = datetime.now(UTC)
    batch = poll_batch(results, frame, Counter(dropped), now, plan.due)
    for (meter_id, reason), count in sorted(batch.unencodable.items(), key=str):
        context.log.warning(f"meter {meter_id}: {count} value(s) not written: {reason}")
    counts = batch.counts
    ok = sum(meter_ok(r, counts.get(r.meter.meter_id, MeterCounts())) for r in results)
    table, unlisted = meter_table(results, counts)
    metadata: dict[str, object] = {
        "meters": table,
        **({"meters not listed (ok)": unlisted} if unlisted else {}),
        "meters ok": ok,
        "meters failed": len(results) - ok,
        "values": len(batch.lines),
        "dropped values": sum(c.dropped_total for c in counts.values()),
    }
    if plan.dry_run:
        context.log.info(f"dry run: {len(batch.lines)} value(s) validated, nothing written")
        context.add_output_metadata({**metadata, "written": 0, "dry run": True})
        _fail_if_every_meter_failed(results)
        return

    path = influx.write_path()
    # Appending again on an op retry is harmless: points carry their timestamps.
    path.append(batch.lines, batch.health)
    outcome = path.flush(now)
    if outcome.error is not None and _transient(outcome.error):
        time.sleep(RETRY_DELAY_S)  # a blip, or InfluxDB restarting
        outcome = _merge(outcome, path.flush())
    _report_losses(context, outcome)
    metadata.update(
        {
            "written points": outcome.sent_points,
            "sent batches": outcome.sent_batches,
            "spool backlog (batches)": outcome.backlog_batches,
            "spool backlog (points)": outcome.backlog_points,
            "points lost": outcome.lost_points,
            "batches rejected": len(outcome.rejected),
            "influxdb": influx.target().where,
        }
    )
    error = outcome.error
    if error is not None:
        metadata["influxdb error"] = str(error)
        context.add_output_metadata(metadata)
        if not _transient(error):
            raise dg.Failure(
                description=f"{error} ({outcome.backlog_batches} batch(es) wait in the spool)",
                metadata={"spool backlog (batches)": outcome.backlog_batches},
                allow_retries=False,
            )
        context.log.warning(
            f"{error}; the readings wait in the spool ({outcome.backlog_batches} batch(es), "
            f"{outcome.backlog_points} point(s)) and are sent first when InfluxDB answers"
        )
    else:
        context.add_output_metadata(metadata)
    _fail_if_every_meter_failed(results)


#: The most meters a run's table lists. Past it, the table lists the meters that are not ok
#: (up to this many) and counts the others: the table is stored in every run's events, and a
#: 500-meter run's took 86 kB of the 138 kB its events held (docs/performance.md, capacity);
#: every meter's outcome is in the `energymon_poll` points either way.
METER_TABLE_MAX_ROWS = 100


def meter_table(
    results: list[MeterResult], counts: dict[int, MeterCounts]
) -> tuple[dg.TableMetadataValue, int]:
    """The per-meter table a poll run shows in the UI (`ok` only when every value was read
    and written; `error` names failed requests and dropped values), and how many ok meters
    it leaves out (`METER_TABLE_MAX_ROWS`)."""
    records = []
    listed = results
    if len(results) > METER_TABLE_MAX_ROWS:
        listed = [
            r for r in results if not meter_ok(r, counts.get(r.meter.meter_id, MeterCounts()))
        ][:METER_TABLE_MAX_ROWS]
    for r in listed:
        count = counts.get(r.meter.meter_id, MeterCounts())
        errors = [r.error] if r.error else []
        records.append(
            dg.TableRecord(
                {
                    "meter": r.meter.meter_id,
                    "description": r.meter.description or "",
                    "ok": meter_ok(r, count),
                    "latency_ms": round(r.mean_latency_ms, 1)
                    if r.mean_latency_ms is not None
                    else None,
                    "requests": r.requests,
                    "values": count.written,
                    "dropped": count.dropped_total,
                    "error": "; ".join(errors + count.describe_drops()),
                }
            )
        )
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("meter", "int"),
            dg.TableColumn("description", "string"),
            dg.TableColumn("ok", "bool"),
            dg.TableColumn("latency_ms", "float"),
            dg.TableColumn("requests", "int"),
            dg.TableColumn("values", "int"),
            dg.TableColumn("dropped", "int"),
            dg.TableColumn("error", "string"),
        ]
    )
    unlisted = sum(meter_ok(r, counts.get(r.meter.meter_id, MeterCounts())) for r in results) - sum(
        bool(record.data["ok"]) for record in records
    )
    return dg.MetadataValue.table(records, schema=schema), unlisted


def _merge(first: WriteOutcome, second: WriteOutcome) -> WriteOutcome:
    """Two flushes of one run as one outcome (losses accumulate on the spools already)."""
    second.sent_points += first.sent_points
    second.sent_batches += first.sent_batches
    second.rejected = first.rejected + second.rejected
    second.backlog_point_error = first.backlog_point_error or second.backlog_point_error
    return second


def _report_losses(context: dg.OpExecutionContext, outcome: WriteOutcome) -> None:
    for loss in outcome.losses:
        context.log.error(f"spool: {loss}")
    for rejected in outcome.rejected:
        context.log.error(rejected)
    if outcome.backlog_point_error:
        context.log.warning(f"spool health point not recorded: {outcome.backlog_point_error}")


def _fail_if_every_meter_failed(results: list[MeterResult]) -> None:
    """A run in which some meters failed succeeds (their errors are in the table); a run in
    which every meter failed is red in the UI, after their health points were written."""
    if results and not any(r.values_read for r in results):
        errors = "; ".join(f"meter {r.meter.meter_id}: {r.error}" for r in results[:5])
        raise dg.Failure(description=f"every meter failed: {errors}", allow_retries=False)
