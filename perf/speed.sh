#!/usr/bin/env bash
# Runs `loopix speed` a few times on this machine and keeps the JSON of each run in
# perf/reports/, so figures quoted in the README come with the run that produced them.
#   perf/speed.sh [runs] [extra loopix speed options...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
cargo build --release -p loopix-tools
mkdir -p perf/reports
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for i in $(seq 1 "$runs"); do
  out="perf/reports/speed-$stamp-$i.json"
  ./target/release/loopix speed --json "$@" > "$out"
  python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[1]}: floor {r['floor_ns']/1e3:.1f} us, process {r['process_ns']/1e3:.1f} us "
      f"({r['process_over_floor']:.3f} x floor), build {r['build_ns']/1e3:.1f} us, "
      f"{r['packets_per_sec_per_core']:.0f} packets/s/core, {r['curve_backend']}; "
      f"batches {r['batch_over_floor']:.3f} x floor ({r['batch_kernel']}, by {r['kernel_chosen_by']}), "
      f"build_batch {r['build_batch_ns_per_packet']/1e3:.1f} us ({r['build_batch_over_build']:.3f} x build)")
PY
done
