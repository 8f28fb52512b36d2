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
    out=$("$helm" template kotel charts/kotel-operator --namespace kotel-system --set serviceMonitor.enabled=true --set alerts.enabled=true)
    for kind in ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment Service ServiceMonitor PrometheusRule; do
      grep -q "^kind: $kind\$" <<<"$out" || { echo "helm template lacks a $kind" >&2; exit 1; }
    done
    # The alerts: the rendered PrometheusRule carries the rule file, which Prometheus's own
    # promtool (Debian's prometheus) parses and whose unit tests it runs.
    rules=charts/kotel-operator/alerts
    grep -q "alert: KotelRolloutStuck" <<<"$out" || { echo "the PrometheusRule lacks the rule file" >&2; exit 1; }
    promtool check rules "$rules/kotel.rules.yaml"
    promtool test rules "$rules/kotel.rules.test.yaml"
    # The dashboards: each chart renders its JSON into a ConfigMap the Grafana sidecar picks up
    # (their queries run against real data in e2e/tests/prometheus.rs).
    for chart in kotel-operator inference-app; do
      out=$("$helm" template kotel "charts/$chart" --set dashboards.enabled=true)
      grep -q 'grafana_dashboard: "1"' <<<"$out" || { echo "$chart: no dashboard ConfigMap" >&2; exit 1; }
      for f in charts/$chart/dashboards/*.json; do
        grep -q "^  ${f##*/}: " <<<"$out" || { echo "$chart: the ConfigMap lacks ${f##*/}" >&2; exit 1; }
      done
    done
    # The NetworkPolicy: only the HTTP port, from the peers given.
    out=$("$helm" template kotel charts/kotel-operator --set networkPolicy.enabled=true \
      --set 'networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring')
    grep -q "^kind: NetworkPolicy\$" <<<"$out" || { echo "no NetworkPolicy with networkPolicy.enabled" >&2; exit 1; }
    grep -q "kubernetes.io/metadata.name: monitoring" <<<"$out" || { echo "the NetworkPolicy lacks metricsFrom" >&2; exit 1; }
    ! "$helm" template kotel charts/kotel-operator | grep -q "^kind: NetworkPolicy\$" || { echo "a NetworkPolicy by default" >&2; exit 1; }
    echo "charts lint and render; alert rules check and pass their tests; dashboards render"
    ;;
  *) echo "usage: $0 lint" >&2; exit 2 ;;
esac
