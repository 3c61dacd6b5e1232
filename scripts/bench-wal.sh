#!/usr/bin/env bash
# WAL archiving benchmark: dr wal-push / wal-fetch against pgBackRest's
# archive-push / archive-get on the same 20 real segments of one throwaway
# PostgreSQL 15 cluster, in one run. Needs root (runs PostgreSQL and
# pgBackRest as the postgres user), Debian's postgresql-15 and pgbackrest.
# Usage: cargo build --release -p dr-cli && scripts/bench-wal.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install postgresql-15 pgbackrest bc
DR=${DR:-$PWD/target/release/dr}
B=/usr/lib/postgresql/15/bin
W=$(mktemp -d /tmp/drwal.XXXXXX); chmod 755 "$W"; chown postgres "$W"
PORT=$(free_port)
trap 'runuser -u postgres -- $B/pg_ctl -D $W/data -m immediate stop >/dev/null 2>&1 || true; rm -rf $W' EXIT
runuser -u postgres -- $B/initdb -D $W/data -U postgres --auth=trust >/dev/null
runuser -u postgres -- $B/pg_ctl -D $W/data -o "-p $PORT -k $W -c listen_addresses=127.0.0.1 -c wal_keep_size=2GB" -l $W/log -w start >/dev/null
psql -q -h 127.0.0.1 -p $PORT -U postgres -c "CREATE TABLE t (g int, v text)"
for i in $(seq 1 20); do
  psql -q -h 127.0.0.1 -p $PORT -U postgres -c "INSERT INTO t SELECT g, md5(random()::text) FROM generate_series(1,60000) g" -c "SELECT pg_switch_wal()" >/dev/null
done
cd $W/data
segs=$(ls pg_wal | grep -E '^[0-9A-F]{24}$' | head -20); n=$(echo "$segs" | wc -l)
ms() { echo "scale=1; ($2 - $1) * 1000 / $n" | bc; }

"$DR" key generate --output $W/key.txt > $W/rcpt
"$DR" repo init --repo $W/repo --recipient "$(cat $W/rcpt)" >/dev/null
t0=$(date +%s.%N); for s in $segs; do "$DR" wal-push --repo $W/repo --source bench pg_wal/$s; done; t1=$(date +%s.%N)
for s in $segs; do "$DR" wal-push --repo $W/repo --source bench pg_wal/$s; done; t2=$(date +%s.%N)
mkdir -p $W/fetch
for s in $segs; do "$DR" wal-fetch --repo $W/repo --identity $W/key.txt --source bench $s $W/fetch/$s; done; t3=$(date +%s.%N)
s1=$(echo $segs | awk '{print $1}'); cmp $W/fetch/$s1 pg_wal/$s1
dr_size=$(du -sb $W/repo/wal | awk '{print $1}')

mkdir -p $W/pgbr $W/pgbrlog $W/pgfetch; chown -R postgres $W/pgbr $W/pgbrlog $W/pgfetch
cat > $W/pgbackrest.conf <<CONF
[global]
repo1-path=$W/pgbr
compress-type=zst
process-max=2
log-path=$W/pgbrlog
lock-path=$W/pgbrlog
log-level-console=warn
[bench]
pg1-path=$W/data
pg1-port=$PORT
pg1-socket-path=$W
CONF
chmod 644 $W/pgbackrest.conf
PB="runuser -u postgres -- pgbackrest --config=$W/pgbackrest.conf --stanza=bench"
$PB stanza-create >/dev/null
p0=$(date +%s.%N); for s in $segs; do $PB archive-push $W/data/pg_wal/$s; done; p1=$(date +%s.%N)
for s in $segs; do $PB archive-get $s $W/pgfetch/$s; done; p2=$(date +%s.%N)
pb_size=$(du -sb $W/pgbr/archive | awk '{print $1}')

echo "| $n segments of 16 MiB | dr | pgBackRest |"
echo "|---|---:|---:|"
echo "| push, ms per segment | $(ms $t0 $t1) | $(ms $p0 $p1) |"
echo "| re-push of a stored segment, ms | $(ms $t1 $t2) | - |"
echo "| fetch, ms per segment | $(ms $t2 $t3) | $(ms $p1 $p2) |"
echo "| stored MiB | $(echo "scale=1; $dr_size / 1048576" | bc) | $(echo "scale=1; $pb_size / 1048576" | bc) |"
