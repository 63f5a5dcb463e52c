#!/usr/bin/env bash
# Plaza's containers for real, with Podman: builds every target of docker/Dockerfile, checks the
# image (user 65532, no shell, entrypoints, HEALTHCHECK probe), then runs
# docker/compose.cluster.yaml (3 brokers + 2 edges) and docker/compose.nats.yaml (3 NATS + 2
# edges), each behind its nginx and its Caddy at once (both terminating TLS with test CAs), and
# breaks them under real wss:// clients (cluster-tests/tests/containers/): chat and presence
# across the edges, the broker leader / a NATS node killed while publishing with idempotency
# keys (every acknowledged publication exactly once, in order), a rolling restart of the edges
# (drain 4000, reconnect through the proxy, recover, no presence storm), runs the Helm chart's
# edge Deployment (NATS) under `podman kube play`, then `podman healthcheck run` on every
# Plaza container.
#
#   scripts/test-containers.sh            # everything; last line: containers: N passed, ...
#
# Environment: PLAZA_CT_BUILD_CPUS=N limits the image build to N cores (default: all);
# PLAZA_CT_OPT_LEVEL (default 1) is the release opt-level the test image is built with, without
# debug info (the Dockerfile's defaults, for users: 3, line tables); PLAZA_CT_VARIANTS (default
# "cluster nats"); PLAZA_CT_IMAGE (scenario work only) uses an image built before and counts
# the skipped build as a failure.
#
# Without a registry (CI): the base and third-party images are local stand-ins made by
# scripts/container-bases.sh. Everything this script creates — containers, pods, networks,
# volumes, images (and the build's intermediate images) — is removed on exit, also on failure.
# Container traffic stays on the compose networks and loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
PODMAN_COMPOSE_VERSION=1.6.0
VARIANTS=${PLAZA_CT_VARIANTS:-cluster nats}
OPT_LEVEL=${PLAZA_CT_OPT_LEVEL:-1}
t0=$(date +%s)

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*" >&2; }
summary() { echo "containers: $passed passed, $failed failed, 0 skipped"; }
elapsed() { echo $(($(date +%s) - $1)); }
TIMES=()

WORK=$(mktemp -d /var/tmp/plaza-ct.XXXXXX)
chmod 755 "$WORK"
TAG="localhost/plaza-ci:$(basename "$WORK" | tr 'A-Z.' 'a-z-')"
PROJECTS=()

# Removes one compose project (containers, volumes, pod, network), whatever state it is in.
teardown_project() {
  local project=$1 ids variant=${1#plaza-}
  if [ -d "$WORK/$variant/docker" ]; then
    (cd "$WORK/$variant/docker" && timeout 120 env PYTHONPATH="$PC_DIR" python3 -m podman_compose \
      -f "compose.$variant.yaml" -f limits.override.yaml down -v -t 5 > /dev/null 2>&1)
  fi
  ids=$(podman ps -aq --filter "label=com.docker.compose.project=$project")
  [ -n "$ids" ] && podman rm -f -t 0 $ids > /dev/null 2>&1
  ids=$(podman volume ls -q | grep "^${project}_")
  [ -n "$ids" ] && podman volume rm -f $ids > /dev/null 2>&1
  podman pod rm -f "pod_$project" > /dev/null 2>&1
  podman network rm -f "${project}_plaza" > /dev/null 2>&1
  return 0
}

cleanup() {
  local rc=$?
  set +e
  echo "==> cleanup: compose projects, containers, volumes, networks, images of this run"
  for project in "${PROJECTS[@]}"; do
    teardown_project "$project"
  done
  podman rm -f -t 0 plaza-ct-edge plaza-ct-broker > /dev/null 2>&1
  podman pod rm -f plaza-edge-pod-0 > /dev/null 2>&1
  for target in runtime broker edge; do podman rmi "$TAG-$target" > /dev/null 2>&1; done
  if [ -f "$WORK/images.before" ]; then
    # Every image (tagged or intermediate) that did not exist before this run.
    podman images -a -q --no-trunc | sort -u > "$WORK/images.after"
    local new
    new=$(comm -13 "$WORK/images.before" "$WORK/images.after")
    [ -n "$new" ] && podman rmi -f $new > /dev/null 2>&1
  fi
  # Volumes this run made that are no compose project's (kube play's ConfigMap volume).
  if [ -f "$WORK/volumes.before" ]; then
    podman volume ls -q | sort > "$WORK/volumes.after"
    comm -13 "$WORK/volumes.before" "$WORK/volumes.after" | xargs -r podman volume rm -f > /dev/null 2>&1
  fi
  # The build's cache mounts (the target directory), if this run made them.
  if [ -f "$WORK/caches.before" ]; then
    find /var/tmp/buildah-cache -mindepth 1 -maxdepth 2 2> /dev/null | sort > "$WORK/caches.after"
    comm -13 "$WORK/caches.before" "$WORK/caches.after" | xargs -r rm -rf
    [ -s "$WORK/caches.before" ] || rmdir /var/tmp/buildah-cache 2> /dev/null
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools -------------------------------------------------------------------------------------
step=$(date +%s)
PC_DIR=$ROOT/.tools/podman-compose
if [ "$(cat "$PC_DIR/.version" 2> /dev/null)" != "$PODMAN_COMPOSE_VERSION" ]; then
  echo "==> installing podman-compose $PODMAN_COMPOSE_VERSION into .tools/podman-compose (PyPI)"
  rm -rf "$PC_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$PC_DIR" "podman-compose==$PODMAN_COMPOSE_VERSION"
  echo "$PODMAN_COMPOSE_VERSION" > "$PC_DIR/.version"
fi
for bin in plaza-edge plaza-broker; do
  [ -x "${CARGO_TARGET_DIR:-target}/debug/$bin" ] || cargo build --locked -p "$bin" --bin "$bin"
done
# The scenarios, compiled before anything starts (they run against the containers later), and
# linted: `cargo clippy --all-targets` leaves out a test target with `test = false`.
cargo test --locked -p plaza-cluster-tests --test containers --no-run 2>&1 | tail -1
if cargo clippy --locked -q -p plaza-cluster-tests --test containers -- -D warnings; then
  pass "clippy on cluster-tests/tests/containers/"
else
  fail "clippy on cluster-tests/tests/containers/"
fi

# ---- build context, base images ------------------------------------------------------------------
if ./scripts/check-docker-context.sh; then pass "build context holds every workspace member"; else fail "build context"; fi
podman images -a -q --no-trunc 2> /dev/null | sort -u > "$WORK/images.before" || : > "$WORK/images.before"
find /var/tmp/buildah-cache -mindepth 1 -maxdepth 2 2> /dev/null | sort > "$WORK/caches.before" || true
podman volume ls -q 2> /dev/null | sort > "$WORK/volumes.before" || : > "$WORK/volumes.before"
step=$(date +%s)
./scripts/container-bases.sh
podman images -a -q --no-trunc | sort -u > "$WORK/images.before.bases"
# Bases made by this run are removed at the end like everything else; bases that were already
# there (a developer's) stay.
TIMES+=("base images: $(elapsed "$step") s")

# ---- image -------------------------------------------------------------------------------------
if [ -n "${PLAZA_CT_IMAGE:-}" ]; then
  # For working on the scenarios only: an image built before (target runtime) is used as it
  # is, and the build and image checks are left out (and counted as failed, so no run that
  # skipped them can pass).
  echo "==> PLAZA_CT_IMAGE=$PLAZA_CT_IMAGE: image build and checks NOT run" >&2
  fail "image build and checks skipped (PLAZA_CT_IMAGE)"
  podman tag "$PLAZA_CT_IMAGE" "$TAG-runtime"
else
# Docker image format: the OCI format has no HEALTHCHECK (Podman builds OCI by default).
build_args=(--pull=never --format docker -f docker/Dockerfile
  --build-arg "CARGO_PROFILE_RELEASE_OPT_LEVEL=$OPT_LEVEL" --build-arg CARGO_PROFILE_RELEASE_DEBUG=0
  --build-arg "REVISION=$(git rev-parse HEAD 2> /dev/null || echo unknown)"
  --build-arg "CREATED=$(date -u +%FT%TZ)")
if [ -n "${PLAZA_CT_BUILD_CPUS:-}" ]; then
  build_args+=(--cpu-period=100000 --cpu-quota=$((PLAZA_CT_BUILD_CPUS * 100000)))
fi
for target in runtime broker edge; do
  step=$(date +%s)
  if podman build "${build_args[@]}" --target "$target" -t "$TAG-$target" . > "$WORK/build-$target.log" 2>&1; then
    TIMES+=("image build, target $target: $(elapsed "$step") s")
    pass "podman build --target $target"
  else
    tail -40 "$WORK/build-$target.log" >&2
    fail "podman build --target $target"
    summary
    exit 1
  fi
done
grep -E '^workspace members:' "$WORK/build-runtime.log" | head -1

inspect() { podman image inspect --format "$2" "$1"; }
for target in runtime broker edge; do
  image=$TAG-$target
  size=$(podman image inspect --format '{{.Size}}' "$image")
  user=$(inspect "$image" '{{.Config.User}}')
  entrypoint=$(inspect "$image" '{{json .Config.Entrypoint}}')
  echo "    $target: $((size / 1000000)) MB, user $user, entrypoint $entrypoint"
  [ "$user" = "65532:65532" ] && pass "$target runs as 65532:65532" || fail "$target user is $user"
  want=/usr/local/bin/plaza-edge
  [ "$target" = broker ] && want=/usr/local/bin/plaza-broker
  [ "$entrypoint" = "[\"$want\"]" ] && pass "$target entrypoint $want" || fail "$target entrypoint $entrypoint"
  shells=0
  for sh in /bin/sh /bin/bash /bin/dash /bin/busybox /usr/bin/sh; do
    if podman run --rm --entrypoint "$sh" "$image" -c true > /dev/null 2>&1; then shells=$((shells + 1)); fi
  done
  [ "$shells" = 0 ] && pass "$target has no shell" || fail "$target has a shell"
  uid=$(podman run --rm --entrypoint /usr/local/bin/plaza-probe "$image" http://127.0.0.1:1/ 2>&1 || true)
  case "$uid" in *"127.0.0.1:1"*) ;; *) fail "$target: plaza-probe did not run: $uid" ;; esac
done
podman run --rm "$TAG-edge" --version > /dev/null && podman run --rm "$TAG-broker" --version > /dev/null \
  && pass "both binaries run in the image" || fail "binaries do not run"

# HEALTHCHECK: the edge target with --dev (on loopback, where the probe looks), the broker
# target as a one-node cluster.
podman run -d --name plaza-ct-edge "$TAG-edge" --dev --listen 127.0.0.1:8080 > /dev/null
mkdir -p "$WORK/one-broker" && chown 65532:65532 "$WORK/one-broker"
podman run --rm --no-healthcheck -v "$WORK/one-broker:/out" --entrypoint plaza-broker "$TAG-broker" \
  cert --out /out --brokers broker-1 > /dev/null
podman run -d --name plaza-ct-broker -v "$WORK/one-broker:/certs:ro" "$TAG-broker" \
  --node-id 1 --peers 1=127.0.0.1:7000 --raft-listen 127.0.0.1:7000 --http-listen 0.0.0.0:7080 \
  --data-dir /var/lib/plaza \
  --tls-ca /certs/ca.pem --tls-cert /certs/node-broker-1.pem --tls-key /certs/node-broker-1.key \
  > /dev/null
for c in plaza-ct-edge plaza-ct-broker; do
  ok=0
  for _ in $(seq 1 40); do
    if podman healthcheck run "$c" > /dev/null 2>&1; then ok=1; break; fi
    sleep 0.5
  done
  [ "$ok" = 1 ] && pass "HEALTHCHECK healthy: $c ($(podman inspect --format '{{.State.Health.Status}}' "$c"))" \
    || { podman logs "$c" 2>&1 | tail -5 >&2; fail "HEALTHCHECK of $c"; }
done
podman rm -f -t 0 plaza-ct-edge plaza-ct-broker > /dev/null
TIMES+=("image checks: done at $(elapsed "$t0") s")
fi

# ---- compose -----------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PLAZA_BIN=${CARGO_TARGET_DIR:-target}/debug

# What every container of a compose project is doing, for a failure's diagnosis: state, exit
# code, OOM kill, restarts, the last lines of its log; and the disk the containers live on.
project_state() {
  local project=$1 lines=$2
  echo "--- state of $project after a failure; disk: $(df -h --output=avail,pcent /var/lib/containers | tail -1)" >&2
  for c in $(podman ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$project"); do
    echo "--- $c: $(podman inspect --format '{{.State.Status}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} restarts={{.RestartCount}} started={{.State.StartedAt}}' "$c")" >&2
    podman logs --tail "$lines" "$c" 2>&1 | grep -v 'systemd connection' | cut -c1-300 >&2
  done
}

run_variant() {
  local variant=$1 project=plaza-$1 file=compose.$1.yaml
  local dir=$WORK/$variant
  local vstart
  vstart=$(date +%s)
  PROJECTS+=("$project")
  # The shipped compose folder, unmodified, with what an operator adds: .env, certs, tls.
  mkdir -p "$dir"
  cp -r docker "$dir/docker"
  rm -rf "$dir/docker/.env" "$dir/docker/certs" "$dir/docker/tls"
  local d=$dir/docker
  local nginx_http nginx_https caddy_http caddy_https
  nginx_http=$(free_port); nginx_https=$(free_port); caddy_http=$(free_port); caddy_https=$(free_port)
  umask 077
  openssl rand -hex 32 > "$dir/secret"
  # docker/.env from .env.example, as an operator makes it: fresh secrets, both proxies, the
  # test's host ports, the image under test.
  PLAZA_IMAGE=$TAG-runtime SECRET=$(cat "$dir/secret") ADMIN=$(openssl rand -hex 24) \
    NATS=$(openssl rand -hex 24) APIKEY=$(openssl rand -hex 24) \
    BINDS="$nginx_http $nginx_https $caddy_http $caddy_https" python3 - "$d" <<'PY'
import os, sys
d = sys.argv[1]
nh, ns, ch, cs = os.environ["BINDS"].split()
values = {
    "COMPOSE_PROFILES": "nginx,caddy",
    "PLAZA_IMAGE": os.environ["PLAZA_IMAGE"],
    "PLAZA_DOMAIN": "localhost",
    "PLAZA_AUTH__HMAC_SECRET": os.environ["SECRET"],
    "PLAZA_API__KEYS": '["%s"]' % os.environ["APIKEY"],
    "PLAZA_HTTP__ALLOWED_ORIGINS": "[]",
    "PLAZA_BROKER_ADMIN_TOKEN": os.environ["ADMIN"],
    "NATS_PASSWORD": os.environ["NATS"],
    "NGINX_HTTP_BIND": "127.0.0.1:" + nh, "NGINX_HTTPS_BIND": "127.0.0.1:" + ns,
    "CADDY_HTTP_BIND": "127.0.0.1:" + ch, "CADDY_HTTPS_BIND": "127.0.0.1:" + cs,
}
out, seen = [], set()
for line in open(os.path.join(d, ".env.example")):
    key = line.split("=", 1)[0].strip()
    if not line.startswith("#") and "=" in line and key in values:
        line = f"{key}={values[key]}\n"
        seen.add(key)
    out.append(line)
out += [f"{k}={v}\n" for k, v in values.items() if k not in seen]
with open(os.path.join(d, ".env"), "w") as f:
    f.writelines(out)
PY
  umask 022
  # The brokers' cluster CA and certificates, made by the image as docs/deploy.md says.
  if [ "$variant" = cluster ]; then
    mkdir -p "$d/certs" && chown 65532:65532 "$d/certs"
    podman run --rm --no-healthcheck -v "$d/certs:/out" --entrypoint plaza-broker "$TAG-runtime" \
      cert --out /out --brokers broker-1,broker-2,broker-3 --edges edge > /dev/null
    rm -f "$d/certs/ca.key"
  fi
  # nginx's certificate for `localhost` from a test CA made here (Caddy makes its own with its
  # local CA).
  mkdir -p "$dir/tlsca" "$d/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=plaza-test-ca \
    -keyout "$dir/tlsca/ca.key" -out "$dir/nginx-ca.pem" 2> /dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$d/tls/privkey.pem" -out "$dir/tlsca/localhost.csr" 2> /dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    > "$dir/tlsca/leaf.ext"
  openssl x509 -req -in "$dir/tlsca/localhost.csr" -CA "$dir/nginx-ca.pem" -CAkey "$dir/tlsca/ca.key" \
    -CAcreateserial -days 1 -extfile "$dir/tlsca/leaf.ext" -out "$d/tls/fullchain.pem" 2> /dev/null

  # This machine lets a process hold at most 20,000 files and fewer processes than Podman
  # gives a container with explicit ulimits (nproc 1048576): an override file, as an operator
  # on such a host would add, lowers the edges' limits. The shipped file stays as it is.
  cat > "$d/limits.override.yaml" <<'EOF'
services:
  edge:
    ulimits:
      nofile: {soft: 16384, hard: 16384}
      nproc: {soft: 32768, hard: 32768}
EOF
  echo "==> $variant: podman-compose -f docker/$file -f limits.override.yaml up -d (nginx and caddy profiles)"
  local step
  step=$(date +%s)
  # Bounded: podman-compose waits for dependencies to run, forever if one cannot start.
  if ! (cd "$d" && timeout 300 env PYTHONPATH="$PC_DIR" python3 -m podman_compose -f "$file" -f limits.override.yaml up -d > "$dir/up.log" 2>&1); then
    tail -30 "$dir/up.log" >&2
    fail "$variant: compose up"
    return 1
  fi
  # Ready: every Plaza container (and every NATS server) healthy, both front ends answering
  # /healthz over TLS.
  local plaza_containers
  plaza_containers=$(podman ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$project" | grep -E '_(broker-[0-9]+|edge)_[0-9]+$' | sort)
  for c in $plaza_containers $(podman ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$project" | grep -E '_nats-[0-9]+_[0-9]+$' | sort); do
    local ok=0
    for _ in $(seq 1 120); do
      if podman healthcheck run "$c" > /dev/null 2>&1; then ok=1; break; fi
      sleep 1
    done
    [ "$ok" = 1 ] || { podman logs "$c" 2>&1 | tail -20 >&2; fail "$variant: $c never healthy"; return 1; }
  done
  local caddy_c
  caddy_c=$(podman ps --format '{{.Names}}' --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=caddy)
  for _ in $(seq 1 60); do
    podman cp "$caddy_c:/data/caddy/pki/authorities/local/root.crt" "$dir/caddy-ca.pem" 2> /dev/null && break
    sleep 1
  done
  for fe in "nginx:$nginx_https:$dir/nginx-ca.pem" "caddy:$caddy_https:$dir/caddy-ca.pem"; do
    IFS=: read -r name port ca <<< "$fe"
    local ok=0
    for _ in $(seq 1 60); do
      # The front ends route only /v1/: ready once an edge answers the server API through it
      # (its own JSON error: no API key here), not nginx/Caddy themselves (502/503 HTML).
      if curl -s --cacert "$ca" --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/v1/api/rooms" 2> /dev/null \
        | grep -q '"error":{"code"'; then ok=1; break; fi
      sleep 1
    done
    if [ "$ok" != 1 ]; then
      fail "$variant: $name front end never ready"
      project_state "$project" 8
      return 1
    fi
  done
  # Finding 11 of the hostile-client review: nothing but /v1/ reaches the edges through them.
  for fe in "nginx:$nginx_https:$dir/nginx-ca.pem" "caddy:$caddy_https:$dir/caddy-ca.pem"; do
    IFS=: read -r name port ca <<< "$fe"
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/metrics")
    if [ "$code" = 404 ]; then
      pass "$variant: $name does not expose /metrics"
    else
      fail "$variant: $name answered /metrics with $code"
    fi
  done
  TIMES+=("$variant: up and ready: $(elapsed "$step") s")
  pass "$variant: compose up behind nginx and caddy ($(echo "$plaza_containers" | wc -l) Plaza containers healthy)"

  # The scenarios (cluster-tests/tests/containers/), every one of this variant.
  step=$(date +%s)
  local brokers=""
  [ "$variant" = cluster ] && brokers="1=127.0.0.1:7081 2=127.0.0.1:7082 3=127.0.0.1:7083"
  local expected
  expected=$(cargo test --locked -q -p plaza-cluster-tests --test containers -- --list "${variant}_" 2> /dev/null | grep -c ': test$' || true)
  set +e
  PLAZA_CT_PROJECT=$project \
    PLAZA_CT_FRONTENDS="nginx@127.0.0.1:$nginx_https@$dir/nginx-ca.pem caddy@127.0.0.1:$caddy_https@$dir/caddy-ca.pem" \
    PLAZA_CT_SECRET_FILE=$dir/secret PLAZA_CT_BROKERS=$brokers \
    cargo test --locked -p plaza-cluster-tests --test containers -- --test-threads=1 --nocapture "${variant}_" \
    2>&1 | tee "$dir/scenarios.log"
  set -e
  local ran ok_count bad
  ran=$(grep -E '^test result:' "$dir/scenarios.log" | tail -1)
  ok_count=$(echo "$ran" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
  bad=$(echo "$ran" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
  if [ -z "$ok_count" ] || [ "$expected" -lt 1 ]; then
    fail "$variant: the scenario tests did not run"
    return 1
  fi
  passed=$((passed + ok_count))
  failed=$((failed + ${bad:-0}))
  [ $((ok_count + ${bad:-0})) = "$expected" ] || fail "$variant: $((ok_count + ${bad:-0})) of $expected scenario tests ran"
  grep -E '^(test |rolling restart|leader-kill|nats-kill)' "$dir/scenarios.log" | grep -v '^test result' || true
  [ "${bad:-0}" = 0 ] || project_state "$project" 25
  TIMES+=("$variant: scenarios ($expected tests): $(elapsed "$step") s")

  [ "$variant" = nats ] && kube_play "$dir" "${project}_plaza"

  # Every Plaza container healthy after all that.
  plaza_containers=$(podman ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$project" | grep -E '_(broker-[0-9]+|edge)_[0-9]+$' | sort)
  for c in $plaza_containers; do
    local ok=0
    for _ in $(seq 1 30); do
      if podman healthcheck run "$c" > /dev/null 2>&1; then ok=1; break; fi
      sleep 1
    done
    [ "$ok" = 1 ] && pass "$variant: podman healthcheck run $c: healthy" || fail "$variant: $c unhealthy"
  done

  step=$(date +%s)
  (cd "$d" && timeout 300 env PYTHONPATH="$PC_DIR" python3 -m podman_compose -f "$file" -f limits.override.yaml down -v -t 30 > "$dir/down.log" 2>&1) || true
  TIMES+=("$variant: compose down: $(elapsed "$step") s; variant total $(elapsed "$vstart") s")
}

# The Helm chart's edge Deployment (NATS mode, helm/examples/nats.yaml) under `podman kube
# play`, on the NATS compose network. Podman 4.3 cannot resolve the Deployment's secretKeyRef
# variables (neither from the rendered Secret in the same file: "secret plaza-auth is not
# valid JSON", nor from a podman secret holding it as JSON: "illegal base64 data"), so their
# values are written into the Deployment; everything else is the chart's output as rendered.
kube_play() {
  local dir=$1 network=$2 step
  step=$(date +%s)
  [ -x .tools/helm/helm ] || ./scripts/test-deploy.sh install > /dev/null
  .tools/helm/helm template plaza helm/plaza -f helm/examples/nats.yaml \
    --set image.repository="${TAG%:*}" --set image.tag="${TAG##*:}-runtime" \
    --set 'nats.servers={nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222}' \
    --set edge.autoscaling.enabled=false --set edge.replicaCount=1 \
    --set edge.ingress.enabled=false --set metrics.serviceMonitor.enabled=false > "$dir/chart.yaml"
  NATS_PASSWORD=$(sed -n 's/^NATS_PASSWORD=//p' "$dir/docker/.env") \
    PYTHONPATH=$ROOT/.tools/kubernetes-validate python3 - "$dir/chart.yaml" "$dir/kube.yaml" <<'PY'
import base64, os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secrets = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
           for d in docs if d["kind"] == "Secret"}
secrets["plaza-nats"] = {"user": "plaza", "password": os.environ["NATS_PASSWORD"]}
keep = [d for d in docs if d["kind"] in ("ConfigMap", "Deployment")]
for d in keep:
    if d["kind"] == "Deployment":
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    e.pop("valueFrom")
                    e["value"] = secrets[ref["name"]][ref["key"]]
yaml.safe_dump_all(keep, open(sys.argv[2], "w"))
PY
  if ! podman kube play --network "$network" "$dir/kube.yaml" > "$dir/kube.log" 2>&1; then
    grep -v systemd "$dir/kube.log" >&2
    fail "kube play of the chart's edge Deployment"
    return 0
  fi
  local c=plaza-edge-pod-0-edge ip ok=0
  for _ in $(seq 1 60); do
    ip=$(podman inspect "$c" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' 2> /dev/null)
    if [ -n "$ip" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ip:8080/readyz")" = 200 ]; then ok=1; break; fi
    sleep 1
  done
  local user ro probe
  user=$(podman inspect "$c" --format '{{.Config.User}}')
  ro=$(podman inspect "$c" --format '{{.HostConfig.ReadonlyRootfs}}')
  probe=$(podman inspect "$c" --format '{{json .Config.Healthcheck.Test}}')
  if [ "$ok" = 1 ]; then
    pass "kube play: the chart's edge Deployment is ready on the NATS cluster (user $user, read-only root $ro)"
  else
    podman logs "$c" 2>&1 | tail -5 >&2
    fail "kube play: the chart's edge never became ready"
  fi
  echo "    kube play: the livenessProbe became the health check $probe (Podman 4.3 turns httpGet into curl in a shell and leaves the named port unresolved; the image has neither)"
  podman kube play --down "$dir/kube.yaml" > /dev/null 2>&1
  TIMES+=("nats: kube play of the chart's edge: $(elapsed "$step") s")
}

for variant in $VARIANTS; do
  # A failed variant is taken down at once: the next one reuses its subnet.
  run_variant "$variant" || { echo "$variant: stopped after a failure" >&2; teardown_project "plaza-$variant"; }
done

echo "==> times"
printf '    %s\n' "${TIMES[@]}"
echo "    total: $(elapsed "$t0") s"
summary
[ "$failed" = 0 ]
