"""Shipped register maps ("device profiles"), importable into the registry by name.

Each profile is a CSV file beside this module in the registry import format (the original
system's bulk-load header), so a user can read it, copy it, or import an edited copy with
`energymon registers import`. The rows' `type` is the profile's name unless imported with
another (`--as`), e.g. to keep two firmware variants apart. Addresses are zero-based protocol
addresses (the manuals' 30001 is address 0).

Importing is all or nothing; a row already stored identically is not an error, so importing
a profile twice is harmless, while a stored row with the same key but other values refuses the
whole import.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy.engine import Engine

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.registry.csv_import import parse_registers_csv
from energymon_pipeline.registry.queries import WriteResult, insert_registers

__all__ = ["Profile", "import_profile", "list_profiles", "profile_rows"]

_SUFFIX = ".csv"
_TYPE_MAX_LENGTH = 32

#: What each shipped profile is and where its map comes from.
DESCRIPTIONS = {
    "virtual_modbustcp": "the virtual server's `test` device (the registry's seeded row)",
    "sdm630": "Eastron SDM630, the original's 27 production registers "
    "(what the virtual server's `sdm630` device serves)",
    "virtual-tlc10000": "Zeversolar TLC10000 inverter through the virtual server's bridge "
    "(power kW, energy today kWh)",
    "sdm120": "Eastron SDM120 single-phase meter (Eastron SDM120 Modbus protocol, input registers)",
    "sdm72d-m": "Eastron SDM72D-M three-phase meter (Eastron SDM72D-M Modbus protocol V1.1: "
    "total power and energy only)",
}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    registers: int


def _files() -> dict[str, Any]:
    folder = resources.files(__name__)
    return {
        entry.name[: -len(_SUFFIX)]: entry
        for entry in folder.iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    }


def _resolve(name: str) -> tuple[str, str]:
    """(canonical name, CSV text) of a profile; names match regardless of case."""
    files = _files()
    wanted = name.strip()
    match = files.get(wanted) or {n.lower(): f for n, f in files.items()}.get(wanted.lower())
    if match is None:
        raise RegistryError(f"there is no profile {name!r}; available: {', '.join(sorted(files))}")
    return match.name[: -len(_SUFFIX)], match.read_text(encoding="utf-8")


def list_profiles() -> list[Profile]:
    """Every shipped profile, by name."""
    profiles = []
    for name in sorted(_files()):
        rows = profile_rows(name)
        profiles.append(Profile(name, DESCRIPTIONS.get(name, ""), len(rows)))
    return profiles


def profile_rows(name: str, as_type: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """A profile's rows, each with its line number in the profile's CSV, with `type` set to
    `as_type` when given. RegistryError for an unknown name or an unusable type."""
    canonical, text = _resolve(name)
    rows, problems = parse_registers_csv(text, source=f"profile {canonical}")
    if problems:  # a shipped file is checked by the tests; this is a packaging fault
        raise RegistryError(f"profile {canonical} is damaged: {problems[0]}")
    if as_type is not None:
        as_type = as_type.strip()
        if not 1 <= len(as_type) <= _TYPE_MAX_LENGTH:
            raise RegistryError(
                f"type {as_type!r} is {len(as_type)} characters long; allowed: 1 to "
                f"{_TYPE_MAX_LENGTH} characters"
            )
        rows = [(line, {**row, "type": as_type}) for line, row in rows]
    return rows


def import_profile(engine: Engine, name: str, as_type: str | None = None) -> WriteResult:
    """Insert a profile's rows into the registry, all or nothing (ImportRefused, naming each
    conflicting row, when a stored row has the same key but other values)."""
    return insert_registers(engine, profile_rows(name, as_type), skip_identical=True)
