"""A private influxd for one benchmark run: config in a temp folder, reporting off, every
listener on 127.0.0.1 (free ports) or disabled; the config is the project's one private-influxd
config (energymon_pipeline.influx.private_influxd), as the tests and `make run` use it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.procs import BenchError, log_tail, spawn, stop_group
from energymon_pipeline.influx.private_influxd import config_text

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
