"""What a poll run's own process does for its speed: every poll is a new process, so what it
imports and how its memory is collected are paid every minute.

- Imports. pandas (the readings frame) is most of what importing costs (about 0.15 s of
  CPU) and is not needed before the read is over, so the code location does not import it
  (tests/test_run_process.py keeps it so). A scheduled run starts ahead of its first sample
  second and waits for it (schedules.py): `import_before` imports it in that wait. A run that
  reads at once imports it where it is used, after the read: importing it in a thread during
  the read was measured no faster (the read's event loop and the import take turns on one
  interpreter lock, and a cold run is CPU-bound).
- Garbage collection. By the first op the process holds Dagster's, SQLAlchemy's and our
  modules, hundreds of thousands of objects that live as long as it does; each full
  collection walked them all (0.15 s of a 500-meter run's 2 s). `freeze_heap` moves what is
  there into the collector's permanent generation, so later collections walk only what the
  run makes (measured at 500 meters: the run's CPU 2.0 -> 1.6 s).
"""

from __future__ import annotations

import gc
import importlib
import time

#: What validate_readings and write_readings use, in the order they use it.
MODULES = ("energymon_pipeline.readings", "energymon_pipeline.influx.http")
#: The least wait worth importing in: well above what the imports take, so that the first
#: sample is never late for them.
MIN_WAIT_S = 1.0


def import_before(first_sample: float) -> bool:
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


def freeze_heap() -> None:
    """Move every object the process holds now into the collector's permanent generation
    (objects that become garbage later are then never collected: a run's process is short,
    and what it holds at an op's start lives until it ends)."""
    gc.freeze()
