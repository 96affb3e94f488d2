#!/usr/bin/env bash
# Where a shard's time goes under load: `perf record` on a 1-shard node while `loopix
# loadgen` drives it, folded by inferno into an SVG flamegraph.
#
#   perf/flamegraph.sh [--pct P] [--seconds S]
#
# Offers P % (default 70) of the crypto floor for S seconds (default 5), samples the node
# at 499 Hz with DWARF call graphs, writes perf/reports/flamegraph-<time>.svg and the folded
# stacks beside it, prints the hottest functions (self time) and where the files went.
# Needs `perf` (Debian: linux-perf); installs inferno with cargo if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
pct=70; seconds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --pct) pct=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command -v perf >/dev/null || { echo "flamegraph: needs perf (apt-get install linux-perf)" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked >&2
source perf/lib.sh
stamp=$(date -u +%Y%m%dT%H%M%SZ)
floor_pps=$("$bin" speed --json | python3 -c "import json,sys; print(1e9 / json.load(sys.stdin)['floor_ns'])")
rate=$(python3 -c "print($floor_pps * $pct / 100)")
start_node 1
loadgen --rate "$rate" --duration-s $((seconds + 2)) --settle-ms 0 --json > "$work/load.json" 2> "$work/loadgen.log" &
load=$!
sleep 1.5 # the pool is built, traffic is flowing
perf record -F 499 --call-graph dwarf -p "$node_pid" -o "$work/perf.data" -- sleep "$seconds" 2> "$work/perf.log"
wait "$load" || true
stop_node
mkdir -p perf/reports
folded=perf/reports/flamegraph-$stamp.folded
svg=perf/reports/flamegraph-$stamp.svg
perf script -i "$work/perf.data" 2> /dev/null | inferno-collapse-perf > "$folded"
inferno-flamegraph --title "loopix node, 1 shard, $pct % of floor ($(printf '%.0f' "$rate") packets/s)" < "$folded" > "$svg"
echo "hottest functions (self time, share of samples):"
python3 - "$folded" <<'PY'
import collections, sys
self_time, total = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n); total += n
    self_time[stack.split(";")[-1]] += n
for f, n in self_time.most_common(12):
    print(f"  {100 * n / total:5.1f} %  {f[:110]}")
PY
echo "flamegraph: $svg (folded stacks: $folded)"
