#!/usr/bin/env bash
# Builds a language agent image the way the OpenTelemetry Operator's autoinstrumentation-*
# images are laid out (the agent under /autoinstrumentation, `cp` on the PATH), without Docker:
# the agent from its registry, busybox (Debian's busybox-static) for `cp`, packed by umoci.
#
#   agents/build.sh LANGUAGE LAYOUT[:TAG]   add the image of LANGUAGE (python, java, nodejs) to
#                                           the OCI layout LAYOUT (created if missing) under TAG
#                                           (default: the language)
#
# Push it with `skopeo copy oci:LAYOUT:TAG docker://REGISTRY/NAME:TAG`, or load it with
# `ctr images import` / `kind load image-archive` after `tar -C LAYOUT -cf image.tar .`, and
# name it in the Instrumentation's spec.<language>.image.
#
#   python   pip installs agents/python/requirements.txt from PyPI, for the applications'
#            interpreter: PYTHON_VERSION (e.g. 3.11; binary wheels for manylinux2014 x86_64),
#            else the python3 on PATH
#   java     opentelemetry-javaagent (agents/java/version.txt) from Maven Central, checked
#            against its published SHA-1, as /autoinstrumentation/javaagent.jar
#   nodejs   npm installs agents/nodejs/package.json from the npm registry, with
#            autoinstrumentation.js (what NODE_OPTIONS=--require loads)
#
# AGENT_CACHE (default ~/.cache/kotel-agents) keeps each installed agent, keyed by its inputs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${AGENT_CACHE:-$HOME/.cache/kotel-agents}
say() { printf '[agents] %s\n' "$*" >&2; }
die() { printf '[agents] error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 python|java|nodejs LAYOUT[:TAG]"
language=$1
layout=${2%%:*}
tag=$language
[[ $2 == *:* ]] && tag=${2#*:}
command -v umoci >/dev/null || die "umoci is required (Debian: umoci)"

# The agent's files, installed once per set of inputs.
agent_tree() {
  local key dir
  case $language in
    python)
      local version=${PYTHON_VERSION:-$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
      local target=()
      [ -n "${PYTHON_VERSION:-}" ] && target=(--python-version "$PYTHON_VERSION" --platform manylinux2014_x86_64 --only-binary=:all:)
      key=$( (cat "$here/python/requirements.txt"; echo "$version ${target[*]}") | sha256sum | cut -c1-16)
      dir=$cache/python-$key
      if [ ! -f "$dir/done" ]; then
        say "pip installing the Python agent for Python $version"
        rm -rf "$dir"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-conflicts --no-compile \
          "${target[@]}" --target "$dir/autoinstrumentation" -r "$here/python/requirements.txt"
        touch "$dir/done"
      fi
      ;;
    java)
      local version url
      version=$(tr -d ' \n' <"$here/java/version.txt")
      dir=$cache/java-$version
      if [ ! -f "$dir/done" ]; then
        url=https://repo1.maven.org/maven2/io/opentelemetry/javaagent/opentelemetry-javaagent/$version/opentelemetry-javaagent-$version.jar
        say "downloading opentelemetry-javaagent $version from Maven Central"
        rm -rf "$dir"
        mkdir -p "$dir/autoinstrumentation"
        curl -sSfL --retry 3 -o "$dir/autoinstrumentation/javaagent.jar" "$url"
        echo "$(curl -sSfL --retry 3 "$url.sha1" | cut -c1-40)  $dir/autoinstrumentation/javaagent.jar" | sha1sum -c --quiet -
        touch "$dir/done"
      fi
      ;;
    nodejs)
      key=$( (cat "$here/nodejs/package.json" "$here/nodejs/autoinstrumentation.js"; node --version) | sha256sum | cut -c1-16)
      dir=$cache/nodejs-$key
      if [ ! -f "$dir/done" ]; then
        say "npm installing the Node.js agent (node $(node --version))"
        rm -rf "$dir"
        mkdir -p "$dir/autoinstrumentation"
        cp "$here/nodejs/package.json" "$here/nodejs/autoinstrumentation.js" "$dir/autoinstrumentation/"
        (cd "$dir/autoinstrumentation" && npm install --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
        touch "$dir/done"
      fi
      ;;
    *) die "unknown language $language (python, java, nodejs)" ;;
  esac
  echo "$dir"
}

# busybox, so that `cp` (and `sh`) exist in the image, as in upstream's busybox-based images.
busybox_tree() {
  local version dir
  version=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}')
  [ -n "$version" ] && [ "$version" != "(none)" ] || { apt-get update -qq; version=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}'); }
  dir=$cache/busybox-$(echo "$version" | tr -c 'a-zA-Z0-9.\n' '_')
  if [ ! -f "$dir/done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir/deb" "$dir/rootfs/bin"
    (cd "$dir/deb" && apt-get -o APT::Sandbox::User=root download -qq busybox-static)
    dpkg-deb -x "$dir"/deb/*.deb "$dir/x"
    cp "$dir/x/bin/busybox" "$dir/rootfs/bin/busybox"
    for applet in sh cp ls cat mkdir; do ln -s busybox "$dir/rootfs/bin/$applet"; done
    rm -rf "$dir/x" "$dir/deb"
    touch "$dir/done"
  fi
  echo "$dir/rootfs"
}

tree=$(agent_tree)
busybox=$(busybox_tree)
[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
bundle=$(mktemp -d)
trap 'rm -rf "$bundle"' EXIT
umoci unpack --image "$layout:$tag" "$bundle/b" >/dev/null
cp -a "$busybox/." "$bundle/b/rootfs/"
cp -a "$tree/autoinstrumentation" "$bundle/b/rootfs/autoinstrumentation"
# Readable by whatever user the init container and the application run as.
chmod -R go+rX "$bundle/b/rootfs/autoinstrumentation"
umoci repack --image "$layout:$tag" "$bundle/b"
umoci config --image "$layout:$tag" --author kotel --os linux --architecture amd64 \
  --config.env PATH=/bin --config.cmd cp --config.cmd -r --config.cmd /autoinstrumentation/. \
  --config.cmd /otel-auto-instrumentation-$language
say "built $layout:$tag ($(du -sh "$tree/autoinstrumentation" | cut -f1) of agent)"
