#!/usr/bin/env bash
# `make bench`: the injection benchmark on a fresh local control plane, with a release build
# of the operator. Prints the numbers bench/README.md quotes.
#   e2e/bench.sh          1,000 Deployments, then 1,000 workloads of mixed kinds (bench-inject)
#   e2e/bench.sh scale    5,000 workloads of every kind in 50 namespaces, 20 Instrumentations
#                         (bench-scale; `make bench-scale`)
set -euo pipefail
cd "$(dirname "$0")/.."
export KOTEL_E2E_DIR=${KOTEL_E2E_DIR:-$(mktemp -d /tmp/kotel-bench.XXXXXX)}
# The benchmark measures the operator against the API server; without a node the pods of its
# workloads stay Pending, as in the published figures, instead of loading the cores.
export KOTEL_E2E_NODE=${KOTEL_E2E_NODE:-0}
cargo build -q --release -p kotel-operator
cargo build -q --release -p kotel-e2e --bin bench-inject --bin bench-scale
target=${CARGO_TARGET_DIR:-target}
trap 'e2e/controlplane.sh down' EXIT
export KUBECONFIG=$KOTEL_E2E_DIR/kubeconfig
# A profiler can wrap the operator: KOTEL_OPERATOR_BIN=a script that execs it.
export KOTEL_OPERATOR_BIN=${KOTEL_OPERATOR_BIN:-$target/release/kotel-operator}
if [ "${1:-}" = scale ]; then
  e2e/controlplane.sh up >/dev/null
  "$target/release/bench-scale" "${BENCH_WORKLOADS:-5000}" "${BENCH_NAMESPACES:-50}" "${BENCH_INSTRUMENTATIONS:-20}" "${BENCH_STEADY_SECONDS:-60}"
  exit
fi
# One fresh control plane per run, so that the second does not see the first's objects.
# BENCH_KINDS: `deployments` (1,000 Deployments), `mixed` (250 of each kind), or both.
for kinds in ${BENCH_KINDS:-deployments mixed}; do
  e2e/controlplane.sh up >/dev/null
  echo "== $kinds"
  "$target/release/bench-inject" "${BENCH_WORKLOADS:-${BENCH_DEPLOYMENTS:-1000}}" "${BENCH_STEADY_SECONDS:-60}" "$kinds"
  e2e/controlplane.sh down >/dev/null
done
