#!/usr/bin/env bash
# The test command: installs what the tests need, starts the test servers on
# loopback (each file in scripts/services/ installs and starts one), then runs
# the workspace tests with DR_REQUIRE_SERVERS=1 so that a test whose server is
# missing fails instead of skipping.
#
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p dr-postgres`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export DR_TEST_RUN_DIR
DR_TEST_RUN_DIR=$(mktemp -d /tmp/drt.XXXXXX)
chmod 755 "$DR_TEST_RUN_DIR"
cleanup() {
  for f in "$DR_TEST_RUN_DIR"/*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$DR_TEST_RUN_DIR" 2>/dev/null || true
}
trap cleanup EXIT

scripts/install-deps.sh
for svc in scripts/services/*.sh; do
  # shellcheck disable=SC1090
  source "$svc"
done

export DR_REQUIRE_SERVERS=1
export RUST_BACKTRACE=1
if [ $# -gt 0 ]; then
  cargo test --all-features "$@"
else
  cargo test --workspace --all-features
fi
