# etcd (Debian etcd-server 3.4, etcdctl from etcd-client) on loopback, and
# what building dr-k8s's etcd feature needs: etcd-client's build script runs
# protoc (protobuf-compiler) on protos importing the well-known types
# (libprotobuf-dev).
# Exports DR_TEST_ETCD_ENDPOINT.
apt_install etcd-server etcd-client protobuf-compiler libprotobuf-dev
_etcd_client=$(free_port)
_etcd_peer=$(free_port)
mkdir -p "$DR_TEST_RUN_DIR/etcd"
etcd --name dr-test --data-dir "$DR_TEST_RUN_DIR/etcd/data" \
  --listen-client-urls "http://127.0.0.1:$_etcd_client" \
  --advertise-client-urls "http://127.0.0.1:$_etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$_etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$_etcd_peer" \
  --initial-cluster "dr-test=http://127.0.0.1:$_etcd_peer" \
  >"$DR_TEST_RUN_DIR/etcd.log" 2>&1 &
echo $! >"$DR_TEST_RUN_DIR/etcd.pid"
wait_port "$_etcd_client" 30
export DR_TEST_ETCD_ENDPOINT="http://127.0.0.1:$_etcd_client"
