#!/usr/bin/env bash
# `make demo`: kotel end to end on this machine, no Docker needed. Starts the local cluster
# (e2e/controlplane.sh: control plane and a node), helm-installs the operator chart as a pod,
# applies examples/ and deploys the inference-app chart annotated for injection and a sidecar,
# sends requests from a client pod to the app's Service by its DNS name, and shows the
# patched workload and the spans the gateway Collector received from the running pods.
#
# Where the node cannot start (not root, containerd missing, ...), it says why and falls back
# to the process-based demo: the operator and the inference app as local processes, the app
# with exactly the env kotel injected, and a real Collector with the sidecar configuration.
# Ctrl-C stops everything. KOTEL_DEMO_EXIT=1 stops right after showing the result.
set -euo pipefail
cd "$(dirname "$0")/.."
export KOTEL_E2E_DIR=${KOTEL_E2E_DIR:-$PWD/.e2e/demo}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

op_pid=
app_pid=
col_pid=
cleanup() {
  for p in $app_pid $col_pid; do kill "$p" 2>/dev/null || true; done
  [ -n "$op_pid" ] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null || true
  e2e/controlplane.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building the operator and the inference app"
cargo build -q -p kotel-operator -p inference-app -p loadgen -p kotel-e2e --bin trace-tree
bin=${CARGO_TARGET_DIR:-target}/debug/kotel-operator
trace_tree=${CARGO_TARGET_DIR:-target}/debug/trace-tree
app=${CARGO_TARGET_DIR:-target}/debug/inference-app

say "building the cluster's binaries and the images (cached under ~/.cache/kotel-e2e)"
e2e/controlplane.sh build
e2e/images.sh build || echo "the images could not be built; the node will not start"
tag=${KOTEL_E2E_IMAGE_TAG:-e2e}

say "starting the local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler; kubelet, kube-proxy, containerd, CoreDNS)"
e2e/controlplane.sh up >/dev/null
eval "$(e2e/controlplane.sh env)"
mode=$(cat "$KOTEL_E2E_DIR/mode")

# Examples' Collectors with the suite's collector image (the upstream default cannot be pulled
# here), and a gateway that prints what it receives in full.
collectors() {
  sed -e "s#^  mode: \(sidecar\|deployment\)\$#  mode: \1\n  image: kotel/otelcol-kotel:$tag#" \
    -e 's/verbosity: basic/verbosity: detailed/' -e 's/replicas: 2/replicas: 1/' "$@"
}

# What a debug exporter (verbosity detailed) printed to LOG: the resource of the first span
# batch of the app, then the spans by name; fails when no request span arrived.
show_received() {
  local log=$1
  awk '/ResourceSpans #/{n=1; buf=""} n{buf=buf $0 "\n"} /^ScopeSpans #/{if (n && buf ~ /house-price/) {printf "%s", buf; exit} n=0}' "$log"
  grep -o 'Name           : .*' "$log" | sort | uniq -c
  grep -q 'Name           : POST /predict' "$log" \
    || { echo "no request spans arrived; the collector's log:"; tail -20 "$log"; exit 1; }
  say "the last three traces, as a trace view would show them (spans under their parents, durations, who made them)"
  "$trace_tree" "$log" 3
}

if [ "$mode" = node ]; then
  say "helm install kotel charts/kotel-operator (the operator runs as a pod)"
  helm install kotel charts/kotel-operator -n kotel-system --create-namespace \
    --set image.repository=kotel/operator --set image.tag="$tag" --wait --timeout 3m
  kubectl get pods -n kotel-system -o wide

  say "applying examples/ (Instrumentation, sidecar Collector, gateway Collector)"
  kubectl create namespace demo
  kubectl apply -f examples/instrumentation.yaml
  collectors examples/collector.yaml | kubectl apply -f -
  collectors examples/gateway.yaml | kubectl apply -f -

  say "helm install house-price charts/inference-app -n demo (annotated kotel.dev/inject and kotel.dev/sidecar)"
  helm install house-price charts/inference-app -n demo \
    --set image.repository=kotel/inference-app --set image.tag="$tag" --wait --timeout 3m
  for _ in $(seq 120); do
    hash=$(kubectl get deploy -n demo house-price -o jsonpath='{.spec.template.metadata.annotations.kotel\.dev/config-hash}')
    [ -n "$hash" ] && break
    sleep 0.5
  done
  [ -n "$hash" ] || { echo "kotel did not inject; operator log:"; kubectl logs -n kotel-system deploy/kotel-kotel-operator | tail -20; exit 1; }
  kubectl rollout status -n demo deploy/house-price --timeout 3m
  kubectl rollout status -n observability deploy/gateway-collector --timeout 3m

  say "kubectl get kinst,kcol -A"
  kubectl get kinst,kcol -A
  say "Deployment demo/house-price: config hash $hash, env of container app"
  kubectl get deploy -n demo house-price -o go-template='{{range (index .spec.template.spec.containers 0).env}}{{.name}}={{if .value}}{{.value}}{{else}}<from {{if .valueFrom.fieldRef}}{{.valueFrom.fieldRef.fieldPath}}{{else}}secret{{end}}>{{end}}{{"\n"}}{{end}}'
  say "its pods: the app and the native sidecar kotel-collector (initContainers, restartPolicy Always)"
  kubectl get pods -n demo -o wide
  kubectl get pods -n demo -l app.kubernetes.io/name=house-price -o go-template='{{range .items}}{{.metadata.name}}:{{range .status.initContainerStatuses}} {{.name}} started={{.started}}{{end}}{{range .status.containerStatuses}} {{.name}} ready={{.ready}}{{end}}{{"\n"}}{{end}}'

  say "a client pod posts 20 predictions to http://house-price.demo.svc.cluster.local:8000/predict"
  kubectl run demo-client -n demo --restart=Never --image="kotel/inference-app:$tag" \
    --command -- /usr/local/bin/loadgen --url http://house-price.demo.svc.cluster.local:8000/predict --requests 20 --concurrency 2 --replies >/dev/null
  for _ in $(seq 120); do
    phase=$(kubectl get pod -n demo demo-client -o jsonpath='{.status.phase}')
    [ "$phase" = Succeeded ] || [ "$phase" = Failed ] && break
    sleep 0.5
  done
  kubectl logs -n demo demo-client >"$KOTEL_E2E_DIR/client.log"
  head -3 "$KOTEL_E2E_DIR/client.log"
  grep 'requests:' "$KOTEL_E2E_DIR/client.log"

  say "what the gateway Collector received from the pods (sampler: parentbased_traceidratio 0.25)"
  for _ in $(seq 120); do
    kubectl logs -n observability deploy/gateway-collector >"$KOTEL_E2E_DIR/gateway.log" 2>/dev/null || true
    grep -q 'Name           : POST /predict' "$KOTEL_E2E_DIR/gateway.log" && break
    sleep 0.5
  done
  show_received "$KOTEL_E2E_DIR/gateway.log"

  if [ "${KOTEL_DEMO_EXIT:-}" = 1 ]; then exit 0; fi
  say "the cluster keeps running: in another shell, eval \"\$(e2e/controlplane.sh env)\" (with KOTEL_E2E_DIR=$KOTEL_E2E_DIR) and try kubectl. Ctrl-C stops everything."
  while true; do sleep 1; done
fi

say "no node, so the demo falls back to processes: ${mode#control-plane-only: }"
say "installing the CRDs"
kubectl apply --server-side -f crds/kotel.dev.yaml
kubectl wait --for condition=established --timeout=60s crd/instrumentations.kotel.dev crd/collectors.kotel.dev

say "running kotel-operator (log: $KOTEL_E2E_DIR/operator.log)"
KOTEL_LOG_FORMAT=text "$bin" --http-addr 127.0.0.1:0 >"$KOTEL_E2E_DIR/operator.log" 2>&1 &
op_pid=$!

say "applying examples/"
kubectl create namespace demo
kubectl apply -f examples/instrumentation.yaml -f examples/collector.yaml
kubectl apply -f examples/deployment.yaml
kubectl apply -f examples/gateway.yaml

for _ in $(seq 120); do
  hash=$(kubectl get deploy -n demo house-price -o jsonpath='{.spec.template.metadata.annotations.kotel\.dev/config-hash}')
  [ -n "$hash" ] && break
  sleep 0.5
done
[ -n "$hash" ] || { echo "kotel did not inject; operator log:"; tail -20 "$KOTEL_E2E_DIR/operator.log"; exit 1; }
sleep 2

say "kubectl get kinst,kcol -n demo"
kubectl get kinst,kcol -n demo
say "Deployment demo/house-price: config hash $hash, env of container app"
kubectl get deploy -n demo house-price -o go-template='{{range (index .spec.template.spec.containers 0).env}}{{.name}}={{if .value}}{{.value}}{{else}}<from {{if .valueFrom.fieldRef}}{{.valueFrom.fieldRef.fieldPath}}{{else}}secret{{end}}>{{end}}{{"\n"}}{{end}}'
say "its native sidecar (initContainers, restartPolicy Always)"
kubectl get deploy -n demo house-price -o go-template='{{range .spec.template.spec.initContainers}}{{.name}}  image={{.image}}  restartPolicy={{.restartPolicy}}  args={{.args}}{{"\n"}}{{end}}'
rs=$(kubectl get rs -n demo -o go-template='{{range .items}}{{index .metadata.annotations "deployment.kubernetes.io/revision"}} {{.metadata.name}}{{"\n"}}{{end}}' | sort -n | tail -1 | cut -d' ' -f2)
say "newest ReplicaSet $rs (stamped by the real kube-controller-manager)"
kubectl get rs -n demo "$rs" -o go-template='config-hash={{index .spec.template.metadata.annotations "kotel.dev/config-hash"}}{{"\n"}}{{range (index .spec.template.spec.containers 0).env}}{{.name}}{{"\n"}}{{end}}'
say "the gateway Collector observability/gateway and what kotel runs for it"
for _ in $(seq 60); do
  kubectl get deploy -n observability gateway-collector >/dev/null 2>&1 && break
  sleep 0.5
done
kubectl get kcol,deploy,svc,cm -n observability
say "Events"
kubectl get events -n demo --field-selector involvedObject.kind=Deployment -o custom-columns=REASON:.reason,MESSAGE:.message

say "the sidecar's configuration, as kotel rendered it, in a real OpenTelemetry Collector (otelcol-kotel, built by ocb)"
kubectl get deploy -n demo house-price -o jsonpath='{.spec.template.spec.initContainers[0].env[0].value}' >"$KOTEL_E2E_DIR/sidecar.yaml"
cat "$KOTEL_E2E_DIR/sidecar.yaml"
# Same receivers and pipelines, exporting to a debug exporter that prints whole spans here
# (the sidecar's own exporter points at the gateway's Service, which has no pod without a node).
otelcol-kotel --config="$KOTEL_E2E_DIR/sidecar.yaml" --set=exporters::debug::verbosity=detailed \
  --set='service::pipelines::traces::exporters=[debug]' --set='service::pipelines::metrics::exporters=[debug]' \
  --set='service::pipelines::logs::exporters=[debug]' \
  >"$KOTEL_E2E_DIR/collector.log" 2>&1 &
col_pid=$!

say "the inference app as a local process with the env of demo/house-price (pod name and node name as a kubelet would fill them)"
kubectl get deploy -n demo house-price -o json | python3 -c '
import json, sys
d = json.load(sys.stdin)
c = next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "app")
labels = d["spec"]["template"]["metadata"].get("labels", {})
fields = {"metadata.name": "house-price-demo-1", "spec.nodeName": "localhost"}
fields.update({"metadata.labels[\x27%s\x27]" % k: v for k, v in labels.items()})
out = {}
for e in c.get("env", []):
    if "value" in e:
        v = e["value"]
    else:
        path = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        v = fields.get(path)
        if v is None:
            continue
    for k, known in out.items():
        v = v.replace("$(" + k + ")", known)
    out[e["name"]] = v
for k, v in out.items():
    print(k + "=" + v)
' >"$KOTEL_E2E_DIR/app.env"
cat "$KOTEL_E2E_DIR/app.env"
"$app" train --out "$KOTEL_E2E_DIR/model" >/dev/null
mapfile -t app_env <"$KOTEL_E2E_DIR/app.env"
env -u OTEL_EXPORTER_OTLP_ENDPOINT "${app_env[@]}" "$app" serve --model-dir "$KOTEL_E2E_DIR/model" --addr 127.0.0.1:18000 \
  >"$KOTEL_E2E_DIR/app.log" 2>&1 &
app_pid=$!
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18000/ready && break; sleep 0.2; done
say "POST /predict {\"features\":[1500]}"
curl -s -XPOST http://127.0.0.1:18000/predict -H 'content-type: application/json' -d '{"features":[1500]}'
echo
"${app%/*}/loadgen" --url http://127.0.0.1:18000/predict --requests 20 --concurrency 2 | grep 'requests:' || true
for _ in $(seq 50); do grep -q 'Name           : POST /predict' "$KOTEL_E2E_DIR/collector.log" && break; sleep 0.2; done
say "what the collector received: the resource of the first span batch, then the spans by name"
show_received "$KOTEL_E2E_DIR/collector.log"

if [ "${KOTEL_DEMO_EXIT:-}" = 1 ]; then exit 0; fi
say "the control plane keeps running: in another shell, eval \"\$(e2e/controlplane.sh env)\" and try kubectl. Ctrl-C stops everything."
while kill -0 "$op_pid" 2>/dev/null; do sleep 1; done
