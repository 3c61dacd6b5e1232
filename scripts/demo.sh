#!/usr/bin/env bash
# The demo: on a fresh machine, installs PostgreSQL from Debian's packages when
# missing, builds dr, then makes a throwaway cluster with pgbench data (scale
# 10, or DR_DEMO_SCALE), initialises a local repository with a fresh key,
# backs up, verifies with a restore, restores into a new database and prints
# a summary. Exit 0 when everything matched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p dr-cli -p dr-examples
exec "${CARGO_TARGET_DIR:-target}/release/dr-demo"
