"""A simulated SunSpec device: a three-phase inverter with two MPPT inputs and a meter.

Why: SunSpec devices describe themselves and change their scale factors while they run; the
pipeline's discovery, its reading of values with the scale factors of the same response, and
its treatment of "not implemented" points are tested against this device (and a plain
pymodbus server holding a SunSpec image, see tests/devices/).

The map (holding registers, function code 3), from the SunSpec Alliance's model definitions
as pysunspec2 ships them (energymon_pipeline.devices.sunspec_models): "SunS" at `base_address`
(40000 unless given: 0, 1, 40001, 50000 and 50001 are what devices in the field use), then
common (1), three-phase inverter (103), MPPT (160) with two modules, three-phase meter (203),
and the end marker 0xFFFF.

What changes: every `update()` takes the next AC power from `powers` (by default a triangle
1000 -> 5000 -> 1000 W in 400 W steps) and publishes it with W_SF = -1 below 3000 W (0.1 W
resolution) and W_SF = 0 from 3000 W on; the meter's W and the MPPT modules' DC power follow
with their own live scale factors. A poller that applied an old scale factor to a new value
would see 10x jumps whenever the power crosses 3000 W. Points left "not implemented" (the
type's sentinel): the inverter's line-to-line voltages, three of its four temperatures, its
vendor status and events, the modules' temperatures and most of the meter's per-phase
quantities. Every update is written in one `memory.batch()`, so a read sees a value and its
scale factor from the same update, like a real device's.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from energymon_pipeline.devices.sunspec_models import ModelDef, model_definition
from energymon_pipeline.modbus.decode import encode_value
from energymon_pipeline.modbus.types import DataType, FunctionCode
from virtual_server.devices.base import Device
from virtual_server.memory import DeviceMemory

__all__ = ["BASE_ADDRESSES", "POWER_THRESHOLD_W", "SunSpecInverter", "model_words"]

#: Base addresses the simulator accepts (where devices in the field put "SunS").
BASE_ADDRESSES = (0, 1, 40000, 40001, 50000, 50001)
#: W_SF is -1 below this AC power and 0 from it on.
POWER_THRESHOLD_W = 3000.0

_NOT_IMPLEMENTED: dict[str, int] = {
    "int16": 0x8000,
    "uint16": 0xFFFF,
    "count": 0,
    "acc16": 0,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "pad": 0x8000,
    "sunssf": 0x8000,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "acc32": 0,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
    "acc64": 0,
    "bitfield64": 0xFFFFFFFFFFFFFFFF,
    "float32": 0x7FC00000,
    "float64": 0x7FF8000000000000,
}
_SIGNED = {
    "int16": DataType.INT16,
    "sunssf": DataType.INT16,
    "int32": DataType.INT32,
    "int64": DataType.INT64,
}
_FLOAT = {"float32": DataType.FLOAT32, "float64": DataType.FLOAT64}


def _point_words(point_type: str, size: int, value: int | float | str | None) -> list[int]:
    if value is None:  # "not implemented": the type's sentinel; text and addresses all zeros
        raw = _NOT_IMPLEMENTED.get(point_type, 0)
        return [(raw >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]
    if isinstance(value, str):
        data = value.encode("latin-1")[: 2 * size].ljust(2 * size, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * size, 2)]
    if point_type in _FLOAT:
        return encode_value(float(value), _FLOAT[point_type])
    if point_type in _SIGNED:
        return encode_value(int(value), _SIGNED[point_type])
    number = int(value)
    return [(number >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def model_words(
    model_id: int,
    values: Mapping[str, int | float | str | None],
    repeats: Sequence[Mapping[str, int | float | str | None]] = (),
) -> list[int]:
    """The registers of one model, ID and L included, from raw point values by SunSpec point
    name (a point not given is "not implemented"); `repeats` are the repeating group's
    instances. KeyError for a model pysunspec2 does not define."""
    definition: ModelDef | None = model_definition(model_id)
    if definition is None:
        raise KeyError(f"SunSpec model {model_id} has no definition")
    group = definition.repeating[0] if definition.repeating else None
    length = definition.fixed.length - 2 + (len(repeats) * group.length if group else 0)
    words: list[int] = []
    for point in definition.fixed.points:
        value = {"ID": model_id, "L": length}.get(point.name, values.get(point.name))
        words += _point_words(point.type, point.size, value)
    for instance in repeats:
        assert group is not None
        for point in group.points:
            words += _point_words(point.type, point.size, instance.get(point.name))
    return words


def _scaled(value: float, sf: int) -> int:
    return round(value / 10.0**sf)


def _triangle(low: float = 1000.0, high: float = 5000.0, step: float = 400.0) -> Iterator[float]:
    up = [low + i * step for i in range(int((high - low) / step) + 1)]
    while True:
        yield from up
        yield from reversed(up[1:-1])


class SunSpecInverter(Device):
    """The simulated SunSpec device (see the module doc). `powers` overrides the AC power
    sequence (watts, one per update, cycled); `clock` (seconds) drives the energy counters."""

    name = "sunspec"

    def __init__(
        self,
        base_address: int = 40000,
        powers: Sequence[float] | None = None,
        serial_number: str = "VS-0001",
        clock: Callable[[], float] | None = time.monotonic,
    ) -> None:
        if base_address not in BASE_ADDRESSES:
            allowed = ", ".join(str(b) for b in BASE_ADDRESSES)
            raise ValueError(f"SunSpec base address {base_address} is not one of {allowed}")
        self.base_address = base_address
        self.serial_number = serial_number
        self._powers: Iterator[float] = (
            _triangle() if powers is None else itertools.cycle(list(powers))
        )
        self._clock = clock
        self._energy_wh = 1_234_567.0
        self._import_wh = 345_678.0
        self._export_wh = 901_234.0
        self._last: float | None = None
        #: The last update's AC power (W) and W_SF, as published.
        self.power_w = 0.0
        self.w_sf = 0
        #: Every update's (power W, W_SF), oldest first.
        self.history: list[tuple[float, int]] = []

    def _advance(self) -> float:
        power = float(next(self._powers))
        now = self._clock() if self._clock is not None else None
        if now is not None and self._last is not None:
            hours = max(0.0, now - self._last) / 3600
            self._energy_wh += self.power_w * hours
            self._export_wh += 0.6 * self.power_w * hours
            self._import_wh += 50.0 * hours
        self._last = now
        return power

    def image(self, power: float) -> list[int]:
        """The whole map from `base_address` on, for an AC power of `power` watts."""
        w_sf = -1 if power < POWER_THRESHOLD_W else 0
        self.power_w, self.w_sf = power, w_sf
        phase_a = power / 3 / 230.0
        dc_w = power / 0.97
        modules = [dc_w * 0.55, dc_w * 0.45]
        dcw_sf = -1 if dc_w < POWER_THRESHOLD_W else 0
        common = model_words(
            1,
            {
                "Mn": "energymon",
                "Md": "Virtual SunSpec Inverter",
                "Opt": "3 phase, 2 MPPT",
                "Vr": "1.0.0",
                "SN": self.serial_number,
                "DA": 1,
            },
        )
        inverter = model_words(
            103,
            {
                "A": _scaled(3 * phase_a, -2),
                "AphA": _scaled(phase_a, -2),
                "AphB": _scaled(phase_a, -2),
                "AphC": _scaled(phase_a, -2),
                "A_SF": -2,
                "PhVphA": 2301,
                "PhVphB": 2298,
                "PhVphC": 2305,
                "V_SF": -1,
                "W": _scaled(power, w_sf),
                "W_SF": w_sf,
                "Hz": 5001,
                "Hz_SF": -2,
                "VA": _scaled(power * 1.01, 0),
                "VA_SF": 0,
                "VAr": _scaled(power * 0.05, 0),
                "VAr_SF": 0,
                "PF": 99,
                "PF_SF": -2,
                "WH": _scaled(self._energy_wh, 0),
                "WH_SF": 0,
                "DCA": _scaled(dc_w / 600.0, -2),
                "DCA_SF": -2,
                "DCV": 6000,
                "DCV_SF": -1,
                "DCW": _scaled(dc_w, dcw_sf),
                "DCW_SF": dcw_sf,
                "TmpCab": 412,
                "Tmp_SF": -1,
                "St": 4,
                "Evt1": 0,
                "Evt2": 0,
            },
        )
        mppt = model_words(
            160,
            {
                "DCA_SF": -2,
                "DCV_SF": -1,
                "DCW_SF": dcw_sf,
                "DCWH_SF": 0,
                "Evt": 0,
                "N": 2,
                "TmsPer": 0,
            },
            [
                {
                    "ID": index + 1,
                    "IDStr": f"PV{index + 1}",
                    "DCA": _scaled(w / 600.0, -2),
                    "DCV": 6000,
                    "DCW": _scaled(w, dcw_sf),
                    "DCWH": _scaled(self._energy_wh * (0.55 if index == 0 else 0.45), 0),
                    "Tms": 0,
                    "DCSt": 4,
                    "DCEvt": 0,
                }
                for index, w in enumerate(modules)
            ],
        )
        grid_w = -0.6 * power + 50.0  # exporting most of the inverter's power
        meter = model_words(
            203,
            {
                "A": _scaled(abs(grid_w) / 230.0, -2),
                "A_SF": -2,
                "PhV": 2300,
                "PhVphA": 2301,
                "PhVphB": 2298,
                "PhVphC": 2305,
                "V_SF": -1,
                "Hz": 5000,
                "Hz_SF": -2,
                "W": _scaled(grid_w, w_sf),
                "W_SF": w_sf,
                "TotWhExp": _scaled(self._export_wh, 0),
                "TotWhImp": _scaled(self._import_wh, 0),
                "TotWh_SF": 0,
                "Evt": 0,
            },
        )
        end = [0xFFFF, 0]
        return [0x5375, 0x6E53, *common, *inverter, *mppt, *meter, *end]

    def update(self, memory: DeviceMemory) -> None:
        power = self._advance()
        words = self.image(power)
        with memory.batch():
            memory.set_registers(FunctionCode.READ_HOLDING_REGISTERS, self.base_address, words)
        self.history.append((self.power_w, self.w_sf))

    def values(self):  # pragma: no cover - update() is overridden
        raise NotImplementedError


def expected_w(power: float) -> float:
    """What a correct poller reads as the inverter's W for an AC power of `power`."""
    sf = -1 if power < POWER_THRESHOLD_W else 0
    return _scaled(power, sf) / 10.0**-sf if sf < 0 else float(_scaled(power, sf))
