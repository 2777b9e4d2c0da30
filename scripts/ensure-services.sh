#!/usr/bin/env bash
# Makes sure the services the test suite talks to are installed and running on this machine:
# PostgreSQL on 127.0.0.1:5432 (trust auth on this machine kind), and the `influxd` binary
# (InfluxDB 1.x). influxd is only installed, never started as a system service: the test
# fixture (tests/influx_fixtures.py) starts its own on free loopback ports in a temp folder, and
# `make run` its private one (scripts/local-influxd.sh, which calls this script with `influxd`).
# Also Chromium (Debian package `chromium`), which the browser test (tests/e2e/test_ui_browser.py)
# drives through Python playwright; only installed, never started here.
# With arguments (postgres, influxd, chromium) only those. Idempotent; bounded waits.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432

log() { echo "ensure-services: $*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "$what did not come up within ${seconds}s"
  return 1
}

ensure_postgres() {
  if pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
    return 0
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL (Debian package postgresql)"
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 60 "PostgreSQL on $PG_HOST:$PG_PORT" pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

# The machine's own Debian archive entry, with its suite replaced by bookworm, as a sources
# file for apt (deb822 when the machine uses .sources files, one-line otherwise). Prints
# nothing when no Debian archive entry is found.
bookworm_sources_entry() {
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    # First stanza of type deb whose URIs point at the main Debian archive (not -security).
    awk '
      function flush() {
        if (is_deb && is_archive && !done) { printf "%s", stanza; done = 1 }
        stanza = ""; is_deb = 0; is_archive = 0
      }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      /^Types:/ { if ($0 ~ /[[:space:]]deb([[:space:]]|$)/) is_deb = 1; stanza = stanza "Types: deb\n"; next }
      /^URIs:/ { if ($0 ~ /\/debian\/?([[:space:]]|$)/) is_archive = 1 }
      /^Suites:/ { stanza = stanza "Suites: bookworm\n"; next }
      { stanza = stanza $0 "\n" }
      END { flush() }
    ' "$file" | sed '/^$/d' | grep . && return 0
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    grep -E '^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+/debian/?[[:space:]]' "$file" \
      | head -n1 \
      | sed -E 's#^([[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+)[^[:space:]]+#\1bookworm#' \
      | grep . && return 0
  done
  return 1
}

influxdb_candidate() {
  apt-cache policy influxdb 2>/dev/null | awk '/Candidate:/ { print $2 }'
}

POLICY_RC=/usr/sbin/policy-rc.d
policy_saved=""
policy_replaced=""
restore_policy_rc() {
  if [ -n "$policy_saved" ]; then
    as_root mv "$policy_saved" "$POLICY_RC"
  elif [ -n "$policy_replaced" ]; then
    as_root rm -f "$POLICY_RC"
  fi
  policy_saved="" policy_replaced=""
}

ensure_influxd() {
  if command -v influxd >/dev/null 2>&1; then
    return 0
  fi
  as_root apt-get update -qq
  apt_updated=1
  local candidate
  candidate=$(influxdb_candidate)
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    # Debian dropped influxdb after bookworm: take it from bookworm, through a copy of the
    # machine's own Debian entry (same mirror and keyring) with the suite name changed.
    local entry target
    if ! entry=$(bookworm_sources_entry); then
      log "no Debian archive entry in /etc/apt/sources.list{,.d}; install influxd (InfluxDB 1.x) by hand"
      return 1
    fi
    if printf '%s\n' "$entry" | grep -q '^Types:'; then
      target=/etc/apt/sources.list.d/energymon-bookworm.sources
    else
      target=/etc/apt/sources.list.d/energymon-bookworm.list
    fi
    log "this suite has no influxdb package; adding $target (bookworm)"
    printf '%s\n' "$entry" | as_root tee "$target" >/dev/null
    as_root apt-get update -qq
  fi
  # Keep the package from starting its system service: a policy-rc.d that denies every start,
  # unless the machine already has one that does (Docker images usually do).
  policy_saved="" policy_replaced=""
  if ! { [ -x "$POLICY_RC" ] && { "$POLICY_RC" influxdb start >/dev/null 2>&1; [ $? = 101 ]; }; }; then
    if [ -e "$POLICY_RC" ]; then
      policy_saved=$(mktemp)
      as_root cp -p "$POLICY_RC" "$policy_saved"
    fi
    trap restore_policy_rc EXIT
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY_RC" >/dev/null
    as_root chmod 755 "$POLICY_RC"
    policy_replaced=1
  fi
  log "installing influxd (Debian package influxdb)"
  local status=0
  apt_install influxdb || status=$?
  restore_policy_rc
  trap - EXIT
  [ "$status" = 0 ] || return "$status"
  # Nor start it at boot (it would listen on every interface without auth).
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --quiet influxdb.service 2>/dev/null || true
    log "influxdb.service left disabled; 'systemctl enable --now influxdb' to run it as a service"
  fi
  command -v influxd >/dev/null 2>&1
}

ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    return 0
  fi
  log "installing Chromium (Debian package chromium) for the browser test"
  apt_install chromium
  command -v chromium >/dev/null 2>&1
}

# The services named as arguments (postgres, influxd, chromium), or all of them: `make test`
# needs all three, `make run` (scripts/local-influxd.sh) only influxd.
services=("$@")
[ "${#services[@]}" -gt 0 ] || services=(postgres influxd chromium)
for service in "${services[@]}"; do
  case $service in
    postgres)
      ensure_postgres
      log "PostgreSQL ready on $PG_HOST:$PG_PORT" ;;
    influxd)
      ensure_influxd
      log "influxd installed: $(command -v influxd) ($(influxd version 2>/dev/null || echo 'version unknown'))" ;;
    chromium)
      ensure_chromium
      log "chromium installed: $(command -v chromium) ($(chromium --version 2>/dev/null || echo 'version unknown'))" ;;
    *)
      log "unknown service '$service' (known: postgres, influxd, chromium)"
      exit 2 ;;
  esac
done
