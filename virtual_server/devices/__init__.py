"""The built-in devices `python -m virtual_server --device NAME` can serve."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from energymon_pipeline.errors import SettingsError
from virtual_server.devices.base import Device, Value, as_float32, publish
from virtual_server.devices.random_test import RandomTestDevice
from virtual_server.devices.sdm630 import Sdm630
from virtual_server.settings import tlc10000_inverter

__all__ = [
    "BUILTIN_DEVICES",
    "Device",
    "RandomTestDevice",
    "Sdm630",
    "Value",
    "as_float32",
    "make_device",
    "publish",
]


def _tlc10000(env: Mapping[str, str]) -> Device:
    from virtual_server.adapters.zeversolar import ZeversolarTLC10000

    inverter = tlc10000_inverter(env)
    if inverter.host is None:
        raise SettingsError(
            "VIRTUAL_TLC10000_INVERTER_HOST is not set; allowed: the hostname or IP address of "
            "the Zeversolar inverter, which the tlc10000 device bridges"
        )
    return ZeversolarTLC10000(inverter.host, inverter.port)


def _sunspec(env: Mapping[str, str]) -> Device:
    from virtual_server.sunspec import BASE_ADDRESSES, SunSpecInverter

    text = env.get("VIRTUAL_SUNSPEC_BASE_ADDRESS", "").strip() or "40000"
    allowed = ", ".join(str(b) for b in BASE_ADDRESSES)
    if not text.isdigit() or int(text) not in BASE_ADDRESSES:
        raise SettingsError(
            f"VIRTUAL_SUNSPEC_BASE_ADDRESS={text!r} is not allowed; allowed: {allowed}"
        )
    return SunSpecInverter(base_address=int(text))


#: name -> (what it is, factory taking the environment).
BUILTIN_DEVICES: dict[str, tuple[str, Callable[[Mapping[str, str]], Device]]] = {
    "test": (
        "random INT16 at holding register 0 and FLOAT32 at input registers 0-1 (registry "
        "profile virtual_modbustcp)",
        lambda env: RandomTestDevice(),
    ),
    "sdm630": (
        "a simulated Eastron SDM630 three-phase meter (registry profile sdm630)",
        lambda env: Sdm630(),
    ),
    "tlc10000": (
        "bridge to a Zeversolar TLC10000 inverter at VIRTUAL_TLC10000_INVERTER_HOST/_PORT "
        "(registry profile virtual-tlc10000)",
        _tlc10000,
    ),
    "sunspec": (
        "a simulated SunSpec inverter (models 1, 103, 160 with 2 modules, 203; W_SF changes "
        "at 3000 W) at VIRTUAL_SUNSPEC_BASE_ADDRESS (40000); registry type sunspec",
        _sunspec,
    ),
}


def make_device(name: str, env: Mapping[str, str] | None = None) -> Device:
    """A new instance of a built-in device; SettingsError for an unknown name or a device
    whose own variables are missing."""
    env = os.environ if env is None else env
    try:
        _, factory = BUILTIN_DEVICES[name]
    except KeyError:
        raise SettingsError(
            f"device {name!r} is unknown; allowed: {', '.join(BUILTIN_DEVICES)}"
        ) from None
    return factory(env)
