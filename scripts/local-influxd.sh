#!/usr/bin/env bash
# A private InfluxDB 1.x for `make run` (scripts/run-local.sh), so its readings land somewhere
# a newcomer can look at (`energymon latest`) without setting up a server.
#
#   local-influxd.sh start   When nothing answers /ping on INFLUXDB_HOSTNAME:INFLUXDB_PORT
#                            (default localhost:8086) and that host is this machine (localhost
#                            or 127.0.0.1), starts influxd (Debian package influxdb, installed
#                            through scripts/ensure-services.sh when missing) with its data,
#                            generated config and log in $ENERGYMON_DATA_DIR/influxdb (default
#                            .energymon/influxdb): HTTP on 127.0.0.1:INFLUXDB_PORT, the RPC
#                            service on another free 127.0.0.1 port, every other listener off,
#                            no auth, usage reporting off (the config is rendered from
#                            config/influxdb/private-influxd.conf, as the tests' and the
#                            benchmark's). Waits (bounded) until /ping answers.
#                            The server stops when `stop` is run or when the process that ran
#                            `start` exits, whichever comes first.
#                            Exit status: 0 started and answering; 3 nothing started (something
#                            answers already, the host is not this machine, or
#                            ENERGYMON_LOCAL_INFLUXD=off), with one line saying which; 1 could
#                            not start (the reason on stderr).
#   local-influxd.sh stop    Stops the influxd that `start` started (bounded); no-op without one.
set -euo pipefail
cd "$(dirname "$0")/.."

START_TIMEOUT_S=60
STOP_TIMEOUT_S=15
NOTHING_STARTED=3

host=${INFLUXDB_HOSTNAME:-localhost}
port=${INFLUXDB_PORT:-8086}
data_root=${ENERGYMON_DATA_DIR:-.energymon}
dir="$data_root/influxdb"
conf="$dir/influxdb.conf"
log_file="$dir/influxd.log"
pid_file="$dir/influxd.pid"

log() { echo "local-influxd: $*"; }
fail() { echo "local-influxd: $*" >&2; exit 1; }

url_host() { case $1 in *:*) echo "[$1]" ;; *) echo "$1" ;; esac; }
ping_url="http://$(url_host "$host"):$port/ping"

answers() {  # answers URL: an HTTP 2xx within 2 s
  python3 -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except Exception:
    sys.exit(1)
' "$1"
}

free_port() {
  python3 -c '
import socket
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    print(probe.getsockname()[1])
'
}

# The pid in the pid file when that process is alive and is influxd on our config (a pid file
# left behind must never make us signal an unrelated process that got the same pid).
our_pid() {
  local pid
  pid=$(cat "$pid_file" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  is_ours "$pid" && echo "$pid"
}

is_ours() {
  alive "$1" && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$(realpath -m "$conf")"
}

alive() {  # alive PID: the process exists and is not a zombie
  [ -r "/proc/$1/status" ] && ! grep -qE '^State:[[:space:]]+Z' "/proc/$1/status" 2>/dev/null
}

stop_pid() {  # stop_pid PID: SIGTERM, bounded wait, then SIGKILL
  local pid=$1
  is_ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((STOP_TIMEOUT_S * 10))); do
    is_ours "$pid" || break
    sleep 0.1
  done
  if is_ours "$pid"; then
    log "influxd (pid $pid) did not stop within ${STOP_TIMEOUT_S}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [ "$(cat "$pid_file" 2>/dev/null)" = "$pid" ]; then rm -f "$pid_file"; fi
}

# The project's one private-influxd config (also the tests' and the benchmark's), with the
# placeholders filled in.
TEMPLATE=config/influxdb/private-influxd.conf

sed_text() {  # sed_text TEXT: TEXT escaped for the replacement side of s|...|...|
  printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}

write_config() {  # write_config RPC_PORT
  local root
  root=$(realpath -m "$dir")
  sed -e "s|\${root}|$(sed_text "$root")|g" \
      -e "s|\${http_port}|$port|g" \
      -e "s|\${rpc_port}|$1|g" \
      -e "s|\${auth_enabled}|false|g" \
      "$TEMPLATE" >"$conf"
}

start() {
  case ${ENERGYMON_LOCAL_INFLUXD:-auto} in
    auto) ;;
    off)
      log "ENERGYMON_LOCAL_INFLUXD=off: not starting a private InfluxDB"
      return "$NOTHING_STARTED" ;;
    *) fail "ENERGYMON_LOCAL_INFLUXD=${ENERGYMON_LOCAL_INFLUXD} is not a choice; allowed: auto, off" ;;
  esac
  if answers "$ping_url"; then
    log "InfluxDB already answers at $host:$port; using it"
    return "$NOTHING_STARTED"
  fi
  case $host in
    localhost | 127.0.0.1) ;;
    *)
      echo "note: InfluxDB is not reachable at $host:$port;" \
        "readings wait in the spool (${ENERGYMON_SPOOL_DIR:-$data_root/spool}) until it is (see README)."
      return "$NOTHING_STARTED" ;;
  esac
  local running
  if running=$(our_pid); then
    fail "a private influxd (pid $running) already runs on $dir but does not answer on" \
      "$host:$port; stop it with scripts/local-influxd.sh stop"
  fi
  if ! command -v influxd >/dev/null 2>&1; then
    log "influxd is not installed; installing it (Debian package influxdb)"
    ./scripts/ensure-services.sh influxd || fail "could not install influxd; install InfluxDB 1.x by hand"
  fi
  mkdir -p "$dir"
  write_config "$(free_port)"
  : >"$log_file"
  local parent=$PPID pid
  influxd run -config "$(realpath -m "$conf")" </dev/null >>"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
  # Stop it when the process that asked for it goes away, even when that one cannot clean up
  # (killed): poll, since a process cannot be told of its grandparent's death.
  (
    trap '' INT HUP
    while alive "$parent" && alive "$pid"; do sleep 1; done
    stop_pid "$pid"
  ) </dev/null >>"$log_file" 2>&1 &
  for _ in $(seq 1 $((START_TIMEOUT_S * 5))); do
    if ! alive "$pid"; then
      rm -f "$pid_file"
      fail "influxd exited while starting on 127.0.0.1:$port; last lines of $log_file:" \
        $'\n'"$(tail -n 20 "$log_file")"
    fi
    if answers "$ping_url"; then
      log "InfluxDB $(influxd version 2>/dev/null | awk '{print $2}') on http://127.0.0.1:$port" \
        "(data in $dir, log $log_file)"
      return 0
    fi
    sleep 0.2
  done
  stop_pid "$pid"
  fail "influxd did not answer $ping_url within ${START_TIMEOUT_S}s; last lines of $log_file:" \
    $'\n'"$(tail -n 20 "$log_file")"
}

stop() {
  local pid
  if pid=$(our_pid); then
    stop_pid "$pid"
    log "stopped influxd (pid $pid)"
  fi
  rm -f "$pid_file"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
