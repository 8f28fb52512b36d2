#!/usr/bin/env bash
# Side-by-side benchmark (not a test): inference-app against the seed's Python service
# (../shared/peers/seed000, only here), both exporting to one live OTLP sink, under the same
# wrk load (POST /predict {"features":[1500]}). Prints a Markdown table for the README.
#
#   bench/inference.sh            # DURATION=15 CONNECTIONS=64 RUNS=5 by default
#   SINK=collector bench/inference.sh   # a real OpenTelemetry Collector as the sink instead
#                                       # (OTLP receiver, debug exporter), built by
#                                       # `bash e2e/controlplane.sh build`
#   PIN=1 bench/inference.sh    # the services on CPU 0; wrk, loadgen and the sink (at nice 10)
#                               # on CPU 1, so that the sink's work is not on the service's core
#
# Needs: wrk (Debian), Python 3 with the peer's packages (installed into
# ~/.cache/kotel-bench/venv on first use), a build of inference-app with the `benchmark` profile (fat LTO).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
peer=${PEER_DIR:-$repo/../shared/peers/seed000}
venv=${BENCH_VENV:-$HOME/.cache/kotel-bench/venv}
duration=${DURATION:-15}
conns=${CONNECTIONS:-64}
work=$(mktemp -d /tmp/kotel-bench-inference.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pkill -f "uvicorn app:app --host 127.0.0.1 --port 1899" 2>/dev/null || true; }
trap 'cleanup; rm -rf "$work"' EXIT

[ -d "$peer" ] || { echo "the Python peer is not at $peer (set PEER_DIR)" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [ ! -x "$venv/bin/uvicorn" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q fastapi uvicorn scikit-learn numpy pydantic opentelemetry-sdk \
    opentelemetry-exporter-otlp-proto-grpc opentelemetry-instrumentation-fastapi \
    opentelemetry-instrumentation-logging grpcio
fi
cargo build -q --profile benchmark -p inference-app -p loadgen
app=${CARGO_TARGET_DIR:-target}/benchmark/inference-app
loadgen=${CARGO_TARGET_DIR:-target}/benchmark/loadgen
"$app" train --out "$work/model" >/dev/null
cp "$peer/app.py" "$peer/house_price_model.pkl" "$work/"

sink_port=18990
# gRPC binds with SO_REUSEPORT: a second receiver already on the port would silently take a
# share of the connections, and with it of the load and of the counts.
for p in $sink_port 18991 18992 18997 18998 19002; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use (an earlier run's OTLP sink or service?); stop it first" >&2
    exit 1
  fi
done
sink=${SINK:-seed}
# Where each process runs: anywhere on the two cores, or (PIN=1) the service alone on CPU 0.
svc=() load=() sink_run=() cores="2 cores shared with wrk and the sink"
if [ "${PIN:-0}" = 1 ]; then
  svc=(taskset -c 0) load=(taskset -c 1) sink_run=(taskset -c 1 nice -n 10)
  cores="the service alone on CPU 0; wrk, loadgen and the sink on CPU 1"
fi
# start_sink LOG: the OTLP sink on $sink_port, writing LOG; sets $sink_pid.
start_sink() {
  case $sink in
    seed) "${sink_run[@]}" "$venv/bin/python" "$peer/otlp_sink.py" "127.0.0.1:$sink_port" >"$1" 2>&1 & ;;
    collector)
      otelcol=${OTELCOL:-$HOME/.cache/kotel-e2e/bin/otelcol-kotel}
      [ -x "$otelcol" ] || { echo "no collector at $otelcol: build it with 'bash e2e/controlplane.sh build' (or set OTELCOL)" >&2; exit 1; }
      cat >"$work/otelcol.yaml" <<EOF
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:$sink_port"}}}}
exporters: {debug: {verbosity: basic, sampling_initial: 1000000000, sampling_thereafter: 1}}
service:
  telemetry: {metrics: {level: none}, logs: {sampling: {enabled: false}}}
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
    metrics: {receivers: [otlp], exporters: [debug]}
    logs: {receivers: [otlp], exporters: [debug]}
EOF
      "${sink_run[@]}" "$otelcol" --config "$work/otelcol.yaml" >"$1" 2>&1 & ;;
    *) echo "SINK is seed or collector, not $sink" >&2; exit 1 ;;
  esac
  sink_pid=$!
  pids+=($sink_pid)
}
start_sink "$work/sink.log"
sleep 2

wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null -XPOST -H 'content-type: application/json' -d '{"features":[1500]}' "$1" && return 0; sleep 0.2; done; return 1; }
# All pids of a process tree (uvicorn workers are children).
tree() { local p=$1; echo "$p"; for c in $(pgrep -P "$p" || true); do tree "$c"; done; }
ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
rss_kb() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo "$t"; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else {sub(/s$/,"",v); print v*1000} }'; }

# wrk_run PID I URL: one measured wrk run against URL, kept as $work/wrk.PID.I, and the CPU
# microseconds per request it cost the service and the OTLP sink, as $work/cpu.PID.I.
wrk_run() {
  local a0 s0 a1 s1
  a0=$(ticks "$1"); s0=$(ticks "$sink_pid")
  "${load[@]}" wrk -t2 -c"$conns" -d"${duration}s" -s "$peer/post.lua" "$3" --latency >"$work/wrk.$1.$2" 2>&1
  sleep 1   # the last batches reach the sink
  a1=$(ticks "$1"); s1=$(ticks "$sink_pid")
  awk -v a="$((a1 - a0))" -v s="$((s1 - s0))" -v hz="$(getconf CLK_TCK)" \
    '/requests in/{printf "%.2f %.2f\n", a/hz/$1*1e6, s/hz/$1*1e6}' "$work/wrk.$1.$2" >"$work/cpu.$1.$2"
}
warm_up() { "${load[@]}" wrk -t2 -c"$conns" -d3s -s "$peer/post.lua" "$1" >/dev/null 2>&1 || true; }
# Samples the RSS of each pid every 0.5 s into $work/rss.PID until killed.
rss_sampler() { while sleep 0.5; do for p in "$@"; do rss_kb "$p" >>"$work/rss.$p"; done; done; }

# row NAME PID RUNS T0 T1 → one table row from the run with the median requests/s (this 2-core
# VM is noisy); CPU is averaged over all runs (ticks T0..T1). Sets $rps.
row() {
  local name=$1 pid=$2 runs=$3 t0=$4 t1=$5
  local hz; hz=$(getconf CLK_TCK)
  local med; med=$(for i in $(seq "$runs"); do echo "$(awk '/Requests\/sec/{print $2}' "$work/wrk.$pid.$i") $i"; done \
    | sort -n | awk -v n="$runs" 'NR == int((n + 1) / 2) {print $2}')
  cp "$work/wrk.$pid.$med" "$work/wrk.$pid"
  local peak; peak=$(sort -n "$work/rss.$pid" | tail -1)
  rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.$pid")
  local p50 p99
  p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$work/wrk.$pid")")
  p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$work/wrk.$pid")")
  local cpu; cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v d="$((duration * runs))" 'BEGIN{printf "%.0f", (b-a)/hz/d*100}')
  printf '| %s | %.0f | %.2f | %.2f | %s%% | %.0f MiB |\n' "$name" "$rps" "$p50" "$p99" "$cpu" "$((peak / 1024))" >>"$work/table"
}

# per_request PID RATE: a paced load at RATE for $duration s, its report, then a line
# "cost APP_US SINK_US": CPU microseconds per request of the service and of the OTLP sink.
# At a fixed rate this is steadier than requests/s at saturation on a shared 2-core VM.
per_request() {
  local pid=$1 rate=$2 a0 s0 a1 s1
  a0=$(ticks "$pid"); s0=$(ticks "$sink_pid")
  "${load[@]}" "$loadgen" --url "http://127.0.0.1:$port/predict" --rate "$rate" --duration "$duration" --concurrency 32 >"$work/paced"
  sleep 1.5   # the last batches reach the sink
  a1=$(ticks "$pid"); s1=$(ticks "$sink_pid")
  cat "$work/paced"
  awk -v a="$((a1 - a0))" -v s="$((s1 - s0))" -v hz="$(getconf CLK_TCK)" -v n="$(awk '/^requests:/{print $2}' "$work/paced")" \
    'BEGIN{printf "cost %.1f %.1f\n", a/hz/n*1e6, s/hz/n*1e6}'
}

echo "| service (wrk -t2 -c$conns, ${duration}s, $cores) | requests/s | p50 ms | p99 ms | CPU | RSS |" >"$work/table"
echo "|---|---|---|---|---|---|" >>"$work/table"

runs=${RUNS:-5}
peer_env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_EXPORTER_OTLP_INSECURE=true)
app_env=(OTEL_SERVICE_NAME=house-price OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name=bench
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_EXPORTER_OTLP_PROTOCOL=grpc)
# All five services run side by side and take turns, run after run, so that the VM's slow and
# fast spells fall on all of them alike (in a row, one could get a whole slow spell). The idle
# ones cost next to nothing. Ratios are taken within each round.
modes=(seed1 seed2 on sampled off)
declare -A mode_pid mode_port mode_label mode_url
for mode in "${modes[@]}"; do
  case $mode in
    seed*)
      workers=${mode#seed}
      port=$((18990 + workers))
      (cd "$work" && "${svc[@]}" env "${peer_env[@]}" "$venv/bin/uvicorn" app:app --host 127.0.0.1 --port "$port" --workers "$workers" >/dev/null 2>&1) &
      pids+=($!)
      wait_http "http://127.0.0.1:$port/predict/"
      mode_pid[$mode]=$(pgrep -f "uvicorn app:app --host 127.0.0.1 --port $port" | head -1)
      mode_url[$mode]="http://127.0.0.1:$port/predict/"
      mode_label[$mode]="Python seed (FastAPI + OTel), $workers uvicorn worker(s)"
      ;;
    *)
      port=$((18995 + ${#mode}))
      extra=()
      label="inference-app, telemetry on (every request traced)"
      case $mode in
        off) extra=(OTEL_SDK_DISABLED=true); label="inference-app, OTEL_SDK_DISABLED=true" ;;
        sampled) extra=(OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
          label="inference-app, telemetry on, traces sampled at 10%" ;;
      esac
      "${svc[@]}" env "${app_env[@]}" "${extra[@]}" "$app" serve --model-dir "$work/model" --addr "127.0.0.1:$port" \
        > >(grep --line-buffered 'DroppingStarted' >"$work/app.$mode.drops") 2>&1 &
      mode_pid[$mode]=$!; pids+=($!)
      mode_url[$mode]="http://127.0.0.1:$port/predict"
      mode_label[$mode]=$label
      wait_http "${mode_url[$mode]}"
      ;;
  esac
  mode_port[$mode]=$port
done
declare -A t0
for mode in "${modes[@]}"; do
  warm_up "${mode_url[$mode]}"
  t0[$mode]=$(ticks "${mode_pid[$mode]}")
done
rss_sampler "${mode_pid[@]}" &
sampler=$!
for i in $(seq "$runs"); do
  for mode in "${modes[@]}"; do wrk_run "${mode_pid[$mode]}" "$i" "${mode_url[$mode]}"; done
done
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
for mode in "${modes[@]}"; do
  pid=${mode_pid[$mode]}
  row "${mode_label[$mode]}" "$pid" "$runs" "${t0[$mode]}" "$(ticks "$pid")"
  case $mode in on) on_rps=$rps ;; off) off_rps=$rps ;; esac
done
for mode in seed1 seed2; do pkill -f "uvicorn app:app --host 127.0.0.1 --port ${mode_port[$mode]}" || true; done
# spread EXPR: EXPR over the pairs "a b" on stdin, as "median (min-max)".
spread() {
  awk "{a = \$1; b = \$2; print $1}" | sort -n | awk '{v[NR]=$1} END{printf "%.1f (%.1f-%.1f)", v[int((NR + 1) / 2)], v[1], v[NR]}'
}
# per_round A B EXPR: EXPR over a (A's requests/s) and b (B's) in each round.
per_round() {
  for i in $(seq "$runs"); do
    echo "$(awk '/Requests\/sec/{print $2}' "$work/wrk.${mode_pid[$1]}.$i") $(awk '/Requests\/sec/{print $2}' "$work/wrk.${mode_pid[$2]}.$i")"
  done | spread "$3"
}
# per_round_cpu A B COLUMN EXPR: the same over CPU microseconds per request (COLUMN 1: the
# service's, 2: the sink's).
per_round_cpu() {
  for i in $(seq "$runs"); do
    echo "$(awk -v c="$3" '{print $c}' "$work/cpu.${mode_pid[$1]}.$i") $(awk -v c="$3" '{print $c}' "$work/cpu.${mode_pid[$2]}.$i")"
  done | spread "$4"
}
ratio=$(per_round on seed1 'a/b')
own=$(per_round_cpu on off 1 '(a/b-1)*100')
own_on=$(per_round_cpu on off 1 'a')
own_off=$(per_round_cpu on off 1 'b')
sink_on=$(per_round_cpu on off 2 'a')
overhead=$(per_round on off '(1-a/b)*100')
overhead_sampled=$(per_round sampled off '(1-a/b)*100')
dropped=$(curl -s "http://127.0.0.1:${mode_port[on]}/metrics" | awk '/^telemetry_dropped_items_total/{s+=$2} END{print s+0}')
half=$(awk -v r="$on_rps" 'BEGIN{printf "%d", r/2}')
# Paced at half the max rate, on and off take turns too (three rounds); the medians are kept.
for i in 1 2 3; do
  port=${mode_port[on]}
  per_request "${mode_pid[on]}" "$half" >"$work/half.on.$i"
  port=${mode_port[off]}
  per_request "${mode_pid[off]}" "$half" >"$work/half.off.$i"
done
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR + 1) / 2)]}'; }
p99_of() { for i in 1 2 3; do awk '/latency ms/{for(i=1;i<=NF;i++) if($i=="p99") print $(i+1)}' "$work/half.$1.$i"; done | median; }
half_p99=$(p99_of on)
half_p99_off=$(p99_of off)
cost_on="$(for i in 1 2 3; do awk '/^cost/{print $2}' "$work/half.on.$i"; done | median) $(for i in 1 2 3; do awk '/^cost/{print $3}' "$work/half.on.$i"; done | median)"
cost_off=$(for i in 1 2 3; do awk '/^cost/{print $2}' "$work/half.off.$i"; done | median)
dropped_items() { curl -s "http://127.0.0.1:${mode_port[on]}/metrics" | awk '/^telemetry_dropped_items_total/{s+=$2} END{print s+0}'; }
dropped_half=$(( $(dropped_items) - dropped ))
# The collector down (fault 8 in docs/reliability.md): the sink stopped, the same paced load
# on the app with telemetry on; then the sink started again, and its export must resume.
before_down=$(dropped_items)
kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
port=${mode_port[on]}
per_request "${mode_pid[on]}" "$half" >"$work/down"
dropped_down=$(( $(dropped_items) - before_down ))
start_sink "$work/sink.2.log"
sleep 2
per_request "${mode_pid[on]}" "$half" >"$work/back"
resumed=no
for _ in $(seq 30); do
  case $sink in
    seed) grep -q "'spans': [1-9]" "$work/sink.2.log" && { resumed=yes; break; } ;;
    collector) grep -q '"spans": [1-9]' "$work/sink.2.log" && { resumed=yes; break; } ;;
  esac
  sleep 1
done
down_p99=$(awk '/latency ms/{for(i=1;i<=NF;i++) if($i=="p99") print $(i+1)}' "$work/down")
down_errors=$(awk '/^requests:/{print $4}' "$work/down")
down_requests=$(awk '/^requests:/{print $2}' "$work/down")
for mode in on sampled off; do kill "${mode_pid[$mode]}" 2>/dev/null || true; wait "${mode_pid[$mode]}" 2>/dev/null || true; done

cat "$work/table"
awk -v ratio="$ratio" -v own="$own" -v own_on="$own_on" -v own_off="$own_off" -v sink_on="$sink_on" -v oh="$overhead" -v ohs="$overhead_sampled" -v half="$half_p99" -v half_off="$half_p99_off" -v sdk_drops="$(cat "$work"/app.*.drops | wc -l)" -v hr="$((${on_rps%.*} / 2))" -v d="$dropped" -v dh="$dropped_half" -v c="$cost_on" -v coff="$cost_off" -v runs="$runs" \
  -v dr="$down_requests" -v de="$down_errors" -v dp="$down_p99" -v dd="$dropped_down" -v res="$resumed" 'BEGIN{
  split(c, con, " ")
  printf "\n- inference-app with telemetry on / Python seed, one worker, within each of %d rounds: %sx (median, min-max)\n", runs, ratio
  printf "- telemetry overhead (1 - on/off) within each round: %s%%; with traces sampled at 10%%: %s%%\n", oh, ohs
  printf "- at saturation, CPU per request within each round: service %s us on, %s us off (its own overhead: %s%%); OTLP sink %s us\n", own_on, own_off, own, sink_on
  printf "- p99 at half the max rate (%d req/s, loadgen, median of 3): %s ms with telemetry on, %s ms with OTEL_SDK_DISABLED=true: %.2fx\n", hr, half, half_off, half / half_off
  printf "- CPU per request at that paced rate (medians of 3 alternating runs): %s us (service), %s us (OTLP sink) with telemetry on; %s us with OTEL_SDK_DISABLED=true\n", con[1], con[2], coff
  printf "- items dropped (failed exports, JSON lines; telemetry_dropped_items): %s at full load (all runs), %s at half rate; batch processors that logged a full queue (SpanDroppingStarted, LogDroppingStarted): %d\n", d, dh, sdk_drops
  printf "- the sink stopped, same paced rate, telemetry on: %s requests, %s failed; p99 %s ms, %.2fx the p99 with the sink up; %s items counted as dropped; the sink started again: export resumed: %s\n", dr, de, dp, dp / half, dd, res
}'
case $sink in
  seed) echo "- OTLP sink (the seed's otlp_sink.py) received: $(tail -1 "$work/sink.log")" ;;
  collector) echo "- OTLP sink (otelcol-kotel, debug exporter) received: $(grep -o '"\(spans\|log records\|data points\)": [0-9]*' "$work/sink.log" \
    | awk -F': ' '{n[$1] += $2} END{for (k in n) printf "%s %s; ", k, n[k]}')" ;;
esac
