#!/usr/bin/env bash
# What a flood of junk handshake initiations at a provider costs the network's latency:
# `loopix testnet` under --flood-handshakes-per-s RATE at the first provider, against a
# control run whose flood (same rate, same sending cost on this machine) goes to a closed
# port on the same host. Pairs alternate their order.
#
#   perf/handshake_flood.sh [--json] [--rate 20000] [--pairs 3] [--duration-s 30]
#
# Prints, per run, the end-to-end p50 and p99 (ms), the flood's frames sent and those the
# provider refused by mac1 (before any Diffie-Hellman); then the ratios attacked/control of
# the medians over the pairs, with the CPU and the lane kernel. --json prints one object.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0; rate=20000; pairs=3; duration_s=30
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --rate) rate=$2; shift ;;
    --pairs) pairs=$2; shift ;;
    --duration-s) duration_s=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release -p loopix-tools >&2
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/loopix
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { # run AT FILE
  "$bin" testnet --duration-s "$duration_s" --drain-s 20 --flood-handshakes-per-s "$rate" \
    --flood-at "$1" --json > "$2"
}
for i in $(seq 1 "$pairs"); do
  if [ $((i % 2)) -eq 1 ]; then order="provider elsewhere"; else order="elsewhere provider"; fi
  for at in $order; do
    echo "pair $i: flood at $at" >&2
    run "$at" "$work/$at-$i.json"
  done
done
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
kernel=$("$bin" speed --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["lanes_kernel"])' || echo unknown)
python3 - "$work" "$pairs" "$json" "$cpu" "$kernel" "$rate" <<'PY'
import json, statistics, sys
work, pairs, as_json, cpu, kernel, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], sys.argv[5], int(sys.argv[6])
runs = {"provider": [], "elsewhere": []}
for at in runs:
    for i in range(1, pairs + 1):
        v = json.load(open(f"{work}/{at}-{i}.json"))
        refused = sum(n["drops"].get("handshake_mac", 0) for n in v["nodes"])
        runs[at].append({
            "p50_ms": v["latency_ms"]["p50"], "p99_ms": v["latency_ms"]["p99"],
            "messages": v["sent_real"], "delivered": v["delivered_real"],
            "flood_sent": v["flood"]["sent"], "refused_by_mac1": refused,
        })
med = lambda at, k: statistics.median(r[k] for r in runs[at])
out = {
    "cpu": cpu, "kernel": kernel, "rate_per_s": rate, "runs": runs,
    "p50_ratio": med("provider", "p50_ms") / med("elsewhere", "p50_ms"),
    "p99_ratio": med("provider", "p99_ms") / med("elsewhere", "p99_ms"),
}
if as_json:
    print(json.dumps(out, indent=1))
else:
    print(f"{cpu}, kernel {kernel}, flood {rate} frames/s")
    for at in runs:
        for r in runs[at]:
            print(f"  flood at {at:9}: p50 {r['p50_ms']:6.0f} ms  p99 {r['p99_ms']:6.0f} ms  "
                  f"{r['delivered']}/{r['messages']} delivered  {r['flood_sent']} sent, "
                  f"{r['refused_by_mac1']} refused by mac1")
    print(f"medians, attacked over control: p50 {out['p50_ratio']:.2f}x, p99 {out['p99_ratio']:.2f}x")
PY
