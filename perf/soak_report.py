"""Summarises a perf/soak.sh run: loss outside and inside the restart window, replays, the
node's resident size over time, and the replay filters' bytes per tag. Standard library only.

usage: soak_report.py WORK REPORT JSON START_MS KILL_MS READY_MS RATE CAPACITY PCT EPOCH_S GRACE_S SHARDS
"""
import json
import sys

from machine import cpu_model
from svg_chart import line_chart


def metric_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def summarise(work, start_ms, kill_ms, ready_ms):
    soak = json.load(open(f"{work}/soak.json"))
    # Seconds of send time the restart touches: from 1 s before the kill to 1 s after the
    # restarted node answered.
    first = max(0, (kill_ms - start_ms) // 1000 - 1)
    last = (ready_ms - start_ms) // 1000 + 1
    out_sent = out_fwd = in_sent = in_fwd = 0
    for s, (sent, fwd) in enumerate(zip(soak["sent_per_s"], soak["forwarded_per_s"])):
        if first <= s <= last:
            in_sent, in_fwd = in_sent + sent, in_fwd + fwd
        else:
            out_sent, out_fwd = out_sent + sent, out_fwd + fwd
    samples = {}
    for line in open(f"{work}/rss.txt"):
        t, pid, kb = line.split()
        samples.setdefault(pid, []).append((int(t), int(kb) * 1024))
    growth = 0.0
    for series in samples.values():
        settled = [b for t, b in series if t >= series[0][0] + 3000]
        if settled:
            growth = max(growth, (max(settled) - min(settled)) / min(settled))
    all_rss = [b for series in samples.values() for _, b in series]
    metrics = open(f"{work}/metrics.txt").read()
    rated = metric_sum(metrics, "loopix_replay_filter_rated_tags")
    return {
        "offered_pps": soak["offered_pps"],
        "forwarded_pps": soak["forwarded_pps"],
        "loss": 1 - out_fwd / out_sent if out_sent else None,
        "restart_loss": 1 - in_fwd / in_sent if in_sent else None,
        "restart_window_s": [first, last],
        "restart_ms": ready_ms - kill_ms,
        "epochs_crossed": soak["epochs_crossed"],
        "replays_sent": soak["replays_sent"],
        "replays_within": soak["replays_within"],
        "replays_grace": soak["replays_grace"],
        "replays_after": soak["replays_after"],
        "replays_forwarded": soak["replays_forwarded"],
        "max_rss_bytes": max(all_rss) if all_rss else None,
        "rss_growth": growth,
        "filter_bytes_per_tag": metric_sum(metrics, "loopix_replay_filter_bytes") / rated if rated else None,
        "sent": soak["sent"],
        "forwarded": soak["forwarded"],
        "loss_by_side": soak.get("loss_by_side"),
    }


def plot(work, path, kill_s):
    """Packets sent and forwarded in each second of send time; the kill as a dashed line's
    label (the chart draws horizontal lines only, so the kill second is in the legend)."""
    soak = json.load(open(f"{work}/soak.json"))
    sent = [(s, n, True) for s, n in enumerate(soak["sent_per_s"])]
    fwd = [(s, n, s != kill_s) for s, n in enumerate(soak["forwarded_per_s"])]
    line_chart(path, [("sent", sent), (f"forwarded (open circle: the kill, second {kill_s})", fwd)],
               "second of send time", "packets")


def main():
    work, report, as_json = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    start_ms, kill_ms, ready_ms = (int(v) for v in sys.argv[4:7])
    rate, capacity, pct = float(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9])
    epoch_s, grace_s, shards = int(sys.argv[10]), int(sys.argv[11]), int(sys.argv[12])
    r = summarise(work, start_ms, kill_ms, ready_ms)
    speed = json.load(open(f"{work}/speed.json"))
    r.update({"rate_pps": rate, "capacity_pps": capacity, "pct": pct, "epoch_s": epoch_s,
              "grace_s": grace_s, "shards": shards, "curve_backend": speed.get("curve_backend")})
    cpu = r["cpu"] = cpu_model()
    svg = report.replace(".md", ".svg")
    plot(work, svg, (kill_ms - start_ms) // 1000)
    side = r["loss_by_side"] or {}
    with open(report, "w") as f:
        f.write(f"# Soak, {shards} shard(s), epochs of {epoch_s} s with {grace_s} s of grace\n\n")
        f.write(f"CPU: {cpu}; curve backend: {r['curve_backend']}.\n\n")
        f.write(f"Offered {rate:.0f} packets/s ({pct:.0f} % of a measured capacity of {capacity:.0f}).\n\n")
        f.write("| figure | value | target |\n|---|---|---|\n")
        rows = [
            ("loss outside the restart", r["loss"], "< 0.1 %"),
            ("loss in the restart window", r["restart_loss"], "reported apart"),
            ("restart window (s of send time)", r["restart_window_s"], ""),
            ("kill to restarted node answering (ms)", r["restart_ms"], ""),
            ("epochs crossed", r["epochs_crossed"], ">= 3"),
            ("replays sent (within / grace / after)",
             f"{r['replays_sent']} ({r['replays_within']} / {r['replays_grace']} / {r['replays_after']})", ""),
            ("replays forwarded", r["replays_forwarded"], "0"),
            ("max RSS (bytes)", r["max_rss_bytes"], ""),
            ("RSS spread per process after start", r["rss_growth"], "<= 5 %"),
            ("replay filter bytes per tag", r["filter_bytes_per_tag"], ""),
            ("lost, whole run (generator / node / neither)",
             f"{side.get('lost')} ({side.get('generator')} / {side.get('node')} / {side.get('unattributed')})",
             "neither: the restart"),
        ]
        for name, value, target in rows:
            if isinstance(value, float):
                value = f"{value:.5f}"
            f.write(f"| {name} | {value} | {target} |\n")
        f.write(f"\n![packets per second]({svg.rsplit('/', 1)[-1]})\n")
        f.write("\n```json\n" + json.dumps(r, indent=1) + "\n```\n")
    if as_json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
