#!/usr/bin/env bash
# `make run`: energymon on its embedded defaults. Migrates the registry (SQLite in
# .energymon/ unless ENERGYMON_DATABASE_URL or POSTGRES_HOST say otherwise), starts the
# virtual Modbus server (the seeded meter 0 reads from it) and the Dagster webserver on
# 127.0.0.1:3001 with its daemon (schedules and the new-meter sensor). Dagster keeps its run
# history in .energymon/dagster, across restarts. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}

export ENERGYMON_DATA_DIR=${ENERGYMON_DATA_DIR:-$PWD/.energymon}
export DAGSTER_HOME=${DAGSTER_HOME:-$ENERGYMON_DATA_DIR/dagster}
export VIRTUAL_SERVER_PORT=${VIRTUAL_SERVER_PORT:-5020}
WEB_HOST=${DAGSTER_WEBSERVER_HOST:-127.0.0.1}
WEB_PORT=${DAGSTER_WEBSERVER_PORT:-3001}
mkdir -p "$DAGSTER_HOME"
cp config/dagster.local.yaml "$DAGSTER_HOME/dagster.yaml"

"$UV" run energymon db upgrade

"$UV" run python -m virtual_server --port "$VIRTUAL_SERVER_PORT" &
virtual_server=$!
cleanup() {
  kill "$virtual_server" 2>/dev/null || true
  wait "$virtual_server" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if ! curl -fsS -m 2 "http://${INFLUXDB_HOSTNAME:-localhost}:${INFLUXDB_PORT:-8086}/ping" >/dev/null 2>&1; then
  echo "note: InfluxDB is not reachable at ${INFLUXDB_HOSTNAME:-localhost}:${INFLUXDB_PORT:-8086};" \
       "readings wait in the spool ($ENERGYMON_DATA_DIR/spool) until it is (see README)."
fi
echo "energymon: Dagster UI on http://$WEB_HOST:$WEB_PORT (Ctrl-C stops everything)"
"$UV" run dagster dev -h "$WEB_HOST" -p "$WEB_PORT" -w config/workspace.local.yaml
