#!/usr/bin/env bash
# The one test command (`make test`): formatting, lints, unit and property tests, then the
# end-to-end suite against a local control plane that this script starts and always stops.
# KOTEL_E2E_KUBECONFIG=path runs the e2e suite against that cluster (e.g. kind) instead.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "unit and property tests"
cargo test --workspace --exclude kotel-e2e
step "build the operator and the inference app"
cargo build -p kotel-operator -p inference-app -p loadgen
cargo test -p kotel-e2e --no-run

if [ -n "${KOTEL_E2E_KUBECONFIG:-}" ]; then
  export KUBECONFIG=$KOTEL_E2E_KUBECONFIG
else
  step "build the cluster's binaries and the images (cached under ~/.cache/kotel-e2e)"
  e2e/controlplane.sh build
  e2e/images.sh build
  step "start the local cluster: control plane and node"
  export KOTEL_E2E_DIR=${KOTEL_E2E_DIR:-$(mktemp -d /tmp/kotel-e2e.XXXXXX)}
  trap 'e2e/controlplane.sh down' EXIT
  e2e/controlplane.sh up >/dev/null
  export KUBECONFIG=$KOTEL_E2E_DIR/kubeconfig
fi
eval "$(e2e/controlplane.sh env | grep PATH)"
export KOTEL_KUBECTL=${KOTEL_KUBECTL:-$(command -v kubectl)}
step "helm lint and template"
e2e/helm.sh lint
step "end-to-end tests against $KUBECONFIG"
cargo test -p kotel-e2e -- --test-threads=1
