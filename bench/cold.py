"""Cold runs: `poll_meters_job` launched the way production launches it (issue 17, part 1).

Every production poll is a new Dagster run in a new process: it imports the code location,
loads the definitions and reads the registry from nothing. The warm-cycle rows of the bench
never see that, so per fleet size this module sets up what the daemon has:

- a Dagster instance in a temp DAGSTER_HOME (SQLite storage there, telemetry off, the
  DefaultRunLauncher, a non-queued coordinator so a launch starts at once, and the pools'
  default limit of 1 as config/dagster.local.yaml, since the read op claims link pools);
- a SQLite registry in the same folder, built by the product's own registry layer
  (bench/cold_registry.py): migrated, the shipped sdm630 profile, one meter per fleet member;
- a workspace with two code locations, `energymon_pipeline.definitions` and the bench's
  empty job (bench/empty_location.py), loaded by a WorkspaceProcessContext, which starts their
  code servers with the settings' env vars (ENERGYMON_DATABASE_URL, INFLUXDB_*,
  ENERGYMON_SPOOL_DIR, ENERGYMON_DATA_DIR, TZ=UTC) in their environment;

then launches runs through GraphQL's `launchRun` mutation, executed in-process on a request
context: the DefaultRunLauncher asks the code server to start the run's own process.

Each run is timed from the launch to RUN_SUCCESS and split by its own event log timestamps:
launch -> the run process started (the engine event "Started process for run (pid: N)"),
-> RUN_START (imports and loading the definitions), each op (STEP_START -> STEP_SUCCESS), and
the rest (between and after the ops: event writes, output handling, the run's end). The run
process's CPU seconds and peak RSS are sampled from /proc/<pid> every ~20 ms, from the pid in
that engine event until the process is gone (utime + stime and VmHWM are both cumulative, so a
late first sample loses nothing). Beside each cold run, on the same instance and fleet: the
empty job (Dagster's own floor for a run) and a transport floor cycle (bench/methods.py
FloorCycle, in a bench worker), interleaved round by round after one warm-up of each. Those
runs are launched as from the launchpad (no run config: one sample, at once); one more poll run
per size is launched as the schedule launches one, due a little later (`scheduled_run`), for
the first sample's lateness.

`product` (a folder holding another checkout's energymon_pipeline, e.g. a git worktree of an
older commit) makes the code servers, the run processes and the registry set-up use that
product code: that is how bench/cold_baseline.json was measured. `bytecode=False` makes the
code servers and runs ignore the installed .pyc files but the standard library's, and compile
every other module they import, as a run did before `make sync` compiled the environment's
bytecode.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bench.fleet import FleetProcesses
from bench.influxd import Influxd
from bench.procs import BenchError, Worker, log_tail

BENCH = Path(__file__).resolve().parent
POLL_LOCATION = "energymon"
EMPTY_LOCATION = "bench_empty"
POLL_JOB = "poll_meters_job"
EMPTY_JOB = "empty_job"
JOBS = {"cold": (POLL_LOCATION, POLL_JOB), "empty": (EMPTY_LOCATION, EMPTY_JOB)}
REPOSITORY = "__repository__"  # the name Dagster gives the repository of a dg.Definitions
#: The read op's metadata key for the first sample's lateness (issue 17, part 3).
LATENESS_KEY = "first sample late (s)"
READ_OP = "read_meters"
SAMPLE_INTERVAL_S = 0.02
SETUP_TIMEOUT_S = 300.0
#: After the run's status says it is done, how long its process may take to exit.
EXIT_TIMEOUT_S = 30.0
FLOOR_READY_TIMEOUT_S = 120.0
#: How long before its sample second the scheduled run is launched (the schedule itself ticks
#: a minute ahead; a cold start takes a few seconds).
SCHEDULED_LEAD_S = 15.0
#: How long the code servers may take to exit once the workspace is closed.
CODE_SERVER_EXIT_S = 30.0

#: Variables the definitions read: the harness's own values must not leak into the runs.
_SETTINGS_PREFIXES = (
    "ENERGYMON_",
    "INFLUXDB_",
    "INFLUX_UPDATER_CRON_",
    "SCHEDULER_CRON_",
    "POSTGRES_",
    "VIRTUAL_SERVER_",
    "DAGSTER_",
)

_INSTANCE_YAML = """\
# The bench's cold-run instance (bench/cold.py): SQLite storage in this folder, runs launched
# at once in their own process, link pools as config/dagster.local.yaml.
storage:
  sqlite:
    base_dir: {home}
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
concurrency:
  pools:
    default_limit: 1
    granularity: op
telemetry:
  enabled: false
"""

_WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: energymon_pipeline.definitions
      working_directory: {product}
      location_name: {poll}
  - python_file:
      relative_path: {empty_file}
      working_directory: {bench}
      location_name: {empty}
"""

LAUNCH_RUN = """
mutation BenchLaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def product_info(product: Path) -> dict:
    """Which product code the cold runs used: its folder, commit and whether it had changes."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(product), *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    status = git("status", "--porcelain", "--", "energymon_pipeline")
    return {
        "path": str(product),
        "commit": git("rev-parse", "HEAD") or "unknown",
        "commit_date": git("log", "-1", "--format=%cI") or "unknown",
        "changes": bool(status),
    }


# -- /proc sampling -----------------------------------------------------------------------------


class ProcSampler:
    """CPU seconds (utime + stime) and VmHWM of one process, sampled until it is gone; each
    figure keeps the last value read (both are cumulative)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu_s = 0.0
        self.vmhwm_kb = 0
        self.samples = 0
        self.gone = False
        self._ticks = os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{self.pid}/status", encoding="ascii") as handle:
                status = handle.read()
        except OSError:
            self.gone = True
            return
        if fields[0] in ("Z", "X"):  # exited, not yet reaped: its figures are final
            self.gone = True
        self.cpu_s = max(self.cpu_s, (int(fields[11]) + int(fields[12])) / self._ticks)
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            self.vmhwm_kb = max(self.vmhwm_kb, int(match.group(1)))
        self.samples += 1


# -- one run -------------------------------------------------------------------------------------


def launch(
    process_context, location: str, job: str, run_config: dict | None = None
) -> tuple[str, float]:
    """launchRun through GraphQL, in-process, as the webserver and the daemon's launches go:
    returns the run id and the wall time just before the launch."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    request = process_context.create_request_context()
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": REPOSITORY,
            "pipelineName": job,
        },
        "runConfigData": run_config or {},
        "mode": "default",
    }
    launched = time.time()
    result = execute_dagster_graphql(request, LAUNCH_RUN, {"executionParams": params})
    if result.errors:
        raise BenchError(f"launchRun {job}: {result.errors[0]}")
    data = result.data["launchRun"]
    if data["__typename"] != "LaunchRunSuccess":
        detail = data.get("message") or "; ".join(e["message"] for e in data.get("errors", []))
        raise BenchError(f"launchRun {job}: {data['__typename']}: {detail}")
    return data["run"]["runId"], launched


def _run_pid(instance, run_id: str) -> int | None:
    from dagster import DagsterEventType

    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = _PID.search(_message(entry))
        if match:
            return int(match.group(1))
    return None


def _message(entry) -> str:
    """An event's message (an engine event's is on the event, not the entry)."""
    event = entry.dagster_event
    return entry.user_message or (event.message if event is not None else "") or ""


def watch(instance, run_id: str, timeout_s: float) -> ProcSampler | None:
    """Waits (bounded) for the run to end and its process to exit, sampling the process."""
    deadline = time.monotonic() + timeout_s
    sampler: ProcSampler | None = None
    finished_at: float | None = None
    checks = 0
    while True:
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"run {run_id} did not finish within {timeout_s:g} s")
        if sampler is None:
            pid = _run_pid(instance, run_id)
            if pid is not None:
                sampler = ProcSampler(pid)
        if sampler is not None and not sampler.gone:
            sampler.sample()
        # The run's status costs a storage query: every ~0.2 s once the process is watched.
        if sampler is None or checks % 10 == 0:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished and finished_at is None:
                finished_at = now
        checks += 1
        if finished_at is not None:
            if sampler is None:
                sampler = _pid_after_the_end(instance, run_id)
            if sampler is None or sampler.gone or now - finished_at > EXIT_TIMEOUT_S:
                return sampler
        time.sleep(SAMPLE_INTERVAL_S)


def _pid_after_the_end(instance, run_id: str) -> ProcSampler | None:
    pid = _run_pid(instance, run_id)
    if pid is None:
        return None
    sampler = ProcSampler(pid)
    sampler.sample()
    return sampler


def measure(instance, run_id: str, launched: float, sampler: ProcSampler | None) -> dict:
    """One run's figures from its own event log (see the module docstring)."""
    from dagster import DagsterEventType
    from dagster._serdes import serialize_value

    entries = instance.all_logs(run_id)
    run = instance.get_run_by_id(run_id)
    stamp: dict[str, float] = {}
    ops: dict[str, dict[str, float]] = {}
    metadata: dict[str, object] = {}
    for entry in entries:
        event = entry.dagster_event
        message = _message(entry)
        if event is None:
            continue
        kind = event.event_type
        if kind == DagsterEventType.ENGINE_EVENT and _PID.search(message):
            stamp.setdefault("process", entry.timestamp)
        elif kind == DagsterEventType.RUN_START:
            stamp["run_start"] = entry.timestamp
        elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
            stamp["run_end"] = entry.timestamp
        elif kind == DagsterEventType.STEP_START:
            ops.setdefault(event.step_key, {})["start"] = entry.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ops.setdefault(event.step_key, {})["end"] = entry.timestamp
        data = event.event_specific_data
        values = getattr(data, "metadata", None)
        values = values if isinstance(values, dict) else {}
        if event.step_key == READ_OP:
            metadata.update({k: getattr(v, "value", v) for k, v in values.items()})
        elif LATENESS_KEY in values:  # the read op's key, wherever the run reports it
            metadata.setdefault(LATENESS_KEY, getattr(values[LATENESS_KEY], "value", None))
    status = run.status.value if run is not None else "unknown"
    if status != "SUCCESS" or not {"process", "run_start", "run_end"} <= stamp.keys():
        raise BenchError(f"run {run_id} ended {status}: " + _last_messages(entries))
    op_seconds = {
        key: times["end"] - times["start"]
        for key, times in ops.items()
        if "start" in times and "end" in times
    }
    total = stamp["run_end"] - launched
    stages = {
        "launch -> process": stamp["process"] - launched,
        "imports + definitions": stamp["run_start"] - stamp["process"],
        **{f"op {key}": seconds for key, seconds in op_seconds.items()},
    }
    stages["rest"] = total - sum(stages.values())
    late = metadata.get(LATENESS_KEY)
    return {
        "run_id": run_id,
        "launched": launched,
        "seconds": total,
        "stages": stages,
        "events": len(entries),
        #: What the run's event rows hold: each entry as the event log stores it (its `event`
        #: column is the serialized entry), for the capacity section's database size.
        "event_bytes": sum(len(serialize_value(entry).encode()) for entry in entries),
        "cpu_s": sampler.cpu_s if sampler else None,
        "vmhwm_kb": sampler.vmhwm_kb if sampler else None,
        "proc_samples": sampler.samples if sampler else 0,
        "first_sample_late_s": float(late) if isinstance(late, int | float) else None,
        "meters_failed": metadata.get("meters failed"),
        "values_read": metadata.get("values read"),
    }


def _last_messages(entries, count: int = 8) -> str:
    texts = (_message(e).splitlines() for e in entries[-count:])
    return " | ".join(lines[0][:200] for lines in texts if lines)


def run_once(
    process_context,
    instance,
    location: str,
    job: str,
    timeout_s: float,
    run_config: dict | None = None,
) -> dict:
    run_id, launched = launch(process_context, location, job, run_config)
    try:
        sampler = watch(instance, run_id, timeout_s)
    except BaseException:  # too slow, or Ctrl-C: the run's process goes too
        _stop_run_process(instance, run_id)
        raise
    return measure(instance, run_id, launched, sampler)


def _stop_run_process(instance, run_id: str) -> None:
    """SIGKILL the run's process, if it started and is still there (its code server would
    otherwise wait for it on the way out)."""
    with contextlib.suppress(Exception):
        pid = _run_pid(instance, run_id)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


# -- the set-up of one fleet size ----------------------------------------------------------------


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """File descriptors 1 and 2 pointed at `path` while the code servers start: they, and the
    run processes they start later, log there instead of over the bench's own output."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as log_file:
            os.dup2(log_file.fileno(), 1)
            os.dup2(log_file.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in enumerate(saved, start=1):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ replaced for the code servers started inside (they inherit it, and the run
    processes inherit theirs); restored afterwards."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run_env(
    folder: Path, influx: Influxd, database: str, product: Path, bytecode: bool
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}
    if not bytecode:
        # .pyc files are looked for under a prefix that holds only the standard library's, and
        # none are written: every process compiles every other module it imports, as before
        # `make sync` compiled the environment's bytecode (Python's own was compiled then too).
        env["PYTHONPYCACHEPREFIX"] = str(stdlib_bytecode(folder.parent / "stdlib-bytecode"))
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(
        {
            "DAGSTER_HOME": str(folder / "dagster_home"),
            "ENERGYMON_DATABASE_URL": f"sqlite:///{folder / 'registry.sqlite'}",
            "ENERGYMON_DATA_DIR": str(folder / "data"),
            "ENERGYMON_SPOOL_DIR": str(folder / "spool"),
            "INFLUXDB_HOSTNAME": influx.host,
            "INFLUXDB_PORT": str(influx.port),
            "INFLUXDB_DB": database,
            "TZ": "UTC",
            "PYTHONPATH": str(product),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def stdlib_bytecode(prefix: Path) -> Path:
    """A PYTHONPYCACHEPREFIX tree with the standard library's compiled modules (linked, or
    copied, from its __pycache__ folders), made once per bench run."""
    if prefix.is_dir():
        return prefix
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tag = sys.implementation.cache_tag
    for cached in stdlib.rglob(f"__pycache__/*.{tag}.pyc"):
        if "site-packages" in cached.parts:
            continue
        source_dir = cached.parent.parent
        target = prefix / source_dir.relative_to(source_dir.anchor) / cached.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(cached, target)
        except OSError:
            shutil.copy2(cached, target)
    return prefix


def build_registry(folder: Path, env: dict[str, str], members: list[dict], max_connections):
    """The registry, by the product's own registry layer (bench/cold_registry.py)."""
    config = folder / "registry.json"
    config.write_text(
        json.dumps(
            {
                "url": env["ENERGYMON_DATABASE_URL"],
                "members": members,
                "max_connections": max_connections,
            }
        ),
        encoding="utf-8",
    )
    log_path = folder / "registry.log"
    with open(log_path, "wb") as out:
        done = subprocess.run(
            [sys.executable, "-P", str(BENCH / "cold_registry.py"), str(config)],
            env=env,
            cwd=env["PYTHONPATH"],
            stdout=subprocess.PIPE,
            stderr=out,
            timeout=SETUP_TIMEOUT_S,
            check=False,
        )
    enabled = done.stdout.decode().strip()
    if done.returncode != 0 or enabled != str(len(members)):
        raise BenchError(
            f"the cold runs' registry was not built (exit {done.returncode}, {enabled!r} "
            f"meters enabled); log {log_path}:\n{log_tail(log_path)}"
        )


def _floor_worker(folder: Path, fleet: FleetProcesses, concurrency: int, max_connections):
    config = {
        "method": "floor",
        "members": [vars(member) for member in fleet.members],
        "concurrency": concurrency,
        "max_connections": max_connections,
        # Unused by the floor (it writes nothing), read by the worker's set-up.
        "influx_host": "127.0.0.1",
        "influx_port": 0,
        "database": "unused",
        "spool_dir": str(folder / "floor-spool"),
    }
    path = folder / "floor.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return Worker(
        f"floor ({fleet.size} meters, cold-run fleet)",
        [sys.executable, "-m", "bench.worker", str(path)],
        folder / "floor.log",
    )


def run_timeout(meters: int) -> float:
    """A generous bound on one cold run (a hang ends the bench instead of blocking it)."""
    return 180.0 + 0.2 * meters


def cold_size(
    meters: int,
    *,
    delay_ms: float,
    repeats: int,
    influx: Influxd,
    temp: Path,
    product: Path,
    fleet_processes: int,
    units_per_port: int,
    concurrency: int,
    bytecode: bool = True,
) -> dict:
    """Warm-up (one cold run, one empty run, one floor cycle: not counted), then `repeats`
    rounds of the three, rotating their order."""
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    folder = temp / f"cold-{meters}"
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(_INSTANCE_YAML.format(home=home), encoding="utf-8")
    workspace = folder / "workspace.yaml"
    workspace.write_text(
        _WORKSPACE_YAML.format(
            product=product,
            poll=POLL_LOCATION,
            empty_file=BENCH / "empty_location.py",
            bench=BENCH,
            empty=EMPTY_LOCATION,
        ),
        encoding="utf-8",
    )
    database = f"bench_cold_{meters}"
    env = _run_env(folder, influx, database, product, bytecode)
    # The plain fleet's layout: each port stands for meters with an address each.
    max_connections = units_per_port
    log(f"cold runs, {meters} meters, {delay_ms:g} ms: starting the fleet")
    floor: Worker | None = None
    with FleetProcesses(
        meters,
        delay_ms,
        processes=fleet_processes,
        units_per_port=units_per_port,
        log_dir=folder,
    ) as fleet:
        try:
            members = [vars(member) for member in fleet.members]
            build_registry(folder, env, members, max_connections)
            floor = _floor_worker(folder, fleet, concurrency, max_connections)
            floor.receive(FLOOR_READY_TIMEOUT_S)
            floor_timeout = 60 + 0.5 * meters
            instance = DagsterInstance.from_config(str(home))
            try:
                with _environ(env), _output_to(folder / "code-servers.log"):
                    # The code servers start here, with the runs' environment.
                    context = WorkspaceProcessContext(
                        instance, WorkspaceFileTarget([str(workspace)])
                    )
                with context:
                    _check_locations(context)

                    def one(what: str) -> dict:
                        if what == "floor":
                            return floor.request("cycle", floor_timeout)
                        location, job = JOBS[what]
                        return run_once(context, instance, location, job, run_timeout(meters))

                    kinds = ("cold", "empty", "floor")
                    result: dict = {
                        "meters": meters,
                        "delay_ms": delay_ms,
                        "warmup": {},
                        **{kind: [] for kind in kinds},
                    }
                    for kind in kinds:
                        result["warmup"][kind] = one(kind)
                    log(
                        "  warm-up: "
                        + ", ".join(f"{k} {result['warmup'][k]['seconds']:.3f} s" for k in kinds)
                    )
                    for round_ in range(repeats):
                        shift = round_ % len(kinds)
                        for kind in kinds[shift:] + kinds[:shift]:
                            result[kind].append(one(kind))
                        cold = result["cold"][-1]
                        log(
                            f"  round {round_ + 1}/{repeats}: "
                            + ", ".join(f"{k} {result[k][-1]['seconds']:.3f} s" for k in kinds)
                            + f"; cold run CPU {cold['cpu_s'] or float('nan'):.2f} s, peak RSS "
                            f"{(cold['vmhwm_kb'] or 0) / 1024:.0f} MB, {cold['events']} events"
                        )
                    result["scheduled"] = scheduled_run(context, instance, meters)
                    return result
            finally:
                stop_code_servers(home)
                instance.dispose()
        finally:
            if floor is not None:
                floor.stop()


def scheduled_run(process_context, instance, meters: int) -> dict:
    """One more poll run, launched as the poll schedule launches its runs (the run config a
    tick gives: the minute and the second to sample at), due SCHEDULED_LEAD_S after the
    launch: the schedule ticks a minute ahead, the bench gives a run less time, but more than
    a cold start takes. The run waits for its second; its read op says how late the first
    sample was ("first sample late (s)", where the product reports it)."""
    due = math.ceil(time.time() + SCHEDULED_LEAD_S)
    minute = datetime.fromtimestamp(due, UTC).replace(second=0)
    config = {
        "ops": {
            "load_definitions": {
                "config": {"sample_seconds": [due % 60], "scheduled_minute": minute.isoformat()}
            }
        }
    }
    run = run_once(
        process_context,
        instance,
        POLL_LOCATION,
        POLL_JOB,
        run_timeout(meters) + SCHEDULED_LEAD_S,
        config,
    )
    run["due_after_launch_s"] = due - run["launched"]
    late = run["first_sample_late_s"]
    log(
        f"  scheduled run, due {run['due_after_launch_s']:.1f} s after its launch: first sample "
        + ("late: not reported" if late is None else f"{late:+.3f} s from its second")
    )
    return run


def _processes_naming(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (the code servers name their instance's
    folder in theirs)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def stop_code_servers(home: Path, timeout_s: float = CODE_SERVER_EXIT_S) -> None:
    """Waits (bounded) for the code servers of the instance in `home` to exit after the
    workspace asked them to, then SIGTERMs and SIGKILLs what is left: a code server still
    running when its instance's folder is deleted hangs instead of exiting."""
    marker = str(home)
    deadline = time.monotonic() + timeout_s
    while _processes_naming(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        left = _processes_naming(marker)
        if not left:
            return
        log(f"  stopping {len(left)} code server(s) still running: {left}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + 5
        while _processes_naming(marker) and time.monotonic() < deadline:
            time.sleep(0.1)


def _check_locations(context) -> None:
    """Both code locations loaded, or a BenchError with the load error."""
    workspace = context.create_request_context()
    for name in (POLL_LOCATION, EMPTY_LOCATION):
        error = workspace.get_code_location_error(name)
        if error is not None:
            raise BenchError(f"code location {name!r} did not load: {error.message}")
        if not workspace.has_code_location(name):
            raise BenchError(f"code location {name!r} is not in the workspace")
