#!/usr/bin/env bash
# Checks the PostgreSQL builds that scripts/install-pg-versions.sh installed:
# for each major (default: 13 14 16 17 18), as the postgres user, initdb a
# cluster in a temp dir, start it with pg_ctl on a free loopback port (socket
# in the temp dir) with archive_mode=on and archive_command='/bin/true',
# connect with 18's psql, load libpqwalreceiver, archive one WAL segment,
# then stop and remove it. Prints one line per major with timings; on a
# failure prints the logs and exits non-zero.
#
# Usage: scripts/check-pg-versions.sh [MAJOR...]   (as root)
# Env:   DR_PG_VERSIONS_DIR (default /opt/dr-pg)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

root="${DR_PG_VERSIONS_DIR:-/opt/dr-pg}"
psql="$root/18/bin/psql"
[ $# -gt 0 ] || set -- 13 14 16 17 18
[ -x "$psql" ] || { echo "no $psql: run scripts/install-pg-versions.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (servers run as the postgres user through runuser)" >&2; exit 1; }

tmp="" bin=""
cleanup() {
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then
    [ -f "$tmp/data/postmaster.pid" ] &&
      runuser -u postgres -- "$bin/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

fail() {
  echo "PostgreSQL $major: FAILED: $*" >&2
  for f in "$tmp"/initdb.log "$tmp"/server.log; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
  done
  exit 1
}

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }

for major in "$@"; do
  bin="$root/$major/bin"
  [ -x "$bin/postgres" ] || { echo "PostgreSQL $major: no $bin/postgres" >&2; exit 1; }
  # Short path: a socket path is limited to 107 bytes.
  tmp=$(mktemp -d /tmp/drpg.XXXXXX)
  chmod 755 "$tmp"
  chown postgres:postgres "$tmp"
  port=$(free_port)
  q() { "$psql" -X -q -At -h "$tmp" -p "$port" -U postgres -d postgres "$@"; }

  t0=$(now)
  # --locale=C -E UTF8: the environment's locale may be unset (initdb then picks
  # SQL_ASCII) or missing from the machine (initdb then fails).
  runuser -u postgres -- "$bin/initdb" -D "$tmp/data" -U postgres --auth=trust \
    --locale=C -E UTF8 --no-sync >"$tmp/initdb.log" 2>&1 || fail "initdb"
  t1=$(now)
  cat >>"$tmp/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
wal_level = replica
archive_mode = on
archive_command = '/bin/true'
CONF
  runuser -u postgres -- "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 start \
    >/dev/null 2>&1 || fail "pg_ctl start"
  t2=$(now)
  version=$(q -c 'select version()') || fail "psql select version()"
  facts=$(q -F ' ' -c "select current_setting('archive_mode'), current_setting('data_checksums'), current_setting('server_encoding')") ||
    fail "psql settings"
  q -c "load 'libpqwalreceiver'" || fail "load libpqwalreceiver"
  q -c 'create table dr_check (x int); insert into dr_check values (1)' -c 'select pg_switch_wal()' >/dev/null ||
    fail "pg_switch_wal"
  archived=0
  for _ in $(seq 100); do
    archived=$(q -c 'select archived_count from pg_stat_archiver') || fail "pg_stat_archiver"
    [ "$archived" -gt 0 ] && break
    sleep 0.1
  done
  [ "$archived" -gt 0 ] || fail "no WAL segment archived within 10 s"
  t3=$(now)
  runuser -u postgres -- "$bin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1 || fail "pg_ctl stop"
  t4=$(now)
  read -r archive_mode checksums encoding <<<"$facts"
  echo "PostgreSQL $major: ok: initdb $(secs "$t0" "$t1") s, start $(secs "$t1" "$t2") s, queries+archive $(secs "$t2" "$t3") s, stop $(secs "$t3" "$t4") s; archive_mode=$archive_mode data_checksums=$checksums encoding=$encoding; $version"
  rm -rf "$tmp"
  tmp=""
done
