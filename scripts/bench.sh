#!/usr/bin/env bash
# Plaza benchmarks (docs/benchmarks.md): installs the peers, builds plaza-edge and plaza-bench in
# release mode, then runs `plaza-bench suite` with the given arguments, which starts every server
# itself. Usage:
#   scripts/bench.sh --scenario fanout --connections 5000 --rates 200,500,1000,2000 --runs 3
#   scripts/bench.sh --install-only      # just install the peers (nats-server, Socket.IO + Redis)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p .tools

# A recent nats-server for the NATS tests and benchmarks, pinned (scripts/install-nats.sh).
./scripts/install-nats.sh
export PLAZA_NATS_SERVER="$PWD/.tools/nats/bin/nats-server"

# Socket.IO 4 + Redis adapter peer: pinned by bench/peers/socketio/package-lock.json.
if [ ! -f bench/peers/socketio/node_modules/.package-lock.json ] ||
   ! cmp -s bench/peers/socketio/package-lock.json bench/peers/socketio/node_modules/.bench-lock; then
  echo "==> npm ci in bench/peers/socketio"
  (cd bench/peers/socketio && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.bench-lock)
fi

# redis-server from Debian. The package starts a system service where an init system runs;
# the bench starts its own private instance on a free port, so stop that one.
if ! command -v redis-server >/dev/null; then
  echo "==> apt-get install redis-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl disable --now redis-server
  elif command -v service >/dev/null; then
    service redis-server stop >/dev/null 2>&1 || true
  fi
fi

if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi

packages=(-p plaza-edge --bin plaza-edge -p plaza-bench --bin plaza-bench)
case " $* " in
  *" cluster "*|*"=cluster "*) packages+=(-p plaza-broker --bin plaza-broker) ;;
esac
echo "==> cargo build --release ${packages[*]}"
cargo build --release --locked "${packages[@]}"
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/plaza-bench" suite "$@"
