#!/usr/bin/env bash
# The crate layering rules (ARCHITECTURE.md, "Crates"), checked against the resolved
# dependency graph: a crate must not link what belongs to another hop.
#   plaza-edge    never links the Raft node (openraft) or its log (redb), nor plaza-broker;
#   plaza-broker  never links the NATS client (async-nats), nor plaza-backend or plaza-edge;
#   plaza-rooms   is I/O-free: no tokio, no quinn;
#   plaza-proto   depends on no other Plaza crate and no runtime;
#   plaza-net     knows no Raft, no NATS, no room state.
# And no source file of those crates past 600 lines.
# Usage: scripts/check-layering.sh   (exit 1 and the offending paths on any violation)
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
# forbid <package> <crate>...: fails if any listed crate is in the package's normal dependency
# tree (dev-dependencies are the tests' business; build-dependencies have none of these).
forbid() {
  local package=$1
  shift
  local tree
  tree=$(cargo tree --locked -p "$package" -e normal --prefix none --format '{p}' 2>/dev/null |
    awk '{print $1}' | sort -u)
  for crate in "$@"; do
    if grep -qx "$crate" <<<"$tree"; then
      echo "layering: $package depends on $crate:"
      cargo tree --locked -p "$package" -e normal -i "$crate" 2>/dev/null | head -20 | sed 's/^/    /'
      failed=1
    fi
  done
}

forbid plaza-edge openraft redb plaza-broker
forbid plaza-broker async-nats plaza-backend plaza-edge
forbid plaza-rooms tokio tokio-util quinn openraft async-nats plaza-net plaza-backend
forbid plaza-proto tokio quinn plaza-rooms plaza-net plaza-backend plaza-broker plaza-edge
forbid plaza-net openraft redb async-nats plaza-rooms plaza-backend plaza-broker plaza-edge
forbid plaza-backend openraft redb plaza-broker plaza-edge

# Small files (STYLE.md): no source file of the product crates past 600 lines.
while read -r lines file; do
  if [ "$file" != total ] && [ "$lines" -gt 600 ]; then
    echo "layering: $file has $lines lines (at most 600: split it by concept)"
    failed=1
  fi
done < <(find proto rooms net backend broker edge process -name '*.rs' -not -path '*/target/*' -print0 |
  xargs -0 wc -l)

if [ "$failed" -ne 0 ]; then
  echo "layering: FAILED (see ARCHITECTURE.md, Crates)"
  exit 1
fi
echo "layering: ok (edge without openraft/redb, broker without async-nats, rooms without tokio; no file past 600 lines)"
