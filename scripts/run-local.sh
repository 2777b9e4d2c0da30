#!/usr/bin/env bash
# `make run`: energymon on its embedded defaults. Migrates the registry (SQLite in
# .energymon/ unless ENERGYMON_DATABASE_URL or POSTGRES_HOST say otherwise), starts the
# virtual Modbus server (the seeded meter 0 reads from it), a private InfluxDB when none
# answers (scripts/local-influxd.sh) and the Dagster webserver on 127.0.0.1:3001 with its
# daemon (schedules and the new-meter sensor). Dagster keeps its run history in
# .energymon/dagster, across restarts. Ctrl-C stops everything.
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

virtual_server=""
private_influxd=""
cleanup() {
  if [ -n "$virtual_server" ]; then
    kill "$virtual_server" 2>/dev/null || true
    wait "$virtual_server" 2>/dev/null || true
  fi
  if [ -n "$private_influxd" ]; then
    ./scripts/local-influxd.sh stop || true
  fi
}
trap cleanup EXIT INT TERM

# A private InfluxDB in $ENERGYMON_DATA_DIR/influxdb when none answers on this machine; it
# also stops by itself when this script goes away.
influxd_status=0
./scripts/local-influxd.sh start || influxd_status=$?
case $influxd_status in
  0) private_influxd=1 ;;
  3) ;;  # one answers already, or it is not on this machine (the script said which)
  *) echo "note: no private InfluxDB (see above); readings wait in the spool until one answers" \
          "on ${INFLUXDB_HOSTNAME:-localhost}:${INFLUXDB_PORT:-8086}." ;;
esac

"$UV" run python -m virtual_server --port "$VIRTUAL_SERVER_PORT" &
virtual_server=$!
echo "energymon: Dagster UI on http://$WEB_HOST:$WEB_PORT (Ctrl-C stops everything);" \
     "the newest readings: $UV run energymon latest"
"$UV" run dagster dev -h "$WEB_HOST" -p "$WEB_PORT" -w config/workspace.local.yaml
