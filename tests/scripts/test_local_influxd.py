"""scripts/local-influxd.sh, the private InfluxDB of `make run`: started for real (Debian's
influxd) in a temp ENERGYMON_DATA_DIR on a free loopback port, it answers /ping, keeps
everything under the data dir, listens on 127.0.0.1 only with reporting off, and stops on
`stop` and when the process that started it dies; it starts nothing when something already
answers, when the host is not this machine, or when turned off. Every wait is bounded."""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from influx_fixtures import _free_port, _influxd_binary, _service_missing

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local-influxd.sh"
SCRIPT_TIMEOUT_S = 90  # the script's own start bound is 60 s
STOP_BOUND_S = 30  # watchdog poll (1 s) + the script's stop bound (15 s), with room


def script_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INFLUXDB_", "ENERGYMON_LOCAL_INFLUXD"))
    }
    env |= {"ENERGYMON_DATA_DIR": str(data_dir), "INFLUXDB_PORT": str(port)} | extra
    return env


def run_script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )


def pings(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return response.status == 204
    except (urllib.error.URLError, OSError):
        return False


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan may wait unreaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s+Z", status, re.MULTILINE)


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout_s:.0f} s")


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening(pid: int) -> set[tuple[str, str, int]]:
    """(protocol, address, port) of every TCP listener and UDP socket the process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for proto, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] in inodes and fields[3] == state:
                address, port = fields[1].split(":")
                found.add((proto, _address(address), int(port, 16)))
    return found


@pytest.fixture
def influxd_on_path() -> str:
    binary = _influxd_binary()
    if binary is None:
        _service_missing(
            "influxd (InfluxDB 1.x) is not installed; scripts/ensure-services.sh installs it"
        )
    return str(Path(binary).parent) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture
def started(tmp_path, influxd_on_path):
    """The script's influxd in tmp_path/data on a free port; stopped after the test."""
    data_dir, port = tmp_path / "data", _free_port()
    env = script_env(data_dir, port, PATH=influxd_on_path)
    result = run_script("start", env)
    try:
        yield data_dir, port, env, result
    finally:
        run_script("stop", env)


def test_start_serves_under_the_data_dir_on_loopback_only_and_stop_stops_it(started):
    data_dir, port, env, result = started
    assert result.returncode == 0, result.stdout + result.stderr
    root = data_dir / "influxdb"
    assert f"on http://127.0.0.1:{port} (data in {root}" in result.stdout
    assert pings(port)

    pid = int((root / "influxd.pid").read_text())
    assert alive(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(root / "influxdb.conf").encode() in cmdline
    for folder in ("meta", "data"):  # wal appears with the first write
        assert (root / folder).is_dir(), folder

    config = (root / "influxdb.conf").read_text()
    assert re.search(r"^reporting-disabled = true$", config, re.MULTILINE)
    assert re.search(r"^\s*auth-enabled = false$", config, re.MULTILINE)
    binds = re.findall(r'^\s*bind-address = "([^"]*)"$', config, re.MULTILINE)
    assert binds and all(b.startswith("127.0.0.1:") for b in binds), binds
    rpc_port = int(binds[0].rsplit(":", 1)[1])
    assert f'bind-address = "127.0.0.1:{port}"' in config and rpc_port not in (0, port)
    paths = re.findall(r'^\s*(?:dir|wal-dir|bind-socket) = "([^"]*)"$', config, re.MULTILINE)
    assert len(paths) == 4 and all(Path(p).is_relative_to(root) for p in paths), paths

    sockets = listening(pid)
    assert {("tcp", "127.0.0.1", port), ("tcp", "127.0.0.1", rpc_port)} <= sockets
    assert all(address == "127.0.0.1" for _, address, _ in sockets), sockets

    again = run_script("start", env)  # it answers now: nothing second is started
    assert again.returncode == 3, again.stderr
    assert (
        again.stdout == f"local-influxd: InfluxDB already answers at localhost:{port}; using it\n"
    )

    stopped = run_script("stop", env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"local-influxd: stopped influxd (pid {pid})\n"
    assert not alive(pid)
    assert not pings(port)
    assert not (root / "influxd.pid").exists()
    assert (root / "meta").is_dir()  # the data stays for the next start


def test_it_stops_when_the_process_that_started_it_dies(tmp_path, influxd_on_path):
    data_dir, port = tmp_path / "data", _free_port()
    env = script_env(data_dir, port, PATH=influxd_on_path)
    pid_file = data_dir / "influxdb" / "influxd.pid"
    with open(tmp_path / "parent.log", "wb") as log:
        parent = subprocess.Popen(
            ["bash", "-c", f"{SCRIPT} start && exec sleep {SCRIPT_TIMEOUT_S * 2}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: pings(port), SCRIPT_TIMEOUT_S, "influxd did not answer")
        pid = int(pid_file.read_text())
        assert alive(pid)
        parent.send_signal(signal.SIGKILL)  # no chance to clean up
        parent.wait(timeout=10)
        wait_until(lambda: not alive(pid), STOP_BOUND_S, "influxd outlived its parent")
        assert not pings(port)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        run_script("stop", env)


def test_a_taken_port_fails_with_the_log_and_leaves_nothing_running(tmp_path, influxd_on_path):
    data_dir = tmp_path / "data"
    with socket.socket() as taken:  # listens, but is no InfluxDB: /ping gets no answer
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = script_env(data_dir, port, PATH=influxd_on_path)
        result = run_script("start", env)
    assert result.returncode == 1
    assert f"influxd exited while starting on 127.0.0.1:{port}" in result.stderr
    assert "address already in use" in result.stderr
    assert not (data_dir / "influxdb" / "influxd.pid").exists()
    config = str(data_dir / "influxdb" / "influxdb.conf").encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                assert config not in (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue


class _Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the handler API's name)
        self.send_response(204 if self.path == "/ping" else 404)
        self.end_headers()

    def log_message(self, *_args):
        pass


@pytest.fixture
def answering_port():
    """Something that already answers /ping on a loopback port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_nothing_is_started_when_something_answers(tmp_path, answering_port):
    env = script_env(tmp_path / "data", answering_port)
    result = run_script("start", env)
    assert result.returncode == 3, result.stderr
    assert result.stdout == (
        f"local-influxd: InfluxDB already answers at localhost:{answering_port}; using it\n"
    )
    assert not (tmp_path / "data").exists()
    stop = run_script("stop", env)  # nothing of ours to stop, and nothing else is touched
    assert stop.returncode == 0 and stop.stdout == ""
    assert pings(answering_port)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            # TEST-NET-1: not this machine, and nothing answers there.
            {"INFLUXDB_HOSTNAME": "192.0.2.1"},
            "note: InfluxDB is not reachable at 192.0.2.1:{port}; readings wait in the spool "
            "({data}/spool) until it is (see README).\n",
        ),
        (
            {"ENERGYMON_LOCAL_INFLUXD": "off"},
            "local-influxd: ENERGYMON_LOCAL_INFLUXD=off: not starting a private InfluxDB\n",
        ),
    ],
)
def test_nothing_is_started_for_another_host_or_when_off(tmp_path, extra, expected):
    port = _free_port()
    env = script_env(tmp_path / "data", port, **extra)
    result = run_script("start", env)
    assert result.returncode == 3, result.stderr
    assert result.stdout == expected.format(port=port, data=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_an_unknown_switch_value_is_one_line(tmp_path):
    env = script_env(tmp_path / "data", _free_port(), ENERGYMON_LOCAL_INFLUXD="maybe")
    result = run_script("start", env)
    assert result.returncode == 1
    assert result.stderr == (
        "local-influxd: ENERGYMON_LOCAL_INFLUXD=maybe is not a choice; allowed: auto, off\n"
    )
    assert not (tmp_path / "data").exists()
