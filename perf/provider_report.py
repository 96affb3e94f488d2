#!/usr/bin/env python3
"""Turns the `loopix provider-load --find-capacity --json` results of perf/provider.sh (N
searches with 1 shard, N with all shards) into a markdown report with an SVG plot of the
provider hop's p99 against offered load (the median search of each), and the summary
object `perf/provider.sh --json` prints: the capacities as medians with their spread, the
other figures the median search's. Standard library only.

usage: provider_report.py WORK SHARDS N REPORT JSON BACKEND
(reads WORK/provider-1-{1..N}.json and WORK/provider-SHARDS-{1..N}.json)
"""
import json
import sys

from distribution import at_capacity, fmt, median_run, spread
from svg_chart import line_chart


def main():
    work, shards, n, report, as_json, backend = sys.argv[1:7]
    n, as_json = int(n), as_json == "1"
    ones = [json.load(open(f"{work}/provider-1-{i}.json")) for i in range(1, n + 1)]
    alls = [json.load(open(f"{work}/provider-{shards}-{i}.json")) for i in range(1, n + 1)]
    r1, rn = median_run(ones, "capacity_pps"), median_run(alls, "capacity_pps")
    cap1, capn = spread([r["capacity_pps"] for r in ones]), spread([r["capacity_pps"] for r in alls])
    cpu1 = spread([at_capacity(r, "node_cpu_us_per_packet") for r in ones])
    blocks = [s.get("max_shard_block_us") for r in (r1, rn) for s in r["steps"]]
    blocks = [b for b in blocks if b is not None]
    summary = {
        "floor_pps": r1["floor_pps"],
        "searches": n,
        "capacity_pps_1": cap1["median"],
        "capacity_pps_all": capn["median"],
        "capacity_pps_1_spread": cap1,
        "capacity_pps_all_spread": capn,
        "node_cpu_us_per_packet_1_spread": cpu1,
        "shards": rn["shards"],
        "clients": rn["clients"],
        "backend": backend,
        "efficiency_1": cap1["median"] / r1["floor_pps"],
        "efficiency_all": capn["median"] / (rn["floor_pps"] * rn["shards"]),
        "scaling": capn["median"] / cap1["median"] if cap1["median"] else None,
        "polls_per_s": at_capacity(rn, "polls_per_s"),
        "handshakes_per_s": at_capacity(rn, "handshakes_per_s"),
        "node_cpu_us_per_packet_1": at_capacity(r1, "node_cpu_us_per_packet"),
        "cpu_efficiency_1": (r1["floor_ns"] / 1000 / at_capacity(r1, "node_cpu_us_per_packet"))
        if at_capacity(r1, "node_cpu_us_per_packet") else None,
        "store_commits_per_s": at_capacity(rn, "store_commits_per_s"),
        "store_commit_p99_us": at_capacity(rn, "store_commit_p99_us"),
        "store_commit_max_us": at_capacity(rn, "store_commit_max_us"),
        "max_shard_block_us": max(blocks) if blocks else None,
        "max_shard_block_store_us": max([s.get("max_shard_block_store_us") or 0 for r in (r1, rn) for s in r["steps"]], default=None),
        "max_shard_block_journal_us": max([s.get("max_shard_block_journal_us") or 0 for r in (r1, rn) for s in r["steps"]], default=None),
        "lost": (at_capacity(r1, "lost", 0) or 0) + (at_capacity(rn, "lost", 0) or 0),
        "p99_bound_us": r1["p99_bound_us"],
        "report": report,
    }
    plot = report.replace(".md", ".svg")
    series = [(f'{r["shards"]} shard(s)', [(s["offered_pps"], s["latency_us"]["p99"], s["passed"]) for s in r["steps"]])
              for r in (r1, rn)]
    bound = r1["p99_bound_us"]
    line_chart(plot, series, "offered packets/s (unwrapped by the provider)", "p99 provider hop (us)",
               hline=(bound, f"p99 bound {bound:.0f} us"), y_cap=bound * 4)
    with open(report, "w") as f:
        f.write("# Provider capacity report\n\n")
        f.write(f"Produced by `perf/provider.sh`: {rn['clients']} client sessions; half of each step's "
                f"packets from clients (relayed to the mix), half delivered by the mix (stored, collected "
                f"by polls); polls at the default ratio. A step passes with loss < 0.1 % and the hop's "
                f"p99 <= {bound:.0f} us.\n\n")
        f.write("| | 1 shard | all shards |\n|---|---|---|\n")
        f.write(f"| shards | 1 | {rn['shards']} |\n")
        f.write(f"| I/O backend | {backend} | {backend} |\n")
        f.write(f"| floor pps per core (loopix speed, same run) | {r1['floor_pps']:.0f} | {rn['floor_pps']:.0f} |\n")
        f.write(f"| capacity pps ({n} search(es): median (min - max)) | {fmt(cap1)} | {fmt(capn)} |\n")
        f.write(f"| efficiency (median capacity / (floor x shards)) | {summary['efficiency_1']:.2f} | "
                f"{summary['efficiency_all']:.2f} |\n")
        f.write(f"| provider CPU us per packet at the top | {fmt(cpu1, 1)} | - |\n\n")
        f.write(f"![p99 against offered load]({plot.split('/')[-1]})\n\n")
        for r in (r1, rn):
            f.write(f"## {r['shards']} shard(s): steps\n\n"
                    "| offered | lost | hop p99 us | polls/s | handshakes/s | node us/datagram | node CPU us/packet | "
                    "commits/s | commit p99 us | longest shard block us | pass |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
            cell = lambda v, spec: "-" if v is None else format(v, spec)
            for s in r["steps"]:
                f.write(f"| {s['offered_pps']:.0f} | {s['lost']} | {s['latency_us']['p99']:.0f} | "
                        f"{s['polls_per_s']:.0f} | {s['handshakes_per_s']:.1f} | "
                        f"{cell(s.get('node_receive_us_per_datagram'), '.1f')} | "
                        f"{cell(s.get('node_cpu_us_per_packet'), '.1f')} | "
                        f"{cell(s.get('store_commits_per_s'), '.0f')} | {cell(s.get('store_commit_p99_us'), '.0f')} | "
                        f"{cell(s.get('max_shard_block_us'), '.0f')} | {s['passed']} |\n")
            f.write(f"\n(the floor is {r['floor_ns'] / 1000:.1f} us a packet; node us/datagram is the time in "
                    f"the provider's receive path per datagram, polls and handshakes included; node CPU us/packet is "
                    f"the provider process's CPU time, every thread, per packet offered to it)\n\n")
    if as_json:
        print(json.dumps(summary, indent=2))


main()
