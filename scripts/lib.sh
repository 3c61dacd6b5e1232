# Shared helpers for the project's scripts. Source it; it defines functions only.

# apt_install PKG...: installs Debian packages that are missing (runs apt-get
# update once per process).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ -z "${_DR_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq >&2
    _DR_APT_UPDATED=1
  fi
  echo "installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# dr_venv: prints the path of the project's Python virtualenv for test
# servers (moto, OpenBao), creating it when missing.
dr_venv() {
  local v="${DR_VENV:-$HOME/.cache/dr-test-venv}"
  [ -x "$v/bin/python" ] || python3 -m venv "$v" >&2
  echo "$v"
}

# free_port: prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS]: waits until 127.0.0.1:PORT accepts connections.
wait_port() {
  local port=$1 limit=${2:-30} i=0
  while ! (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do
    i=$((i+1)); [ $i -gt $((limit*10)) ] && { echo "port $port did not open within ${limit}s" >&2; return 1; }
    sleep 0.1
  done
}
