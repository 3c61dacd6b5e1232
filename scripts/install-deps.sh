#!/usr/bin/env bash
# Installs the system packages the tests and the demo need (Debian packages
# only; PostgreSQL 15 from Debian). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
# protobuf: etcd-client's build script runs protoc (dr-k8s, feature etcd).
# age, jq: the README's "Recovering without dr" commands (dr-cli/tests/recover_without_dr.rs).
apt_install postgresql-15 postgresql-contrib zstd protobuf-compiler libprotobuf-dev age jq
