#!/usr/bin/env bash
# A whole Loopix network on Shadow: every mix and provider a real `loopix node` process on a
# host of its own, the clients spread over client hosts each running `loopix stress`, all
# in Shadow's simulated time and network.
#
#   perf/shadow/run.sh [--layers L] [--mixes-per-layer W] [--providers P] [--clients C]
#                      [--client-hosts H] [--step-s S] [--drain-s D] [--seed N]
#                      [--runs R] [--json] [-- extra loopix stress flags]
#
# Builds release (a portable binary is not needed: Shadow runs it on this CPU), writes the
# network and its Shadow configuration (`loopix stress --write-shadow`), runs `shadow` on
# it R times (default 1) with the same seed, and merges the client hosts' reports into
# perf/reports/shadow-<time>.json and .md: messages sent, delivered, lost and in flight;
# end-to-end latency (p50, p99, merged from every host's CDF); the Poisson test of the
# clients' departures; per-node packets and drops; the mixes' pools against lambda/mu; and
# what the run cost this machine (wall time and peak memory of Shadow, per simulated node
# and client). With R >= 2, whether the runs' summaries are identical (determinism).
# Needs `shadow` on PATH (or SHADOW=/path/to/shadow); see perf/shadow/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
layers=3 width=2 providers=2 clients=100 hosts=1 step=30 drain=20 seed=1 runs=1 json=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2;;
    --mixes-per-layer) width=$2; shift 2;;
    --providers) providers=$2; shift 2;;
    --clients) clients=$2; shift 2;;
    --client-hosts) hosts=$2; shift 2;;
    --step-s) step=$2; shift 2;;
    --drain-s) drain=$2; shift 2;;
    --seed) seed=$2; shift 2;;
    --runs) runs=$2; shift 2;;
    --json) json=1; shift;;
    --) shift; extra=("$@"); break;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
shadow=${SHADOW:-$(command -v shadow || true)}
[ -x "$shadow" ] || { echo "shadow not found: put it on PATH or set SHADOW (perf/shadow/README.md)" >&2; exit 1; }
source perf/build.sh
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for run in $(seq 1 "$runs"); do
  out=$work/run-$run
  "$bin" stress --write-shadow "$out" --layers "$layers" --mixes-per-layer "$width" \
    --providers "$providers" --clients "$clients" --client-hosts "$hosts" \
    --step-s "$step" --drain-s "$drain" --seed "$seed" "${extra[@]}" >&2
  echo "shadow run $run of $runs: $((layers * width + providers)) nodes, $clients clients on $hosts hosts" >&2
  /usr/bin/time -f '%e %M' -o "$out/cost" "$shadow" --progress false "$out/shadow.yaml" \
    > "$out/shadow.log" 2>&1 || { tail -20 "$out/shadow.log" >&2; echo "shadow failed: $out/shadow.log" >&2; exit 1; }
done
mkdir -p perf/reports
python3 perf/shadow/report.py --json-out "perf/reports/shadow-$stamp.json" \
  --md-out "perf/reports/shadow-$stamp.md" --clients "$clients" --hosts "$hosts" \
  --nodes "$((layers * width + providers))" --seed "$seed" \
  $(for run in $(seq 1 "$runs"); do echo "$work/run-$run"; done) >&2
echo "report: perf/reports/shadow-$stamp.md" >&2
[ "$json" = 1 ] && cat "perf/reports/shadow-$stamp.json"
exit 0
