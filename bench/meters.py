"""The meters under test: SDM630s with the full shipped register map (the `sdm630` profile, the
original's 27 production registers), built the way the registry loader builds them."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    Order,
    RegisterSpec,
)
from energymon_pipeline.registry.profiles import profile_rows

METER_TYPE = "sdm630"


@cache
def sdm630_registers() -> tuple[RegisterSpec, ...]:
    registers = []
    for line, row in profile_rows(METER_TYPE):
        registers.append(
            RegisterSpec(
                measurement=row["measurement_name"],
                address=int(row["register_address"]),
                data_type=DataType(int(row["data_type"])),
                function_code=FunctionCode(int(row["function_code"])),
                word_order=Order(int(row["word_order"])),
                byte_order=Order(int(row["byte_order"])),
                unit=row["data_unit"] or None,
                register_id=line,
            )
        )
    return tuple(registers)


def meter_specs(endpoints: Iterable[dict], max_connections: int | None = None) -> list[MeterSpec]:
    """One MeterSpec per fleet member ({"index", "host", "port", "unit"}), with the registry's
    defaults for everything a row leaves empty (timeout, retries, plan options).

    `max_connections` is the link setting of every meter (None: not set, the default of 1
    connection per link). The plain fleet sets it to its meters per port: each port stands for
    that many meters with an address each, which ours reads on a connection each."""
    registers = sdm630_registers()
    return [
        MeterSpec(
            meter_id=1 + member["index"],
            endpoint=Endpoint(
                host=member["host"],
                port=member["port"],
                unit_id=member["unit"],
                max_connections=max_connections,
            ),
            meter_type=METER_TYPE,
            description=f"bench meter {1 + member['index']}",
            registers=registers,
        )
        for member in endpoints
    ]
