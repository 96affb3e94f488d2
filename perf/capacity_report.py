#!/usr/bin/env python3
"""Turns the `loopix loadgen --find-capacity --json` results of perf/capacity.sh (N searches
with 1 shard, N with all shards) into a markdown report with an SVG plot of p99 per-hop
latency against offered load, and the summary object `perf/capacity.sh --json` prints: each
capacity as the median and spread of the N searches, with the node's and the generator's CPU
per packet at the top. Standard library only.

usage: capacity_report.py WORK SHARDS N REPORT JSON STALLS BACKEND
(reads WORK/capacity-1-{1..N}.json, WORK/capacity-SHARDS-{1..N}.json, WORK/speed.json)
"""
import json
import statistics
import sys

from distribution import at_capacity, fmt, median_run, spread
from machine import cpu_model
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


def summarise(one, allc, stalls, backend, speed, report):
    allowed = {c["cpu"]: c["max_load_within_bound"] for c in stalls["cpus"]} if stalls else {}
    floor_pps = statistics.median(r["floor_pps"] for r in one + allc)
    floor_us = 1e6 / floor_pps
    cap1, capn = spread([r["capacity_pps"] for r in one]), spread([r["capacity_pps"] for r in allc])
    node1 = spread([at_capacity(r, "node_cpu_us_per_packet") for r in one])
    noden = spread([at_capacity(r, "node_cpu_us_per_packet") for r in allc])
    gen1 = spread([at_capacity(r, "generator_cpu_us_per_packet") for r in one])
    genn = spread([at_capacity(r, "generator_cpu_us_per_packet") for r in allc])
    shards = allc[0]["shards"]
    m1, mn = median_run(one, "capacity_pps"), median_run(allc, "capacity_pps")
    return {
        "cpu": cpu_model(),
        "curve_backend": speed.get("curve_backend"),
        "lanes_kernel": speed.get("lanes_kernel"),
        "backend": backend,
        "searches": len(one),
        "floor_pps": floor_pps,
        "capacity_pps_1": cap1["median"],
        "capacity_pps_all": capn["median"],
        "capacity_pps_1_spread": cap1,
        "capacity_pps_all_spread": capn,
        "shards": shards,
        "p99_us_at_80pct": p99_at_80pct(m1),
        "efficiency_1": cap1["median"] / floor_pps,
        "efficiency_all": capn["median"] / (floor_pps * shards),
        "scaling": capn["median"] / cap1["median"] if cap1["median"] else None,
        "node_cpu_us_per_packet_1": node1 and node1["median"],
        "node_cpu_us_per_packet_1_spread": node1,
        "node_cpu_us_per_packet_all_spread": noden,
        # The floor over the node's CPU per packet at the 1-shard top: 1.0 would be an
        # engine that costs exactly the crypto floor.
        "cpu_efficiency_1": floor_us / node1["median"] if node1 else None,
        "generator_cpu_us_per_packet_1_spread": gen1,
        "generator_cpu_us_per_packet_all_spread": genn,
        "p99_bound_us": m1["p99_bound_us"],
        "perfect_engine_max_load": allowed,
        "report": report,
    }, m1, mn, allowed


def main():
    work, shards, n, report, as_json = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
    stalls = json.load(open(sys.argv[6])) if len(sys.argv) > 6 and sys.argv[6] else None
    backend = sys.argv[7] if len(sys.argv) > 7 else "auto"
    speed = json.load(open(f"{work}/speed.json"))
    one = [json.load(open(f"{work}/capacity-1-{i}.json")) for i in range(1, n + 1)]
    allc = [json.load(open(f"{work}/capacity-{shards}-{i}.json")) for i in range(1, n + 1)]
    summary, m1, mn, allowed = summarise(one, allc, stalls, backend, speed, report)
    plot = report.replace(".md", ".svg")
    svg([m1, mn], m1["p99_bound_us"], plot)
    with open(report, "w") as f:
        f.write("# Capacity report\n\n")
        f.write(f"Produced by `perf/capacity.sh --repeats {n}` (loss < 0.1 %, p99 <= {m1['p99_bound_us']:.0f} us). "
                f"CPU: {summary['cpu']}; curve backend {summary['curve_backend']}; lane kernel "
                f"{summary['lanes_kernel']}. Figures with N > 1 searches are the median (min - max).\n\n")
        f.write("| | 1 shard | all shards |\n|---|---|---|\n")
        f.write(f"| shards | 1 | {shards} |\n")
        f.write(f"| I/O backend (`--backend`) | {backend} | {backend} |\n")
        f.write(f"| floor pps per core (loopix speed, same run) | {summary['floor_pps']:.0f} | {summary['floor_pps']:.0f} |\n")
        f.write(f"| capacity pps | {fmt(summary['capacity_pps_1_spread'])} | {fmt(summary['capacity_pps_all_spread'])} |\n")
        f.write(f"| efficiency (capacity / (floor x shards)) | {summary['efficiency_1']:.2f} | {summary['efficiency_all']:.2f} |\n")
        f.write(f"| node CPU us per packet at the top (floor {1e6 / summary['floor_pps']:.1f}) | "
                f"{fmt(summary['node_cpu_us_per_packet_1_spread'], 1)} | {fmt(summary['node_cpu_us_per_packet_all_spread'], 1)} |\n")
        f.write(f"| generator CPU us per packet at the top | {fmt(summary['generator_cpu_us_per_packet_1_spread'], 1)} | "
                f"{fmt(summary['generator_cpu_us_per_packet_all_spread'], 1)} |\n\n")
        if allowed:
            loads = ", ".join(f"cpu {c} {x:.0%}" for c, x in sorted(allowed.items()))
            f.write(f"The machine's own CPU pauses (`perf/stalls.sh --seconds 5`, just before): an engine costing "
                    f"exactly the floor ({stalls['service_us']:.1f} us) a packet, fed in the same bursts, would keep "
                    f"p99 within {m1['p99_bound_us']:.0f} us up to {loads} of its capacity.\n\n")
        f.write(f"![p99 against offered load]({plot.split('/')[-1]}) (the median search of each)\n\n")
        for r in (m1, mn):
            f.write(f"## {r['shards']} shard(s), the median search: steps\n\n"
                    "| offered | forwarded | loss | p99 us | node receive us/packet | node CPU us/packet | pass |\n"
                    "|---|---|---|---|---|---|---|\n")
            for s in [r["warmup"]] + r["steps"]:
                cell = lambda v: "-" if v is None else f"{v:.1f}"
                f.write(f"| {s['offered_pps']:.0f} | {s['forwarded_pps']:.0f} | {s['loss']:.4f} | {s['p99_us']:.0f} | "
                        f"{cell(s.get('node_receive_us_per_packet'))} | {cell(s.get('node_cpu_us_per_packet'))} | {s['passed']} |\n")
            f.write(f"\n(the first row is the unjudged warm-up; node receive us/packet is the time in the core's "
                    f"receive_batch per packet, the floor being {r['floor_ns'] / 1000:.1f} us)\n\n")
        f.write("```json\n" + json.dumps(summary, indent=1) + "\n```\n")
    if as_json:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
