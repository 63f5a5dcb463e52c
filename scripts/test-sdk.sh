#!/usr/bin/env bash
# Tests the TypeScript SDK (sdk/js) and the Next.js example (examples/nextjs-chat):
#   1. installs npm dependencies from the committed lockfiles (skipped when already current),
#   2. installs Chromium with apt-get if /usr/bin/chromium is missing,
#   3. `npm test` in sdk/js: unit tests, then integration tests against real plaza-edge processes,
#   4. builds the example (`next build`) and runs the browser end-to-end test (two headless
#      Chromium pages chatting); screenshots land in target/test-artifacts/.
# Needs: Node >= 20 with npm, and a built plaza-edge: $PLAZA_EDGE_BIN, default
# target/debug/plaza-edge (cargo build -p plaza-edge --bin plaza-edge).
# Prints `sdk: N passed, M failed` last; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export PLAZA_EDGE_BIN="${PLAZA_EDGE_BIN:-$root/target/debug/plaza-edge}"
case "$PLAZA_EDGE_BIN" in /*) ;; *) PLAZA_EDGE_BIN="$root/$PLAZA_EDGE_BIN" ;; esac
export ARTIFACT_DIR="${ARTIFACT_DIR:-$root/target/test-artifacts}"
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export NEXT_TELEMETRY_DISABLED=1 npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

die() {
  echo "test-sdk: $*" >&2
  echo "sdk: 0 passed, 1 failed"
  exit 1
}

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are required (Node >= 20)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  die "Node >= 20 is required, found $(node --version)"
[ -x "$PLAZA_EDGE_BIN" ] || die "plaza-edge not found at $PLAZA_EDGE_BIN: run \`cargo build -p plaza-edge --bin plaza-edge\` or set PLAZA_EDGE_BIN"

# npm ci from the lockfile, skipped when node_modules was installed from the same lockfile.
npm_ci() {
  local dir=$1 stamp lock
  stamp="$dir/node_modules/.plaza-lock.sha256"
  lock=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock" ]; then
    return 0
  fi
  echo "==> npm ci in ${dir#"$root"/}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return 1
  echo "$lock" >"$stamp"
}

if [ ! -x "$CHROMIUM_PATH" ]; then
  [ "$CHROMIUM_PATH" = /usr/bin/chromium ] || die "Chromium not found at CHROMIUM_PATH=$CHROMIUM_PATH"
  command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and apt-get is not available to install it"
  echo "==> installing Chromium (apt-get install chromium)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
    die "apt-get install chromium failed"
fi

npm_ci "$root/sdk/js" || die "npm ci failed in sdk/js"
npm_ci "$root/examples/nextjs-chat" || die "npm ci failed in examples/nextjs-chat"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed_stages=()

echo "==> sdk/js: npm test (unit + integration against plaza-edge)"
(cd sdk/js && npm test 2>&1) | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_stages+=("sdk/js npm test")

echo "==> examples/nextjs-chat: next build"
if (cd examples/nextjs-chat && npm run build 2>&1) | tail -n 25; [ "${PIPESTATUS[0]}" -eq 0 ]; then
  echo "==> examples/nextjs-chat: browser end-to-end (headless Chromium)"
  mkdir -p "$ARTIFACT_DIR"
  (cd examples/nextjs-chat && npm run test:e2e 2>&1) | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed_stages+=("browser e2e")
  ls "$ARTIFACT_DIR"/nextjs-chat-*.png 2>/dev/null | sed 's/^/screenshot: /'
else
  failed_stages+=("next build")
fi

passed=$(awk '/^ℹ pass / { s += $3 } END { print s + 0 }' "$log")
failed=$(awk '/^ℹ fail / { s += $3 } END { print s + 0 }' "$log")
# A stage that failed without a failing test (crash, build error) still counts as a failure.
if [ "${#failed_stages[@]}" -gt 0 ] && [ "$failed" -eq 0 ]; then failed=${#failed_stages[@]}; fi
[ "${#failed_stages[@]}" -eq 0 ] || echo "test-sdk: failed: ${failed_stages[*]}" >&2
echo "sdk: $passed passed, $failed failed"
[ "${#failed_stages[@]}" -eq 0 ] && [ "$failed" -eq 0 ]
