"""The energy rollups as partitioned assets, so the UI shows their lineage, which hours and days
are rolled up, and backfills are launched from the asset catalog:

    raw_readings (external: written by poll_meters_job)
      -> energymon_rollup_1h (hourly partitions)
        -> energymon_rollup_1d (daily partitions; each day depends on its hours)

An asset is the InfluxDB measurement it writes. The rollup itself is influx/rollup.py; here
is only Dagster's part: the partition's window in, metadata and check results out. Re-running a
partition rewrites the same points, so a backfill never doubles anything.
"""

import warnings
from dataclasses import dataclass

import dagster as dg

from energymon_pipeline.influx import rollup
from energymon_pipeline.influx.rollup_coverage import rolled_up_meters
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.definitions import cumulative_series
from energymon_pipeline.resources import InfluxResource, RegistryResource

GROUP = "energy_rollups"
COVERAGE_CHECK = "every_enabled_meter_rolled_up"

raw_readings = dg.AssetSpec(
    "raw_readings",
    description="The meters' readings in InfluxDB: one measurement per register, field "
    "`value`, tags id, description, dataunit, type (in the `energymon_raw` retention policy "
    "when INFLUXDB_RAW_RETENTION is set). Written by poll_meters_job, not by an asset.",
    group_name=GROUP,
    kinds={"influxdb"},
)


@dataclass(frozen=True)
class Rollups:
    """The rollup assets and their checks, built for one start date and time zone."""

    hourly: dg.AssetsDefinition
    daily: dg.AssetsDefinition
    checks: tuple[dg.AssetChecksDefinition, ...]

    @property
    def assets(self) -> list[dg.AssetSpec | dg.AssetsDefinition]:
        return [raw_readings, self.hourly, self.daily]


def _materialized(
    context: dg.AssetExecutionContext, result: rollup.RollupResult
) -> dg.MaterializeResult:
    window = context.partition_time_window
    context.log.info(
        f"{result.series} series, {result.points_read} points read, "
        f"{result.counters_with_resets} counter(s) with resets"
    )
    return dg.MaterializeResult(
        metadata={
            "window": f"{window.start.isoformat()} - {window.end.isoformat()}",
            "series rolled up": result.series,
            "points read": result.points_read,
            "counters": result.counters,
            "counters with resets": result.counters_with_resets,
        }
    )


def _label(meter: dict) -> str:
    return f"meter {meter['id']}" + (f" ({meter['description']})" if meter["description"] else "")


def _coverage_check(asset: dg.AssetsDefinition, measurement: str, source: str):
    """`every_enabled_meter_rolled_up` of one rollup asset, per partition: the registry's
    enabled meters against the meters with a point of `measurement` in the partition's window.
    A failure is a warning, not a failed run: a meter that was offline all hour had nothing
    to roll up, and is named in the result."""
    with warnings.catch_warnings():  # partitioned checks are preview in the pinned 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.asset_check(
            asset=asset,
            name=COVERAGE_CHECK,
            partitions_def=asset.partitions_def,
            description=f"Every enabled meter has its {measurement} point for the partition; "
            f"a meter without one had no {source} in the window (offline, or added later).",
        )
        def coverage(
            context: dg.AssetCheckExecutionContext,
            registry: RegistryResource,
            influx: InfluxResource,
        ) -> dg.AssetCheckResult:
            window = context.partition_time_window
            enabled = queries.list_meters(registry.engine(), enabled_only=True)
            with influx.writer() as writer:
                present = rolled_up_meters(writer, measurement, window.start, window.end)
            missing = [meter for meter in enabled if str(meter["id"]) not in present]
            names = ", ".join(_label(meter) for meter in missing)
            return dg.AssetCheckResult(
                passed=not missing,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"no {source} in {context.partition_key}: {names}"
                    if missing
                    else f"all {len(enabled)} enabled meter(s) rolled up"
                ),
                metadata={
                    "enabled meters": len(enabled),
                    "meters rolled up": len(enabled) - len(missing),
                    "meters without rollup": names or "none",
                    "meter ids without rollup": [meter["id"] for meter in missing],
                },
            )

    return coverage


def build_rollup_assets(start_date: str, timezone: str) -> Rollups:
    """Hourly and daily partitions from ENERGYMON_ROLLUP_START (a date in `timezone`, TZ)."""

    @dg.asset(
        key=rollup.HOURLY,
        deps=[raw_readings],
        partitions_def=dg.HourlyPartitionsDefinition(
            start_date=f"{start_date}-00:00", timezone=timezone
        ),
        group_name=GROUP,
        kinds={"influxdb"},
        description="Per meter and measurement: count, mean, min, max, last and (counters) "
        "consumption of one hour of readings. Backfill it after an outage.",
    )
    def hourly(
        context: dg.AssetExecutionContext, registry: RegistryResource, influx: InfluxResource
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        counters = cumulative_series(registry.engine())
        with influx.writer() as writer:
            result = rollup.hourly(
                writer, window.start, window.end, counters, source_policy=influx.raw_policy
            )
            writer.write(result.lines)
        return _materialized(context, result)

    @dg.asset(
        key=rollup.DAILY,
        deps=[dg.AssetDep(hourly, partition_mapping=dg.TimeWindowPartitionMapping())],
        partitions_def=dg.DailyPartitionsDefinition(start_date=start_date, timezone=timezone),
        group_name=GROUP,
        kinds={"influxdb"},
        description="One day (in TZ) of hourly rollups rolled up again.",
    )
    def daily(context: dg.AssetExecutionContext, influx: InfluxResource) -> dg.MaterializeResult:
        window = context.partition_time_window
        with influx.writer() as writer:
            result = rollup.daily(writer, window.start, window.end)
            writer.write(result.lines)
        return _materialized(context, result)

    return Rollups(
        hourly=hourly,
        daily=daily,
        checks=(
            _coverage_check(hourly, rollup.HOURLY, "readings"),
            _coverage_check(daily, rollup.DAILY, "hourly rollups"),
        ),
    )
