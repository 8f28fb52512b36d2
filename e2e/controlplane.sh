#!/usr/bin/env bash
# A real Kubernetes cluster on this machine for kotel's end-to-end tests and demo: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler, and one node (kubelet,
# kube-proxy, containerd + runc + the bridge CNI plugin, CoreDNS) so that pods really run.
# Everything Kubernetes is built once from the pinned Go modules of e2e/tools/*/go.mod and
# cached outside the repository; containerd, runc and the CNI plugins are Debian's.
#
#   e2e/controlplane.sh build     build (or reuse) the binaries: etcd, the Kubernetes commands, helm,
#                                 CoreDNS, the pause binary and otelcol-kotel (by ocb)
#   e2e/controlplane.sh up        start everything, write $KOTEL_E2E_DIR/kubeconfig, wait until the
#                                 node is Ready (KOTEL_E2E_NODE=0: the control plane only)
#   e2e/controlplane.sh down      stop everything `up` started and delete its data: processes,
#                                 containers, mounts, network namespaces, the bridge, iptables
#                                 chains, the node address; also what an earlier run left behind
#   e2e/controlplane.sh env       print `export KUBECONFIG=... PATH=...` for a shell
#   e2e/controlplane.sh restart NAME [SECONDS]
#                                 a fault for the tests: stop NAME (etcd, kube-apiserver, ...),
#                                 keep it down SECONDS, start it with the same command line, and
#                                 wait until the API server is ready again
#   e2e/controlplane.sh compact   compact etcd's history up to its current revision, so that a
#                                 watch resuming from an older resourceVersion gets 410 Gone
#
# Addresses: the node is 198.19.255.1 (on lo), pods 198.18.0.0/24 on bridge kotel0, Services
# 198.19.0.0/20; all of 198.18.0.0/15 is the range reserved for benchmark networks, and pods
# get a route to that range only, so nothing they send leaves the machine.
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

node_name=kotel-e2e-node
node_ip=198.19.255.1
pod_subnet=198.18.0.0/24
pod_gateway=198.18.0.1
cluster_cidr=198.18.0.0/15
service_cidr=198.19.0.0/20
kubernetes_service_ip=198.19.0.1
bridge=kotel0
# The sandbox image containerd runs for every pod; e2e/images.sh builds it.
pause_image=docker.io/kotel/pause:3.10
# Every run directory whose node may still hold state, so that `down` (and the next `up`)
# clears it even after a run that died without stopping.
registry=/run/kotel-e2e/dirs

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
  stamp=$( (cat "$manifest"; echo CGO_ENABLED=0) | sha256sum | cut -c1-16)
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
  # Static, so that the same binary runs on the host and in the distroless-like image.
  CGO_ENABLED=0 "$cache/ocb/builder" --config "$cache/otelcol-manifest.yaml" --ldflags "-s -w" >"$cache/otelcol-build.log" 2>&1 \
    || { tail -20 "$cache/otelcol-build.log" >&2; die "ocb failed (log: $cache/otelcol-build.log)"; }
  cp "$work/otelcol-kotel" "$bin/"
  echo "$stamp" >"$stamp_file"
  say "built otelcol-kotel in $((SECONDS - start))s"
}

# The pod sandbox's `pause`, compiled from the C source that the pinned k8s.io/kubernetes
# module carries (build/pause/linux/pause.c), as the upstream pause image is.
build_pause() {
  local src
  src=$(cd "$here/tools/kube" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  [ -f "$src" ] || die "pause.c not found in the k8s.io/kubernetes module ($src)"
  local stamp; stamp=$(sha256sum "$src" | cut -c1-16)
  if [ -x "$bin/pause" ] && [ "$(cat "$bin/.pause.stamp" 2>/dev/null)" = "$stamp" ]; then return 0; fi
  need cc "Debian: gcc"
  cc -Os -Wall -Werror -static -DVERSION="$k8s_version-kotel" -o "$bin/pause" "$src"
  strip "$bin/pause"
  echo "$stamp" >"$bin/.pause.stamp"
  say "built pause"
}

cmd_build() {
  need go "install Go (Debian: golang) to build the control plane"
  mkdir -p "$bin"
  build_tool etcd kotel.dev/e2e/tools/etcd
  build_tool kube k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
  build_tool helm helm.sh/helm/v3/cmd/helm
  build_tool coredns kotel.dev/e2e/tools/coredns
  build_tool tiltcheck kotel.dev/e2e/tools/tiltcheck
  build_pause
  build_collector
  say "binaries ready in $bin"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# A client certificate signed by the cluster CA: client_cert FILE CN [O].
client_cert() {
  local p=$dir/pki name=$1 cn=$2 org=${3:-}
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$p/$name.key" -out "$p/$name.csr" 2>/dev/null
  openssl x509 -req -in "$p/$name.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/client.ext" -out "$p/$name.crt" 2>/dev/null
}

pki() {
  local p=$dir/pki
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kotel-e2e-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  # Serving certificate: the host (loopback and the node address) and the in-cluster Service.
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
    "$node_ip" "$kubernetes_service_ip" >"$p/server.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$p/server.key" -out "$p/server.csr" 2>/dev/null
  openssl x509 -req -in "$p/server.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/server.ext" -out "$p/server.crt" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$p/client.ext"
  client_cert admin kotel-e2e-admin system:masters
  # Service-account token signing key.
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}

# kubeconfig SERVER OUT [CERT-NAME]
kubeconfig() {
  local server=$1 out=$2 who=${3:-admin}
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kotel-e2e
  cluster:
    server: $server
    certificate-authority: $dir/pki/ca.crt
users:
- name: $who
  user:
    client-certificate: $dir/pki/$who.crt
    client-key: $dir/pki/$who.key
contexts:
- name: kotel-e2e
  context: {cluster: kotel-e2e, user: $who, namespace: default}
current-context: kotel-e2e
EOF
}

# start NAME COMMAND...: runs it in the background, keeping its command line for `restart`.
start() {
  local name=$1; shift
  printf '%s\0' "$@" >"$dir/cmds/$name"
  "$@" >>"$dir/logs/$name.log" 2>&1 &
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

kc() { KUBECONFIG=$dir/kubeconfig "$bin/kubectl" "$@"; }

# Why this machine cannot run the node, or nothing when it can.
node_unavailable() {
  [ "${KOTEL_E2E_NODE:-1}" = 0 ] && { echo "KOTEL_E2E_NODE=0"; return; }
  [ "$(id -u)" = 0 ] || { echo "the node needs root (mounts, network namespaces, iptables)"; return; }
  local t
  for t in containerd runc ctr iptables ip; do
    command -v "$t" >/dev/null 2>&1 || { echo "$t is not installed (Debian: containerd runc iptables iproute2)"; return; }
  done
  [ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || { echo "the CNI plugins are not installed (Debian: containernetworking-plugins)"; return; }
  [ -f "$cache/images/images.tar" ] || { echo "the images are not built (e2e/images.sh build)"; return; }
}

cni_bin_dir() { if [ -x /usr/lib/cni/bridge ]; then echo /usr/lib/cni; else echo /opt/cni/bin; fi; }

start_control_plane() {
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  say "starting etcd on 127.0.0.1:$etcd_port"
  start etcd "$bin/etcd" --name kotel-e2e --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "kotel-e2e=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
  wait_http etcd "http://127.0.0.1:$etcd_port/health" 120 || die "etcd failed to start"
  echo "http://127.0.0.1:$etcd_port" >"$dir/etcd-url"

  say "starting kube-apiserver $k8s_version on https://$api_host:$api_port"
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$api_host" --advertise-address "$api_host" --secure-port "$api_port" \
    --tls-cert-file "$dir/pki/server.crt" --tls-private-key-file "$dir/pki/server.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/pki/sa.pub" --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-cluster-ip-range "$service_cidr" --allow-privileged=true \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction,OwnerReferencesPermissionEnforcement \
    --kubelet-client-certificate "$dir/pki/admin.crt" --kubelet-client-key "$dir/pki/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --cert-dir "$dir/pki"
  api_server=https://$api_host:$api_port
  kubeconfig "$api_server" "$dir/kubeconfig"
  wait_http kube-apiserver "https://$api_host:$api_port/readyz" 240 \
    --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    || die "kube-apiserver failed to start"

  say "starting kube-controller-manager and kube-scheduler"
  local kcm_port sched_port; kcm_port=$(free_port); sched_port=$(free_port)
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" --authentication-kubeconfig "$dir/kubeconfig" --authorization-kubeconfig "$dir/kubeconfig" \
    --service-account-private-key-file "$dir/pki/sa.key" --root-ca-file "$dir/pki/ca.crt" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller'
  client_cert scheduler system:kube-scheduler
  kubeconfig "https://$api_host:$api_port" "$dir/scheduler.kubeconfig" scheduler
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$sched_port"
  wait_http kube-controller-manager "https://127.0.0.1:$kcm_port/healthz" 120 -k || die "kube-controller-manager failed to start"
  wait_http kube-scheduler "https://127.0.0.1:$sched_port/healthz" 120 -k || die "kube-scheduler failed to start"
}

start_node() {
  local n=$dir/node
  mkdir -p "$n/net.d" "$n/ipam" "$n/pod-logs" "$n/kubelet"

  # containerd: its own root, state and socket under $n; the CRI plugin runs pods with runc
  # and the bridge network below. restrict_oom_score_adj: this sandbox refuses lowering it.
  cat >"$n/containerd.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
[grpc]
  address = "$n/containerd.sock"
[ttrpc]
  address = "$n/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$(cni_bin_dir)"
    conf_dir = "$n/net.d"
EOF
  cat >"$n/net.d/10-kotel.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kotel-e2e",
  "plugins": [{
    "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$n/ipam",
      "ranges": [[{"subnet": "$pod_subnet", "gateway": "$pod_gateway"}]],
      "routes": [{"dst": "$cluster_cidr"}]
    }
  }]
}
EOF
  say "starting containerd $(containerd --version | awk '{print $3}')"
  # Nothing is pulled from outside: containerd's registry client goes through a proxy on a
  # closed loopback port, so an image that was not imported fails at once (ErrImagePull).
  # (Its 1.6 CRI plugin falls back to the registry itself after a mirror, so a mirror won't do.)
  start containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    containerd --config "$n/containerd.toml"
  for _ in $(seq 100); do [ -S "$n/containerd.sock" ] && break; sleep 0.1; done
  ctr --address "$n/containerd.sock" version >/dev/null 2>&1 || { tail -20 "$dir/logs/containerd.log" >&2; die "containerd failed to start"; }
  say "importing images into the node's containerd"
  ctr --address "$n/containerd.sock" -n k8s.io images import "$cache/images/images.tar" >/dev/null \
    || die "ctr images import $cache/images/images.tar failed"

  # Service traffic from a pod to a pod on the same bridge must pass iptables for kube-proxy's
  # NAT to be undone on the way back.
  [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables

  # The kubelet: its credentials as system:node:<name> (the Node authorizer and NodeRestriction
  # apply), cgroupfs on this cgroup v1 sandbox without per-QoS cgroups, DNS from CoreDNS below.
  client_cert kubelet "system:node:$node_name" system:nodes
  kubeconfig "$api_server" "$n/kubelet.kubeconfig" kubelet
  printf 'options ndots:5\n' >"$n/resolv.conf"
  local kubelet_port healthz_port
  kubelet_port=$(free_port); healthz_port=$(free_port)
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$n/containerd.sock
clusterDNS: [$node_ip]
clusterDomain: cluster.local
resolvConf: $n/resolv.conf
podLogsDir: $n/pod-logs
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  say "starting kubelet, kube-proxy and CoreDNS for node $node_name ($node_ip)"
  start kubelet "$bin/kubelet" --config "$n/kubelet.yaml" --kubeconfig "$n/kubelet.kubeconfig" \
    --root-dir "$n/kubelet" --hostname-override "$node_name" --node-ip "$node_ip"
  client_cert kube-proxy system:kube-proxy
  kubeconfig "$api_server" "$n/kube-proxy.kubeconfig" kube-proxy
  start kube-proxy "$bin/kube-proxy" --kubeconfig "$n/kube-proxy.kubeconfig" --hostname-override "$node_name" \
    --proxy-mode iptables --cluster-cidr "$cluster_cidr" \
    --healthz-bind-address "127.0.0.1:$(free_port)" --metrics-bind-address "127.0.0.1:$(free_port)" \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0
  local dns_health dns_ready
  dns_health=$(free_port); dns_ready=$(free_port)
  cat >"$n/Corefile" <<EOF
.:53 {
    bind $node_ip
    errors
    health 127.0.0.1:$dns_health
    ready 127.0.0.1:$dns_ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $dir/kubeconfig kotel-e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
EOF
  start coredns "$bin/coredns" -conf "$n/Corefile"
  wait_http coredns "http://127.0.0.1:$dns_ready/ready" 120 || die "CoreDNS failed to start"

  # Ready, and the node lifecycle controller has lifted the not-ready taint.
  local ok=
  for _ in $(seq 240); do
    if [ "$(kc get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] \
      && [ -z "$(kc get node "$node_name" -o jsonpath='{.spec.taints}' 2>/dev/null)" ]; then ok=1; break; fi
    sleep 0.5
  done
  [ -n "$ok" ] || { tail -n 30 "$dir/logs/kubelet.log" >&2; die "node $node_name did not become Ready and untainted"; }
  say "node $node_name is Ready"
}

cmd_up() {
  need openssl "Debian: openssl"
  need curl "Debian: curl"
  need python3 "Debian: python3"
  cmd_build
  if [ -f "$dir/kubeconfig" ] && [ -d "$dir/pids" ]; then
    say "a cluster from $dir seems to be running; stopping it first"
    cmd_down
  fi
  sweep_stale
  rm -rf "$dir"
  mkdir -p "$dir/logs" "$dir/pids" "$dir/cmds" "$dir/etcd"
  pki
  trap 'say "start-up failed; stopping what started"; cmd_down' ERR
  local why
  why=$(node_unavailable)
  api_host=127.0.0.1
  if [ -z "$why" ]; then
    mkdir -p "$(dirname "$registry")"
    if ip addr add "$node_ip/32" dev lo 2>"$dir/logs/node-ip.log" || grep -q 'File exists' "$dir/logs/node-ip.log"; then
      api_host=$node_ip
      echo "$dir" >>"$registry"
    else
      why="adding $node_ip to lo was refused: $(cat "$dir/logs/node-ip.log")"
    fi
  fi
  start_control_plane
  if [ -z "$why" ]; then
    start_node
    echo node >"$dir/mode"
  else
    say "no node: $why; pods will stay Pending"
    echo "control-plane-only: $why" >"$dir/mode"
  fi

  # The ServiceAccount admission plugin needs `default` before pods can be created.
  for _ in $(seq 120); do
    if kc get serviceaccount default -n default >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  trap - ERR
  say "ready: export KUBECONFIG=$dir/kubeconfig"
  echo "$dir/kubeconfig"
}

# stop_pids DIR NAME...: SIGTERM to each process of DIR/pids/NAME at once, then SIGKILL to
# any still running after 10 s.
stop_pids() {
  local d=$1; shift
  local pids=() name pid
  for name in "$@"; do
    [ -f "$d/pids/$name" ] || continue
    pid=$(cat "$d/pids/$name")
    kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$d/pids/$name"
  done
  for _ in $(seq 100); do
    local alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    pids=("${alive[@]}")
    sleep 0.1
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

# Stops and deletes everything a node of run directory $1 may hold. Safe to run twice.
clear_node() {
  local d=$1 n=$1/node
  stop_pids "$d" kubelet kube-proxy coredns
  if [ -S "$n/containerd.sock" ] && [ -f "$d/pids/containerd" ] && kill -0 "$(cat "$d/pids/containerd")" 2>/dev/null; then
    local c=(ctr --address "$n/containerd.sock" -n k8s.io) id
    for id in $("${c[@]}" tasks ls -q 2>/dev/null); do
      "${c[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $("${c[@]}" tasks ls -q 2>/dev/null); do
      for _ in $(seq 50); do "${c[@]}" tasks rm -f "$id" >/dev/null 2>&1 && break; sleep 0.1; done
    done
  fi
  stop_pids "$d" containerd
  # Whatever still runs from this node: each shim's containers (killing the first process of
  # a PID namespace ends the rest of it), then the shim.
  local shim
  for shim in $(pgrep -f "containerd-shim.*$n/containerd.sock" 2>/dev/null); do
    pkill -9 -P "$shim" 2>/dev/null || true
    kill -9 "$shim" 2>/dev/null || true
  done
  # Mounts under the run directory, deepest first.
  local m
  for m in $(awk -v p="$d/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  find /var/log/containers -maxdepth 1 -lname "$n/*" -delete 2>/dev/null || true
}

# What a node leaves outside any run directory: pod network namespaces, the bridge, kube-proxy's
# and the CNI plugins' iptables chains, and the node address.
clear_host_network() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
  ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge" 2>/dev/null || true
  # kube-proxy's and the kubelet's chains (KUBE-*) and any of the CNI plugins' (CNI-*), in
  # every table: the saved rules without them, restored.
  local save rules
  for save in iptables-save ip6tables-save; do
    command -v "$save" >/dev/null 2>&1 || continue
    rules=$("$save" 2>/dev/null) || continue
    if grep -qE 'KUBE-|CNI-' <<<"$rules"; then
      grep -vE 'KUBE-|CNI-' <<<"$rules" | "${save%-save}-restore" || say "could not remove the KUBE-/CNI- chains with ${save%-save}-restore"
    fi
  done
  # The containers' cgroups (containerd puts them under k8s.io in every hierarchy).
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name k8s.io 2>/dev/null | while read -r cg; do
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  ip addr del "$node_ip/32" dev lo 2>/dev/null || true
}

# Clears the nodes of earlier runs that never reached `down` (a killed session, say).
sweep_stale() {
  [ -f "$registry" ] || return 0
  local d
  while read -r d; do
    [ -n "$d" ] && [ "$d" != "$dir" ] || continue
    if [ -d "$d/pids" ]; then
      say "clearing what an earlier run left in $d"
      clear_run "$d"
      rm -rf "$d"
    fi
  done <"$registry"
  clear_host_network
  : >"$registry"
}

# Stops every process of run directory $1 and its node.
clear_run() {
  local d=$1
  [ -d "$d/node" ] && clear_node "$d"
  stop_pids "$d" kube-scheduler kube-controller-manager kube-apiserver
  stop_pids "$d" etcd
}

cmd_down() {
  [ -d "$dir/pids" ] && clear_run "$dir"
  if [ -f "$registry" ]; then
    clear_host_network
    grep -vxF "$dir" "$registry" >"$registry.new" || true
    mv "$registry.new" "$registry"
  fi
  if [ "${KOTEL_E2E_KEEP:-}" != 1 ]; then rm -rf "$dir"; fi
  say "stopped"
}

cmd_env() {
  echo "export KUBECONFIG=$dir/kubeconfig"
  echo "export PATH=$bin:\$PATH"
}

cmd_restart() {
  local name=${1:-} down=${2:-0}
  [ -n "$name" ] || die "usage: $0 restart NAME [SECONDS]"
  [ -f "$dir/cmds/$name" ] || die "$dir runs no process named $name (see $dir/cmds)"
  local args
  mapfile -d '' args <"$dir/cmds/$name"
  say "stopping $name for ${down}s"
  stop_pids "$dir" "$name"
  sleep "$down"
  start "$name" "${args[@]}"
  for _ in $(seq 240); do
    if kc get --raw /readyz >/dev/null 2>&1; then say "$name restarted; the API server is ready"; return 0; fi
    sleep 0.5
  done
  tail -n 30 "$dir/logs/$name.log" >&2
  die "the API server was not ready within 120 s of restarting $name"
}

# etcd's v3 JSON gateway: the current revision, then a physical compaction up to it.
cmd_compact() {
  local url revision
  url=$(cat "$dir/etcd-url") || die "no etcd in $dir"
  revision=$(curl -fsS -X POST "$url/v3/kv/range" -d '{"key": "AA=="}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])')
  curl -fsS -X POST "$url/v3/kv/compaction" -d "{\"revision\": \"$revision\", \"physical\": true}" >/dev/null
  say "etcd compacted up to revision $revision"
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  restart) shift; cmd_restart "$@" ;;
  compact) cmd_compact ;;
  *) echo "usage: $0 build|up|down|env|restart NAME [SECONDS]|compact" >&2; exit 2 ;;
esac
