#!/usr/bin/env bash
# Plaza benchmarks (docs/benchmarks.md): installs the peers, builds plaza-edge and plaza-bench in
# release mode, then runs `plaza-bench suite` with the given arguments, which starts every server
# itself. Usage:
#   scripts/bench.sh --scenario fanout --connections 5000 --rates 200,500,1000,2000 --runs 3
#   scripts/bench.sh --install-only      # just install the peers (nats-server, Socket.IO + Redis,
#                                        # uWebSockets.js, Sockudo)
# Everything is installed inside the project (.tools/, bench/peers/*/node_modules); CI tests do
# not need any of it.
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

# uWebSockets.js peer: pinned by bench/peers/uws/package-lock.json (its Node 20 native module;
# the peer refuses to run on the JavaScript fallback).
if [ ! -f bench/peers/uws/node_modules/.package-lock.json ] ||
   ! cmp -s bench/peers/uws/package-lock.json bench/peers/uws/node_modules/.bench-lock; then
  echo "==> npm ci in bench/peers/uws"
  (cd bench/peers/uws && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.bench-lock)
fi

# Sockudo 5.2.0 (Rust, Pusher protocol) from crates.io, built with its own lock file into
# .tools/sockudo (a long build on 2 cores: it runs once, niced).
SOCKUDO_VERSION=5.2.0
if ! [ -x .tools/sockudo/bin/sockudo ] || ! grep -qx "$SOCKUDO_VERSION" .tools/sockudo/VERSION 2>/dev/null; then
  if ! command -v protoc >/dev/null; then
    echo "==> apt-get install protobuf-compiler (Sockudo's metrics-exporter-tcp needs protoc)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
  fi
  echo "==> cargo install sockudo $SOCKUDO_VERSION into .tools/sockudo"
  CARGO_TARGET_DIR="$PWD/.tools/sockudo-build" nice cargo install sockudo --version "$SOCKUDO_VERSION" \
    --locked --no-default-features --features local,v2 --root .tools/sockudo
  echo "$SOCKUDO_VERSION" > .tools/sockudo/VERSION
  rm -rf .tools/sockudo-build
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
