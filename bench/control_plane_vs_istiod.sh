#!/usr/bin/env bash
# The control-plane load benchmark side by side with istiod (issue 13): one private etcd +
# kube-apiserver on loopback holds the mesh (Services, EndpointSlices, VirtualServices,
# DestinationRules, created and changed through it); `capstan-loadgen kube` starts istiod, then
# Capstan, on it, connects the same simulated Delta xDS proxies to each, makes the same changes,
# and prints one table per size with the ratio Capstan / istiod.
#
#   bench/control_plane_vs_istiod.sh                  # 100 and 1,000 proxies
#   bench/control_plane_vs_istiod.sh 100 1000 5000 10000
#   SERVICES=100 VIRTUAL_SERVICES=50 DESTINATION_RULES=50 CHANGES=5 bench/control_plane_vs_istiod.sh 100
#   LOADGEN_ARGS="--read-delay-ms 20" SERVERS=capstan bench/control_plane_vs_istiod.sh 1000
#
# Env: SERVICES (1000), ENDPOINTS (10), VIRTUAL_SERVICES (500), DESTINATION_RULES (500),
# CHANGES (20), SERVERS (istiod,capstan), LOADGEN_ARGS (extra `capstan-loadgen kube` flags, e.g.
# --istiod-env PILOT_MAX_REQUESTS_PER_SECOND=1000), NO_BUILD=1 (use the built binaries),
# CAPSTAN / LOADGEN (measure these binaries instead of building this tree),
# RESULTS (JSON lines file, default target/bench/control-plane-vs-istiod.jsonl), KEEP=1 (keep the
# servers' logs and the API server's directory).
#
# Needs tests/infra/install-tools.sh to have run (etcd, kube-apiserver, pilot-discovery).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=cp-bench
# shellcheck source=bench/private_kube.sh
source "$ROOT/bench/private_kube.sh"

SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(100 1000)
PROXIES="$(IFS=,; echo "${SIZES[*]}")"

if [[ ${SERVERS:-istiod,capstan} == *istiod* && ! -x $TOOLS/pilot-discovery ]]; then
  die "pilot-discovery not in $TOOLS: run tests/infra/install-tools.sh istio-pilot"
fi

# CAPSTAN=/path/to/capstan and LOADGEN=/path/to/capstan-loadgen measure given binaries.
if [[ -z ${NO_BUILD:-} && -z ${CAPSTAN:-} && -z ${LOADGEN:-} ]]; then
  (cd "$ROOT" && cargo build --release -p capstan -p capstan-loadgen >&2)
fi
LOADGEN="${LOADGEN:-$ROOT/target/release/capstan-loadgen}"
CAPSTAN="${CAPSTAN:-$ROOT/target/release/capstan}"
[[ -x $LOADGEN && -x $CAPSTAN ]] || die "build target/release/capstan and capstan-loadgen first"

# Each proxy is a connection at both ends: raise the open-files limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_private_kube

RESULTS="${RESULTS:-$ROOT/target/bench/control-plane-vs-istiod.jsonl}"
mkdir -p "$(dirname "$RESULTS")" "$WORK/logs"
machine_line
echo "command: bench/control_plane_vs_istiod.sh ${SIZES[*]} (SERVICES=${SERVICES:-1000} ENDPOINTS=${ENDPOINTS:-10} VIRTUAL_SERVICES=${VIRTUAL_SERVICES:-500} DESTINATION_RULES=${DESTINATION_RULES:-500} CHANGES=${CHANGES:-20} LOADGEN_ARGS='${LOADGEN_ARGS:-}')"
# shellcheck disable=SC2086
(cd "$ROOT" && "$LOADGEN" kube --kubeconfig "$KUBECONFIG_FILE" \
  --capstan "$CAPSTAN" --pilot-discovery "$TOOLS/pilot-discovery" \
  --servers "${SERVERS:-istiod,capstan}" --proxies "$PROXIES" \
  --services "${SERVICES:-1000}" --endpoints "${ENDPOINTS:-10}" \
  --virtual-services "${VIRTUAL_SERVICES:-500}" --destination-rules "${DESTINATION_RULES:-500}" \
  --changes "${CHANGES:-20}" --apiserver-pid "$APISERVER_PID" \
  --work-dir "$WORK/logs" --results "$RESULTS" ${LOADGEN_ARGS:-})
log "JSON lines appended to $RESULTS"
