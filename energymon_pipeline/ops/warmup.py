"""The imports a poll run needs only after its read, made while a scheduled run waits.

Every poll is a new process that imports the code location before it can read a meter.
pandas (the readings frame) and the InfluxDB client (with requests) are most of what that
costs (about 0.2 s of CPU) and neither is needed before the read is over, so the code location
does not import them (tests/test_run_process.py keeps it so). A scheduled run starts ahead of
its first sample second and waits for it (schedules.py): `before` imports them in that wait.
A run that reads at once imports them where they are used, after the read: importing them in a
thread during the read was measured slower (the read's event loop and the imports take turns
on one interpreter lock, and a cold run is CPU-bound).
"""

from __future__ import annotations

import importlib
import time

#: What validate_readings and write_readings use, in the order they use it.
MODULES = ("energymon_pipeline.readings", "influxdb")
#: The least wait worth importing in: well above what the imports take, so that the first
#: sample is never late for them.
MIN_WAIT_S = 1.0


def before(first_sample: float) -> bool:
    """Import `MODULES` now if `first_sample` (epoch seconds) leaves time for it; True if
    they were imported. A failed import is left for the op that uses the module to raise,
    with its real message."""
    if first_sample - time.time() < MIN_WAIT_S:
        return False
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the op's own import raises it where it is used
            return False
    return True
