"""energymon_pipeline/devices/ is a library like registry/, modbus/ and influx/: SunSpec
discovery and layouts without dagster or the pipeline's settings (directly or through another
module), so the CLI, the virtual server and the registry use them as they are. Checked from
the source, as tests/test_layers.py checks the other layers."""

from __future__ import annotations

import pytest
from test_layers import MODULES, SETTINGS, reached_from

DEVICE_MODULES = sorted(name for name in MODULES if name.startswith("energymon_pipeline.devices"))


def test_the_walk_sees_the_sunspec_modules():
    assert {"energymon_pipeline.devices.sunspec", "energymon_pipeline.devices.sunspec_store",
            "energymon_pipeline.devices.sunspec_models"} <= set(DEVICE_MODULES)  # fmt: skip
    # The registry reaches them (a sunspec meter's registers), and so stays free of dagster.
    assert "energymon_pipeline.devices.sunspec_store" in reached_from(
        "energymon_pipeline.registry.definitions"
    )


@pytest.mark.parametrize("module", DEVICE_MODULES)
def test_devices_import_no_dagster_or_settings(module):
    chains = reached_from(module)
    bad = [" -> ".join(chain) for name, chain in sorted(chains.items())
           if name == "dagster" or name.startswith("dagster_") or name == SETTINGS]  # fmt: skip
    assert not bad, f"{module} reaches {bad}"
