"""Shipped register maps ("device profiles"), importable into the registry by name.

Each profile is two files beside this module:

- `<name>.csv`, its registers in the registry import format (the original system's bulk-load
  header plus the `scale` and `cumulative` extension columns), so a user can read it, copy it,
  or import an edited copy with `energymon registers import`. The rows' `type` is the
  profile's name unless imported with another (`--as`), e.g. to keep two firmware variants
  apart. Addresses are zero-based protocol addresses, sent as is, whatever numbering the
  manufacturer's document uses (its 30001 or register 1 is address 0).
- `<name>.toml`, what the map is and where it comes from (read with the stdlib's tomllib):
  the manufacturer and models, the manufacturer's document the registers were taken from
  (title, version, year) and that document's numbering convention, and the signature that
  `energymon discover` reads to recognise the device (or why the profile has none). See
  `Source`, `Signature` and the README's "Adding a profile" for the keys.

Counter registers (energy) carry `cumulative = 1` in the CSV: the rollups sum their increments.

Importing is all or nothing; a row already stored identically is not an error, so importing
a profile twice is harmless, while a stored row with the same key but other values refuses the
whole import.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy.engine import Engine

from energymon_pipeline.errors import RegistryError
from energymon_pipeline.modbus.types import DataType, FunctionCode, Order
from energymon_pipeline.registry.csv_import import parse_registers_csv
from energymon_pipeline.registry.queries import WriteResult, insert_registers

__all__ = [
    "NUMBERINGS",
    "Profile",
    "Signature",
    "Source",
    "import_profile",
    "list_profiles",
    "load_profile",
    "profile_rows",
    "profiles_markdown",
]

_SUFFIX = ".csv"
_META_SUFFIX = ".toml"
_TYPE_MAX_LENGTH = 32

#: A document's numbering convention -> how its numbers become energymon's addresses.
NUMBERINGS = {
    "zero-based": "the document lists protocol addresses (from 0): used as written",
    "one-based": "the document numbers registers from 1: address = number - 1",
    "modicon": "the document uses 30001/40001-style register numbers: address = number - "
    "30001 (input registers) or number - 40001 (holding registers)",
    "none": "not from a manufacturer's document (the virtual server's own map)",
}

#: Signature data types by name (the integer types a model code is stored as).
_SIGNATURE_TYPES = {
    "uint16": DataType.UINT16,
    "int16": DataType.INT16,
    "uint32": DataType.UINT32,
    "int32": DataType.INT32,
}
_ORDERS = {"big": Order.BIG, "little": Order.LITTLE}


@dataclass(frozen=True, slots=True)
class Source:
    """The manufacturer's document a profile's registers come from."""

    title: str
    version: str
    year: int | None
    #: One of NUMBERINGS: how the document numbers registers.
    numbering: str
    note: str = ""

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        year = f" ({self.year})" if self.year else ""
        return f"{self.title}{version}{year}"


@dataclass(frozen=True, slots=True)
class Signature:
    """What identifies a device: the registers to read and the value(s) they hold on it.

    Either a whole number (`data_type` one of uint16/int16/uint32/int32, `values` the model
    codes) or text (`text`: prefixes of the ASCII string in `registers` registers)."""

    function_code: FunctionCode
    address: int
    registers: int
    data_type: DataType | None = None
    word_order: Order = Order.BIG
    values: tuple[int, ...] = ()
    text: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[int, int, int]:
        """(function code, address, registers): profiles with the same key share one read."""
        return int(self.function_code), self.address, self.registers

    def describe(self) -> str:
        table = "holding" if self.function_code is FunctionCode.READ_HOLDING_REGISTERS else "input"
        where = f"{table} register {self.address} (0x{self.address:04X})"
        if self.text:
            wanted = " or ".join(repr(t) for t in self.text)
            return f"{where}, {self.registers} registers of text starting {wanted}"
        assert self.data_type is not None
        wanted = " or ".join(_number(v) for v in self.values)
        return f"{where}, {self.data_type.name} = {wanted}"


def _number(value: int) -> str:
    """A model code as documents print them: decimal, and hex beside it."""
    return f"{value} (0x{value:04X})" if value >= 0 else str(value)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    registers: int
    manufacturer: str = ""
    models: tuple[str, ...] = ()
    source: Source | None = None
    signature: Signature | None = None
    #: Why the profile has no signature (when `signature` is None).
    no_signature: str = ""

    @property
    def device(self) -> str:
        """Manufacturer and models for a person, e.g. "Eastron SDM120-Modbus"."""
        return f"{self.manufacturer} {'/'.join(self.models)}".strip()


def _entries() -> dict[str, Any]:
    return {entry.name: entry for entry in resources.files(__name__).iterdir() if entry.is_file()}


def _files() -> dict[str, Any]:
    return {
        name[: -len(_SUFFIX)]: entry for name, entry in _entries().items() if name.endswith(_SUFFIX)
    }


def _resolve(name: str) -> tuple[str, str]:
    """(canonical name, CSV text) of a profile; names match regardless of case."""
    files = _files()
    wanted = name.strip()
    match = files.get(wanted) or {n.lower(): f for n, f in files.items()}.get(wanted.lower())
    if match is None:
        raise RegistryError(f"there is no profile {name!r}; available: {', '.join(sorted(files))}")
    return match.name[: -len(_SUFFIX)], match.read_text(encoding="utf-8")


# --- the metadata file ---------------------------------------------------------------------


class _Meta:
    """Typed access to one parsed TOML file: every problem is one RegistryError line naming
    the file and the key."""

    def __init__(self, file: str, data: dict[str, Any]) -> None:
        self.file = file
        self.data = data

    def fail(self, key: str, message: str) -> RegistryError:
        return RegistryError(f"{self.file}: {key}: {message}")

    def get(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], prefix: str,
            required: bool = True) -> Any:  # fmt: skip
        full = f"{prefix}{key}"
        if key not in table:
            if required:
                raise self.fail(full, "missing")
            return None
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise self.fail(full, f"{value!r} is not a {names}")
        if isinstance(value, str) and required and not value.strip():
            raise self.fail(full, "is empty")
        return value

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "missing the [" + key + "] table")
        return value


_MetaFields = tuple[str, str, tuple[str, ...], Source, Signature | None, str]


def _parse_meta(name: str, text: str) -> _MetaFields:
    file = f"profile {name}: {name}{_META_SUFFIX}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RegistryError(f"{file}: not valid TOML ({error})") from None
    meta = _Meta(file, data)
    description = meta.get(data, "description", str, "")
    manufacturer = meta.get(data, "manufacturer", str, "")
    models = meta.get(data, "models", list, "")
    if not models or not all(isinstance(m, str) and m.strip() for m in models):
        raise meta.fail("models", "allowed: a non-empty list of model names")
    source_table = meta.table("source")
    numbering = meta.get(source_table, "numbering", str, "source.")
    if numbering not in NUMBERINGS:
        raise meta.fail("source.numbering", f"{numbering!r}; allowed: {', '.join(NUMBERINGS)}")
    year = meta.get(source_table, "year", int, "source.", required=False)
    if year is not None and not 1979 <= year <= 2100:
        raise meta.fail("source.year", f"{year} is not a year")
    source = Source(
        title=meta.get(source_table, "title", str, "source."),
        version=meta.get(source_table, "version", str, "source.", required=False) or "",
        year=year,
        numbering=numbering,
        note=meta.get(source_table, "note", str, "source.", required=False) or "",
    )
    signature, no_signature = _parse_signature(meta)
    return description, manufacturer, tuple(models), source, signature, no_signature


def _parse_signature(meta: _Meta) -> tuple[Signature | None, str]:
    table = meta.table("signature")
    p = "signature."
    reason = meta.get(table, "none", str, p, required=False)
    if reason is not None:
        if len(table) > 1:
            raise meta.fail("signature.none", "a profile without a signature has no other keys")
        return None, reason
    fc = meta.get(table, "function_code", int, p)
    if fc not in (3, 4):
        raise meta.fail("signature.function_code", f"{fc}; allowed: 3 or 4")
    address = meta.get(table, "address", int, p)
    if not 0 <= address <= 65535:
        raise meta.fail("signature.address", f"{address} is outside 0-65535")
    text = meta.get(table, "text", list, p, required=False)
    if text is not None:
        registers = meta.get(table, "registers", int, p)
        if not text or not all(isinstance(t, str) and t for t in text):
            raise meta.fail("signature.text", "allowed: a non-empty list of text prefixes")
        if not 1 <= registers <= 125 or any(len(t.encode()) > 2 * registers for t in text):
            raise meta.fail("signature.registers", f"{registers} cannot hold the text")
        signature = Signature(FunctionCode(fc), address, registers, text=tuple(text))
    else:
        type_name = meta.get(table, "data_type", str, p)
        if type_name not in _SIGNATURE_TYPES:
            raise meta.fail(
                p + "data_type", f"{type_name!r}; allowed: {', '.join(_SIGNATURE_TYPES)}"
            )
        data_type = _SIGNATURE_TYPES[type_name]
        values = meta.get(table, "values", list, p)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise meta.fail("signature.values", "allowed: a non-empty list of whole numbers")
        order = meta.get(table, "word_order", str, p, required=False) or "big"
        if order not in _ORDERS:
            raise meta.fail("signature.word_order", f"{order!r}; allowed: big, little")
        signature = Signature(
            FunctionCode(fc),
            address,
            data_type.words,
            data_type=data_type,
            word_order=_ORDERS[order],
            values=tuple(values),
        )
    if signature.address + signature.registers > 65536:
        raise meta.fail("signature.address", "the signature runs past address 65535")
    return signature, ""


def load_profile(name: str) -> Profile:
    """A shipped profile with its metadata; RegistryError (one line, naming the file and
    what is wrong) for an unknown name or a damaged file."""
    canonical, _ = _resolve(name)
    rows = profile_rows(canonical)
    entry = _entries().get(canonical + _META_SUFFIX)
    if entry is None:
        raise RegistryError(f"profile {canonical}: its metadata file {canonical}.toml is missing")
    description, manufacturer, models, source, signature, no_signature = _parse_meta(
        canonical, entry.read_text(encoding="utf-8")
    )
    return Profile(
        canonical,
        description,
        len(rows),
        manufacturer,
        models,
        source,
        signature,
        no_signature,
    )


def list_profiles() -> list[Profile]:
    """Every shipped profile, by name."""
    return [load_profile(name) for name in sorted(_files())]


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


def profiles_markdown() -> str:
    """The shipped profiles as a Markdown table (docs/profiles.md holds it; a test keeps the
    two in step): name, device, registers, source document, numbering, signature."""
    lines = [
        "| profile | device | registers | source document | numbering | signature |",
        "|---|---|---|---|---|---|",
    ]
    for p in list_profiles():
        assert p.source is not None
        signature = p.signature.describe() if p.signature else f"none: {p.no_signature}"
        cells = [f"`{p.name}`", p.device, str(p.registers), str(p.source), p.source.numbering,
                 signature]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
