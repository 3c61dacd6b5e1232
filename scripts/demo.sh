#!/usr/bin/env bash
# The demo: on a fresh machine, installs PostgreSQL from Debian's packages when
# missing, builds dr, then initialises a local repository with a fresh key and
# makes a throwaway cluster archiving its WAL into it (dr wal-push) with
# pgbench data (scale 10, or DR_DEMO_SCALE); takes a physical base backup,
# deletes rows under a write load, recovers to the moment before with
# dr restore --target-time, and compares; then backs up with pg_dump,
# verifies with a restore, restores into a new database and prints a summary.
# Exit 0 when everything matched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p dr-cli -p dr-examples
exec "${CARGO_TARGET_DIR:-target}/release/dr-demo"
