#!/usr/bin/env bash
# Runs every check and test Plaza has, on a fresh machine with the Rust toolchain.
# Installs what the tests need into project-local folders (.tools/); starts and stops every
# server the tests use itself. Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p .tools

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test"
cargo test --workspace --locked "$@"
