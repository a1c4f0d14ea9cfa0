#!/usr/bin/env bash
# Startup on a large mesh side by side with istiod (issue 11): one private etcd +
# kube-apiserver on loopback is loaded once with 5,000 Services (each with an EndpointSlice of
# 10 endpoints) and 10,000 Istio objects (VirtualServices, DestinationRules, ServiceEntries,
# AuthorizationPolicies, PeerAuthentications, Gateways, Sidecars); `capstan-loadgen startup`
# then starts istiod, then Capstan, on it and measures each from spawn to `/ready` (istiod's
# on its http port, Capstan's on its monitoring port): the time, the server's CPU-seconds and
# its RSS and peak RSS at that instant, the API server's CPU meanwhile, and when a probe proxy
# has the whole mesh. Prints a row per start and the ratios Capstan / istiod.
#
#   bench/startup_vs_istiod.sh
#   STARTS=3 bench/startup_vs_istiod.sh
#   SERVICES=500 ISTIO_OBJECTS=1000 SERVERS=capstan bench/startup_vs_istiod.sh
#
# Env: SERVICES (5000), ENDPOINTS (10), ISTIO_OBJECTS (10000), STARTS (1: starts of each
# server, alternating), SERVERS (istiod,capstan), LOADGEN_ARGS (extra `capstan-loadgen startup`
# flags, e.g. --no-probe), NO_BUILD=1 (use the built binaries), CAPSTAN / LOADGEN (measure
# these binaries instead of building this tree), RESULTS (JSON lines file, default
# target/bench/startup-vs-istiod.jsonl), KEEP=1 (keep the servers' logs and the API server's
# directory).
#
# Needs tests/infra/install-tools.sh to have run (etcd, kube-apiserver, pilot-discovery).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=startup-bench
# shellcheck source=bench/private_kube.sh
source "$ROOT/bench/private_kube.sh"

SERVERS="${SERVERS:-istiod,capstan}"
if [[ $SERVERS == *istiod* && ! -x $TOOLS/pilot-discovery ]]; then
  die "pilot-discovery not in $TOOLS: run tests/infra/install-tools.sh istio-pilot"
fi
if [[ -z ${NO_BUILD:-} && -z ${CAPSTAN:-} && -z ${LOADGEN:-} ]]; then
  (cd "$ROOT" && cargo build --release -p capstan -p capstan-loadgen >&2)
fi
LOADGEN="${LOADGEN:-$ROOT/target/release/capstan-loadgen}"
CAPSTAN="${CAPSTAN:-$ROOT/target/release/capstan}"
[[ -x $LOADGEN && -x $CAPSTAN ]] || die "build target/release/capstan and capstan-loadgen first"

start_private_kube
RESULTS="${RESULTS:-$ROOT/target/bench/startup-vs-istiod.jsonl}"
mkdir -p "$(dirname "$RESULTS")" "$WORK/logs"
machine_line
echo "command: bench/startup_vs_istiod.sh (SERVICES=${SERVICES:-5000} ENDPOINTS=${ENDPOINTS:-10} ISTIO_OBJECTS=${ISTIO_OBJECTS:-10000} STARTS=${STARTS:-1} LOADGEN_ARGS='${LOADGEN_ARGS:-}')"
# shellcheck disable=SC2086
(cd "$ROOT" && "$LOADGEN" startup --kubeconfig "$KUBECONFIG_FILE" \
  --capstan "$CAPSTAN" --pilot-discovery "$TOOLS/pilot-discovery" --servers "$SERVERS" \
  --services "${SERVICES:-5000}" --endpoints "${ENDPOINTS:-10}" --istio-objects "${ISTIO_OBJECTS:-10000}" \
  --starts "${STARTS:-1}" --apiserver-pid "$APISERVER_PID" \
  --work-dir "$WORK/logs" --results "$RESULTS" ${LOADGEN_ARGS:-})
log "JSON lines appended to $RESULTS"
