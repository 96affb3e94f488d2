#!/usr/bin/env bash
# Per-hop latency at low load with the lane kernel and without: what "no packet waits for
# lanes" gives a lightly loaded node.
#
#   perf/kernel_latency.sh [--json] [--step-s S] [--runs N] [--pcts "5 10 25 50"]
#
# One shard (core 0). For each of N rounds, the node runs once with this CPU's default
# kernel and once with LOOPIX_KERNEL=portable (restarted between, in alternating order),
# and `loopix loadgen` offers each load (percent of the crypto floor) for S seconds.
# Prints, per kernel and load, the medians over the rounds of the per-hop p50/p99/p99.9;
# --json prints them as an object.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; step_s=3; runs=3; pcts="5 10 25 50"
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --step-s) step_s=$2; shift ;;
    --runs) runs=$2; shift ;;
    --pcts) pcts=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
source perf/lib.sh
out=$work/results && mkdir -p "$out"
"$bin" speed --json > "$out/speed.json"
default=$(python3 -c "import json; print(json.load(open('$out/speed.json'))['lanes_kernel'])")
floor_pps=$(python3 -c "import json; print(1e9 / json.load(open('$out/speed.json'))['floor_ns'])")

for round in $(seq "$runs"); do
  # Alternate which kernel goes first, so drift over the run falls on both.
  order="$default portable"
  [ $((round % 2)) -eq 0 ] && order="portable $default"
  for kernel in $order; do
    echo "kernel_latency: round $round, $kernel" >&2
    LOOPIX_KERNEL=$kernel start_node 1
    for pct in $pcts; do
      rate=$(python3 -c "print($floor_pps * $pct / 100)")
      loadgen --rate "$rate" --duration-s "$step_s" --json 2>> "$work/loadgen.log" \
        > "$out/$kernel-$pct-$round.json"
      sleep 0.3
    done
    stop_node
  done
done

python3 - "$out" "$default" "$json" "$pcts" <<'PY'
import json, os, statistics, sys
out, default, as_json, pcts = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4].split()
speed = json.load(open(os.path.join(out, "speed.json")))
rows = {}
for kernel in (default, "portable"):
    for pct in pcts:
        runs = [json.load(open(os.path.join(out, f)))
                for f in sorted(os.listdir(out)) if f.startswith(f"{kernel}-{pct}-")]
        rows.setdefault(kernel, {})[pct] = {
            q: statistics.median(r["latency_us"][q] for r in runs) for q in ("p50", "p99", "p999")
        } | {"loss": statistics.median(r["loss"] for r in runs), "runs": len(runs)}
summary = {"cpu_kernel": default, "curve_backend": speed["curve_backend"],
           "floor_ns": speed["floor_ns"], "per_hop_us": rows}
if as_json:
    print(json.dumps(summary, indent=2))
else:
    print(f"per-hop latency, 1 shard, medians of runs (floor {speed['floor_ns']:.0f} ns, "
          f"curve backend {speed['curve_backend']})")
    print(f"{'load':>6}  {'kernel':<16} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'loss':>7}")
    for pct in pcts:
        for kernel in (default, "portable"):
            r = rows[kernel][pct]
            print(f"{pct:>5}%  {kernel:<16} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['p999']:>9.1f} {r['loss']:>7.4f}")
PY
