#!/usr/bin/env bash
# Capacity of one mix node, for 1 shard and for all shards, against the crypto floor.
#
#   perf/capacity.sh [--json] [--repeats N] [--step-s S] [--p99-bound-us U]
#                    [--send-quantum-us Q] [--pin-generator] [--backend auto|io_uring|portable]
#
# Builds release for this CPU, writes keys and a topology into a scratch directory, starts
# `loopix node` (shards pinned to cores 0..N-1) and runs `loopix loadgen --find-capacity`
# against it with 1 shard, then with all cores. Writes perf/reports/capacity-<time>.md (with
# the per-step JSON and an SVG plot of p99 against offered load) and prints where it went;
# with --json prints one object instead: floor_pps, capacity_pps_1, capacity_pps_all, shards,
# p99_us_at_80pct (the 1-shard p99 of the step nearest 80 % of its capacity), and
# perfect_engine_max_load: per CPU, the highest load at which an engine costing exactly the
# floor per packet would keep its p99 within the bound on the CPU pauses perf/stalls.sh
# measured just before (the efficiency this machine allows at that bound).
#
# --repeats N (default 1) runs the whole search N times for each shard count, each on a
# freshly started node, and reports the capacity as the median and the spread (min, max) of
# the N searches, with the node's CPU per packet at the top of each (the figure the VM's
# pauses do not decide) and the generator's. With N > 1 each rate of a search is judged on
# one run (`loopix loadgen --repeats 1`): the spread over searches is the honest error bar,
# and N searches of three runs a rate would take an hour.
#
# The generator is unpinned and shares the cores with the shards; it sends in bursts of up
# to Q µs (default 300, `loopix loadgen --send-quantum-us`) so that it wakes once per burst
# rather than once per packet, which on shared cores cost the node a quarter of its time
# per packet. Q = 0 restores exact spacing. --pin-generator pins the generator of the
# 1-shard run to the other cores (1..N-1), so that shard's core is its own. --backend runs
# the node on that I/O backend (default auto: io_uring where the host allows it); the JSON
# and the report name it.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; step_s=3; bound=2000; quantum=300; backend=auto; repeats=1
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --step-s) step_s=$2; shift ;;
    --repeats) repeats=$2; shift ;;
    --p99-bound-us) bound=$2; shift ;;
    --send-quantum-us) quantum=$2; shift ;;
    --pin-generator) pin_generator=1 ;;
    --backend) backend=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
source perf/lib.sh
# Every `loopix node` started below runs on it (`loopix node --backend`'s variable).
export LOOPIX_BACKEND=$backend
cores=$(nproc)
stamp=$(date -u +%Y%m%dT%H%M%SZ)

if ! [ "$repeats" -ge 1 ] 2>/dev/null; then echo "--repeats must be a positive integer" >&2; exit 2; fi
per_rate=3; [ "$repeats" -gt 1 ] && per_rate=1

run_capacity() { # $1 = shards, $2 = which search (1..N)
  start_node "$1"
  # With --pin-generator, the 1-shard run's generator gets the cores the shard does not.
  local generator_cpus=
  [ "${pin_generator:-0}" = 1 ] && [ "$1" -lt "$cores" ] && generator_cpus="$1-$((cores - 1))"
  loadgen --duration-s "$step_s" --p99-bound-us "$bound" --send-quantum-us "$quantum" --find-capacity \
    --repeats "$per_rate" --json 2> "$work/loadgen-$1-$2.log" > "$work/capacity-$1-$2.json"
  stop_node
}
# The platform's share first: the load at which a perfect engine (the crypto floor a packet,
# nothing else) would stay within the bound on this machine's own CPU pauses.
"$bin" speed --json > "$work/speed.json"
floor_us=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["floor_ns"] / 1000)' "$work/speed.json")
perf/stalls.sh --json --seconds 5 --service-us "$floor_us" --p99-bound-us "$bound" \
  --send-quantum-us "$quantum" > "$work/stalls.json"
for i in $(seq "$repeats"); do
  [ "$repeats" -gt 1 ] && echo "capacity: search $i of $repeats" >&2
  run_capacity 1 "$i"
  run_capacity "$cores" "$i"
done
mkdir -p perf/reports
report=perf/reports/capacity-$stamp.md
python3 perf/capacity_report.py "$work" "$cores" "$repeats" "$report" "$json" "$work/stalls.json" "$backend"
[ "$json" = 1 ] || echo "capacity report: $report"
