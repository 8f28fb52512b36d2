#!/usr/bin/env bash
# The README's picture of the inference app's dashboard, taken where Grafana cannot be had:
# the app under two minutes of mixed load, scraped every second by Debian's Prometheus, and
# Prometheus's graph page with the dashboard's main queries, photographed by headless
# Chromium (Debian's). Not part of the tests.
#
#   bash e2e/screenshot.sh [OUT.png]     # default docs/images/app-dashboard.png: writes -1.png, -2.png
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/images/app-dashboard.png}
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }
cargo build -q --release -p inference-app -p loadgen
target=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/kotel-screenshot.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

"$target/inference-app" train --out "$work/model" >/dev/null
OTEL_SDK_DISABLED=true "$target/inference-app" serve --model-dir "$work/model" --addr 127.0.0.1:18300 >/dev/null 2>&1 &
pids+=($!)
cat >"$work/prometheus.yml" <<CONF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs: [{job_name: inference-app, static_configs: [{targets: ['127.0.0.1:18300']}]}]
CONF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:19390 >"$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18300/ready && break; sleep 0.2; done

# Houses of every size, a few beyond the training range, and some refusals.
for body in '{"features":[900]}' '{"features":[1500]}' '{"features":[2200]}' '{"features":[3400]}' \
            '{"features":[6000]}' '{"features":[-1]}'; do
  "$target/loadgen" --url http://127.0.0.1:18300/predict --body "$body" --rate 40 --duration 120 \
    --concurrency 2 >/dev/null &
  pids+=($!)
done
sleep 60
"$target/loadgen" --url http://127.0.0.1:18300/predict --rate 600 --duration 30 --concurrency 8 >/dev/null
sleep 35

q() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
# One panel per picture: with more, the page scrolls to the last one's input while loading.
panels=(
  'sum by (http_route, http_response_status_code) (rate(http_server_request_duration_seconds_count[30s]))'
  'sum by (le) (rate(inference_prediction_bucket[30s]))'
)
mkdir -p "$(dirname "$out")"
for i in "${!panels[@]}"; do
  url="http://127.0.0.1:19390/graph?g0.expr=$(q "${panels[$i]}")&g0.tab=0&g0.stacked=0&g0.range_input=2m"
  shot=${out%.png}-$((i + 1)).png
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,820 \
    --virtual-time-budget=20000 --screenshot="$shot" "$url" 2>/dev/null
  echo "wrote $shot"
done
