#!/usr/bin/env bash
# Writes crates/capstan/link/hot-code.order: per cargo profile, the functions `capstan discovery`
# executes in the 100-proxy side-by-side benchmark (startup on a Kubernetes API server, the
# initial sync, endpoint and VirtualService changes, a reconnect storm), hottest first by
# instructions. crates/capstan/build.rs hands the file to the linker, which lays those functions
# out first (docs/architecture.md, Decisions, "Hot code first in the `capstan` binary").
#
#   bench/hot_code_order.sh                 # release and dist
#   bench/hot_code_order.sh release
#   NO_BUILD=1 bench/hot_code_order.sh dist     # uses target/{dist/capstan,release/capstan-loadgen}
#   bench/hot_code_order.sh --check release     # does the built binary still have the listed names?
#
# Symbol names carry a hash that depends on the toolchain, Cargo.lock and the profile, not on
# the source: run this again after a toolchain or dependency update. The other profiles'
# sections are kept.
# Needs valgrind (Debian's package) and what bench/control_plane_vs_istiod.sh needs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORDER="$ROOT/crates/capstan/link/hot-code.order"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# `bench/hot_code_order.sh --check [PROFILE...]`: how many of each section's names the built
# binary has (nothing is run or written). A dependency update changes the hashes in the names,
# and the linker ignores the ones it lacks, so a stale list shows only as resident memory.
if [[ ${1:-} == --check ]]; then
  shift
  PROFILES=("$@")
  [[ ${#PROFILES[@]} -gt 0 ]] || PROFILES=(release dist)
  stale=0
  for profile in "${PROFILES[@]}"; do
    bin="$TARGET_DIR/$profile/capstan"
    [[ -x $bin ]] || { echo "$profile: no $bin" >&2; stale=1; continue; }
    read -r have listed < <(awk -v p="$profile" '
      FNR == NR { if ($2 ~ /^[tTwW]$/) sym[$3] = 1; next }
      /^# profile: / { cur = $3; next }
      cur == p && NF && !/^#/ { n++; if ($1 in sym) h++ }
      END { print h + 0, n + 0 }' <(nm "$bin") "$ORDER")
    echo "$profile: $have of $listed listed functions are in $bin"
    (( listed > 0 && have * 100 >= listed * 98 )) || stale=1
  done
  exit "$stale"
fi

PROFILES=("$@")
[[ ${#PROFILES[@]} -gt 0 ]] || PROFILES=(release dist)
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }

for profile in "${PROFILES[@]}"; do
  if [[ -z ${NO_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --profile "$profile" -p capstan >&2)
    (cd "$ROOT" && cargo build --release -p capstan-loadgen >&2)
  fi
  bin="$TARGET_DIR/$profile/capstan"
  [[ -x $bin ]] || { echo "no $bin: build it first" >&2; exit 1; }
  dumps="$(mktemp -d)"
  wrapper="$dumps/capstan.sh"
  # The load generator SIGKILLs the server at the end, so callgrind dumps every 5 s (each dump
  # holds what ran since the last one).
  cat >"$wrapper" <<WRAP
#!/usr/bin/env bash
( sleep 3; while kill -0 \$\$ 2>/dev/null; do callgrind_control -d \$\$ >/dev/null 2>&1; sleep 5; done ) &
exec valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dumps/cg.%p.out" "$bin" "\$@"
WRAP
  chmod +x "$wrapper"
  NO_BUILD=1 CAPSTAN="$wrapper" LOADGEN="${LOADGEN:-$TARGET_DIR/release/capstan-loadgen}" SERVERS=capstan \
    CHANGES=3 RESULTS="$dumps/results.jsonl" \
    LOADGEN_ARGS="--timeout-secs 1200 --sync-timeout-secs 1200" \
    "$ROOT/bench/control_plane_vs_istiod.sh" 100 >&2
  nm "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' >"$dumps/symbols"
  python3 - "$ORDER" "$profile" "$dumps" <<'PY'
import collections, glob, os, re, sys
order, profile, dumps = sys.argv[1:4]
# Self instructions per function over every dump: a cost line after `calls=` is the call's
# inclusive cost, not the caller's own.
cost = collections.Counter()
for path in glob.glob(os.path.join(dumps, "cg.*.out*")):
    names, fn, after_call = {}, None, False
    for line in open(path, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("fn="):
                fn = names.get(m.group(1))
                cost[fn] += 0
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
            elif fn is not None:
                parts = line.split()
                if len(parts) > 1:
                    cost[fn] += int(parts[1])
symbols = set(open(os.path.join(dumps, "symbols")).read().split())
hot = [n for n, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0])) if n in symbols]
sections, current = collections.OrderedDict(), None
if os.path.exists(order):
    for line in open(order):
        m = re.match(r"# profile: (\S+)", line)
        if m:
            current = m.group(1)
            sections[current] = []
        elif current and line.strip() and not line.startswith("#"):
            sections[current].append(line.strip())
sections[profile] = hot
os.makedirs(os.path.dirname(order), exist_ok=True)
with open(order, "w") as out:
    out.write("# Written by bench/hot_code_order.sh; read by crates/capstan/build.rs.\n")
    out.write("# The functions `capstan discovery` ran in a 100-proxy benchmark, hottest first,\n")
    out.write("# as the linker's --symbol-ordering-file. One section per cargo profile.\n")
    for name, syms in sections.items():
        out.write(f"# profile: {name}\n")
        out.write("".join(s + "\n" for s in syms))
total = sum(cost.values())
print(f"{profile}: {len(hot)} functions; the server ran {total / 1e9:.3f} G instructions", file=sys.stderr)
PY
  rm -rf "$dumps"
done
