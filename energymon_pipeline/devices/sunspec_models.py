"""SunSpec model definitions, read as data from the SunSpec Alliance's own JSON files.

The `pysunspec2` package (pinned in pyproject.toml) ships the Alliance's model definitions as
`sunspec2/models/json/model_<id>.json`, 100+ models. Only those files are used here: none of
pysunspec2's Python (its Modbus client and device objects) is imported, so transport, planning
and decoding stay energymon's. The files are found through the package's location, without
importing it.

A model is a top-level group: its points (the first two are `ID` and `L`, the model's
header), then optionally repeating groups (e.g. model 160's `module`, one per MPPT input),
whose count follows from the model's length on the device. A point's offset is counted from
the model's `ID` register; a repeating group's offsets from the start of its instance.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from energymon_pipeline.errors import EnergymonError

__all__ = [
    "GroupDef",
    "ModelDef",
    "PointDef",
    "SunSpecDefinitionError",
    "definitions_dir",
    "model_definition",
]


class SunSpecDefinitionError(EnergymonError):
    """A SunSpec model definition file is missing or not what the Alliance's schema says."""


@dataclass(frozen=True, slots=True)
class PointDef:
    name: str
    type: str
    #: Registers the point occupies.
    size: int
    #: Registers from the start of its group (the model's ID register for the top level).
    offset: int
    #: Name of the `sunssf` point holding its scale factor, or a fixed exponent, or None.
    sf: str | int | None = None
    units: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class GroupDef:
    name: str
    points: tuple[PointDef, ...]
    #: Registers one instance of the group occupies.
    length: int
    #: Nested groups make a layout this module does not flatten (some 7xx DER models).
    nested: bool = False

    def point(self, name: str) -> PointDef | None:
        return next((p for p in self.points if p.name == name), None)


@dataclass(frozen=True, slots=True)
class ModelDef:
    model_id: int
    #: The model's name in the Alliance's file (`inverter_three_phase`, `mppt`, `ac_meter_abcn`).
    name: str
    label: str
    #: The top-level points, `ID` and `L` first.
    fixed: GroupDef
    #: Repeating groups, in order (models 160 and 714 have one).
    repeating: tuple[GroupDef, ...] = ()


def definitions_dir() -> Path:
    """Where the installed pysunspec2 keeps the model JSON files (the package not imported)."""
    spec = importlib.util.find_spec("sunspec2")
    if spec is None or not spec.submodule_search_locations:
        raise SunSpecDefinitionError(
            "the pysunspec2 package (SunSpec model definitions) is not installed; "
            "run `uv sync` to install the locked dependencies"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "json"


def _group(data: dict, model_id: int) -> GroupDef:
    points: list[PointDef] = []
    offset = 0
    for point in data.get("points", []):
        try:
            name, type_, size = point["name"], point["type"], int(point["size"])
        except (KeyError, TypeError, ValueError):
            raise SunSpecDefinitionError(
                f"SunSpec model {model_id}: point {point!r} lacks a name, type or size"
            ) from None
        points.append(
            PointDef(
                name, type_, size, offset, point.get("sf"), point.get("units"), point.get("label")
            )
        )
        offset += size
    nested = any(g.get("groups") for g in data.get("groups", []))
    return GroupDef(data.get("name", ""), tuple(points), offset, nested)


@functools.lru_cache(maxsize=256)
def model_definition(model_id: int) -> ModelDef | None:
    """The Alliance's definition of model `model_id`, or None when pysunspec2 has none (a
    vendor model, or one newer than the pinned release)."""
    path = definitions_dir() / f"model_{int(model_id)}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        top = data["group"]
    except (OSError, ValueError, KeyError) as error:
        raise SunSpecDefinitionError(f"SunSpec model file {path}: {error}") from None
    fixed = _group(top, model_id)
    if [p.name for p in fixed.points[:2]] != ["ID", "L"]:
        raise SunSpecDefinitionError(f"SunSpec model file {path}: its first points are not ID, L")
    repeating = tuple(_group(g, model_id) for g in top.get("groups", []))
    return ModelDef(
        int(model_id), top.get("name", f"model_{model_id}"), top.get("label", ""), fixed, repeating
    )
