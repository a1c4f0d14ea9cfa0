#!/usr/bin/env bash
# `capstan` under heaptrack, for the benchmarks' CAPSTAN= (docs/benchmarks.md, "Where the
# memory went"): the server keeps its own PID (the load generator reads its /proc entry), and
# the trace goes through a FIFO to heaptrack_interpret and zstd, as `heaptrack` itself does.
# Build the profiled binary with glibc's malloc first (mimalloc bypasses heaptrack):
#
#   cargo build --release -p capstan --features system-allocator
#   NO_BUILD=1 CAPSTAN=bench/heaptrack_capstan.sh SERVERS=capstan CHANGES=5 \
#     bench/control_plane_vs_istiod.sh 1000
#   heaptrack_print -f "$HEAPTRACK_DIR"/heap.<pid>.zst --print-peaks 1 -n 25
#
# Env: HEAPTRACK_CAPSTAN (the binary, default target/release/capstan), HEAPTRACK_DIR (where
# the traces go, default /tmp), HEAPTRACK_LIB (heaptrack's libraries, default
# /usr/lib/heaptrack: Debian's package `heaptrack`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${HEAPTRACK_CAPSTAN:-$ROOT/target/release/capstan}"
dir="${HEAPTRACK_DIR:-/tmp}"
lib="${HEAPTRACK_LIB:-/usr/lib/heaptrack}"
[[ -x $lib/libexec/heaptrack_interpret ]] || { echo "heaptrack not found in $lib (apt-get install heaptrack)" >&2; exit 1; }
fifo="$dir/heaptrack-pipe.$$"
mkfifo "$fifo"
("$lib/libexec/heaptrack_interpret" <"$fifo" | zstd -q -o "$dir/heap.$$.zst"; rm -f "$fifo") &
exec env LD_PRELOAD="$lib/libheaptrack_preload.so" DUMP_HEAPTRACK_OUTPUT="$fifo" "$bin" "$@"
