#!/usr/bin/env python3
"""Turns the results of perf/latency.sh into a markdown report with two SVG plots, and the
summary `perf/latency.sh --json` prints. Standard library only."""
import glob
import json
import os
import re
import sys

from svg_chart import line_chart

SLOT_US = 100  # the default wheel slot


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def load_steps(d):
    steps = {}
    for path in glob.glob(os.path.join(d, "load-*-*.json")):
        pct = int(re.search(r"load-(\d+)-", path).group(1))
        steps.setdefault(pct, []).append(json.load(open(path)))
    rows = []
    for pct in sorted(steps):
        runs = steps[pct]
        rows.append({
            "pct_of_floor": pct,
            "offered_pps": median([r["offered_pps"] for r in runs]),
            "loss": median([r["loss"] for r in runs]),
            "p50_us": median([r["latency_us"]["p50"] for r in runs]),
            "p99_us": median([r["latency_us"]["p99"] for r in runs]),
            "p999_us": median([r["latency_us"]["p999"] for r in runs]),
            "p99_us_runs": [r["latency_us"]["p99"] for r in runs],
        })
    return rows


def platform_bound(d):
    """p99 per-hop latency at 80 % load of a perfect engine on core 0, from the stall probe."""
    try:
        stalls = json.load(open(os.path.join(d, "stalls.json")))
    except (OSError, ValueError):
        return None
    core0 = next((c for c in stalls["cpus"] if c["cpu"] == 0), None)
    return core0["model_us"]["0.8"]["p99"] if core0 else None


def memory(d):
    m = {k: json.load(open(os.path.join(d, f"mem-{k}.json"))) for k in "abc"}
    per_packet = (m["b"]["rss_kb"] - m["a"]["rss_kb"]) * 1024 / (m["b"]["pool_packets"] - m["a"]["pool_packets"])
    per_tag = (m["c"]["rss_kb"] - m["a"]["rss_kb"]) * 1024 / (m["c"]["replay_tags"] - m["a"]["replay_tags"])
    return m, per_packet, per_tag


def testnets(d):
    out = []
    for path in glob.glob(os.path.join(d, "testnet-*.json")):
        c = int(re.search(r"testnet-(\d+)", path).group(1))
        try:
            t = json.load(open(path))
        except ValueError:
            continue
        out.append({"clients": c, "loop_overhead_ms": t.get("loop_overhead_ms"),
                    "delivered": t["delivered_real"], "lost": t["lost_real"],
                    "latency_p50_ms": t["latency_ms"]["p50"]})
    return sorted(out, key=lambda r: r["clients"])


def main():
    d, report, as_json = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    floor_pps = 1e9 / json.load(open(os.path.join(d, "speed.json")))["floor_ns"]
    settings = json.load(open(os.path.join(d, "settings.json")))["node_settings"]
    rows = load_steps(d)
    holds = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, "hold-*.json")))]
    errors = [h.get("node_delay_error_p99_us") for h in holds]
    hold = holds[0] | {"runs_p99_us": errors, "median_p99_us": median([e for e in errors if e is not None])}
    bound = platform_bound(d)
    mem, per_packet, per_tag = memory(d)
    nets = testnets(d)
    at80 = next((r for r in rows if r["pct_of_floor"] == 80), None)
    summary = {
        "floor_pps": floor_pps,
        "node_settings": settings,
        "per_hop": rows,
        "p99_us_at_80pct_of_floor": at80["p99_us"] if at80 else None,
        "perfect_engine_p99_us_at_80pct_core0": bound,
        "delay_error_p99_us": hold["median_p99_us"],
        "delay_error_p99_us_runs": errors,
        "wheel_slot_us": SLOT_US,
        "bytes_per_pending_packet": per_packet,
        "bytes_per_replay_tag": per_tag,
        "testnet": nets,
        "report": report,
    }
    base = report[:-3]
    load_svg, nets_svg = base + "-load.svg", base + "-clients.svg"
    line_chart(load_svg, [(name, [(r["offered_pps"], r[key], r["loss"] < 0.001) for r in rows])
                          for name, key in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"))],
               "offered packets/s (1 shard)", "per-hop latency (us)", hline=(500, "500 us"), y_cap=5000)
    line_chart(nets_svg, [("mix loop overhead", [(n["clients"], n["loop_overhead_ms"] or 0, True) for n in nets])],
               "clients in the testnet", "overhead per loop (ms)")
    with open(report, "w") as f:
        f.write("# Latency report\n\nProduced by `perf/latency.sh`.\n\n")
        f.write(f"Node: 1 shard pinned to core 0, `{settings}`; generator unpinned.\n\n")
        f.write(f"## Per-hop latency against load, 1 shard\n\nFloor (`loopix speed`, same run): {floor_pps:.0f} packets/s. "
                "Median of the runs at each rate; hollow points lost >= 0.1 %.\n\n")
        f.write("| % of floor | offered pps | loss | p50 us | p99 us | p99.9 us | p99 of each run |\n|---|---|---|---|---|---|---|\n")
        for r in rows:
            runs = ", ".join(f"{x:.0f}" for x in r["p99_us_runs"])
            f.write(f"| {r['pct_of_floor']} | {r['offered_pps']:.0f} | {r['loss']:.4f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['p999_us']:.0f} | {runs} |\n")
        f.write(f"\n![latency against load]({os.path.basename(load_svg)})\n\n")
        if bound is not None:
            f.write(f"The CPUs' own pauses in this sitting (`perf/stalls.sh --seconds 5`, before the load): a perfect "
                    f"engine on core 0 costing the floor per packet would have had p99 {bound:.0f} us at 80 % load.\n\n")
        f.write(f"## Delay fidelity\n\n5 ms holds at {hold['offered_pps']:.0f} packets/s, {len(holds)} runs: 99 % of "
                f"releases within {hold['median_p99_us']} us of the requested time (median; runs "
                f"{', '.join(str(e) for e in errors)} us; wheel slot {SLOT_US} us; per-hop latency net of the "
                f"hold in the first run p50 {hold['latency_us']['p50']:.0f} us, p99 {hold['latency_us']['p99']:.0f} us).\n\n")
        f.write("## Memory\n\nResident size of a 1-shard node (pool and replay table are touched at start):\n\n"
                "| pool packets | replay tags | RSS KiB |\n|---|---|---|\n")
        for k in "abc":
            f.write(f"| {mem[k]['pool_packets']} | {mem[k]['replay_tags']} | {mem[k]['rss_kb']} |\n")
        f.write(f"\nBytes per pending packet: {per_packet:.0f}; per replay tag: {per_tag:.1f}.\n\n")
        f.write("## End-to-end overhead against clients (Fig. 10 analogue)\n\n"
                "`loopix testnet --clients C`: each mix loop's round trip minus the delays written into it "
                "(a trip through every layer and a provider: routing, processing, loopback links).\n\n"
                "| clients | loop overhead ms | real messages delivered | lost | e2e p50 ms |\n|---|---|---|---|---|\n")
        for n in nets:
            oh = "-" if n["loop_overhead_ms"] is None else f"{n['loop_overhead_ms']:.2f}"
            f.write(f"| {n['clients']} | {oh} | {n['delivered']} | {n['lost']} | {n['latency_p50_ms']:.0f} |\n")
        f.write(f"\n![overhead against clients]({os.path.basename(nets_svg)})\n")
    if as_json:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
