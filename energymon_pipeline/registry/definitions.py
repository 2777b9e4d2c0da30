"""Registry rows -> validated meter definitions for polling.

A bad row (a NULL code the original's CHECKs let through, an out-of-range value written with
psql) is reported and skipped; it never stops the other meters from being polled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    Order,
    PlanOptions,
    RegisterSpec,
    SerialLine,
)
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.learnt_splits import with_learnt_splits
from energymon_pipeline.registry.tables import energy_meters, registers
from energymon_pipeline.registry.validation import check_meter, check_register


@dataclass
class Definitions:
    meters: list[MeterSpec] = field(default_factory=list)
    #: One line per skipped row or meter, naming it and why.
    problems: list[str] = field(default_factory=list)


def register_spec(row: dict[str, Any]) -> RegisterSpec:
    """A validated `registers` row (see validation.check_register) as a RegisterSpec."""
    return RegisterSpec(
        measurement=row["measurement_name"],
        address=row["register_address"],
        data_type=DataType(row["data_type"]),
        function_code=FunctionCode(row["function_code"]),
        word_order=Order(row["word_order"]),
        byte_order=Order(row["byte_order"]),
        unit=row["data_unit"],
        scale=row["scale"],
        offset=row["offset"],
        min_value=row["min_value"],
        max_value=row["max_value"],
        register_id=row.get("id"),
        cumulative=bool(row.get("cumulative")),
    )


def _overrides(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    """The columns of `row` that are set; NULL means the default of Endpoint or PlanOptions."""
    return {column: row[column] for column in columns if row.get(column) is not None}


def serial_line(row: dict[str, Any]) -> SerialLine | None:
    """The serial port of a meter row on one (NULL line settings take SerialLine's defaults)."""
    if not row.get("serial_port"):
        return None
    return SerialLine(
        port=row["serial_port"].strip(),
        **_overrides(row, "baudrate", "stopbits", "bytesize"),
        **({"parity": row["parity"].strip().upper()} if row.get("parity") else {}),
    )


def meter_spec(row: dict[str, Any], specs: Iterable[RegisterSpec]) -> MeterSpec:
    """A meter row that passed validation.check_meter, with the RegisterSpecs of its type."""
    return MeterSpec(
        meter_id=row["id"],
        endpoint=Endpoint(
            host=row["host"].strip(),
            port=row["port"],
            unit_id=row["slave_address"],
            framer=row.get("framer") or "socket",
            serial=serial_line(row),
            **_overrides(
                row, "timeout_s", "retries", "connect_delay_s", "request_delay_s", "max_connections"
            ),
            inter_request_delay_s=(row.get("inter_request_delay_ms") or 0) / 1000,
        ),
        meter_type=row["type"],
        description=row["description"],
        registers=tuple(specs),
        plan_options=PlanOptions(
            single_register_reads=bool(row.get("single_register_reads")),
            **_overrides(row, "max_gap", "max_registers_per_request"),
        ),
    )


def _reasons(problems) -> str:
    return "; ".join(message for _, message in problems)


def _specs_by_type(
    register_rows: Iterable[dict[str, Any]], problems: list[str] | None = None
) -> dict[str, list[RegisterSpec]]:
    """Valid register rows as RegisterSpecs per meter type; each invalid row is skipped and,
    when `problems` is given, reported there."""
    by_type: dict[str, list[RegisterSpec]] = defaultdict(list)
    for row in register_rows:
        clean, row_problems = check_register(row)
        if row_problems:
            if problems is not None:
                problems.append(
                    f"register row id {row.get('id')} (type {row['type']!r}, "
                    f"{row['measurement_name']!r}): skipped: {_reasons(row_problems)}"
                )
            continue
        by_type[row["type"]].append(register_spec({**clean, "id": row.get("id")}))
    return by_type


def load_definitions(
    engine: Engine,
    meter_ids: Iterable[int] | None = None,
    include_disabled: bool = False,
    group: str | None = None,
) -> Definitions:
    """The enabled meters (or exactly `meter_ids`) with their registers and the request
    splits earlier runs learnt for them; with `group`, only the meters of that poll group
    (`default` = meters without a group)."""
    wanted = None if meter_ids is None else sorted(set(meter_ids))
    sunspec: dict[int, Any] = {}
    group_problems: list[str] = []

    def work(connection) -> tuple[list[dict], list[dict]]:
        query = sa.select(energy_meters).order_by(energy_meters.c.id)
        if wanted is not None:
            query = query.where(energy_meters.c.id.in_(wanted))
        elif not include_disabled:
            query = query.where(energy_meters.c.enabled.is_(True))
        meter_rows = [dict(r._mapping) for r in connection.execute(query)]
        if group is not None:
            meter_rows = _rows_of_group(connection, meter_rows, group, group_problems)
        types = {m["type"] for m in meter_rows}
        nonlocal sunspec
        sunspec = _sunspec_registers(connection, meter_rows)
        register_rows = []
        if types:
            register_rows = [
                dict(r._mapping)
                for r in connection.execute(
                    sa.select(registers)
                    .where(registers.c.type.in_(types))
                    .order_by(registers.c.function_code, registers.c.register_address)
                )
            ]
        return meter_rows, register_rows

    meter_rows, register_rows = queries.run_in_transaction(engine, work)
    result = Definitions(problems=group_problems)
    if wanted is not None:
        missing = sorted(set(wanted) - {m["id"] for m in meter_rows})
        result.problems.extend(f"meter {m}: does not exist" for m in missing)

    # One tuple per type, shared by its meters: a read plans each type once (plan.SharedPlans).
    by_type = {
        name: tuple(specs) for name, specs in _specs_by_type(register_rows, result.problems).items()
    }
    for row in meter_rows:
        _, problems = check_meter(row)
        if problems:
            result.problems.append(f"meter {row['id']}: skipped: {_reasons(problems)}")
            continue
        if row["type"] == "auto":  # identified by its connectivity check (devices/identify.py)
            result.problems.append(
                f"meter {row['id']}: skipped: its type is 'auto' and it has not been identified "
                "yet (its connectivity check identifies it and sets its type)"
            )
            continue
        specs = by_type.get(row["type"], [])
        if row["id"] in sunspec:  # a `sunspec` meter: its registers follow its device's layout
            specs = sunspec[row["id"]]
            if isinstance(specs, str):
                result.problems.append(f"meter {row['id']}: skipped: {specs}")
                continue
        if not specs:
            result.problems.append(
                f"meter {row['id']}: type {row['type']!r} has no usable registers; nothing to read"
            )
            continue
        result.meters.append(meter_spec(row, specs))
    result.meters = queries.run_in_transaction(
        engine, lambda connection: with_learnt_splits(connection, result.meters)
    )
    return result


def _rows_of_group(
    connection, rows: list[dict[str, Any]], group: str, problems: list[str]
) -> list[dict[str, Any]]:
    """The rows a run of `group` polls: the meters of the links its group reads. A link the
    registry would refuse (its meters in more than one group, written past it) is read by one
    group only, that of its lowest meter id, with all its meters (queries.link_owners): no
    reading lost, none read twice, no two runs on one gateway; the run of a group that gives
    up a meter names it."""
    owners = queries.link_owners(queries.link_rows(connection))
    kept = []
    for row in rows:
        owner = owners[queries.link_key(row)]
        own = queries.poll_group(row)
        if owner.group == group:
            if own != group:
                problems.append(
                    f"meter {row['id']} (group {own!r}): read by group {group!r}, which "
                    f"polls its link {queries.link_key(row)} ({owner.describe()})"
                )
            kept.append(row)
        elif own == group:
            problems.append(
                f"meter {row['id']}: skipped: its link {queries.link_key(row)} is polled by "
                f"group {owner.group!r} ({owner.describe()}); give the link one group with "
                "`energymon meters group ID GROUP --whole-link`"
            )
    return kept


def _sunspec_registers(connection, meter_rows: list[dict[str, Any]]) -> dict[int, Any]:
    """Registers (or why none) of the `sunspec` meters among `meter_rows`: devices/."""
    if not any(row["type"] == "sunspec" for row in meter_rows):
        return {}
    from energymon_pipeline.devices.sunspec_store import registers_for

    return registers_for(connection, meter_rows)


def load_meter(engine: Engine, meter_id: int) -> MeterSpec:
    """One meter with whatever valid registers its type has (possibly none), for the
    connectivity check. RegistryError when the meter does not exist or its row is invalid."""
    row = queries.get_meter(engine, meter_id)
    _, problems = check_meter(row)
    if problems:
        raise RegistryError(f"meter {meter_id}: {_reasons(problems)}")
    specs = _specs_by_type(queries.list_registers(engine, row["type"])).get(row["type"], [])
    if row["type"] == "sunspec":  # its stored layout's registers, if any (the check rediscovers)
        found = queries.run_in_transaction(engine, lambda c: _sunspec_registers(c, [row]))
        specs = [] if isinstance(found.get(meter_id), str) else list(found.get(meter_id, ()))
    return meter_spec(row, specs)


def cumulative_series(engine: Engine) -> set[tuple[str, str]]:
    """(meter id as text, measurement) of every counter register of every meter, enabled or
    not (a disabled meter's history still gets its hourly consumption)."""

    def work(connection) -> set[tuple[str, str]]:
        rows = connection.execute(
            sa.select(energy_meters.c.id, registers.c.measurement_name)
            .select_from(energy_meters.join(registers, energy_meters.c.type == registers.c.type))
            .where(registers.c.cumulative.is_(True))
        )
        return {(str(meter_id), measurement) for meter_id, measurement in rows}

    return queries.run_in_transaction(engine, work)
