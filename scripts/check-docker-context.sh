#!/usr/bin/env bash
# The image's build context holds the whole workspace: every workspace member that cargo
# lists (cargo metadata, so a member added to Cargo.toml is checked without touching this
# script), every file git tracks under it, and the root files the Dockerfile reads, pass
# docker/Dockerfile.dockerignore (Docker's rules: `**`, `*`, `?`, a match on a parent folder
# excludes everything below it, `!` re-includes, the last matching line wins). The repository's
# .dockerignore must be the same file. Cheap (no image is built); run by
# scripts/test-containers.sh before it builds, and usable on its own.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(readlink .dockerignore 2> /dev/null)" != docker/Dockerfile.dockerignore ]; then
  echo "error: .dockerignore must be a link to docker/Dockerfile.dockerignore" >&2
  exit 1
fi

cargo metadata --no-deps --format-version 1 --offline --locked > "${TMPDIR:-/tmp}/plaza-metadata.$$.json"
trap 'rm -f "${TMPDIR:-/tmp}/plaza-metadata.$$.json"' EXIT
python3 - "${TMPDIR:-/tmp}/plaza-metadata.$$.json" <<'EOF'
import json, os, re, subprocess, sys

root = os.getcwd()
meta = json.load(open(sys.argv[1]))
members = sorted(
    os.path.relpath(os.path.dirname(p["manifest_path"]), root)
    for p in meta["packages"] if p["id"] in meta["workspace_members"]
)

def compile_pattern(pat):
    out, i = "", 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**", i):
            out += ".*"
            i += 2
            if pat.startswith("/", i):
                out = out[:-2] + "(.*/)?"
                i += 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile("^" + out + "$")

rules = []
for line in open("docker/Dockerfile.dockerignore"):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    negate = line.startswith("!")
    pat = os.path.normpath(line[1:] if negate else line).lstrip("/")
    rules.append((negate, compile_pattern(pat)))

def excluded(path):
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            result = not negate
    return result

needed = ["Cargo.toml", "Cargo.lock", "docker/Dockerfile", "docker/probe.rs"]
for member in members:
    files = subprocess.run(["git", "ls-files", "--", member], capture_output=True, text=True,
                           check=True).stdout.split()
    if not files:
        sys.exit(f"error: workspace member {member} has no files tracked by git")
    needed += files
left_out = [f for f in needed if excluded(f)]
if left_out:
    sys.exit("error: docker/Dockerfile.dockerignore leaves out files the image build needs:\n  "
             + "\n  ".join(left_out[:20]))
print(f"docker context: {len(members)} workspace members ({', '.join(members)}), "
      f"{len(needed)} files, none ignored")
EOF
