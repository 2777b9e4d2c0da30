"""The imports a poll run needs only after its read, made in a thread while it reads.

Every poll is a new process that imports the code location before it can read a meter.
pandas (the readings frame) and the InfluxDB client (with requests) are most of what that
costs (about 0.35 s on a small machine) and neither is needed before the read is over, so the
code location does not import them (tests/test_run_process.py keeps it so): `start` imports
them in a thread from the run's first op, while the run loads its meters and then waits on
them, and the ops that need them call `wait` first. A failed import here is left for the op's
own import to raise where it is used, with its real message.
"""

from __future__ import annotations

import importlib
import sys
import threading

#: What validate_readings and write_readings use, in the order they use it.
MODULES = ("energymon_pipeline.readings", "influxdb")
#: Far more than the imports take; a wait that ends anyway lets the op import them itself.
WAIT_S = 120.0

_lock = threading.Lock()
_thread: threading.Thread | None = None


#: The interpreter's thread switch interval while importing: the read's event loop waits at
#: most this long for the GIL when an answer arrives (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0005


def _import_all() -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
    try:
        for name in MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the op's own import raises it where it is used
                return
    finally:
        sys.setswitchinterval(interval)


def start() -> None:
    """Start importing (once per process; later calls do nothing)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_import_all, name="energymon-warmup", daemon=True)
            _thread.start()


def wait(timeout_s: float = WAIT_S) -> None:
    """Until the imports `start` began are done (at once if none began)."""
    thread = _thread
    if thread is not None:
        thread.join(timeout_s)
