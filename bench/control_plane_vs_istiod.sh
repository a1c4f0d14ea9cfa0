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
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(100 1000)
PROXIES="$(IFS=,; echo "${SIZES[*]}")"

# shellcheck disable=SC1091
[[ -f $ROOT/target/tools/env ]] && source "$ROOT/target/tools/env"
TOOLS="${CAPSTAN_TOOLS_BIN:-$ROOT/target/tools/bin}"
NEEDED=(etcd kube-apiserver)
[[ ${SERVERS:-istiod,capstan} == *istiod* ]] && NEEDED+=(pilot-discovery)
for b in "${NEEDED[@]}"; do
  [[ -x $TOOLS/$b ]] || die "$b not in $TOOLS: run tests/infra/install-tools.sh (pilot-discovery: tests/infra/install-tools.sh istio-pilot)"
done
for c in openssl curl python3; do command -v "$c" >/dev/null || die "$c not found in PATH"; done

# CAPSTAN=/path/to/capstan and LOADGEN=/path/to/capstan-loadgen measure given binaries.
if [[ -z ${NO_BUILD:-} && -z ${CAPSTAN:-} && -z ${LOADGEN:-} ]]; then
  (cd "$ROOT" && cargo build --release -p capstan -p capstan-loadgen >&2)
fi
LOADGEN="${LOADGEN:-$ROOT/target/release/capstan-loadgen}"
CAPSTAN="${CAPSTAN:-$ROOT/target/release/capstan}"
[[ -x $LOADGEN && -x $CAPSTAN ]] || die "build target/release/capstan and capstan-loadgen first"

# Each proxy is a connection at both ends: raise the open-files limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d /tmp/capstan-cp-bench.XXXXXX)"
# etcd on tmpfs without fsync: the API server's storage is not what is measured.
ETCD_DATA="$(mktemp -d /dev/shm/capstan-cp-bench-etcd.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$ETCD_DATA"
  if [[ -n ${KEEP:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

read -r ETCD_PORT ETCD_PEER_PORT KUBE_PORT <<<"$(python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"

# ---- certificates and kubeconfig, as tests/infra/up.sh makes them
C="$WORK/certs"; mkdir -p "$C"
ossl() { openssl "$@" >>"$WORK/openssl.log" 2>&1 || die "openssl $1 failed; see $WORK/openssl.log"; }
ossl req -x509 -newkey rsa:2048 -nodes -keyout "$C/ca.key" -out "$C/ca.crt" -days 2 \
  -subj "/CN=capstan-bench-ca" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
sign() { # sign NAME SUBJ EXT
  ossl req -newkey rsa:2048 -nodes -keyout "$C/$1.key" -out "$C/$1.csr" -subj "$2"
  printf '%s\n' "$3" >"$C/$1.ext"
  ossl x509 -req -in "$C/$1.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" -CAcreateserial -days 2 \
    -out "$C/$1.crt" -extfile "$C/$1.ext"
}
sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' 'basicConstraints=CA:FALSE' \
  'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost')"
sign admin "/O=system:masters/CN=capstan-bench-admin" "$(printf '%s\n' 'basicConstraints=CA:FALSE' \
  'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth')"
ossl genrsa -out "$C/sa.key" 2048
ossl rsa -in "$C/sa.key" -pubout -out "$C/sa.pub"
KUBECONFIG_FILE="$WORK/kubeconfig"
cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {server: "https://127.0.0.1:$KUBE_PORT", certificate-authority: "$C/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$C/admin.crt", client-key: "$C/admin.key"}
contexts:
- name: bench
  context: {cluster: bench, user: admin}
current-context: bench
EOF

wait_for() { # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || die "$what not ready within ${secs}s; see $WORK/*.log"
    sleep 0.5
  done
}

"$TOOLS/etcd" --name bench --data-dir "$ETCD_DATA" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --unsafe-no-fsync --log-level warn >"$WORK/etcd.log" 2>&1 </dev/null &
PIDS+=($!)
wait_for etcd 60 bash -c "curl -sf --max-time 2 http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"

"$TOOLS/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_PORT" \
  --tls-cert-file "$C/apiserver.crt" --tls-private-key-file "$C/apiserver.key" \
  --client-ca-file "$C/ca.crt" --cert-dir "$WORK/kube-cert-dir" \
  --service-account-key-file "$C/sa.pub" --service-account-signing-key-file "$C/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --authorization-mode RBAC --service-cluster-ip-range 10.96.0.0/16 \
  --endpoint-reconciler-type none --profiling=false --v 1 >"$WORK/kube-apiserver.log" 2>&1 </dev/null &
APISERVER_PID=$!
PIDS+=("$APISERVER_PID")
wait_for kube-apiserver 90 bash -c "curl -sf --max-time 3 --cacert '$C/ca.crt' --cert '$C/admin.crt' --key '$C/admin.key' https://127.0.0.1:$KUBE_PORT/readyz | grep -qx ok"
log "private kube-apiserver on 127.0.0.1:$KUBE_PORT (pid $APISERVER_PID), etcd data in $ETCD_DATA"

RESULTS="${RESULTS:-$ROOT/target/bench/control-plane-vs-istiod.jsonl}"
mkdir -p "$(dirname "$RESULTS")" "$WORK/logs"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
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
