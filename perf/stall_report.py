#!/usr/bin/env python3
"""Turns `stall_probe.py` results (one per CPU) into a markdown report: how often and how
long each CPU paused, and what those pauses alone do to a perfect engine's per-hop latency.

The model is a single FIFO server with a fixed cost per packet (no engine overhead at all),
fed at a constant rate of `load` x its capacity, that does no work while the probe saw its
CPU paused. Its sojourn-time percentiles are a lower bound for the per-hop latency that any
engine pinned to that CPU can reach at that load: the real engine also pays its own
overheads, and a generator on a paused CPU sends late and then in a burst.

    stall_report.py DIR SERVICE_US OUT.md JSON(0|1) [P99_BOUND_US [QUANTUM_US]]
    stall_report.py --self-test
Standard library only.
"""
import collections
import glob
import json
import os
import re
import sys

LOADS = (0.5, 0.8, 0.9)
BUCKETS_US = (20, 50, 100, 250, 500, 1000, 2000, 5000)


def finish(start, work, gaps, gi):
    """When `work` µs of service begun at `start` ends if nothing runs during `gaps`
    (sorted (begin, end) pairs); `gi` is the first gap that may still matter."""
    t, rem = start, work
    while True:
        while gi < len(gaps) and gaps[gi][1] <= t:
            gi += 1
        if gi == len(gaps) or gaps[gi][0] >= t + rem:
            return t + rem, gi
        begin, end = gaps[gi]
        if begin > t:
            rem -= begin - t
        t = end


def sojourns(gaps, seconds, service_us, load, quantum_us=0.0):
    """Sojourn time (wait + service) of every packet of a constant-rate stream; with a
    quantum, packets arrive in bursts at its start, as `loopix loadgen --send-quantum-us`
    sends them."""
    spacing = service_us / load
    free, gi, out = 0.0, 0, []
    n = int(seconds * 1e6 / spacing)
    for i in range(n):
        due = i * spacing
        arrival = due - due % quantum_us if quantum_us else due
        done, gi = finish(max(arrival, free), service_us, gaps, gi)
        free = done
        out.append(done - arrival)
    return out


def max_load(gaps, seconds, service_us, bound_us, quantum_us=0.0):
    """The highest load (to 0.5 %) at which the perfect engine's p99 stays within
    `bound_us`: the efficiency a capacity search with that bound can find on these pauses."""
    def p99(load):
        return percentile(sorted(sojourns(gaps, seconds, service_us, load, quantum_us)), 0.99)
    lo, hi = 0.0, 1.0
    while hi - lo > 0.005:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p99(mid) <= bound_us else (lo, mid)
    return lo


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarise(probe, service_us, bound_us=None, quantum_us=0.0):
    gaps = [(s, s + d) for s, d in probe["gaps"]]
    lengths = sorted(d for _, d in probe["gaps"])
    counts = [sum(1 for d in lengths if lo <= d < hi)
              for lo, hi in zip(BUCKETS_US, BUCKETS_US[1:] + (float("inf"),))]
    long_starts = [s for s, d in probe["gaps"] if d >= 1000]
    intervals = sorted(b - a for a, b in zip(long_starts, long_starts[1:]))
    model = {}
    for load in LOADS:
        soj = sorted(sojourns(gaps, probe["seconds"], service_us, load))
        model[str(load)] = {"p50": percentile(soj, 0.5), "p99": percentile(soj, 0.99),
                            "p999": percentile(soj, 0.999)}
    return {
        "cpu": probe["cpu"],
        "seconds": probe["seconds"],
        "loop_ns": probe["loop_ns"],
        "stalled_pct": 100 * sum(lengths) / (probe["seconds"] * 1e6),
        "max_gap_us": lengths[-1] if lengths else 0.0,
        "gaps_per_bucket": counts,
        "gaps_over_1ms_per_s": len(long_starts) / probe["seconds"],
        "median_ms_between_1ms_gaps": percentile(intervals, 0.5) / 1000 if intervals else None,
        "model_us": model,
        "p99_bound_us": bound_us,
        "quantum_us": quantum_us,
        "max_load_within_bound": None if bound_us is None
        else max_load(gaps, probe["seconds"], service_us, bound_us, quantum_us),
    }


SWITCH = re.compile(r"\s*\[(\d+)\]\s+([\d.]+):\s+prev_comm=(.+?) prev_pid=.* ==> next_comm=(.+?) next_pid=")


def other_tasks(switches_path, probe_comm="python3"):
    """From `perf script` lines of sched:sched_switch: the time each other task ran on each
    CPU while the probes spun, {cpu: [(task, total_us, longest_us, runs)]}, longest first.
    A pause no task accounts for happened outside this kernel's scheduler (interrupts, or
    the hypervisor running something else on the vCPU)."""
    since, runs = {}, collections.defaultdict(list)
    for line in open(switches_path, errors="replace"):
        m = SWITCH.match(line)
        if not m:
            continue
        cpu, t, prev, nxt = int(m[1]), float(m[2]), m[3], m[4]
        # swapper is the idle task: the probe was not there to be paused (start and end).
        if cpu in since and since[cpu][1] == prev and prev != probe_comm and not prev.startswith("swapper/"):
            runs[(cpu, prev)].append((t - since[cpu][0]) * 1e6)
        since[cpu] = (t, nxt)
    out = collections.defaultdict(list)
    for (cpu, task), r in runs.items():
        out[cpu].append((task, sum(r), max(r), len(r)))
    return {cpu: sorted(v, key=lambda x: -x[2]) for cpu, v in out.items()}


def write_markdown(rows, service_us, path, tasks=None):
    labels = [f"{lo}-{hi}" for lo, hi in zip(BUCKETS_US, BUCKETS_US[1:])] + [f"≥ {BUCKETS_US[-1]}"]
    with open(path, "w") as f:
        f.write("# CPU pauses seen by a spinning thread\n\n")
        f.write(f"Each CPU spun for {rows[0]['seconds']:.0f} s at once (`perf/stalls.sh`), recording "
                f"every gap over {BUCKETS_US[0]} µs between two reads of the clock.\n\n")
        f.write("| CPU | time paused | longest µs | gaps ≥ 1 ms per s | median ms between them | "
                + " | ".join(f"{lab} µs" for lab in labels) + " |\n")
        f.write("|---" * (5 + len(labels)) + "|\n")
        for r in rows:
            between = r["median_ms_between_1ms_gaps"]
            f.write(f"| {r['cpu']} | {r['stalled_pct']:.2f} % | {r['max_gap_us']:.0f} | "
                    f"{r['gaps_over_1ms_per_s']:.2f} | {'-' if between is None else f'{between:.0f}'} | "
                    + " | ".join(str(c) for c in r["gaps_per_bucket"]) + " |\n")
        f.write(f"\n## What the pauses alone do to a perfect engine\n\nA FIFO server costing exactly "
                f"{service_us:.0f} µs a packet, no other overhead, fed at a constant rate, doing no work "
                f"while its CPU was paused (sojourn = wait + service, µs). A lower bound for the per-hop "
                f"latency of any engine pinned to that CPU on this machine.\n\n")
        f.write("| CPU | load | p50 | p99 | p99.9 |\n|---|---|---|---|---|\n")
        for r in rows:
            for load, m in r["model_us"].items():
                f.write(f"| {r['cpu']} | {float(load):.0%} | {m['p50']:.0f} | {m['p99']:.0f} | {m['p999']:.0f} |\n")
        for r in rows:
            if r["max_load_within_bound"] is not None:
                f.write(f"\nCPU {r['cpu']}: the perfect engine keeps p99 within {r['p99_bound_us']:.0f} µs up to "
                        f"**{r['max_load_within_bound']:.0%}** of its capacity (arrivals in bursts of "
                        f"{r['quantum_us']:.0f} µs).\n")
        if tasks is None:
            return
        f.write("\n## What ran instead\n\nOther tasks on each CPU while the probes spun "
                "(`perf record -e sched:sched_switch -a`), longest single run first; the rest of "
                "the paused time was not this kernel's doing (interrupts, or the hypervisor).\n\n")
        f.write("| CPU | task | total ms | longest µs | runs |\n|---|---|---|---|---|\n")
        for cpu in sorted(tasks):
            for task, total, longest, n in tasks[cpu][:6]:
                f.write(f"| {cpu} | {task} | {total / 1000:.2f} | {longest:.0f} | {n} |\n")


def self_test():
    # No pauses: every packet takes exactly its service time.
    assert set(sojourns([], 0.01, 50, 0.8)) == {50}
    # A pause inside a service stretches it by the pause.
    assert finish(0, 50, [(10, 110)], 0)[0] == 150
    # A pause the server is already in: it resumes at the pause's end.
    assert finish(20, 50, [(10, 110)], 0)[0] == 160
    # One 2 ms pause at 80 % load: the worst packet waits the pause out, and the backlog
    # takes pause x load / (1 - load) = 8 ms to drain.
    soj = sojourns([(1000, 3000)], 0.02, 50, 0.8)
    assert 2000 <= max(soj) <= 2100, max(soj)
    slow = [i for i, s in enumerate(soj) if s > 60]
    assert 9_000 <= (slow[-1] - slow[0]) * 62.5 <= 10_500, (slow[0], slow[-1])
    # Without pauses any load below 1 keeps p99 at the service time; one long pause per
    # 20 ms caps the load a 2 ms bound allows.
    assert max_load([], 0.02, 50, 100) >= 0.99
    capped = max_load([(t, t + 2500) for t in range(5000, 1_000_000, 100_000)], 1.0, 50, 2000)
    assert 0.05 < capped < 0.95, capped
    # Bursts: with a 300 µs quantum the burst's last packet waits behind the rest.
    assert max(sojourns([], 0.01, 50, 0.9, 300)) >= 250
    print("stall_report: self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    d, service_us, out, as_json = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
    bound_us = float(sys.argv[5]) if len(sys.argv) > 5 else None
    quantum_us = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    probes = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, "probe-*.json")))]
    rows = [summarise(p, service_us, bound_us, quantum_us) for p in probes]
    switches = os.path.join(d, "switches.txt")
    tasks = other_tasks(switches) if os.path.exists(switches) else None
    for r in rows:
        r["other_tasks"] = [{"task": t, "total_us": tot, "longest_us": lng, "runs": n}
                            for t, tot, lng, n in (tasks or {}).get(r["cpu"], [])]
    write_markdown(rows, service_us, out, tasks)
    if as_json:
        print(json.dumps({"service_us": service_us, "cpus": rows}))
    else:
        for r in rows:
            m = r["model_us"]["0.8"]
            print(f"cpu {r['cpu']}: paused {r['stalled_pct']:.2f} %, longest {r['max_gap_us']:.0f} µs, "
                  f"{r['gaps_over_1ms_per_s']:.2f} pauses >= 1 ms per s; a perfect engine at 80 % "
                  f"load: p99 {m['p99']:.0f} µs, p99.9 {m['p999']:.0f} µs")
            for t in r["other_tasks"][:2]:
                print(f"  ran instead: {t['task']} {t['total_us'] / 1000:.1f} ms in {t['runs']} runs, "
                      f"longest {t['longest_us']:.0f} µs")


if __name__ == "__main__":
    main()
