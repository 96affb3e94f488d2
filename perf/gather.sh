#!/usr/bin/env bash
# What waiting to fill a run of vector lanes buys a node below saturation: one shard at
# several loads, with packets allowed to wait (`limits.gather_us`, default 1000) and with
# no wait (`gather_us = 0`, every packet unwrapped with whatever arrived with it).
#
#   perf/gather.sh [--json] [--loads 0.2,0.4,0.7,1.0,2.0] [--duration-s S]
#
# Loads are fractions of the crypto floor (`loopix speed`); the generator runs on the
# other cores (a 1-shard node on core 0), so 2.0 saturates the shard. For each load and
# each setting it reports the node's packets in and out per second, the share of packets
# unwrapped in lanes (`loopix_packets_in_lanes_total` against `loopix_packets_in_total`),
# the node's CPU per packet (`loopix loadgen`'s `node_cpu_us_per_packet`) and its ratio to
# the floor, and the p99 of the time a packet spent beyond its delay. --json prints one
# object: `cpu`, `curve_backend`, `lanes_kernel`, `floor_ns`, `gather_us`, and `steps`, each
# with `load`, `offered_pps`, `gather_us`, `in_pps`, `lanes_share`, `node_cpu_us_per_packet`,
# `node_cpu_over_floor`, `p99_us`, `lost`. Either way the object is kept in
# perf/reports/gather-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; loads=0.2,0.4,0.7,1.0,2.0; duration=6
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --loads) loads=$2; shift ;;
    --duration-s) duration=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
source perf/lib.sh
cores=$(nproc)
[ "$cores" -ge 2 ] || { echo "gather: needs 2 cores (the generator off the shard's)" >&2; exit 1; }
generator_cpus="1-$((cores - 1))"
"$bin" speed --json > "$work/speed.json"
floor_ns=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["floor_ns"])' "$work/speed.json")
counters() {
  curl -sf "http://127.0.0.1:$metrics_port/metrics" |
    awk '/^loopix_packets_in_lanes_total/{l+=$2} /^loopix_packets_in_total/{t+=$2} END{print l+0, t+0}'
}
steps=$work/steps.jsonl
: > "$steps"
for gather_us in 1000 0; do
  start_node 1 "$(printf '[limits]\ngather_us = %s' "$gather_us")"
  for load in ${loads//,/ }; do
    rate=$(python3 -c "print(round(1e9 / $floor_ns * $load))")
    echo "gather: gather_us $gather_us, load $load ($rate packets/s)" >&2
    before=$(counters)
    loadgen --rate "$rate" --duration-s "$duration" --json > "$work/load.json" 2> "$work/load.log" || true
    after=$(counters)
    python3 - "$work/load.json" "$before" "$after" "$load" "$rate" "$gather_us" "$floor_ns" >> "$steps" <<'PY'
import json, sys
run, before, after = json.load(open(sys.argv[1])), sys.argv[2].split(), sys.argv[3].split()
load, rate, gather_us, floor_ns = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
lanes, packets = (float(a) - float(b) for a, b in zip(after, before))
cpu = run.get("node_cpu_us_per_packet")
print(json.dumps({
    "load": load, "offered_pps": rate, "gather_us": gather_us,
    "in_pps": packets / run["duration_s"] if run.get("duration_s") else None,
    "lanes_share": lanes / packets if packets else None,
    "node_cpu_us_per_packet": cpu,
    "node_cpu_over_floor": cpu * 1000 / floor_ns if cpu else None,
    "p99_us": run.get("latency_us", {}).get("p99"),
    "lost": run["loss_by_side"]["lost"],
}))
PY
  done
  stop_node
done
mkdir -p perf/reports
report=perf/reports/gather-$(date -u +%Y%m%dT%H%M%SZ).json
python3 - "$work/speed.json" "$steps" "$json" "$report" <<'PY'
import json, sys
sys.path.insert(0, "perf")
from machine import cpu_model
speed = json.load(open(sys.argv[1]))
steps = [json.loads(l) for l in open(sys.argv[2])]
out = {k: speed.get(k) for k in ("curve_backend", "lanes_kernel", "floor_ns")}
out["cpu"] = cpu_model()
out["gather_us"] = 1000
out["steps"] = steps
with open(sys.argv[4], "w") as f:
    json.dump(out, f, indent=1)
if sys.argv[3] == "1":
    print(json.dumps(out, indent=1))
    sys.exit()
print(f"{out['cpu']}, {out['curve_backend']}, lane kernel {out['lanes_kernel']}, "
      f"floor {out['floor_ns'] / 1000:.1f} µs")
print(f"{'load':>5} {'gather_us':>9} {'in/s':>8} {'in lanes':>8} {'node µs/pkt':>11} "
      f"{'x floor':>7} {'p99 µs':>8} {'lost':>6}")
f = lambda v, spec: "-" if v is None else format(v, spec)
for s in steps:
    print(f"{s['load']:>5} {s['gather_us']:>9} {f(s['in_pps'], '8.0f')} {f(s['lanes_share'], '8.3f')} "
          f"{f(s['node_cpu_us_per_packet'], '11.1f')} {f(s['node_cpu_over_floor'], '7.2f')} "
          f"{f(s['p99_us'], '8.0f')} {f(s['lost'], '6')}")
PY
