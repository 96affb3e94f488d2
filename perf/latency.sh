#!/usr/bin/env bash
# Latency of the engine: per-hop latency against offered load on one shard, delay fidelity
# and memory per pending packet / replay tag, and end-to-end overhead against the number of
# clients in a testnet (the paper's Fig. 10).
#
#   perf/latency.sh [--json] [--step-s S] [--runs N] [--clients "50 100 200 500"] [--testnet-s T]
#                   [--spin-us U]
#
# 1. `loopix speed` measures the crypto floor; one shard (pinned to core 0) then gets
#    `loopix loadgen` at 10..90 % of it, N runs per rate (median reported).
#    Before it, perf/stalls.sh (5 s) measures the CPUs' own pauses and the per-hop p99 a
#    perfect engine on core 0 would have had on them: the platform's share of the tail.
# 2. The same node at 50 % with every packet held 5 ms, N runs: |actual - requested hold|
#    p99 from the node's loopix_delay_error_seconds histogram (median of the runs), against
#    one wheel slot (100 µs).
# 3. Memory: the node's resident size (prefaulted at start) with the pool and the replay
#    table each doubled in turn; the differences give bytes per pending packet and per tag.
# 4. `loopix testnet --clients C` for each C: the mixes' loop overhead (round trip minus the
#    delays written into the loop, so routing, processing and links only).
# Writes perf/reports/latency-<time>.md with two SVG plots and prints where; --json prints a
# summary object instead. --spin-us sets the node's spin_us (busy-poll before sleeping).
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; step_s=3; runs=3; clients="50 100 200 500"; testnet_s=20; spin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --step-s) step_s=$2; shift ;;
    --runs) runs=$2; shift ;;
    --clients) clients=$2; shift ;;
    --testnet-s) testnet_s=$2; shift ;;
    --spin-us) spin="spin_us = $2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
source perf/lib.sh
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$work/results && mkdir -p "$out"

echo "{\"node_settings\": \"${spin:-spin_us = 0}\"}" > "$out/settings.json"
"$bin" speed --json > "$out/speed.json"
floor_pps=$(python3 -c "import json; print(1e9 / json.load(open('$out/speed.json'))['floor_ns'])")

echo "latency: the CPUs' own pauses, 5 s (perf/stalls.sh)" >&2
floor_us=$(python3 -c "print(1e6 / $floor_pps)")
perf/stalls.sh --json --seconds 5 --service-us "$floor_us" > "$out/stalls.json"
echo "latency: per-hop latency against load (floor $floor_pps packets/s)" >&2
start_node 1 "$spin"
for pct in 10 25 40 55 70 80 90; do
  rate=$(python3 -c "print($floor_pps * $pct / 100)")
  for run in $(seq "$runs"); do
    loadgen --rate "$rate" --duration-s "$step_s" --json 2>> "$work/loadgen.log" > "$out/load-$pct-$run.json"
    sleep 0.3
  done
done
echo "latency: delay fidelity (5 ms holds at 50 %)" >&2
rate=$(python3 -c "print($floor_pps * 0.5)")
for run in $(seq "$runs"); do
  loadgen --rate "$rate" --duration-s "$step_s" --hold-us 5000 --json 2>> "$work/loadgen.log" > "$out/hold-$run.json"
done
stop_node

echo "latency: memory per pending packet and per replay tag" >&2
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$node_pid/status"; }
# A shard has two replay filters, each sized for max_packets_per_s over a key's lifetime
# (epoch_s + 2 x epoch_grace_s): "replay_tags" is what both hold at their rated capacity.
lifetime_s=$(( epoch_s + 2 * epoch_grace_s ))
for cfg in "a 32768 800" "b 65536 800" "c 32768 1600"; do
  set -- $cfg
  start_node 1 "$(printf '%s\n[limits]\npool_packets = %s\nmax_packets_per_s = %s' "$spin" "$2" "$3")"
  sleep 1
  echo "{\"pool_packets\": $2, \"replay_tags\": $(( 2 * $3 * lifetime_s )), \"rss_kb\": $(rss_kb)}" > "$out/mem-$1.json"
  stop_node
done

for c in $clients; do
  echo "latency: testnet with $c clients, $testnet_s s" >&2
  "$bin" testnet --clients "$c" --duration-s "$testnet_s" --json 2>> "$work/testnet.log" > "$out/testnet-$c.json" || true
done

mkdir -p perf/reports
report=perf/reports/latency-$stamp.md
python3 perf/latency_report.py "$out" "$report" "$json"
[ "$json" = 1 ] || echo "latency report: $report"
