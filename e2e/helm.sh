#!/usr/bin/env bash
# Static checks of the charts with the real helm (built by controlplane.sh): lint, and a
# template render that must contain the objects the operator needs.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=${HELM:-helm}
case "${1:-lint}" in
  lint)
    for chart in charts/*/; do
      "$helm" lint --strict "$chart"
    done
    out=$("$helm" template kotel charts/kotel-operator --namespace kotel-system --set serviceMonitor.enabled=true)
    for kind in ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment Service ServiceMonitor; do
      grep -q "^kind: $kind\$" <<<"$out" || { echo "helm template lacks a $kind" >&2; exit 1; }
    done
    echo "charts lint and render"
    ;;
  *) echo "usage: $0 lint" >&2; exit 2 ;;
esac
