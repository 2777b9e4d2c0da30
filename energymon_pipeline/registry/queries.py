"""Registry reads and writes, through SQLAlchemy Core with bound parameters only.

Every write runs in one transaction: it either happens whole or leaves the tables as they
were. Refusals raise `RegistryError` with a one-line message naming the meter or row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.registry import db
from energymon_pipeline.registry.tables import (
    REGISTER_UNIQUE_KEY,
    energy_meters,
    meter_status,
    registers,
)
from energymon_pipeline.registry.validation import (
    DEFAULT_POLL_GROUP,
    POLL_GROUP_ALLOWED,
    check_meter,
    check_register,
    is_poll_group,
)


@dataclass
class WriteResult:
    """What a write did, plus warnings the user should see (never errors)."""

    ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_in_transaction(engine: Engine, work):
    """Run `work(connection)` in a transaction, turning an unreachable or un-migrated
    database into a one-line RegistryError."""
    try:
        with engine.begin() as connection:
            return work(connection)
    except OperationalError as error:
        if "no such table" in str(error.orig):
            raise _not_migrated(engine) from None
        raise db.unreachable(engine, error) from None
    except ProgrammingError as error:
        if "does not exist" in str(error.orig):
            raise _not_migrated(engine) from None
        raise


def _not_migrated(engine: Engine) -> RegistryError:
    return RegistryError(
        f"the registry database {db.describe(engine)} has no energymon tables yet; "
        "run `energymon db upgrade` first"
    )


def _meter_row(row) -> dict[str, Any]:
    """A meter as a dict, its timestamps always timezone-aware UTC (SQLite returns naive
    values, which the database wrote in UTC)."""
    meter = dict(row._mapping)
    for column in ("created_at", "updated_at", "status_checked_at"):
        value = meter.get(column)
        if isinstance(value, datetime) and value.tzinfo is None:
            meter[column] = value.replace(tzinfo=UTC)
    return meter


def list_meters(engine: Engine, enabled_only: bool = False) -> list[dict[str, Any]]:
    """Every meter with its last connectivity check (status_* columns, None if never)."""
    query = (
        sa.select(
            energy_meters,
            meter_status.c.checked_at.label("status_checked_at"),
            meter_status.c.result.label("status_result"),
            meter_status.c.latency_ms.label("status_latency_ms"),
            meter_status.c.message.label("status_message"),
        )
        .select_from(energy_meters.outerjoin(meter_status))
        .order_by(energy_meters.c.id)
    )
    if enabled_only:
        query = query.where(energy_meters.c.enabled.is_(True))
    return run_in_transaction(engine, lambda c: [_meter_row(r) for r in c.execute(query)])


def get_meter(engine: Engine, meter_id: int) -> dict[str, Any]:
    query = sa.select(energy_meters).where(energy_meters.c.id == meter_id)
    row = run_in_transaction(engine, lambda c: c.execute(query).first())
    if row is None:
        raise RegistryError(f"meter {meter_id} does not exist; `energymon meters list` shows ids")
    return _meter_row(row)


def register_types(connection) -> set[str]:
    return set(connection.execute(sa.select(registers.c.type).distinct()).scalars())


def add_meter(engine: Engine, fields: dict[str, Any]) -> WriteResult:
    """Insert a meter; the next free id is assigned when none is given."""
    clean, problems = check_meter(fields)
    if problems:
        raise RegistryError("meter not added: " + "; ".join(message for _, message in problems))
    values = {k: v for k, v in clean.items() if v is not None or k == "description"}

    def work(connection) -> WriteResult:
        meter_id = values.get("id")
        if meter_id is None:
            highest = connection.execute(sa.select(sa.func.max(energy_meters.c.id))).scalar()
            meter_id = 0 if highest is None else highest + 1
        elif connection.execute(
            sa.select(energy_meters.c.id).where(energy_meters.c.id == meter_id)
        ).first():
            raise RegistryError(
                f"meter id {meter_id} already exists; allowed: an unused id, or none to "
                "have one assigned"
            )
        _refuse_split_link(connection, {**values, "id": meter_id}, "added")
        connection.execute(energy_meters.insert().values({**values, "id": meter_id}))
        _sync_id_sequence(connection)
        result = WriteResult(ids=[meter_id])
        # A `sunspec` meter's registers come from its discovered layout (devices/sunspec.py);
        # an `auto` meter gets its type from its connectivity check (devices/identify.py).
        if values["type"] not in ("sunspec", "auto") and values["type"] not in register_types(
            connection
        ):
            result.warnings.append(
                f"meter {meter_id}: type {values['type']!r} has no registers yet, so nothing "
                "will be read from it until registers of that type are imported"
            )
        return result

    try:
        return run_in_transaction(engine, work)
    except IntegrityError as error:
        raise RegistryError(f"meter not added: {_constraint_reason(error)}") from None


def _sync_id_sequence(connection) -> None:
    """Keep PostgreSQL's id generator past every explicit id, so rows inserted by hand with
    psql (as the original's users did) and rows with generated ids never collide."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('energy_meters', 'id'), "
                "COALESCE((SELECT MAX(id) FROM energy_meters), 0) + 1, false)"
            )
        )


def _constraint_reason(error: IntegrityError) -> str:
    return str(error.orig).strip().splitlines()[0]


def remove_meter(engine: Engine, meter_id: int) -> None:
    def work(connection) -> None:
        deleted = connection.execute(
            energy_meters.delete().where(energy_meters.c.id == meter_id)
        ).rowcount
        if not deleted:
            raise RegistryError(
                f"meter {meter_id} does not exist; `energymon meters list` shows ids"
            )

    run_in_transaction(engine, work)


def set_meter_enabled(engine: Engine, meter_id: int, enabled: bool) -> bool:
    """Enable or disable a meter; returns False when it already was in that state."""

    def work(connection) -> bool:
        current = connection.execute(
            sa.select(energy_meters.c.enabled).where(energy_meters.c.id == meter_id)
        ).first()
        if current is None:
            raise RegistryError(
                f"meter {meter_id} does not exist; `energymon meters list` shows ids"
            )
        if bool(current[0]) == enabled:
            return False
        connection.execute(
            energy_meters.update().where(energy_meters.c.id == meter_id).values(enabled=enabled)
        )
        return True

    return run_in_transaction(engine, work)


def list_registers(engine: Engine, type_: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(registers).order_by(
        registers.c.type, registers.c.function_code, registers.c.register_address, registers.c.id
    )
    if type_ is not None:
        query = query.where(registers.c.type == type_)
    return run_in_transaction(engine, lambda c: [dict(r._mapping) for r in c.execute(query)])


@dataclass(frozen=True)
class RowProblem:
    """One bad cell of an import: where it is and why it is refused."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class ImportRefused(RegistryError):
    """An import found bad rows; nothing was written."""

    def __init__(self, problems: Sequence[RowProblem]):
        self.problems = list(problems)
        super().__init__(
            f"nothing imported: {len({p.line for p in problems})} bad row(s), first: {problems[0]}"
        )


def _key(row: dict[str, Any]) -> tuple:
    return tuple(row[column] for column in REGISTER_UNIQUE_KEY)


def insert_registers(
    engine: Engine,
    rows: Iterable[tuple[int, dict[str, Any]]],
    skip_identical: bool = False,
    known_problems: Sequence[RowProblem] = (),
) -> WriteResult:
    """Insert register rows all or nothing. `rows` pairs each row with its line number (for
    messages). A row whose unique key (type, function_code, register_address,
    measurement_name) repeats in the input or exists in the table is refused, unless
    `skip_identical` is set and the stored row is identical (re-importing a profile).
    `known_problems` (rows the parser could not read) are reported with the rest."""
    rows = list(rows)
    problems: list[RowProblem] = list(known_problems)
    cleaned: list[tuple[int, dict[str, Any]]] = []
    for line, row in rows:
        clean, row_problems = check_register(row)
        problems.extend(RowProblem(line, column, message) for column, message in row_problems)
        if not row_problems:
            cleaned.append((line, clean))
    seen: dict[tuple, int] = {}
    for line, clean in cleaned:
        key = _key(clean)
        if key in seen:
            problems.append(
                RowProblem(
                    line,
                    "measurement_name",
                    f"duplicate of line {seen[key]}: type {key[0]!r}, function_code {key[1]}, "
                    f"register_address {key[2]}, measurement_name {key[3]!r} must be unique",
                )
            )
        seen.setdefault(key, line)

    def work(connection) -> WriteResult:
        existing = {}
        types = {clean["type"] for _, clean in cleaned}
        if types:
            stored = connection.execute(sa.select(registers).where(registers.c.type.in_(types)))
            existing = {_key(dict(r._mapping)): dict(r._mapping) for r in stored}
        to_insert = []
        skipped = 0
        for line, clean in cleaned:
            stored = existing.get(_key(clean))
            if stored is None:
                to_insert.append(clean)
            elif skip_identical and all(stored[k] == v for k, v in clean.items()):
                skipped += 1
            else:
                problems.append(
                    RowProblem(
                        line,
                        "measurement_name",
                        f"type {clean['type']!r}, function_code {clean['function_code']}, "
                        f"register_address {clean['register_address']}, measurement_name "
                        f"{clean['measurement_name']!r} already exists in the registry (id "
                        f"{stored['id']}); remove it first or leave the row out",
                    )
                )
        if problems:
            raise ImportRefused(sorted(problems, key=lambda p: p.line))
        ids = []
        if to_insert:
            ids = list(
                connection.execute(registers.insert().returning(registers.c.id), to_insert)
                .scalars()
                .all()
            )
        result = WriteResult(ids=ids)
        if skipped:
            result.warnings.append(f"{skipped} identical row(s) were already present")
        return result

    if not rows and not problems:
        raise RegistryError("nothing imported: the input has no register rows")
    return run_in_transaction(engine, work)


def record_status(
    engine: Engine,
    meter_id: int,
    checked_at: datetime,
    result: str,
    latency_ms: float | None,
    message: str | None,
) -> None:
    """Replace the meter's last connectivity check (nothing when the meter is gone)."""

    def work(connection) -> None:
        exists = connection.execute(
            sa.select(energy_meters.c.id).where(energy_meters.c.id == meter_id)
        ).first()
        if not exists:
            return
        connection.execute(meter_status.delete().where(meter_status.c.meter_id == meter_id))
        connection.execute(
            meter_status.insert().values(
                meter_id=meter_id,
                checked_at=checked_at,
                result=result[:32],
                latency_ms=latency_ms,
                message=None if message is None else message[:512],
            )
        )

    run_in_transaction(engine, work)


def meter_versions(engine: Engine) -> dict[int, tuple[bool, datetime]]:
    """id -> (enabled, updated_at) of every meter: what the new-meter sensor compares."""

    def work(connection):
        rows = connection.execute(
            sa.select(energy_meters.c.id, energy_meters.c.enabled, energy_meters.c.updated_at)
        )
        versions = {}
        for meter_id, enabled, updated_at in rows:
            if updated_at.tzinfo is None:
                updated_at = updated_at.replace(tzinfo=UTC)
            versions[meter_id] = (bool(enabled), updated_at)
        return versions

    return run_in_transaction(engine, work)


#: The columns that are a link's settings (modbus/links.py), set on all of its meters at once.
LINK_COLUMNS = ("max_connections", "inter_request_delay_ms", "connect_delay_s")


def link_key(row: dict[str, Any]) -> str:
    """A meter row's link, as modbus.types.Endpoint.link_key names it."""
    if row.get("serial_port"):
        return f"serial:{row['serial_port'].strip()}"
    return f"tcp:{str(row['host']).strip().lower()}:{row['port']}:{row.get('framer') or 'socket'}"


def poll_group(row: dict[str, Any]) -> str:
    """A meter row's poll group (`default` for none)."""
    return str(row.get("poll_group") or "").strip() or DEFAULT_POLL_GROUP


@dataclass(frozen=True)
class LinkOwner:
    """The poll group that reads a link: the group of its lowest meter id (so an old
    registry with a link split across groups is read by exactly one group)."""

    group: str
    #: The link's meters by group, ids ascending.
    members: dict[str, list[int]]

    @property
    def split(self) -> bool:
        return len(self.members) > 1

    def describe(self) -> str:
        return "; ".join(
            f"group {group!r}: meter(s) {', '.join(map(str, ids))}"
            for group, ids in sorted(self.members.items())
        )


def link_rows(connection) -> list[dict[str, Any]]:
    """Every meter's id, link columns and group (what link_owners needs), enabled or not."""
    c = energy_meters.c
    query = sa.select(c.id, c.host, c.port, c.framer, c.serial_port, c.poll_group)
    return [dict(r._mapping) for r in connection.execute(query)]


def link_owners(rows: Iterable[dict[str, Any]]) -> dict[str, LinkOwner]:
    """link_key -> the group that polls it, from every meter row (enabled or not)."""
    by_link: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_link.setdefault(link_key(row), []).append(row)
    owners = {}
    for key, members in by_link.items():
        members.sort(key=lambda r: r["id"])
        groups: dict[str, list[int]] = {}
        for row in members:
            groups.setdefault(poll_group(row), []).append(row["id"])
        owners[key] = LinkOwner(poll_group(members[0]), groups)
    return owners


def split_link_problems(rows: Iterable[dict[str, Any]]) -> list[str]:
    """One line per link whose meters are in more than one poll group (rows written past
    the registry's refusal: an old database, a SQL client), saying which group reads it."""
    return [
        f"link {key} has meters in more than one poll group ({owner.describe()}); it is "
        f"polled by group {owner.group!r} (its lowest meter id's) with all its meters, the "
        "other groups leave them out; give them one group with `energymon meters group ID "
        "GROUP --whole-link`"
        for key, owner in link_owners(rows).items()
        if owner.split
    ]


def _refuse_split_link(connection, meter: dict[str, Any], verb: str) -> None:
    """RegistryError when `meter` (a row about to be written) would share its link with
    meters of another poll group: two runs, possibly on two machines, must not talk to one
    gateway or serial port."""
    key, group = link_key(meter), poll_group(meter)
    others = [r for r in link_rows(connection) if r["id"] != meter["id"]]
    owner = link_owners([r for r in others if link_key(r) == key]).get(key)
    if owner is None or set(owner.members) == {group}:
        return
    theirs = ", ".join(sorted(g for g in owner.members if g != group))
    raise RegistryError(
        f"meter {meter['id']} not {verb}: its link {key} is polled by group(s) {theirs!r} "
        f"({owner.describe()}), and a link's meters must be in one poll group (two runs must "
        f"not talk to one gateway); allowed: group {owner.group!r} for meter {meter['id']}, "
        "or move the whole link with `energymon meters group ID GROUP --whole-link`"
    )


def set_group(engine: Engine, meter_id: int, group: str | None, whole_link: bool) -> list[int]:
    """Put a meter (with `whole_link`: every meter of its link) into poll group `group`
    (None or `default`: no group); refused when that would split its link across groups.
    Returns the ids moved."""
    if group is not None and group.strip() in ("", DEFAULT_POLL_GROUP):
        group = None
    if group is not None and not is_poll_group(group.strip()):
        raise RegistryError(f"poll_group {group!r} is not allowed; allowed: {POLL_GROUP_ALLOWED}")
    group = None if group is None else group.strip()

    def work(connection) -> list[int]:
        rows = [dict(r._mapping) for r in connection.execute(sa.select(energy_meters))]
        mine = [r for r in rows if r["id"] == meter_id]
        if not mine:
            raise RegistryError(
                f"meter {meter_id} does not exist; `energymon meters list` shows ids"
            )
        key = link_key(mine[0])
        ids = sorted(r["id"] for r in rows if link_key(r) == key) if whole_link else [meter_id]
        if not whole_link:
            _refuse_split_link(connection, {**mine[0], "poll_group": group}, "moved")
        connection.execute(
            energy_meters.update().where(energy_meters.c.id.in_(ids)).values(poll_group=group)
        )
        return ids

    return run_in_transaction(engine, work)


def link_settings(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """link_key -> the settings the poll uses for that link, from its meters' rows, by the
    rule of modbus/links.py: the fewest connections and the longest pauses set on any row
    (NULL does not count; defaults 1, 0, 0), a serial port's line from its lowest meter id."""
    by_link: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_link.setdefault(link_key(row), []).append(row)
    settings = {}
    for key, members in by_link.items():
        first = min(members, key=lambda r: r["id"])
        limits = [r["max_connections"] for r in members if r.get("max_connections") is not None]
        settings[key] = {
            "max_connections": min(limits) if limits else 1,
            "inter_request_delay_ms": max(r.get("inter_request_delay_ms") or 0 for r in members),
            "connect_delay_s": max(r.get("connect_delay_s") or 0 for r in members),
            **{
                c: first.get(c)
                for c in ("serial_port", "baudrate", "parity", "stopbits", "bytesize")
            },
        }
    return settings


def set_link(engine: Engine, meter_id: int, settings: dict[str, Any]) -> list[int]:
    """Set link settings (LINK_COLUMNS; None leaves one as it is) on every meter that shares
    `meter_id`'s link, so its rows agree; returns their ids."""
    unknown = set(settings) - set(LINK_COLUMNS)
    if unknown:
        raise RegistryError(f"not link settings: {', '.join(sorted(unknown))}")
    values = {k: v for k, v in settings.items() if v is not None}
    _clean, problems = check_meter({**get_meter(engine, meter_id), **values})
    problems = [message for column, message in problems if column in values]
    if problems:
        raise RegistryError("link not changed: " + "; ".join(problems))

    def work(connection) -> list[int]:
        rows = [dict(r._mapping) for r in connection.execute(sa.select(energy_meters))]
        [key] = [link_key(r) for r in rows if r["id"] == meter_id]
        ids = sorted(r["id"] for r in rows if link_key(r) == key)
        if values:
            connection.execute(
                energy_meters.update().where(energy_meters.c.id.in_(ids)).values(values)
            )
        return ids

    return run_in_transaction(engine, work)
