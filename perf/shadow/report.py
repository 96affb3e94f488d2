#!/usr/bin/env python3
"""Merges the client hosts' `loopix stress` reports of one or more Shadow runs of a network
(perf/shadow/run.sh) into one summary, JSON and Markdown, and says whether runs with one
seed gave identical summaries."""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from machine import cpu_model  # noqa: E402

COUNTS = ["sent", "delivered", "lost", "in_flight", "unsent", "late", "duplicates",
          "misdelivered", "retransmitted", "gave_up", "client_timers_late"]


def cdf_at(points, v):
    """The share of a host's delivered messages at or below v, from its CDF points."""
    share = 0.0
    for value, q in points:
        if value <= v:
            share = q
        else:
            break
    return share


def merged_quantile(hosts, q):
    """The smallest latency at which the delivered-weighted CDFs of all hosts reach q (each
    host's CDF is 100 points, so this is as fine as they are)."""
    weights = [h["delivered"] for h in hosts]
    total = sum(weights)
    if total == 0:
        return 0.0
    candidates = sorted({v for h in hosts for v, _ in h["latency_cdf_ms"]})
    for v in candidates:
        share = sum(w * cdf_at(h["latency_cdf_ms"], v) for h, w in zip(hosts, weights)) / total
        if share >= q - 1e-12:
            return v
    return candidates[-1] if candidates else 0.0


def summarize(run_dir, hosts):
    steps = []
    for h in range(hosts):
        with open(os.path.join(run_dir, f"report-{h}", "stress.json")) as f:
            report = json.load(f)
        steps.append(report["steps"][0])
    s = {k: sum(step[k] for step in steps) for k in COUNTS}
    s["latency_ms"] = {"p50": merged_quantile(steps, 0.5), "p99": merged_quantile(steps, 0.99),
                       "max": max(step["latency_ms"]["max"] for step in steps)}
    s["client_timer_lag_max_ms"] = max(step["client_timer_lag_max_ms"] for step in steps)
    fair = [step["jain_fairness"] for step in steps if step["jain_fairness"] is not None]
    s["jain_fairness_min"] = min(fair) if fair else None
    tests = [step["poisson"] for step in steps if step["poisson"]]
    s["poisson"] = {"hosts_passing": sum(1 for t in tests if t["poisson"]), "hosts": len(tests),
                    "d_max": max((t["d"] for t in tests), default=None)}
    nodes = steps[0]["nodes"]
    s["nodes"] = [{k: n[k] for k in ["id", "role", "packets_in", "packets_out", "drops",
                                     "pool_packets", "pool_expected"]} for n in nodes]
    mixes = [n for n in nodes if n["role"].startswith("mix") and n["pool_expected"]]
    s["pool_over_expected"] = (sum(n["pool_packets"] for n in mixes)
                               / sum(n["pool_expected"] for n in mixes)) if mixes else None
    with open(os.path.join(run_dir, "cost")) as f:
        wall, rss_kb = f.read().split()[:2]
    cost = {"shadow_wall_s": float(wall), "shadow_max_rss_mb": int(rss_kb) / 1024}
    return s, cost


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--json-out", required=True)
    p.add_argument("--md-out", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--hosts", type=int, required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    a = p.parse_args()
    results = [summarize(r, a.hosts) for r in a.runs]
    first, cost = results[0]
    simulated = a.nodes + a.clients
    out = {
        "cpu_model": cpu_model(),
        "nodes": a.nodes, "clients": a.clients, "client_hosts": a.hosts, "seed": a.seed,
        "runs": len(results),
        "identical_summaries": all(s == first for s, _ in results),
        "summary": first,
        "cost": [c for _, c in results],
        "shadow_wall_s_per_node_or_client": cost["shadow_wall_s"] / simulated,
        "shadow_rss_mb_per_node_or_client": cost["shadow_max_rss_mb"] / simulated,
    }
    with open(a.json_out, "w") as f:
        json.dump(out, f, indent=2)
    s = first
    walls = ", ".join("%.0f s" % c["shadow_wall_s"] for _, c in results)
    lines = [
        f"# Shadow: {a.nodes} nodes, {a.clients} clients on {a.hosts} hosts (seed {a.seed})",
        "",
        f"CPU running Shadow: {out['cpu_model']}. Runs: {len(results)}; identical summaries: "
        f"{out['identical_summaries']}.",
        "",
        f"- messages: {s['sent']} sent, {s['delivered']} delivered, {s['lost']} lost, "
        f"{s['in_flight']} in flight, {s['duplicates']} duplicated, {s['misdelivered']} misdelivered",
        f"- end-to-end latency: p50 {s['latency_ms']['p50']:.0f} ms, p99 "
        f"{s['latency_ms']['p99']:.0f} ms, max {s['latency_ms']['max']:.0f} ms",
        f"- retransmitted {s['retransmitted']}, client timers over 50 ms late "
        f"{s['client_timers_late']} (latest {s['client_timer_lag_max_ms']:.1f} ms)",
        f"- Poisson test of departures: {s['poisson']['hosts_passing']} of {s['poisson']['hosts']} "
        f"hosts pass (largest D {s['poisson']['d_max']})",
        f"- Jain's fairness (lowest host): {s['jain_fairness_min']}",
        f"- mix pools over lambda/mu: {s['pool_over_expected']}",
        f"- cost: Shadow wall {walls}, "
        f"peak RSS {cost['shadow_max_rss_mb']:.0f} MB "
        f"({out['shadow_wall_s_per_node_or_client'] * 1e3:.1f} ms and "
        f"{out['shadow_rss_mb_per_node_or_client']:.2f} MB per simulated node or client)",
        "",
        "| node | role | in | out | drops | pool | lambda/mu |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in s["nodes"]:
        drops = " ".join(f"{k}={v}" for k, v in n["drops"].items()) or "none"
        pool = f"{n['pool_packets']:.1f}" if n["pool_packets"] is not None else ""
        exp = f"{n['pool_expected']:.1f}" if n["pool_expected"] is not None else ""
        lines.append(f"| {n['id']} | {n['role']} | {n['packets_in']} | {n['packets_out']} | "
                     f"{drops} | {pool} | {exp} |")
    with open(a.md_out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
