"""connectivity_check_job's op: does one meter answer? The sensor requests it for every new,
edited or re-enabled meter; a failed check fails the run, so it is red in the UI and can be
re-executed from there once the meter is fixed."""

from datetime import UTC, datetime

import dagster as dg

from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.influx.points import connectivity_line
from energymon_pipeline.modbus.connectivity import check_sync
from energymon_pipeline.modbus.links import LinkUnavailable
from energymon_pipeline.ops.link_pools import LinkPools
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.definitions import load_meter
from energymon_pipeline.resources import InfluxResource, RegistryResource


class ConnectivityConfig(dg.Config):
    meter_id: int
    #: Seconds to wait for the meter's link while another run reads it (ops/link_pools.py).
    link_wait_s: float = 120.0


@dg.op(
    description="TCP connect, then a Modbus read of the meter's first register (for a `sunspec` "
    "meter: SunSpec discovery, whose layout the polls then read; for an `auto` meter: "
    "identification, which records its type), holding the meter's link pool so no other run "
    "talks to the link meanwhile."
)
def check_meter_connectivity(
    context: dg.OpExecutionContext,
    config: ConnectivityConfig,
    registry: RegistryResource,
    influx: InfluxResource,
) -> str:
    engine = registry.engine()
    try:
        meter = load_meter(engine, config.meter_id)
    except EnergymonError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    pools = LinkPools.of(context, config.link_wait_s)
    try:
        with pools.hold_sync(meter.endpoint.link_key, meter.endpoint.link_name):
            if meter.meter_type == "sunspec":  # discover and keep its layout (devices/)
                from energymon_pipeline.devices.sunspec_store import discover_and_store

                outcome = discover_and_store(engine, meter)
            elif meter.meter_type == "auto":  # identify it and record its type (devices/)
                from energymon_pipeline.devices.identify import identify_and_store

                outcome = identify_and_store(engine, meter)
            else:
                outcome = check_sync(meter)
    except LinkUnavailable as error:  # not checked: the meter's state is not known, not bad
        raise dg.Failure(description=f"meter {meter.meter_id}: {error}") from None
    now = datetime.now(UTC)
    queries.record_status(
        engine, meter.meter_id, now, outcome.result, outcome.latency_ms, outcome.message
    )
    point = connectivity_line(
        time=now,
        meter_id=meter.meter_id,
        description=meter.description,
        meter_type=meter.meter_type,
        result=outcome.result,
        ok=outcome.ok,
        latency_ms=outcome.latency_ms,
    )
    write_path = influx.write_path()
    write_path.append([], [point])
    flushed = write_path.flush()
    if flushed.error is not None:
        context.log.warning(f"connectivity point spooled, not yet written: {flushed.error}")
    metadata = {
        "meter": meter.meter_id,
        "endpoint": str(meter.endpoint),
        "result": outcome.result,
        "latency_ms": outcome.latency_ms,
        "message": outcome.message,
    }
    if not outcome.ok:
        raise dg.Failure(
            description=f"meter {meter.meter_id} ({meter.endpoint}): {outcome.result}: "
            f"{outcome.message}",
            metadata={k: v for k, v in metadata.items() if v is not None},
        )
    context.add_output_metadata({k: v for k, v in metadata.items() if v is not None})
    context.log.info(f"meter {meter.meter_id} ({meter.endpoint}): {outcome.message}")
    return outcome.result
