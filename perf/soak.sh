#!/usr/bin/env bash
# Soak: one mix on all shards under steady load across key epoch boundaries, with replays
# and a SIGKILL + restart in the middle.
#
#   perf/soak.sh [--json] [--epoch-s S] [--grace-s G] [--duration-s D] [--pct P]
#                [--capacity-pps N]
#
# Builds release, writes keys and a topology whose epochs last S s (default 30) with G s of
# grace (default 5), starts `loopix node` on every core, finds its capacity (`loopix loadgen
# --find-capacity`, one run a rate; or takes --capacity-pps) and runs `loopix soak` at P %
# of it (default 70) for D s (default 100, at least three boundaries). The generator
# prebuilds every packet under the key of the epoch it will be sent in (memory: rate x D x
# 2.4 kB) and sends a sample of them again from another port within their epoch, in the
# grace after it and after the grace. Half way through, the node is killed with SIGKILL and
# started again on the same replay journals. Writes perf/reports/soak-<time>.md; with
# --json prints one object: offered_pps, forwarded_pps, loss (honest packets outside the
# restart window), restart_loss, epochs_crossed, replays_sent, replays_forwarded,
# max_rss_bytes, rss_growth (per node process, from 3 s after its start), filter_bytes_per_tag,
# and loss_by_side (every lost packet put on the generator, the node or neither, with the
# node's counters added up across the restart). The report plots packets sent and forwarded
# in each second of send time, the restart marked.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; epoch_s=30; grace_s=5; duration_s=100; pct=70; capacity=
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --epoch-s) epoch_s=$2; shift ;;
    --grace-s) grace_s=$2; shift ;;
    --duration-s) duration_s=$2; shift ;;
    --pct) pct=$2; shift ;;
    --capacity-pps) capacity=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$duration_s" -le $(( 3 * epoch_s )) ]; then
  echo "--duration-s must cover three epoch boundaries: more than 3 x --epoch-s" >&2; exit 2
fi
# Keys for the capacity search and the packet building before the run, too.
export epoch_s epoch_grace_s=$grace_s epochs_published=$(( (duration_s + 1200) / epoch_s + 4 ))
source perf/lib.sh
cores=$(nproc)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$bin" speed --json > "$work/speed.json"
floor_pps=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["packets_per_sec_per_core"]))' "$work/speed.json")
# Filters sized for half again the floor: no shard can unwrap that fast, so none can fill.
limits=$(printf '[limits]\nmax_packets_per_s = %s' $(( floor_pps * 3 / 2 )))
start_node "$cores" "$limits"
echo "$node_pid" > "$work/node.pid"
if [ -z "$capacity" ]; then
  echo "soak: finding the capacity" >&2
  # Loss is what a soak judges, so the capacity is the highest rate without loss within a
  # p99 of 20 ms (one run a rate: a shared machine's pauses would fail a 2 ms bound at random).
  loadgen --find-capacity --repeats 1 --refine 1 --duration-s 2 --send-quantum-us 300 \
    --p99-bound-us 20000 --json 2> "$work/capacity.log" > "$work/capacity.json"
  capacity=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["capacity_pps"])' "$work/capacity.json")
fi
if python3 -c "import sys; sys.exit(0 if float('$capacity') > 0 else 1)"; then :; else
  echo "soak: no capacity measured" >&2; cat "$work/capacity.log" >&2; exit 1
fi
rate=$(python3 -c "print(round($capacity * $pct / 100))")
echo "soak: capacity $capacity packets/s; offering $rate ($pct %) for $duration_s s" >&2

# The node's resident size every half second (the pid changes at the restart).
( while sleep 0.5; do
    pid=$(cat "$work/node.pid")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null) && echo "$(date +%s%3N) $pid $rss"
  done >> "$work/rss.txt" ) &
sampler=$!

"$bin" soak --topology "$work/topology.toml" --target 1 --as 1000 --key "$work/gen.key" --rate "$rate" \
  --duration-s "$duration_s" --metrics "127.0.0.1:$metrics_port" --json > "$work/soak.json" 2> "$work/soak.log" &
soak_pid=$!
start_ms=
for _ in $(seq 6000); do
  start_ms=$(grep -o 'start_unix_ms=[0-9]*' "$work/soak.log" | cut -d= -f2 || true)
  [ -n "$start_ms" ] && break
  kill -0 "$soak_pid" 2>/dev/null || { cat "$work/soak.log" >&2; exit 1; }
  sleep 0.1
done
kill_at_ms=$(( start_ms + duration_s * 500 ))
while [ "$(date +%s%3N)" -lt "$kill_at_ms" ]; do sleep 0.05; done
kill -KILL "$node_pid"; kill_ms=$(date +%s%3N); wait "$node_pid" 2>/dev/null || true
start_node "$cores" "$limits"; ready_ms=$(date +%s%3N)
echo "$node_pid" > "$work/node.pid"
echo "soak: node killed and restarted ($(( ready_ms - kill_ms )) ms)" >&2
wait "$soak_pid"
curl -sf "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt" || true
kill "$sampler" 2>/dev/null || true
stop_node
cp "$work/node-$cores.log" "$work/node.log" 2>/dev/null || true

mkdir -p perf/reports
report=perf/reports/soak-$stamp.md
python3 perf/soak_report.py "$work" "$report" "$json" "$start_ms" "$kill_ms" "$ready_ms" \
  "$rate" "$capacity" "$pct" "$epoch_s" "$grace_s" "$cores"
[ "$json" = 1 ] || echo "soak report: $report"
