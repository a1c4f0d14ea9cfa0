#!/usr/bin/env bash
# A profile-guided build of `capstan-proxy` (what the image ships): the proxy is built once
# instrumented, serves the benchmarks' traffic — HTTP/1.1 and h2c through the gateway
# (bench/proxy_profile.sh) and two sidecars over Istio mTLS (bench/proxy_mtls.sh) — and is built
# again with what that run counted, so LLVM lays out, inlines and predicts the request path as
# it runs. docs/benchmarks.md ("Profile-guided optimization") has what it buys.
#
#   bench/pgo_proxy.sh                   # prints the path of the PGO build (dist profile)
#   PROFILE=profiling bench/pgo_proxy.sh # the same with line tables, for callgrind/perf
#   CAPSTAN=path/to/capstan ...          # discovery for the training run (else built)
#
# Needs llvm-profdata of rustc's own LLVM major version (Debian's `llvm-N`, installed when
# missing), nginx (installed when missing) and oha (bench/load_tools.sh's pinned build). The
# instrumented build has its own target directory (target/pgo-generate); the PGO build is
# made for the host triple explicitly, so that RUSTFLAGS reach the proxy and its dependencies
# but not build scripts and proc-macros, and lands in target/<triple>/<profile>/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${PROFILE:-dist}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
log() { printf '[pgo] %s\n' "$*" >&2; }

TRIPLE="$(rustc -vV | awk '/^host:/{print $2}')"
LLVM_MAJOR="$(rustc -vV | awk '/^LLVM version:/{split($3, v, "."); print v[1]}')"
PROFDATA="llvm-profdata-$LLVM_MAJOR"
if ! command -v "$PROFDATA" >/dev/null; then
  log "apt-get install llvm-$LLVM_MAJOR (llvm-profdata for rustc's LLVM $LLVM_MAJOR)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "llvm-$LLVM_MAJOR" >/dev/null
fi
# shellcheck source=bench/load_tools.sh
source "$ROOT/bench/load_tools.sh"
need_apt nginx nginx-light
need_oha

if [[ -z ${CAPSTAN:-} ]]; then
  log "building capstan ($PROFILE) for discovery"
  cargo build --profile "$PROFILE" -p capstan --bin capstan --locked >&2
  CAPSTAN="$TARGET_DIR/$PROFILE/capstan"
fi

GEN_DIR="$TARGET_DIR/pgo-generate"
DATA="$GEN_DIR/profiles"
rm -rf "$DATA"
mkdir -p "$DATA"

log "1/4 instrumented build ($PROFILE, $TRIPLE)"
RUSTFLAGS="-Cprofile-generate=$DATA" cargo build --profile "$PROFILE" -p capstan-proxy \
  --bin capstan-proxy --target "$TRIPLE" --target-dir "$GEN_DIR" --locked >&2
INSTRUMENTED="$GEN_DIR/$TRIPLE/$PROFILE/capstan-proxy"

log "2/4 training: HTTP/1.1 and h2c through a gateway, HTTP/1.1 over mTLS between two sidecars"
for http in 1 2; do
  HTTP=$http MODE=cpu RATE="${TRAIN_RATE:-3000}" TARGETS=capstan CAPSTAN="$CAPSTAN" \
    CAPSTAN_PROXY="$INSTRUMENTED" bench/proxy_profile.sh >&2
done
RATE=1000 DURATION=5s CAPSTAN="$CAPSTAN" CAPSTAN_PROXY="$INSTRUMENTED" bench/proxy_mtls.sh >&2
shopt -s nullglob
raw=("$DATA"/*.profraw)
[[ ${#raw[@]} -gt 0 ]] || { log "the training wrote no profile (did the proxies exit cleanly?)"; exit 1; }

log "3/4 merging ${#raw[@]} profiles"
"$PROFDATA" merge -o "$GEN_DIR/merged.profdata" "${raw[@]}"
# Named by its content: RUSTFLAGS then change with the profile, so cargo rebuilds every crate
# with the new one rather than keeping artifacts built with an older profile of the same name.
PROFILE_FILE="$GEN_DIR/capstan-proxy-$(sha256sum "$GEN_DIR/merged.profdata" | cut -c1-16).profdata"
mv "$GEN_DIR/merged.profdata" "$PROFILE_FILE"

log "4/4 optimized build"
RUSTFLAGS="-Cprofile-use=$PROFILE_FILE" cargo build --profile "$PROFILE" -p capstan-proxy \
  --bin capstan-proxy --target "$TRIPLE" --locked >&2
echo "$TARGET_DIR/$TRIPLE/$PROFILE/capstan-proxy"
