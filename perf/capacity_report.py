#!/usr/bin/env python3
"""Turns two `loopix loadgen --find-capacity --json` results (1 shard, all shards) into a
markdown report with an SVG plot of p99 per-hop latency against offered load, and the
summary object `perf/capacity.sh --json` prints. Standard library only."""
import json
import sys


def svg(runs, bound, path):
    w, h, pad = 640, 360, 50
    pts = [(s["offered_pps"], s["p99_us"]) for r in runs for s in r["steps"]]
    xmax = max([x for x, _ in pts] + [1]) * 1.05
    ymax = max([min(y, bound * 4) for _, y in pts] + [bound]) * 1.1
    X = lambda x: pad + (w - 2 * pad) * x / xmax
    Y = lambda y: h - pad - (h - 2 * pad) * min(y, ymax) / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{Y(bound):.1f}" x2="{w-pad}" y2="{Y(bound):.1f}" stroke="grey" stroke-dasharray="4"/>',
           f'<text x="{w-pad-150}" y="{Y(bound)-4:.1f}" fill="grey">p99 bound {bound:.0f} us</text>',
           f'<text x="{w/2-60}" y="{h-12}">offered packets/s</text>',
           f'<text x="8" y="{pad-12}">p99 per-hop latency (us)</text>',
           f'<text x="{pad-4}" y="{h-pad+14}" text-anchor="end">0</text>',
           f'<text x="{w-pad}" y="{h-pad+14}" text-anchor="end">{xmax:.0f}</text>',
           f'<text x="{pad-4}" y="{pad+4}" text-anchor="end">{ymax:.0f}</text>']
    for r, colour in zip(runs, ["#1f77b4", "#d62728"]):
        steps = sorted(r["steps"], key=lambda s: s["offered_pps"])
        line = " ".join(f'{X(s["offered_pps"]):.1f},{Y(s["p99_us"]):.1f}' for s in steps)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for s in steps:
            fill = colour if s["passed"] else "white"
            out.append(f'<circle cx="{X(s["offered_pps"]):.1f}" cy="{Y(s["p99_us"]):.1f}" r="4" fill="{fill}" stroke="{colour}"/>')
        out.append(f'<text x="{w-pad-150}" y="{pad + 16 * runs.index(r)}" fill="{colour}">{r["shards"]} shard(s)</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def p99_at_80pct(run):
    if not run["capacity_pps"]:
        return None
    target = 0.8 * run["capacity_pps"]
    step = min(run["steps"], key=lambda s: abs(s["offered_pps"] - target))
    return step["p99_us"]


def main():
    one, allc, report, as_json = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    r1, rn = json.load(open(one)), json.load(open(allc))
    summary = {
        "floor_pps": r1["floor_pps"],
        "capacity_pps_1": r1["capacity_pps"],
        "capacity_pps_all": rn["capacity_pps"],
        "shards": rn["shards"],
        "p99_us_at_80pct": p99_at_80pct(r1),
        "efficiency_1": r1["efficiency"],
        "efficiency_all": rn["efficiency"],
        "scaling": rn["capacity_pps"] / r1["capacity_pps"] if r1["capacity_pps"] else None,
        "p99_bound_us": r1["p99_bound_us"],
        "report": report,
    }
    plot = report.replace(".md", ".svg")
    svg([r1, rn], r1["p99_bound_us"], plot)
    with open(report, "w") as f:
        f.write("# Capacity report\n\n")
        f.write(f"Produced by `perf/capacity.sh` (loss < 0.1 %, p99 <= {r1['p99_bound_us']:.0f} us).\n\n")
        f.write("| | 1 shard | all shards |\n|---|---|---|\n")
        f.write(f"| shards | 1 | {rn['shards']} |\n")
        f.write(f"| floor pps per core (loopix speed, same run) | {r1['floor_pps']:.0f} | {rn['floor_pps']:.0f} |\n")
        f.write(f"| capacity pps | {r1['capacity_pps']:.0f} | {rn['capacity_pps']:.0f} |\n")
        f.write(f"| efficiency (capacity / (floor x shards)) | {r1['efficiency']:.2f} | {rn['efficiency']:.2f} |\n\n")
        f.write(f"![p99 against offered load]({plot.split('/')[-1]})\n\n")
        for r in (r1, rn):
            f.write(f"## {r['shards']} shard(s): steps\n\n| offered | forwarded | loss | p99 us | pass |\n|---|---|---|---|---|\n")
            for s in [r["warmup"]] + r["steps"]:
                f.write(f"| {s['offered_pps']:.0f} | {s['forwarded_pps']:.0f} | {s['loss']:.4f} | {s['p99_us']:.0f} | {s['passed']} |\n")
            f.write("\n(the first row is the unjudged warm-up)\n\n")
    if as_json:
        print(json.dumps(summary, indent=2))


main()
