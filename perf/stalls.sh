#!/usr/bin/env bash
# How long this machine's CPUs pause under a thread that never yields, and what those pauses
# alone cost a perfect engine's per-hop latency: the platform's share of the tail.
#
#   perf/stalls.sh [--json] [--seconds S] [--service-us U] [--p99-bound-us B [--send-quantum-us Q]]
#
# Spins one probe (perf/stall_probe.py) on every CPU at once for S seconds (default 10),
# recording each gap over 20 µs between two clock reads, then models a FIFO server that
# costs exactly U µs a packet (default 50, about one unwrap here: `loopix speed`'s floor)
# fed at 50/80/90 % of its capacity and stopped during the recorded gaps; with `perf`,
# also which other tasks ran on each CPU meanwhile. With a p99 bound, also the highest load
# at which that perfect engine stays within it (arrivals in bursts of Q µs, as
# `perf/capacity.sh` sends them): the efficiency a capacity search could find here.
# (perf/stall_report.py). Writes perf/reports/stalls-<time>.md and prints where; --json
# prints the summary object instead. Needs no build: run it before trusting any tail
# figure from a machine, with nothing else running on it.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; seconds=10; service_us=50; bound=""; quantum=0
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --seconds) seconds=$2; shift ;;
    --service-us) service_us=$2; shift ;;
    --p99-bound-us) bound=$2; shift ;;
    --send-quantum-us) quantum=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
python3 perf/stall_report.py --self-test >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cpus=$(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')
echo "stalls: spinning on cpus $cpus for $seconds s" >&2
# With perf (and permission), record the scheduler's switches meanwhile: what else ran.
recording=0
if command -v perf >/dev/null 2>&1 && perf record -q -e sched:sched_switch -a -o "$work/sw.data" -- true >/dev/null 2>&1; then
  recording=1
fi
probes=()
for c in $cpus; do
  python3 perf/stall_probe.py "$c" "$seconds" "$work/probe-$c.json" &
  probes+=($!)
done
if [ "$recording" = 1 ]; then
  perf record -q -e sched:sched_switch -a -o "$work/sw.data" -- sleep "$seconds" >/dev/null 2>&1 || true
fi
wait "${probes[@]}"
if [ "$recording" = 1 ]; then
  perf script -i "$work/sw.data" -F cpu,time,trace > "$work/switches.txt" 2>/dev/null || rm -f "$work/switches.txt"
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p perf/reports
report=perf/reports/stalls-$stamp.md
python3 perf/stall_report.py "$work" "$service_us" "$report" "$json" $bound ${bound:+$quantum}
[ "$json" = 1 ] || echo "stalls report: $report"
