"""energymon_pipeline/alerts/ is a library: states, evaluation and delivery without dagster
(directly or through another module), so the CLI uses it as it is; the sensors are
ops/alerts.py. Checked from the source, as tests/test_layers.py checks the other layers."""

from __future__ import annotations

import pytest
from test_layers import MODULES, reached_from

ALERT_MODULES = sorted(name for name in MODULES if name.startswith("energymon_pipeline.alerts"))


def test_the_walk_sees_the_alerts_package():
    assert "energymon_pipeline.alerts.evaluate" in ALERT_MODULES
    assert "dagster" in reached_from("energymon_pipeline.ops.alerts")


@pytest.mark.parametrize("module", ALERT_MODULES)
def test_alerts_import_no_dagster(module):
    chains = reached_from(module)
    bad = [" -> ".join(chain) for name, chain in sorted(chains.items())
           if name == "dagster" or name.startswith("dagster_")]  # fmt: skip
    assert not bad, f"{module} reaches dagster: {bad}"
