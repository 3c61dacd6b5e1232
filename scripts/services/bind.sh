# BIND 9: an authoritative primary for the RFC 2136 tests, on loopback, with a
# TSIG key (HMAC-SHA256) allowed to update one zone.
# Exports DR_TEST_BIND_SERVER (ip:port), DR_TEST_BIND_ZONE, DR_TEST_BIND_KEY_NAME
# and DR_TEST_BIND_KEY_FILE (a file holding the base64 secret; a test key, not
# a secret of anyone's).
apt_install bind9 bind9-utils dnsutils
_bind_dir="$DR_TEST_RUN_DIR/bind"
mkdir -p "$_bind_dir"
_bind_port=$(free_port)
_bind_zone="dr-test."
_bind_key="dr-test-key"
tsig-keygen -a hmac-sha256 "$_bind_key" >"$_bind_dir/key.conf"
sed -n 's/.*secret "\(.*\)";.*/\1/p' "$_bind_dir/key.conf" >"$_bind_dir/key.secret"
chmod 600 "$_bind_dir/key.conf" "$_bind_dir/key.secret"
cat >"$_bind_dir/zone.db" <<ZONE
\$TTL 300
@   IN SOA ns.$_bind_zone hostmaster.$_bind_zone ( 1 3600 600 86400 60 )
@   IN NS  ns.$_bind_zone
ns  IN A   127.0.0.1
ZONE
cat >"$_bind_dir/named.conf" <<CONF
options {
  directory "$_bind_dir";
  pid-file "$_bind_dir/named.pid";
  session-keyfile "$_bind_dir/session.key";
  listen-on port $_bind_port { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-query { 127.0.0.1; };
};
controls { };
include "$_bind_dir/key.conf";
zone "$_bind_zone" {
  type primary;
  file "$_bind_dir/zone.db";
  update-policy { grant $_bind_key zonesub ANY; };
};
CONF
named -c "$_bind_dir/named.conf" -f >"$DR_TEST_RUN_DIR/bind.log" 2>&1 &
echo $! >"$DR_TEST_RUN_DIR/bind.pid"
wait_port "$_bind_port" 30
export DR_TEST_BIND_SERVER="127.0.0.1:$_bind_port"
export DR_TEST_BIND_ZONE="$_bind_zone"
export DR_TEST_BIND_KEY_NAME="$_bind_key"
export DR_TEST_BIND_KEY_FILE="$_bind_dir/key.secret"
