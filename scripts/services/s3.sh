# moto server: an S3 (and Route53) emulator on loopback.
# Exports AWS_ENDPOINT_URL, credentials and DR_TEST_S3_URL (a bucket URL).
_venv=$(dr_venv)
[ -x "$_venv/bin/moto_server" ] || "$_venv/bin/pip" install -q 'moto[server]==5.2.5' >&2
_port=$(free_port)
"$_venv/bin/moto_server" -H 127.0.0.1 -p "$_port" >"$DR_TEST_RUN_DIR/moto.log" 2>&1 &
echo $! >"$DR_TEST_RUN_DIR/moto.pid"
wait_port "$_port" 60
export AWS_ENDPOINT_URL="http://127.0.0.1:$_port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
"$_venv/bin/python" - <<PY
import urllib.request
urllib.request.urlopen(urllib.request.Request("$AWS_ENDPOINT_URL/dr-test", method="PUT")).read()
PY
export DR_TEST_S3_URL="s3://dr-test"
