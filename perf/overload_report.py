#!/usr/bin/env python3
"""Turns what perf/overload.sh collected (the generator's JSON, the node's metrics before
and after, RSS samples and metrics probes) into a markdown report and the summary object
`perf/overload.sh --json` prints. Standard library only."""
import json
import subprocess
import sys


def samples(path):
    """Prometheus text as {(name, labels): value}."""
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        name, _, labels = key.partition("{")
        out[(name, labels.rstrip("}"))] = float(value)
    return out


def total(s, name):
    return sum(v for (n, _), v in s.items() if n == name)


def drops_by_reason(before, after):
    out = {}
    for (n, labels), v in after.items():
        if n != "loopix_packets_dropped_total":
            continue
        reason = labels.split('reason="')[1].split('"')[0]
        out[reason] = out.get(reason, 0) + v - before.get((n, labels), 0)
    return {k: int(v) for k, v in sorted(out.items()) if v}


def cpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    work, x, capacity, report, as_json = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
    wait_ms = sys.argv[6] if len(sys.argv) > 6 else "default"
    load = json.load(open(f"{work}/load.json"))
    speed = json.load(open(f"{work}/speed.json"))
    before, after = samples(f"{work}/before.prom"), samples(f"{work}/after.prom")
    delta = lambda name: int(total(after, name) - total(before, name))
    rss = [int(float(v)) for v in open(f"{work}/rss").read().split()]
    rss_start = int(float(open(f"{work}/rss_start").read()))
    probes = open(f"{work}/probes").read().split()
    tail = load.get("tail") or {}
    # Every datagram sent: the hostile load plus the tail (its packets are all valid).
    offered_datagrams = load["sent"] + (tail.get("sent", 0) if tail else 0)
    forwarded, drops, kernel = delta("loopix_packets_out_total"), delta("loopix_packets_dropped_total"), delta("loopix_kernel_drops_total")
    held = int(total(after, "loopix_pool_packets"))
    by_reason = drops_by_reason(before, after)
    accounted = (forwarded + held + drops + kernel) / offered_datagrams if offered_datagrams else None
    summary = {
        "x": x,
        "capacity_pps": capacity,
        "max_socket_wait_ms": 100 if wait_ms == "default" else int(wait_ms),
        "offered_pps": load["offered_pps"],
        "duration_s": load["duration_s"],
        "admitted_pps": load["forwarded_pps"],
        "offered_datagrams": offered_datagrams,
        "forwarded": forwarded,
        "held_at_end": held,
        "counted_drops": drops,
        "drops_by_reason": by_reason,
        "stale": by_reason.get("stale", 0),
        "kernel_drops": kernel,
        "accounted": accounted,
        "rss_start_bytes": rss_start,
        "rss_max_bytes": max(rss + [rss_start]),
        "rss_growth": max(rss + [rss_start]) / rss_start - 1,
        "admitted_latency_us": {"p50": load["latency_us"]["p50"], "p99": load["latency_us"]["p99"]},
        "valid_loss": load["loss"],
        # Every lost valid packet on a side: the generator's own, the node's (its drops
        # beyond the refusals the hostile mix asked for), or neither's.
        "valid_lost_by_side": {k: load["loss_by_side"][k] for k in ("lost", "generator", "node", "unattributed")}
        if load.get("loss_by_side") else None,
        "metrics_ok": bool(probes) and all(p == "1" for p in probes),
        "metrics_probes": len(probes),
        "recovery_ms": tail.get("recovery_ms"),
        "late_windows_after_recovery": tail.get("late_windows"),
        "tail_latency_us": tail.get("latency_us"),
        "hostile": load.get("hostile"),
        "send_lateness_us": load["send_lateness_us"],
        "cpu": cpu_model(),
        "curve_backend": speed.get("curve_backend"),
        "floor_ns": speed["floor_ns"],
    }
    with open(report, "w") as f:
        f.write(f"# Overload: {x:g}x capacity on one shard\n\n")
        f.write(f"CPU {summary['cpu']}, curve backend {summary['curve_backend']}; capacity "
                f"{capacity:.0f} packets/s (the crypto floor, `loopix speed`).\n\n")
        f.write("| | |\n|---|---|\n")
        for k in ["max_socket_wait_ms", "offered_pps", "admitted_pps", "offered_datagrams", "forwarded", "held_at_end", "counted_drops",
                  "stale", "kernel_drops", "accounted", "valid_lost_by_side", "rss_start_bytes", "rss_max_bytes", "rss_growth",
                  "admitted_latency_us", "valid_loss", "metrics_ok", "metrics_probes", "recovery_ms", "late_windows_after_recovery",
                  "tail_latency_us"]:
            f.write(f"| {k} | {summary[k]} |\n")
        f.write(f"\nDrops by reason: {by_reason}\n\nHostile mix sent: {summary['hostile']}\n\n")
        f.write("```json\n" + json.dumps(load, indent=1) + "\n```\n")
    if as_json:
        print(json.dumps(summary, indent=1))


main()
