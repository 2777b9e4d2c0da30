"""Ops of the rollup jobs: one hour (or day) of stored readings -> one point per series.

These are the jobs users backfill from the UI after an outage, a late-registered meter or a
changed register map: re-running a partition rewrites the same points (idempotent)."""

import dagster as dg

from energymon_pipeline.influx import rollup
from energymon_pipeline.registry.definitions import cumulative_series
from energymon_pipeline.resources import InfluxResource, RegistryResource


def _report(context: dg.OpExecutionContext, result: rollup.RollupResult, window) -> None:
    context.add_output_metadata(
        {
            "window": f"{window.start.isoformat()} - {window.end.isoformat()}",
            "series rolled up": result.series,
            "points read": result.points_read,
            "counters": result.counters,
            "counters with resets": result.counters_with_resets,
        }
    )
    context.log.info(
        f"{result.series} series, {result.points_read} points read, "
        f"{result.counters_with_resets} counter(s) with resets"
    )


@dg.op(description="Aggregate the partition's hour of raw readings into energymon_rollup_1h.")
def rollup_hour(
    context: dg.OpExecutionContext, registry: RegistryResource, influx: InfluxResource
) -> int:
    window = context.partition_time_window
    counters = cumulative_series(registry.engine())
    with influx.writer() as writer:
        result = rollup.hourly(
            writer, window.start, window.end, counters, source_policy=influx.raw_policy
        )
        writer.write(result.lines)
    _report(context, result, window)
    return result.series


@dg.op(description="Aggregate the partition's day of hourly rollups into energymon_rollup_1d.")
def rollup_day(context: dg.OpExecutionContext, influx: InfluxResource) -> int:
    window = context.partition_time_window
    with influx.writer() as writer:
        result = rollup.daily(writer, window.start, window.end)
        writer.write(result.lines)
    _report(context, result, window)
    return result.series
