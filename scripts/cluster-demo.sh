#!/usr/bin/env bash
# A 3-broker + 2-edge Plaza cluster on this machine, with the demo page on both edges.
#
#   ./scripts/cluster-demo.sh            # builds (release), starts everything, Ctrl-C stops it
#
# Brokers: QUIC 127.0.0.1:7001-7003, status http://127.0.0.1:7081-7083/status
# Edges:   http://127.0.0.1:8081/ and http://127.0.0.1:8082/ (open one tab on each)
# State (certificates, Raft data dirs, logs) lives in ${PLAZA_DEMO_DIR:-.demo-cluster}; delete it
# to start from scratch. Kill a broker (kill -9 $(cat .demo-cluster/broker-2.pid)) and watch
# the tabs carry on; restart it with the same command line (see the logs) and it catches up.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${PLAZA_DEMO_DIR:-.demo-cluster}"
cargo build --release --locked -p plaza-broker -p plaza-edge
bin=target/release
mkdir -p "$dir"

if [ ! -f "$dir/certs/ca.pem" ]; then
  "$bin/plaza-broker" cert --out "$dir/certs" --brokers broker-1,broker-2,broker-3 --edges edge-1,edge-2
fi
# One HMAC secret for both edges, so a token from either works on both.
if [ ! -f "$dir/secret" ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/secret"
fi
export PLAZA_AUTH__HMAC_SECRET="$(cat "$dir/secret")"
peers=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
brokers=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "stopping..."
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

for i in 1 2 3; do
  "$bin/plaza-broker" run --node-id "$i" \
    --raft-listen "127.0.0.1:700$i" --http-listen "127.0.0.1:708$i" \
    --data-dir "$dir/data-$i" --peers "$peers" \
    --tls-ca "$dir/certs/ca.pem" \
    --tls-cert "$dir/certs/node-broker-$i.pem" --tls-key "$dir/certs/node-broker-$i.key" \
    2> "$dir/broker-$i.log" &
  pids+=($!)
  echo $! > "$dir/broker-$i.pid"
done

for i in 1 2; do
  "$bin/plaza-edge" --dev --listen "127.0.0.1:808$i" \
    --backend cluster --brokers "$brokers" \
    --broker-tls-ca "$dir/certs/ca.pem" \
    --broker-tls-cert "$dir/certs/node-edge-$i.pem" --broker-tls-key "$dir/certs/node-edge-$i.key" \
    > "$dir/edge-$i.out" 2> "$dir/edge-$i.log" &
  pids+=($!)
  echo $! > "$dir/edge-$i.pid"
done

for i in 1 2; do
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:808$i/readyz" > /dev/null 2>&1; then break; fi
    sleep 0.2
  done
done
cat <<MSG

Plaza cluster running: 3 brokers, 2 edges (logs in $dir/).
  edge 1 demo page:  http://127.0.0.1:8081/
  edge 2 demo page:  http://127.0.0.1:8082/
  broker status:     http://127.0.0.1:7081/status  (7082, 7083)
Open one tab on each edge, join the same room, and chat across them.
Ctrl-C stops everything.
MSG
wait
