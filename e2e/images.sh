#!/usr/bin/env bash
# OCI images of kotel's binaries, built without Docker, for the e2e node (and for kind):
#
#   operator        /usr/local/bin/kotel-operator             as the Dockerfile's `operator` stage
#   inference-app   /usr/local/bin/inference-app, loadgen and /model   as the Dockerfile's `inference-app` stage
#   otelcol-kotel   /otelcol-kotel (the tests' Collector, built by ocb; user 10001 as upstream's)
#   pause           /pause (the pod sandbox, compiled from the k8s.io/kubernetes module's pause.c)
#   python-agent, java-agent, nodejs-agent
#                   the language agents under /autoinstrumentation (agents/build.sh)
#   python-app      e2e/apps/python: a FastAPI service with no OpenTelemetry code, on Debian's
#                   python3 with its frameworks from PyPI (uvicorn on port 8000)
#   java-app        e2e/apps/java: an HTTP service on the JDK's own server, on Debian's JRE
#   nodejs-app      e2e/apps/nodejs: an Express service, on Debian's nodejs with express from npm
#
# The base of the first three is assembled from Debian packages as distroless/cc is: libc,
# libgcc, libgomp, libstdc++, ca-certificates, tzdata, netbase, and the users root, nonroot
# (65532) and nobody. umoci (Debian) packs them into one OCI layout, and the layout is tarred
# for `ctr images import` (or `kind load image-archive`).
#
#   e2e/images.sh build    build (or reuse) $KOTEL_E2E_CACHE/images/{oci/,images.tar}
#   e2e/images.sh names    print the image references
#
# Binaries come from the workspace's debug build ($CARGO_TARGET_DIR/debug; run
# `cargo build -p kotel-operator -p inference-app -p loadgen` first) and $KOTEL_E2E_CACHE/bin
# (`e2e/controlplane.sh build`). Images are named kotel/<name>:$KOTEL_E2E_IMAGE_TAG (default e2e).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${KOTEL_E2E_CACHE:-$HOME/.cache/kotel-e2e}
target=${CARGO_TARGET_DIR:-$repo/target}/debug
tag=${KOTEL_E2E_IMAGE_TAG:-e2e}
out=$cache/images
layout=$out/oci
base_packages=(base-files netbase tzdata libc6 libgcc-s1 libgomp1 libstdc++6 ca-certificates)
# Debian's CPython and the libraries its standard modules load (no perl, no dpkg).
python_packages=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib media-types
  libbz2-1.0 libcrypt1 libdb5.3 libexpat1 libffi8 libgdbm6 libgdbm-compat4 liblzma5 libncursesw6
  libnsl2 libreadline8 readline-common libsqlite3-0 libssl3 libtinfo6 libtirpc3 libtirpc-common
  libuuid1 zlib1g libzstd1 libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0
  libcom-err2 libselinux1 libpcre2-8-0)

say() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

# The rootfs shared by every image but pause, rebuilt when a package's version changes.
base_rootfs() {
  local versions
  versions=$(apt-cache policy "${base_packages[@]}" 2>/dev/null | awk '/^[^ ]/ {p=$1} /Candidate:/ {print p, $2}')
  if grep -q '(none)' <<<"$versions" || [ "$(wc -l <<<"$versions")" -ne ${#base_packages[@]} ]; then
    say "apt lists lack the base packages; running apt-get update"
    apt-get update -qq
    versions=$(apt-cache policy "${base_packages[@]}" | awk '/^[^ ]/ {p=$1} /Candidate:/ {print p, $2}')
  fi
  local base=$cache/base stamp
  stamp=$(sha256sum <<<"$versions" | cut -c1-16)
  if [ -f "$base/stamp" ] && [ "$(cat "$base/stamp")" = "$stamp" ]; then return 0; fi
  say "assembling the base from Debian packages: ${base_packages[*]}"
  rm -rf "$base"
  mkdir -p "$base/debs" "$base/rootfs"
  (cd "$base/debs" && apt-get -o APT::Sandbox::User=root download -qq "${base_packages[@]}")
  local deb r=$base/rootfs
  for deb in "$base"/debs/*.deb; do dpkg-deb -x "$deb" "$r"; done
  rm -rf "$r"/usr/share/{doc,man,info,lintian,bug,bash-completion} "$r"/etc/{init.d,default,cron.daily,logrotate.d}
  # What ca-certificates' maintainer script would make: the bundle every TLS client reads.
  mkdir -p "$r/etc/ssl/certs"
  cat "$r"/usr/share/ca-certificates/mozilla/*.crt >"$r/etc/ssl/certs/ca-certificates.crt"
  cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$r/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
  mkdir -p "$r/tmp" "$r/root" "$r/home/nonroot"
  chmod 1777 "$r/tmp"
  chmod 700 "$r/root"
  chown 65532:65532 "$r/home/nonroot"
  echo "$stamp" >"$base/stamp"
}

# runtime_rootfs NAME PACKAGE...: Debian packages unpacked into $cache/runtime-NAME/rootfs
# (no maintainer scripts run), rebuilt when a version changes.
runtime_rootfs() {
  local name=$1; shift
  local dir=$cache/runtime-$name stamp p v pinned=()
  # Debian's own version of each (a package installed from elsewhere, such as NodeSource's
  # nodejs, would otherwise be the candidate and cannot be downloaded).
  for p in "$@"; do
    v=$(apt-cache madison "$p" | awk -F'|' '/debian\.org/ {gsub(/ /, "", $2); print $2; exit}')
    [ -n "$v" ] || die "Debian has no package $p"
    pinned+=("$p=$v")
  done
  stamp=$(printf '%s\n' "${pinned[@]}" | sha256sum | cut -c1-16)
  if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ]; then return 0; fi
  say "assembling the $name runtime from Debian packages: $*"
  rm -rf "$dir"
  mkdir -p "$dir/debs" "$dir/rootfs"
  (cd "$dir/debs" && apt-get -o APT::Sandbox::User=root download -qq "${pinned[@]}")
  local deb
  for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/rootfs"; done
  rm -rf "$dir"/rootfs/usr/share/{doc,man,info,lintian} "$dir/debs"
  echo "$stamp" >"$dir/stamp"
}

# app_deps NAME INPUT COMMAND...: an application's frameworks, installed once per INPUT by
# COMMAND (run in $cache/app-NAME/tree) from their registry.
app_deps() {
  local name=$1 input=$2; shift 2
  local dir=$cache/app-$name stamp
  stamp=$(sha256sum <"$input" | cut -c1-16)
  if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ]; then return 0; fi
  say "installing the $name app's frameworks"
  rm -rf "$dir"
  mkdir -p "$dir/tree"
  (cd "$dir/tree" && "$@")
  echo "$stamp" >"$dir/stamp"
}

app_runtimes() {
  runtime_rootfs python "${python_packages[@]}"
  # Into the interpreter's own dist-packages, so that a PYTHONPATH on the container (the
  # agent's) does not hide them.
  app_deps python "$repo/e2e/apps/python/requirements.txt" \
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-conflicts \
    --no-compile --python-version 3.11 --platform manylinux2014_x86_64 --only-binary=:all: \
    --target usr/lib/python3/dist-packages -r "$repo/e2e/apps/python/requirements.txt"
  # The JVM alone: the AWT libraries the package also depends on are never loaded by a
  # headless server, and the certificates are not needed for plain HTTP.
  runtime_rootfs java openjdk-17-jre-headless zlib1g
  runtime_rootfs nodejs nodejs libnode108 libbrotli1 libc-ares2 libicu72 libnghttp2-14 libssl3 \
    libuv1 zlib1g node-acorn node-cjs-module-lexer node-undici
  app_deps nodejs "$repo/e2e/apps/nodejs/package.json" \
    sh -c "cp '$repo/e2e/apps/nodejs/package.json' . && npm install --omit=dev --no-audit --no-fund --loglevel=error >/dev/null"
}

# new_image NAME [base]: a fresh tag NAME (the reference kotel/NAME:TAG is added at the end) in the layout, with the base rootfs as its first layer.
new_image() {
  local name=$1 with_base=${2:-}
  umoci new --image "$layout:$name"
  if [ -n "$with_base" ]; then
    add_layer "$name" "$cache/base/rootfs/."
  fi
}

# add_layer NAME SRC... : one layer holding SRC (copied with cp -a into the rootfs).
add_layer() {
  local name=$1; shift
  local b=$out/bundle
  rm -rf "$b"
  umoci unpack --image "$layout:$name" "$b" >/dev/null
  local src
  for src in "$@"; do
    case $src in
      *=*) mkdir -p "$b/rootfs/$(dirname "${src%%=*}")"; cp -a "${src#*=}" "$b/rootfs/${src%%=*}" ;;
      *) cp -a "$src" "$b/rootfs/" ;;
    esac
  done
  umoci repack --image "$layout:$name" "$b"
  rm -rf "$b"
}

# config NAME umoci-config-flags...: the runtime config; PATH and SSL_CERT_FILE as distroless's.
config() {
  local name=$1; shift
  umoci config --image "$layout:$name" --author kotel --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$@"
}

# A stripped copy of a binary (debug builds carry hundreds of MB of debug info).
stripped() {
  local src=$1 dst=$2
  [ -x "$src" ] || die "$src is missing: ${3:-build it first}"
  cp "$src" "$dst"
  strip --strip-debug "$dst"
}

cmd_build() {
  command -v umoci >/dev/null || die "umoci is required (Debian: umoci)"
  base_rootfs
  app_runtimes
  local inputs=(
    "$target/kotel-operator" "$target/inference-app" "$target/loadgen" "$cache/bin/otelcol-kotel" "$cache/bin/pause"
    "$cache/base/stamp" "${BASH_SOURCE[0]}"
    "$cache"/runtime-{python,java,nodejs}/stamp "$cache"/app-{python,nodejs}/stamp
    "$repo/agents/build.sh" "$repo/agents/python/requirements.txt" "$repo/agents/java/version.txt"
    "$repo/agents/nodejs/package.json" "$repo/agents/nodejs/autoinstrumentation.js"
    "$repo/e2e/apps/python/main.py" "$repo/e2e/apps/java/App.java" "$repo/e2e/apps/nodejs/server.js"
  )
  local f
  for f in "${inputs[@]}"; do [ -e "$f" ] || die "$f is missing (cargo build -p kotel-operator -p inference-app -p loadgen; e2e/controlplane.sh build)"; done
  local stamp
  stamp=$( (echo "$tag"; cat "${inputs[@]}") | sha256sum | cut -c1-16)
  if [ -f "$out/images.tar" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    say "images up to date in $out"
    return 0
  fi
  local start=$SECONDS
  rm -rf "$out"
  mkdir -p "$out/files"
  umoci init --layout "$layout"
  local files=$out/files

  stripped "$target/kotel-operator" "$files/kotel-operator"
  new_image operator base
  add_layer operator "usr/local/bin/kotel-operator=$files/kotel-operator"
  config operator --config.user 65532:65532 --config.workingdir /home/nonroot \
    --config.exposedports 8080/tcp --config.entrypoint /usr/local/bin/kotel-operator

  stripped "$target/inference-app" "$files/inference-app"
  stripped "$target/loadgen" "$files/loadgen"
  "$target/inference-app" train --out "$files/model" >/dev/null
  new_image inference-app base
  add_layer inference-app "usr/local/bin/inference-app=$files/inference-app" \
    "usr/local/bin/loadgen=$files/loadgen" "model=$files/model"
  config inference-app --config.user 65532:65532 --config.workingdir /home/nonroot \
    --config.exposedports 8000/tcp --config.entrypoint /usr/local/bin/inference-app \
    --config.cmd serve --config.cmd --model-dir --config.cmd /model

  new_image otelcol-kotel base
  add_layer otelcol-kotel "otelcol-kotel=$cache/bin/otelcol-kotel"
  config otelcol-kotel --config.user 10001 --config.exposedports 4317/tcp --config.exposedports 4318/tcp \
    --config.entrypoint /otelcol-kotel

  new_image pause
  add_layer pause "pause=$cache/bin/pause"
  config pause --config.user 65535:65535 --config.entrypoint /pause

  local language
  for language in python java nodejs; do
    # The Python agent for the python-app image's interpreter (Debian's 3.11).
    PYTHON_VERSION=3.11 "$repo/agents/build.sh" "$language" "$layout:$language-agent"
  done

  new_image python-app base
  add_layer python-app "$cache/runtime-python/rootfs/." "$cache/app-python/tree/." \
    "app/main.py=$repo/e2e/apps/python/main.py"
  config python-app --config.user 65532:65532 --config.workingdir /app \
    --config.exposedports 8000/tcp --config.entrypoint /usr/bin/python3.11 \
    --config.cmd -m --config.cmd uvicorn --config.cmd main:app --config.cmd --host \
    --config.cmd 0.0.0.0 --config.cmd --port --config.cmd 8000

  javac -d "$files/java" --release 17 "$repo/e2e/apps/java/App.java"
  new_image java-app base
  add_layer java-app "$cache/runtime-java/rootfs/." "app=$files/java"
  config java-app --config.user 65532:65532 --config.workingdir /app \
    --config.exposedports 8000/tcp --config.entrypoint /usr/lib/jvm/java-17-openjdk-amd64/bin/java \
    --config.cmd -cp --config.cmd /app --config.cmd App

  mkdir -p "$files/node/app"
  cp -a "$cache/app-nodejs/tree/." "$repo/e2e/apps/nodejs/server.js" "$files/node/app/"
  new_image nodejs-app base
  add_layer nodejs-app "$cache/runtime-nodejs/rootfs/." "app=$files/node/app"
  config nodejs-app --config.user 65532:65532 --config.workingdir /app \
    --config.exposedports 8000/tcp --config.entrypoint /usr/bin/node --config.cmd /app/server.js

  umoci gc --layout "$layout"
  # containerd names an imported image by this annotation (a bare OCI tag is not a reference).
  python3 - "$layout/index.json" "$tag" <<'EOF'
import json, sys
path, tag = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for m in index["manifests"]:
    name = m["annotations"]["org.opencontainers.image.ref.name"]
    m["annotations"]["io.containerd.image.name"] = "docker.io/kotel/%s:%s" % (name, "3.10" if name == "pause" else tag)
json.dump(index, open(path, "w"))
EOF
  tar -C "$layout" -cf "$out/images.tar" .
  rm -rf "$files"
  echo "$stamp" >"$out/stamp"
  say "built $(names | tr '\n' ' ')in $((SECONDS - start))s ($(du -sh "$out/images.tar" | cut -f1))"
}

names() {
  printf 'kotel/%s\n' "operator:$tag" "inference-app:$tag" "otelcol-kotel:$tag" "pause:3.10" \
    "python-agent:$tag" "java-agent:$tag" "nodejs-agent:$tag" \
    "python-app:$tag" "java-app:$tag" "nodejs-app:$tag"
}

case "${1:-}" in
  build) cmd_build ;;
  names) names ;;
  *) echo "usage: $0 build|names" >&2; exit 2 ;;
esac
