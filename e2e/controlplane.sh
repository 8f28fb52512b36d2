#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for kotel's end-to-end tests and demo:
# etcd + kube-apiserver + kube-controller-manager, built once from their pinned Go modules
# (e2e/tools/*/go.mod) and cached outside the repository.
#
#   e2e/controlplane.sh build     build (or reuse) etcd, kube-apiserver, kube-controller-manager, kubectl, helm,
#                                 and the OpenTelemetry Collector (otelcol-kotel, by ocb)
#   e2e/controlplane.sh up        start everything, write $KOTEL_E2E_DIR/kubeconfig, wait until ready
#   e2e/controlplane.sh down      stop everything started by `up` and delete its data
#   e2e/controlplane.sh env       print `export KUBECONFIG=... PATH=...` for a shell
#
# Environment: KOTEL_E2E_CACHE (default ~/.cache/kotel-e2e) holds the binaries;
# KOTEL_E2E_DIR (default <repo>/.e2e) holds certificates, data, logs and pids of one run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${KOTEL_E2E_CACHE:-$HOME/.cache/kotel-e2e}
bin=$cache/bin
dir=${KOTEL_E2E_DIR:-$repo/.e2e}
k8s_version=v1.35.4

say() { printf '[controlplane] %s\n' "$*" >&2; }
die() { printf '[controlplane] error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed ($2)"; }

# Builds one tool module into $bin unless a build from the same go.mod/go.sum is there already.
build_tool() {
  local module=$1; shift
  local stamp_file=$bin/.$module.stamp
  local stamp
  stamp=$( (cat "$here/tools/$module/go.mod" "$here/tools/$module/go.sum" "$here/tools/$module"/*.go; echo "$k8s_version") | sha256sum | cut -c1-16)
  local have_all=1
  for t in "$@"; do [ -x "$bin/${t##*/}" ] || have_all=0; done
  if [ "$have_all" = 1 ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  say "building $module ($*) from its pinned Go module; the first build takes several minutes"
  local start=$SECONDS
  (
    cd "$here/tools/$module"
    local ldflags="-s -w"
    if [ "$module" = kube ]; then
      local minor=${k8s_version#v1.}; minor=${minor%%.*}
      ldflags="$ldflags -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
    fi
    GOFLAGS=-mod=readonly go build -trimpath -ldflags="$ldflags" -o "$bin/" "$@"
  )
  echo "$stamp" >"$stamp_file"
  say "built $module in $((SECONDS - start))s"
}

# The OpenTelemetry Collector of the tests, built by the upstream builder (ocb) from
# e2e/tools/otelcol/manifest.yaml (its first line pins the builder's version).
build_collector() {
  local manifest=$here/tools/otelcol/manifest.yaml
  local stamp_file=$bin/.otelcol.stamp
  local stamp
  stamp=$(sha256sum "$manifest" | cut -c1-16)
  if [ -x "$bin/otelcol-kotel" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  local ocb_version
  ocb_version=$(awk 'NR == 1 && $2 == "ocb" {print $3}' "$manifest")
  [ -n "$ocb_version" ] || die "the first line of $manifest must be '# ocb vX.Y.Z'"
  say "building otelcol-kotel with ocb $ocb_version from $manifest"
  local start=$SECONDS
  GOBIN=$cache/ocb go install "go.opentelemetry.io/collector/cmd/builder@$ocb_version"
  local work=$cache/otelcol-src
  rm -rf "$work"
  mkdir -p "$work"
  sed "s#@OUTPUT@#$work#" "$manifest" >"$cache/otelcol-manifest.yaml"
  "$cache/ocb/builder" --config "$cache/otelcol-manifest.yaml" --ldflags "-s -w" >"$cache/otelcol-build.log" 2>&1 \
    || { tail -20 "$cache/otelcol-build.log" >&2; die "ocb failed (log: $cache/otelcol-build.log)"; }
  cp "$work/otelcol-kotel" "$bin/"
  echo "$stamp" >"$stamp_file"
  say "built otelcol-kotel in $((SECONDS - start))s"
}

cmd_build() {
  need go "install Go (Debian: golang) to build the control plane"
  mkdir -p "$bin"
  build_tool etcd kotel.dev/e2e/tools/etcd
  build_tool kube k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  build_tool helm helm.sh/helm/v3/cmd/helm
  build_collector
  say "binaries ready in $bin"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pki() {
  local p=$dir/pki
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kotel-e2e-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  # Serving certificate for 127.0.0.1 / localhost.
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n' >"$p/server.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$p/server.key" -out "$p/server.csr" 2>/dev/null
  openssl x509 -req -in "$p/server.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/server.ext" -out "$p/server.crt" 2>/dev/null
  # Admin client certificate (group system:masters).
  printf 'extendedKeyUsage=clientAuth\n' >"$p/client.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kotel-e2e-admin" -keyout "$p/admin.key" -out "$p/admin.csr" 2>/dev/null
  openssl x509 -req -in "$p/admin.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/client.ext" -out "$p/admin.crt" 2>/dev/null
  # Service-account token signing key.
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}

kubeconfig() {
  local server=$1 out=$2
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kotel-e2e
  cluster:
    server: $server
    certificate-authority: $dir/pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $dir/pki/admin.crt
    client-key: $dir/pki/admin.key
contexts:
- name: kotel-e2e
  context: {cluster: kotel-e2e, user: admin, namespace: default}
current-context: kotel-e2e
EOF
}

start() {
  local name=$1; shift
  "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name"
}

wait_http() {
  local what=$1 url=$2 tries=${3:-120}
  shift 3 || true
  for _ in $(seq "$tries"); do
    if curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  say "$what did not become ready; last log lines:"
  tail -n 30 "$dir/logs/$what.log" >&2 || true
  return 1
}

cmd_up() {
  need openssl "Debian: openssl"
  need curl "Debian: curl"
  need python3 "Debian: python3"
  cmd_build
  if [ -f "$dir/kubeconfig" ] && [ -d "$dir/pids" ]; then
    say "a control plane from $dir seems to be running; stopping it first"
    cmd_down
  fi
  rm -rf "$dir"
  mkdir -p "$dir/logs" "$dir/pids" "$dir/etcd"
  pki
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)

  say "starting etcd on 127.0.0.1:$etcd_port"
  start etcd "$bin/etcd" --name kotel-e2e --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "kotel-e2e=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
  wait_http etcd "http://127.0.0.1:$etcd_port/health" 120 || { cmd_down; die "etcd failed to start"; }

  say "starting kube-apiserver $k8s_version on https://127.0.0.1:$api_port"
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/pki/server.crt" --tls-private-key-file "$dir/pki/server.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/pki/sa.pub" --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --authorization-mode RBAC --cert-dir "$dir/pki"
  kubeconfig "https://127.0.0.1:$api_port" "$dir/kubeconfig"
  wait_http kube-apiserver "https://127.0.0.1:$api_port/readyz" 240 \
    --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    || { cmd_down; die "kube-apiserver failed to start"; }

  say "starting kube-controller-manager"
  local kcm_port; kcm_port=$(free_port)
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" --authentication-kubeconfig "$dir/kubeconfig" --authorization-kubeconfig "$dir/kubeconfig" \
    --service-account-private-key-file "$dir/pki/sa.key" --root-ca-file "$dir/pki/ca.crt" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller'
  wait_http kube-controller-manager "https://127.0.0.1:$kcm_port/healthz" 120 -k \
    || { cmd_down; die "kube-controller-manager failed to start"; }

  # The ServiceAccount admission plugin needs `default` before pods can be created.
  for _ in $(seq 120); do
    if KUBECONFIG=$dir/kubeconfig "$bin/kubectl" get serviceaccount default -n default >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  say "ready: export KUBECONFIG=$dir/kubeconfig"
  echo "$dir/kubeconfig"
}

cmd_down() {
  if [ -d "$dir/pids" ]; then
    for name in kube-controller-manager kube-apiserver etcd; do
      local f=$dir/pids/$name
      [ -f "$f" ] || continue
      local pid; pid=$(cat "$f")
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$f"
    done
  fi
  if [ "${KOTEL_E2E_KEEP:-}" != 1 ]; then rm -rf "$dir"; fi
  say "stopped"
}

cmd_env() {
  echo "export KUBECONFIG=$dir/kubeconfig"
  echo "export PATH=$bin:\$PATH"
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) echo "usage: $0 build|up|down|env" >&2; exit 2 ;;
esac
