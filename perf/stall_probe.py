#!/usr/bin/env python3
"""Spins on one CPU and records every pause it sees: the moments when the thread was not
running although it never yielded (interrupts, kernel threads, the hypervisor taking the
vCPU). No engine can forward a packet during such a pause, so they bound the per-hop tail
on the machine whatever the engine does. Standard library only.

    stall_probe.py CPU SECONDS OUT.json [THRESHOLD_US]

Writes {"cpu", "seconds", "threshold_us", "loop_ns", "gaps": [[start_us, length_us], ...]}.
"""
import json
import os
import sys
import time


def probe(cpu, seconds, threshold_us):
    os.sched_setaffinity(0, {cpu})
    clock = time.perf_counter_ns
    threshold_ns = int(threshold_us * 1000)
    gaps = []
    start = last = clock()
    end = start + int(seconds * 1e9)
    loops = 0
    while last < end:
        now = clock()
        if now - last > threshold_ns:
            gaps.append((last - start, now - last))
        last = now
        loops += 1
    return {
        "cpu": cpu,
        "seconds": seconds,
        "threshold_us": threshold_us,
        # Mean time per loop: the probe's own resolution.
        "loop_ns": (last - start) / max(loops, 1),
        "gaps": [[t / 1000, d / 1000] for t, d in gaps],
    }


def main():
    cpu, seconds, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    threshold_us = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
    with open(out, "w") as f:
        json.dump(probe(cpu, seconds, threshold_us), f)


if __name__ == "__main__":
    main()
