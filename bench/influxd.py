"""A private influxd for one benchmark run: config in a temp folder, reporting off, every
listener on 127.0.0.1 (free ports) or disabled. The config is the one tests/influx_fixtures.py
writes, copied here so the harness does not depend on pytest."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.procs import BenchError, log_tail, spawn, stop_group

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_text(root: Path, http_port: int, rpc_port: int) -> str:
    # Both spellings of the reporting switch: upstream 1.x reads `reporting-disabled`, Debian's
    # build `reporting-enabled`; each ignores the other's key.
    return f"""\
reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root / "meta"}"
  logging-enabled = false

[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
  log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false
  bind-socket = "{root / "influxdb.sock"}"

[ifql]
  enabled = false
  bind-address = "127.0.0.1:0"

[logging]
  level = "warn"
  suppress-logo = true

[[graphite]]
  enabled = false
  bind-address = "127.0.0.1:0"

[[collectd]]
  enabled = false
  bind-address = "127.0.0.1:0"

[[opentsdb]]
  enabled = false
  bind-address = "127.0.0.1:0"

[[udp]]
  enabled = false
  bind-address = "127.0.0.1:0"
"""


def influxd_binary() -> str:
    binary = shutil.which("influxd")
    if binary is None:
        raise BenchError(
            "influxd (InfluxDB 1.x) is not installed; scripts/ensure-services.sh installs it"
        )
    return binary


def influxd_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


class Influxd:
    host = "127.0.0.1"

    def __init__(self, root: Path) -> None:
        self.binary = influxd_binary()
        self.root = root
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Influxd:
        last = ""
        for attempt in range(3):  # a free port can be taken between probing and binding
            self.port, rpc_port = free_port(), free_port()
            config = self.root / "influxdb.conf"
            config.write_text(config_text(self.root, self.port, rpc_port), encoding="utf-8")
            log_path = self.root / f"influxd-{attempt}.log"
            self.process = spawn([self.binary, "run", "-config", str(config)], log_path=log_path)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._ping():
                    return self
                time.sleep(0.05)
            last = log_tail(log_path)
            stop_group(self.process)
            self.process = None
        raise BenchError(f"influxd did not start (3 attempts); last log:\n{last}")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process)

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:
                return response.status == 204
        except (urllib.error.URLError, OSError):
            return False
