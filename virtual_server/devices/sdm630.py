"""A simulated Eastron SDM630: a three-phase load whose readings agree with each other.

Why physically consistent: the pipeline's validation and Grafana's energy panels are tested
against it, and random numbers per register would hide mistakes such as a swapped word order
turning 230 V into garbage, or an energy counter that runs backwards.

The model: per phase a voltage, a current and a power factor drift a little on each update;
everything else follows from them (P = U*I*pf, S = U*I, Q = U*I*sin(acos pf), totals are the
sums of the phases, total pf = P/S), and the energy counters integrate the power over the real
time between updates, so they only grow. Every value is rounded to FLOAT32 before anything is
derived from it, so `published` is exactly what a poller decodes.

The register map (FLOAT32, function code 4, big-endian words and bytes, zero-based protocol
addresses) is Eastron's; like the meter, it answers every register of its blocks, so a read
may span the addresses between the values (0-87, 200-225, 342-363: the totals, then the
per-phase import, export and total active energies of an SDM630 v2). Like an SDM630 v2 it also
answers its meter code (holding register 0xFC02, UINT16, 0x0070 unless `meter_code` says
otherwise; None leaves the register unmapped, like an early SDM630), which is the signature
`energymon discover` identifies the `sdm630` profiles by.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from energymon_pipeline.modbus.types import DataType, FunctionCode
from virtual_server.devices.base import Device, as_float32, publish
from virtual_server.memory import DeviceMemory

__all__ = ["METER_CODE_ADDRESS", "PRODUCTION_REGISTERS", "SDM630_METER_CODE", "Sdm630"]

#: Eastron's meter code register (holding register 464515, hex start address FC02).
METER_CODE_ADDRESS = 0xFC02
SDM630_METER_CODE = 0x0070

#: The 27 registers the original system's production install polled (type `sdm630`):
#: address -> (measurement name, unit). The `sdm630` registry profile is exactly this.
PRODUCTION_REGISTERS: dict[int, tuple[str, str | None]] = {
    0: ("voltageL1", "V"),
    2: ("voltageL2", "V"),
    4: ("voltageL3", "V"),
    6: ("currentL1", "A"),
    8: ("currentL2", "A"),
    10: ("currentL3", "A"),
    12: ("activePowerL1", "W"),
    14: ("activePowerL2", "W"),
    16: ("activePowerL3", "W"),
    18: ("apparentPowerL1", "VA"),
    20: ("apparentPowerL2", "VA"),
    22: ("apparentPowerL3", "VA"),
    24: ("reactivePowerL1", "VAr"),
    26: ("reactivePowerL2", "VAr"),
    28: ("reactivePowerL3", "VAr"),
    30: ("powerFactorL1", None),
    32: ("powerFactorL2", None),
    34: ("powerFactorL3", None),
    52: ("activePower", "W"),
    56: ("apparentPower", "VA"),
    60: ("reactivePower", "VAr"),
    62: ("powerFactor", None),
    70: ("frequency", "Hz"),
    72: ("importActiveEnergy", "kWh"),
    74: ("exportActiveEnergy", "kWh"),
    76: ("importReactiveEnergy", "kVArh"),
    78: ("exportReactiveEnergy", "kVArh"),
}

# The blocks the meter answers in full; addresses without a quantity read 0.0, as on the meter.
_BLOCKS = ((0, 88), (200, 226), (342, 364))
_NOMINAL_VOLTAGE = 230.0
_VOLTAGE_LOW, _VOLTAGE_HIGH = 0.92 * _NOMINAL_VOLTAGE, 1.08 * _NOMINAL_VOLTAGE
_DEMAND_SMOOTHING = 0.1


class Sdm630(Device):
    """A simulated SDM630 load. `seed` makes the values reproducible; `clock` (monotonic
    seconds) is what the energy counters integrate over; `meter_code` is what holding
    register 0xFC02 answers (None: unmapped)."""

    name = "sdm630"

    def __init__(
        self,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        meter_code: int | None = SDM630_METER_CODE,
    ) -> None:
        self.meter_code = meter_code
        self._random = random.Random(seed)
        self._clock = clock
        rnd = self._random
        self._voltage = [rnd.uniform(225.0, 235.0) for _ in range(3)]
        self._current = [rnd.uniform(2.0, 16.0) for _ in range(3)]
        self._power_factor = [rnd.uniform(0.85, 0.99) for _ in range(3)]
        self._frequency = rnd.uniform(49.95, 50.05)
        self._import_kwh = rnd.uniform(1000.0, 4000.0)
        #: Per-phase import energy (kWh): the total split about evenly, then each phase
        #: integrates its own power, so the three always add up to `_import_kwh`.
        shares = [rnd.uniform(0.9, 1.1) for _ in range(3)]
        self._import_kwh_phase = [self._import_kwh * x / sum(shares) for x in shares]
        self._export_kwh = rnd.uniform(0.0, 50.0)
        self._import_kvarh = rnd.uniform(100.0, 400.0)
        self._export_kvarh = rnd.uniform(0.0, 10.0)
        self._kvah = self._import_kwh * 1.1
        self._amp_hours = rnd.uniform(10_000.0, 40_000.0)
        self._demand_w: float | None = None
        self._max_demand_w = 0.0
        self._last_update: float | None = None
        #: address -> FLOAT32 value of every mapped register, as of the last update.
        self.published: dict[int, float] = {}

    def _drift(self) -> None:
        rnd = self._random
        for phase in range(3):
            voltage = self._voltage[phase] + rnd.gauss(0.0, 0.8)
            self._voltage[phase] = min(max(voltage, _VOLTAGE_LOW), _VOLTAGE_HIGH)
            current = self._current[phase] * math.exp(rnd.gauss(0.0, 0.05))
            self._current[phase] = min(max(current, 0.5), 40.0)
            power_factor = self._power_factor[phase] + rnd.gauss(0.0, 0.01)
            self._power_factor[phase] = min(max(power_factor, 0.70), 0.99)
        self._frequency = min(max(self._frequency + rnd.gauss(0.0, 0.01), 49.9), 50.1)

    def update(self, memory: DeviceMemory) -> None:
        with memory.batch():
            super().update(memory)
            if self.meter_code is not None:
                publish(
                    memory,
                    {METER_CODE_ADDRESS: self.meter_code},
                    DataType.UINT16,
                    FunctionCode.READ_HOLDING_REGISTERS,
                )

    def values(self) -> dict[int, float]:
        """Advance the model to now and return every register's value."""
        now = self._clock()
        hours = 0.0 if self._last_update is None else max(0.0, now - self._last_update) / 3600
        if self._last_update is not None:
            self._drift()
        self._last_update = now

        f32 = as_float32
        voltage = [f32(u) for u in self._voltage]
        current = [f32(i) for i in self._current]
        power_factor = [f32(pf) for pf in self._power_factor]
        apparent = [f32(u * i) for u, i in zip(voltage, current, strict=True)]
        active = [f32(u * i * pf) for u, i, pf in zip(voltage, current, power_factor, strict=True)]
        reactive = [
            f32(u * i * math.sqrt(1.0 - pf * pf))
            for u, i, pf in zip(voltage, current, power_factor, strict=True)
        ]
        angle = [f32(math.degrees(math.acos(pf))) for pf in power_factor]
        total_p = f32(sum(active))
        total_s = f32(sum(apparent))
        total_q = f32(sum(reactive))
        total_pf = f32(total_p / total_s)

        # Energy: this load only imports (the export counters stay where they are, which is
        # still "never decreasing"); float64 accumulators, so tiny steps are not lost.
        self._import_kwh += total_p * hours / 1000
        for phase in range(3):
            self._import_kwh_phase[phase] += active[phase] * hours / 1000
        self._import_kvarh += total_q * hours / 1000
        self._kvah += total_s * hours / 1000
        self._amp_hours += sum(current) * hours
        if self._demand_w is None:
            self._demand_w = total_p
        else:
            self._demand_w += _DEMAND_SMOOTHING * (total_p - self._demand_w)
        self._max_demand_w = max(self._max_demand_w, self._demand_w)

        values: dict[int, float] = {
            address: 0.0 for start, end in _BLOCKS for address in range(start, end, 2)
        }
        for phase in range(3):
            values[0 + 2 * phase] = voltage[phase]
            values[6 + 2 * phase] = current[phase]
            values[12 + 2 * phase] = active[phase]
            values[18 + 2 * phase] = apparent[phase]
            values[24 + 2 * phase] = reactive[phase]
            values[30 + 2 * phase] = power_factor[phase]
            values[36 + 2 * phase] = angle[phase]
        values[42] = f32(sum(voltage) / 3)
        values[46] = f32(sum(current) / 3)
        values[48] = f32(sum(current))
        values[52] = total_p
        values[56] = total_s
        values[60] = total_q
        values[62] = total_pf
        values[66] = f32(math.degrees(math.acos(min(1.0, total_pf))))
        values[70] = f32(self._frequency)
        values[72] = f32(self._import_kwh)
        values[74] = f32(self._export_kwh)
        values[76] = f32(self._import_kvarh)
        values[78] = f32(self._export_kvarh)
        values[80] = f32(self._kvah)
        values[82] = f32(self._amp_hours)
        values[84] = f32(self._demand_w)
        values[86] = f32(self._max_demand_w)
        for offset, (a, b) in enumerate(((0, 1), (1, 2), (2, 0))):
            # Phases 120 degrees apart: |Ua - Ub| = sqrt(Ua^2 + Ub^2 + Ua*Ub).
            ua, ub = voltage[a], voltage[b]
            values[200 + 2 * offset] = f32(math.sqrt(ua * ua + ub * ub + ua * ub))
        values[206] = f32((values[200] + values[202] + values[204]) / 3)
        values[224] = f32(_neutral_current(current, power_factor))
        values[342] = f32(self._import_kwh + self._export_kwh)
        values[344] = f32(self._import_kvarh + self._export_kvarh)
        export_phase = self._export_kwh / 3
        for phase in range(3):
            values[346 + 2 * phase] = f32(self._import_kwh_phase[phase])
            values[352 + 2 * phase] = f32(export_phase)
            values[358 + 2 * phase] = f32(self._import_kwh_phase[phase] + export_phase)
        self.published = values
        return values


def _neutral_current(current: list[float], power_factor: list[float]) -> float:
    """The magnitude of the phasor sum of the three line currents."""
    total = complex(0.0, 0.0)
    for phase, (amps, pf) in enumerate(zip(current, power_factor, strict=True)):
        angle = math.radians(-120.0 * phase) - math.acos(pf)
        total += amps * complex(math.cos(angle), math.sin(angle))
    return abs(total)
