#!/usr/bin/env bash
# Physical backup benchmark: dr against pgBackRest on ONE PostgreSQL 15
# cluster in one run. pgbench scale $SCALE (default 50) plus a table of
# random text (pgbench's own rows compress absurdly: blank padding), WAL
# archived to both tools by one archive_command. Measures a full backup
# (time, stored size) and a restore of it into an empty directory (files
# only, recovery not started: the same work for both tools), each tool twice.
# pgBackRest: Debian's package, zst level 3, process-max 2, posix repository.
# Needs root (runs PostgreSQL and pgBackRest as the postgres user).
# Usage: cargo build --release -p dr-cli && scripts/bench-physical.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install postgresql-15 postgresql-contrib-15 pgbackrest bc
SCALE=${SCALE:-50}
RANDOM_ROWS=${RANDOM_ROWS:-1500000}
DR=${DR:-$PWD/target/release/dr}
[ -x "$DR" ] || { echo "build dr first: cargo build --release -p dr-cli" >&2; exit 2; }
B=/usr/lib/postgresql/15/bin
W=$(mktemp -d /tmp/drphys.XXXXXX); chmod 755 "$W"; chown postgres "$W"
cp "$DR" "$W/dr"; chmod 755 "$W/dr"; DR=$W/dr
PORT=$(free_port)
as_pg() { runuser -u postgres -- "$@"; }
trap 'as_pg $B/pg_ctl -D $W/data -m immediate stop >/dev/null 2>&1 || true; rm -rf $W' EXIT

as_pg "$DR" key generate --output $W/key.txt > $W/rcpt
as_pg "$DR" repo init --repo $W/repo --recipient "$(cat $W/rcpt)" >/dev/null
mkdir -p $W/pgbr $W/pgbrlog; chown -R postgres $W/pgbr $W/pgbrlog
cat > $W/pgbackrest.conf <<CONF
[global]
repo1-path=$W/pgbr
repo1-retention-full=10
compress-type=zst
compress-level=3
process-max=2
log-path=$W/pgbrlog
lock-path=$W/pgbrlog
log-level-console=warn
start-fast=y
[bench]
pg1-path=$W/data
pg1-port=$PORT
pg1-socket-path=$W
CONF
chmod 644 $W/pgbackrest.conf
PB="as_pg pgbackrest --config=$W/pgbackrest.conf --stanza=bench"

as_pg $B/initdb -D $W/data -U postgres --auth=trust >/dev/null
cat >> $W/data/postgresql.conf <<CONF
port = $PORT
unix_socket_directories = '$W'
listen_addresses = '127.0.0.1'
archive_mode = on
archive_command = '$DR wal-push --repo $W/repo --source bench %p && pgbackrest --config=$W/pgbackrest.conf --stanza=bench archive-push %p'
wal_level = replica
max_wal_senders = 4
CONF
as_pg $B/pg_ctl -D $W/data -l $W/log -w start >/dev/null
PSQL="psql -q -h 127.0.0.1 -p $PORT -U postgres"
$B/pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p $PORT -U postgres postgres 2>/dev/null
$PSQL -c "CREATE TABLE notes AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) AS body FROM generate_series(1, $RANDOM_ROWS) g" -c CHECKPOINT
$PB stanza-create >/dev/null
db_mib=$($PSQL -At -c "SELECT pg_database_size('postgres') / 1048576")

now() { date +%s.%N; }
secs() { echo "scale=2; ($2 - $1) / 1" | bc; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
# The WAL backlog (pgbench's load) is archived before each timed backup, so
# neither tool's stop-segment wait includes the other's backlog.
drain() {
  $PSQL -c "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 1 600); do
    [ -z "$(ls $W/data/pg_wal/archive_status | grep '\.ready$' || true)" ] && return 0
    sleep 0.2
  done
  echo "WAL archiving did not catch up" >&2; exit 3
}
dr_backup() { as_pg "$DR" backup bench --repo $W/repo --postgres "postgresql://postgres@127.0.0.1:$PORT/postgres" --physical >/dev/null; }
pb_backup() { $PB backup --type=full >/dev/null; }
declare -a dr_b dr_r pb_b pb_r
RUNS=${RUNS:-3}
for run in $(seq 1 "$RUNS"); do
  # Alternate which tool goes first (page cache).
  if [ $((run % 2)) = 1 ]; then order="dr pb"; else order="pb dr"; fi
  for tool in $order; do
    drain
    t0=$(now); ${tool}_backup; t1=$(now)
    if [ $tool = dr ]; then dr_b+=("$(secs $t0 $t1)"); else pb_b+=("$(secs $t0 $t1)"); fi
  done
  for tool in $order; do
    rm -rf $W/r-$tool; sync
    t0=$(now)
    if [ $tool = dr ]; then
      as_pg "$DR" restore auto --source bench --repo $W/repo --identity $W/key.txt --pgdata $W/r-dr --target immediate >/dev/null
    else
      $PB restore --pg1-path=$W/r-pb --type=immediate >/dev/null
    fi
    t1=$(now)
    if [ $tool = dr ]; then dr_r+=("$(secs $t0 $t1)"); else pb_r+=("$(secs $t0 $t1)"); fi
  done
  # Both restored the same cluster: the same files of the same sizes.
  [ "$(du -s --apparent-size -B1M $W/r-dr/base | cut -f1)" = "$(du -s --apparent-size -B1M $W/r-pb/base | cut -f1)" ]
done
dr_size=$(du -sb $W/repo/backups | cut -f1); dr_n=$RUNS
pb_size=$(du -sb $W/pgbr/backup | cut -f1)
pb_n=$(ls -d $W/pgbr/backup/bench/*F | wc -l)

join() { local IFS=/; echo "$*"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| pgbench scale $SCALE + $RANDOM_ROWS random-text rows (database $db_mib MiB), $RUNS full backups each | dr | pgBackRest | dr / pgBackRest (medians) |"
echo "|---|---:|---:|---:|"
echo "| full backup, s (each run) | $(join "${dr_b[@]}") | $(join "${pb_b[@]}") | $(echo "scale=2; $(median "${dr_b[@]}") / $(median "${pb_b[@]}")" | bc)x |"
echo "| restore, files only, s (each run) | $(join "${dr_r[@]}") | $(join "${pb_r[@]}") | $(echo "scale=2; $(median "${dr_r[@]}") / $(median "${pb_r[@]}")" | bc)x |"
echo "| stored MiB per full backup | $(mib $((dr_size / dr_n))) | $(mib $((pb_size / pb_n))) | $(echo "scale=2; ($dr_size / $dr_n) / ($pb_size / $pb_n)" | bc)x |"
