# shellcheck shell=bash
# Sourced by the side-by-side benchmarks against istiod (bench/control_plane_vs_istiod.sh,
# bench/webhook_vs_istiod.sh, bench/startup_vs_istiod.sh): a private etcd (data on /dev/shm, --unsafe-no-fsync: the API
# server's storage is not what is measured) and kube-apiserver on loopback, with the
# certificates and flags of tests/infra/up.sh.
#
# Before sourcing: ROOT (the repository), NAME (for the temporary directories' names).
# After `start_private_kube`: WORK (scratch directory, removed on exit unless KEEP=1), C (its
# certs: ca.crt/ca.key sign more with `sign`), KUBECONFIG_FILE, APISERVER_PID, TOOLS, and
# `ossl`, `sign`, `wait_for`, `free_ports`, `log`, `die`. Processes appended to PIDS are killed
# on exit.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# shellcheck disable=SC1091
[[ -f $ROOT/target/tools/env ]] && source "$ROOT/target/tools/env"
TOOLS="${CAPSTAN_TOOLS_BIN:-$ROOT/target/tools/bin}"

PIDS=()
WORK=""
ETCD_DATA=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $ETCD_DATA ]] && rm -rf "$ETCD_DATA"
  if [[ -n $WORK ]]; then
    if [[ -n ${KEEP:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
}
trap cleanup EXIT

# free_ports N: N distinct free loopback ports (held open together, so no duplicates).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

ossl() { openssl "$@" >>"$WORK/openssl.log" 2>&1 || die "openssl $1 failed; see $WORK/openssl.log"; }
sign() { # sign NAME SUBJ EXT: $C/NAME.key (RSA 2048) and $C/NAME.crt signed by $C/ca.crt
  ossl req -newkey rsa:2048 -nodes -keyout "$C/$1.key" -out "$C/$1.csr" -subj "$2"
  printf '%s\n' "$3" >"$C/$1.ext"
  ossl x509 -req -in "$C/$1.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" -CAcreateserial -days 2 \
    -out "$C/$1.crt" -extfile "$C/$1.ext"
}

wait_for() { # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || die "$what not ready within ${secs}s; see $WORK/*.log"
    sleep 0.5
  done
}

start_private_kube() {
  for b in etcd kube-apiserver; do
    [[ -x $TOOLS/$b ]] || die "$b not in $TOOLS: run tests/infra/install-tools.sh"
  done
  for c in openssl curl python3; do command -v "$c" >/dev/null || die "$c not found in PATH"; done
  WORK="$(mktemp -d "/tmp/capstan-$NAME.XXXXXX")"
  ETCD_DATA="$(mktemp -d "/dev/shm/capstan-$NAME-etcd.XXXXXX")"
  local etcd_port etcd_peer_port
  read -r etcd_port etcd_peer_port KUBE_PORT <<<"$(free_ports 3)"

  C="$WORK/certs"; mkdir -p "$C"
  ossl req -x509 -newkey rsa:2048 -nodes -keyout "$C/ca.key" -out "$C/ca.crt" -days 2 \
    -subj "/CN=capstan-bench-ca" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
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

  "$TOOLS/etcd" --name bench --data-dir "$ETCD_DATA" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "bench=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn >"$WORK/etcd.log" 2>&1 </dev/null &
  PIDS+=($!)
  wait_for etcd 60 bash -c "curl -sf --max-time 2 http://127.0.0.1:$etcd_port/health | grep -q '\"health\":\"true\"'"

  "$TOOLS/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
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
}

# machine_line: the line every result starts with.
machine_line() {
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
}
