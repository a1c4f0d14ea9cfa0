#!/usr/bin/env bash
# Samples the resident set of the `capstan discovery` process every 0.5 s while a benchmark
# runs (docs/benchmarks.md, "Memory per proxy"): one line per sample, "<seconds> <MiB>".
#
#   bench/rss_watch.sh target/release/capstan > rss.txt &
#   NO_BUILD=1 SERVERS=capstan bench/control_plane_vs_istiod.sh 10000
#   kill %1
#
# $1: the capstan binary's path as the benchmark runs it (matched against the command line).
set -euo pipefail
bin="${1:?usage: bench/rss_watch.sh /path/to/capstan}"
start=$(date +%s.%N)
while true; do
  pid=$(pgrep -f "$bin discovery" | head -1 || true)
  if [[ -n $pid ]]; then
    rss=$(awk '/VmRSS/{print int($2/1024)}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n $rss ]] && python3 -c "import time; print(f'{time.time() - $start:.1f} $rss')"
  fi
  sleep 0.5
done
