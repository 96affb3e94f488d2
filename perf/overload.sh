#!/usr/bin/env bash
# Overload: one mix on one shard, offered X times its capacity of hostile load.
#
#   perf/overload.sh [--json] [--x 3] [--duration-s 60] [--capacity-pps N]
#                    [--max-socket-wait-ms MS]
#
# Capacity is the crypto floor `loopix speed` measures on this CPU in the run (the packets
# a core unwraps per second; the node's engine runs within a few per cent of it), unless
# --capacity-pps gives one. The generator (`loopix loadgen --hostile`) sends valid packets
# among Sphinx replays, junk under valid link trailers, random datagrams and packets asking
# for a 590 s hold, then goes on for 3 s with valid packets at 200/s to time the recovery.
# The node runs with its default limits, or with limits.max_socket_wait_ms = MS (the age
# past which it sheds a datagram unread; 0: never). A sampler reads the node's RSS and asks its metrics endpoint every 200 ms throughout.
#
# Writes perf/reports/overload-<time>.md and prints where it went; with --json prints one
# object: offered_pps, admitted_pps, kernel_drops, counted_drops (and by reason), stale,
# rss_start_bytes, rss_max_bytes, rss_growth, admitted_latency_us {p50, p99}, metrics_ok,
# accounted (forwarded + held + counted drops + kernel drops over offered),
# valid_lost_by_side (each lost valid packet on the generator, the node or neither),
# recovery_ms, cpu and curve_backend.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; x=3; duration=60; capacity=; wait_ms=
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --x) x=$2; shift ;;
    --duration-s) duration=$2; shift ;;
    --capacity-pps) capacity=$2; shift ;;
    --max-socket-wait-ms) wait_ms=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
source perf/lib.sh
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$bin" speed --json > "$work/speed.json"
[ -n "$capacity" ] || capacity=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["floor_packets_per_sec_per_core"])' "$work/speed.json")
rate=$(python3 -c "print($capacity * $x)")

start_node 1 "${wait_ms:+[limits]
max_socket_wait_ms = $wait_ms}"
metrics="http://127.0.0.1:$metrics_port/metrics"
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$node_pid/status"; }
rss > "$work/rss_start"
( while kill -0 "$node_pid" 2>/dev/null; do
    rss >> "$work/rss" || true
    if curl -sf --max-time 1 "$metrics" > /dev/null; then echo 1; else echo 0; fi >> "$work/probes"
    sleep 0.2
  done ) &
sampler=$!
curl -sf "$metrics" > "$work/before.prom"
loadgen --rate "$rate" --duration-s "$duration" --hostile --then-rate 200 --then-s 3 \
  --send-quantum-us 300 --json 2> "$work/loadgen.log" > "$work/load.json"
curl -sf "$metrics" > "$work/after.prom"
kill "$sampler" 2>/dev/null || true
stop_node
mkdir -p perf/reports
report=perf/reports/overload-$stamp.md
python3 perf/overload_report.py "$work" "$x" "$capacity" "$report" "$json" "${wait_ms:-default}"
[ "$json" = 1 ] || echo "overload report: $report"
