"""Child processes the harness starts: each in its own process group, killed with its parent,
and always stopped (SIGTERM, a bounded wait, then SIGKILL) by whoever started it.

`Worker` is a child that speaks a line protocol on stdin/stdout: the parent sends a command
line, the child answers with one `@@bench <json>` line. Anything else a library prints on the
child's stdout is ignored; its stderr goes to a log file that is shown when something fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PREFIX = "@@bench "
_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 10.0


class BenchError(RuntimeError):
    """Something the harness needs did not work; the message says what and where to look."""


def die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the parent dies, so no child
    outlives a harness that was killed without running its clean-up."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], *, log_path: Path, stdin=subprocess.DEVNULL, stdout=None, env=None):
    """Start `argv` in a new session (its own process group), stderr (and stdout unless given)
    to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=log if stdout is None else stdout,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )


def stop_group(process: subprocess.Popen | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group of `process`, wait (bounded), then SIGKILL it."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    # Whatever is left of the group (the leader may be gone while a grandchild is not).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def emit(message: dict[str, Any]) -> None:
    """In a worker: one protocol line on stdout."""
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


class Worker:
    """A child process driven line by line (see the module docstring)."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = spawn(argv, log_path=log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if line.startswith(PREFIX):
                self._lines.put(line[len(PREFIX) :])
        self._lines.put(None)  # end of output: the child exited

    def receive(self, timeout_s: float) -> dict[str, Any]:
        """The next protocol message; BenchError when the child fails, exits or is too slow."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise BenchError(
                f"{self.name}: no answer within {timeout_s:.0f} s; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            ) from None
        if line is None:
            self.process.wait(timeout=STOP_TIMEOUT_S)
            raise BenchError(
                f"{self.name} exited with code {self.process.returncode}; log "
                f"{self.log_path}:\n{log_tail(self.log_path)}"
            )
        message = json.loads(line)
        if "error" in message:
            raise BenchError(f"{self.name}: {message['error']}; log {self.log_path}")
        return message

    def request(self, command: str, timeout_s: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((command + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise BenchError(
                f"{self.name}: cannot send {command!r} ({error}); log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            ) from None
        return self.receive(timeout_s)

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        deadline = time.monotonic() + 5
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_group(self.process)
