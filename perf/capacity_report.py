#!/usr/bin/env python3
"""Turns two `loopix loadgen --find-capacity --json` results (1 shard, all shards) into a
markdown report with an SVG plot of p99 per-hop latency against offered load, and the
summary object `perf/capacity.sh --json` prints. Standard library only."""
import json
import sys

from svg_chart import line_chart


def svg(runs, bound, path):
    series = [(f'{r["shards"]} shard(s)', [(s["offered_pps"], s["p99_us"], s["passed"]) for s in r["steps"]])
              for r in runs]
    line_chart(path, series, "offered packets/s", "p99 per-hop latency (us)",
               hline=(bound, f"p99 bound {bound:.0f} us"), y_cap=bound * 4)


def p99_at_80pct(run):
    if not run["capacity_pps"]:
        return None
    target = 0.8 * run["capacity_pps"]
    step = min(run["steps"], key=lambda s: abs(s["offered_pps"] - target))
    return step["p99_us"]


def main():
    one, allc, report, as_json = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    r1, rn = json.load(open(one)), json.load(open(allc))
    stalls = json.load(open(sys.argv[5])) if len(sys.argv) > 5 and sys.argv[5] else None
    backend = sys.argv[6] if len(sys.argv) > 6 else "auto"
    allowed = {c["cpu"]: c["max_load_within_bound"] for c in stalls["cpus"]} if stalls else {}
    summary = {
        "floor_pps": r1["floor_pps"],
        "capacity_pps_1": r1["capacity_pps"],
        "capacity_pps_all": rn["capacity_pps"],
        "shards": rn["shards"],
        "backend": backend,
        "p99_us_at_80pct": p99_at_80pct(r1),
        "efficiency_1": r1["efficiency"],
        "efficiency_all": rn["efficiency"],
        "scaling": rn["capacity_pps"] / r1["capacity_pps"] if r1["capacity_pps"] else None,
        "p99_bound_us": r1["p99_bound_us"],
        "perfect_engine_max_load": allowed,
        "report": report,
    }
    plot = report.replace(".md", ".svg")
    svg([r1, rn], r1["p99_bound_us"], plot)
    with open(report, "w") as f:
        f.write("# Capacity report\n\n")
        f.write(f"Produced by `perf/capacity.sh` (loss < 0.1 %, p99 <= {r1['p99_bound_us']:.0f} us).\n\n")
        f.write("| | 1 shard | all shards |\n|---|---|---|\n")
        f.write(f"| shards | 1 | {rn['shards']} |\n")
        f.write(f"| I/O backend (`--backend`) | {backend} | {backend} |\n")
        f.write(f"| floor pps per core (loopix speed, same run) | {r1['floor_pps']:.0f} | {rn['floor_pps']:.0f} |\n")
        f.write(f"| capacity pps | {r1['capacity_pps']:.0f} | {rn['capacity_pps']:.0f} |\n")
        f.write(f"| efficiency (capacity / (floor x shards)) | {r1['efficiency']:.2f} | {rn['efficiency']:.2f} |\n\n")
        if allowed:
            loads = ", ".join(f"cpu {c} {x:.0%}" for c, x in sorted(allowed.items()))
            f.write(f"The machine's own CPU pauses (`perf/stalls.sh --seconds 5`, just before): an engine costing "
                    f"exactly the floor ({stalls['service_us']:.1f} us) a packet, fed in the same bursts, would keep "
                    f"p99 within {r1['p99_bound_us']:.0f} us up to {loads} of its capacity.\n\n")
        f.write(f"![p99 against offered load]({plot.split('/')[-1]})\n\n")
        for r in (r1, rn):
            f.write(f"## {r['shards']} shard(s): steps\n\n| offered | forwarded | loss | p99 us | node us/packet | pass |\n"
                    "|---|---|---|---|---|---|\n")
            for s in [r["warmup"]] + r["steps"]:
                node = s.get("node_receive_us_per_packet")
                node = "-" if node is None else f"{node:.1f}"
                f.write(f"| {s['offered_pps']:.0f} | {s['forwarded_pps']:.0f} | {s['loss']:.4f} | {s['p99_us']:.0f} | "
                        f"{node} | {s['passed']} |\n")
            f.write(f"\n(the first row is the unjudged warm-up; node us/packet is the time in the core's "
                    f"receive_batch per packet, the floor being {r['floor_ns'] / 1000:.1f} us)\n\n")
    if as_json:
        print(json.dumps(summary, indent=2))


main()
