#!/usr/bin/env bash
# Starts the test infrastructure on 127.0.0.1, on free ports:
#   etcd, kube-apiserver (TLS, RBAC, admin client cert), a Consul dev agent.
# Writes target/infra/env (shell exports) and waits until every component is ready.
# Stop everything with tests/infra/down.sh (stops only what this script started, by pid file).
#
# Needs tests/infra/install-tools.sh to have run (reads target/tools/env).
# Env knobs: CAPSTAN_INFRA_TIMEOUT (seconds per component, default 60),
#            CAPSTAN_INFRA_TTL (if set, a watchdog runs down.sh after that many seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
INFRA="$ROOT/tests/infra"
DIR="$ROOT/target/infra"
PIDS="$DIR/pids"
LOGS="$DIR/logs"
TIMEOUT="${CAPSTAN_INFRA_TIMEOUT:-60}"

log() { printf '[up] %s\n' "$*" >&2; }
die() { printf '[up] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -f $ROOT/target/tools/env ]] || die "target/tools/env missing: run tests/infra/install-tools.sh first"
# shellcheck disable=SC1091
source "$ROOT/target/tools/env"
for b in etcd kube-apiserver kubectl consul helm; do
  [[ -x $CAPSTAN_TOOLS_BIN/$b ]] || die "$b not installed in $CAPSTAN_TOOLS_BIN: run tests/infra/install-tools.sh"
done
for c in openssl curl python3; do command -v "$c" >/dev/null || die "$c not found in PATH"; done

mkdir -p "$DIR"
exec 8>"$DIR/.up.lock"
flock -w 300 8 || die "another up.sh holds $DIR/.up.lock"

# Already running? (all pids alive + env file present) -> nothing to do.
alive() { local f=$PIDS/$1.pid; [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null; }
if [[ -f $DIR/env ]] && alive etcd && alive kube-apiserver && alive consul; then
  log "infra already running (target/infra/env); use tests/infra/down.sh to stop it"
  exit 0
fi
# Partial leftovers from an earlier run: stop them first.
"$INFRA/down.sh" >/dev/null 2>&1 || true

rm -rf "$DIR/etcd-data" "$DIR/certs" "$DIR/kube-cert-dir" "$DIR/env"
mkdir -p "$PIDS" "$LOGS" "$DIR/certs"
: >"$LOGS/etcd.log"; : >"$LOGS/kube-apiserver.log"; : >"$LOGS/consul.log"

on_fail() {
  local rc=$?
  if [[ $rc != 0 ]]; then
    log "startup failed (exit $rc): stopping what was started"
    "$INFRA/down.sh" >&2 || true
  fi
}
trap on_fail EXIT

# ---------------------------------------------------------------- ports
# Ask the kernel for N distinct free ports on 127.0.0.1 (all held open at once, so no duplicates).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}
port_is_free() {
  python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"
}
read -r ETCD_PORT ETCD_PEER_PORT KUBE_PORT CONSUL_HTTP_PORT CONSUL_SERF_LAN_PORT CONSUL_SERF_WAN_PORT \
  CONSUL_SERVER_PORT CONSUL_GRPC_PORT <<<"$(free_ports 8)"
for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$KUBE_PORT" "$CONSUL_HTTP_PORT" "$CONSUL_SERF_LAN_PORT" \
  "$CONSUL_SERF_WAN_PORT" "$CONSUL_SERVER_PORT" "$CONSUL_GRPC_PORT"; do
  port_is_free "$p" || die "port $p is not free"
done
log "ports: etcd=$ETCD_PORT kube-apiserver=$KUBE_PORT consul-http=$CONSUL_HTTP_PORT consul-grpc=$CONSUL_GRPC_PORT"

# ---------------------------------------------------------------- certs
C="$DIR/certs"
ossl() { openssl "$@" >>"$LOGS/openssl.log" 2>&1 || die "openssl $1 failed; see $LOGS/openssl.log"; }
: >"$LOGS/openssl.log"
ossl req -x509 -newkey rsa:2048 -nodes -keyout "$C/ca.key" -out "$C/ca.crt" -days 7 \
  -subj "/CN=capstan-test-ca" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
sign() { # sign NAME SUBJ EXT
  ossl req -newkey rsa:2048 -nodes -keyout "$C/$1.key" -out "$C/$1.csr" -subj "$2"
  printf '%s\n' "$3" >"$C/$1.ext"
  ossl x509 -req -in "$C/$1.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" -CAcreateserial -days 7 \
    -out "$C/$1.crt" -extfile "$C/$1.ext"
}
sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
  'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' \
  'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc')"
sign admin "/O=system:masters/CN=capstan-admin" "$(printf '%s\n' \
  'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth')"
ossl genrsa -out "$C/sa.key" 2048
ossl rsa -in "$C/sa.key" -pubout -out "$C/sa.pub"

KUBECONFIG_FILE="$DIR/kubeconfig"
cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: capstan-test
  cluster:
    server: https://127.0.0.1:$KUBE_PORT
    certificate-authority: $C/ca.crt
users:
- name: capstan-admin
  user:
    client-certificate: $C/admin.crt
    client-key: $C/admin.key
contexts:
- name: capstan-test
  context:
    cluster: capstan-test
    user: capstan-admin
current-context: capstan-test
EOF

# ---------------------------------------------------------------- processes
start() { # start NAME CMD...
  local name=$1; shift
  # 8>&-: the daemon must not inherit (and so keep holding) the up.sh lock.
  nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!), log: target/infra/logs/$name.log"
}
wait_for() { # wait_for NAME DESCRIPTION CHECK-CMD...
  local name=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + TIMEOUT )) tries=0
  while :; do
    if "$@" >/dev/null 2>&1; then log "$name ready ($what) after $tries polls"; return 0; fi
    if ! alive "$name"; then
      log "$name exited before becoming ready; last lines of target/infra/logs/$name.log:"
      tail -n 40 "$LOGS/$name.log" >&2; exit 1
    fi
    if (( $(date +%s) >= deadline )); then
      log "$name not ready ($what) within ${TIMEOUT}s; last lines of target/infra/logs/$name.log:"
      tail -n 40 "$LOGS/$name.log" >&2; exit 1
    fi
    tries=$((tries + 1)); sleep 0.5
  done
}

start etcd "$CAPSTAN_TOOLS_BIN/etcd" \
  --name capstan-test --data-dir "$DIR/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "capstan-test=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --unsafe-no-fsync --log-level warn

start consul "$CAPSTAN_TOOLS_BIN/consul" agent -dev -node capstan-test \
  -bind 127.0.0.1 -client 127.0.0.1 -advertise 127.0.0.1 \
  -http-port "$CONSUL_HTTP_PORT" -dns-port -1 -serf-lan-port "$CONSUL_SERF_LAN_PORT" \
  -serf-wan-port "$CONSUL_SERF_WAN_PORT" -server-port "$CONSUL_SERVER_PORT" -grpc-port "$CONSUL_GRPC_PORT" \
  -grpc-tls-port -1 -disable-host-node-id -log-level warn \
  -hcl 'disable_update_check = true' -hcl 'telemetry { disable_hostname = true }'

wait_for etcd "GET /health" bash -c "curl -sf --max-time 2 http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"

start kube-apiserver "$CAPSTAN_TOOLS_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_PORT" \
  --tls-cert-file "$C/apiserver.crt" --tls-private-key-file "$C/apiserver.key" \
  --client-ca-file "$C/ca.crt" --cert-dir "$DIR/kube-cert-dir" \
  --service-account-key-file "$C/sa.pub" --service-account-signing-key-file "$C/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --authorization-mode RBAC --service-cluster-ip-range 10.96.0.0/16 \
  --endpoint-reconciler-type none --profiling=false --v 1

wait_for kube-apiserver "GET /readyz" bash -c "curl -sf --max-time 3 --cacert '$C/ca.crt' --cert '$C/admin.crt' --key '$C/admin.key' https://127.0.0.1:$KUBE_PORT/readyz | grep -qx ok"
wait_for kube-apiserver "kubectl get ns default" "$CAPSTAN_TOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout 3s get namespace default
wait_for consul "GET /v1/status/leader" bash -c "curl -sf --max-time 2 http://127.0.0.1:$CONSUL_HTTP_PORT/v1/status/leader | grep -q '\"[^\"]'"

if [[ -n ${CAPSTAN_INFRA_TTL:-} ]]; then
  # Watchdog for infra started by a test binary on its own: stop everything after the TTL.
  # Own process group (setsid) so down.sh can stop it together with its sleep.
  setsid bash -c "sleep '$CAPSTAN_INFRA_TTL'; exec '$INFRA/down.sh'" >>"$LOGS/watchdog.log" 2>&1 </dev/null 8>&- &
  echo $! >"$PIDS/watchdog.pid"
  log "watchdog (pid $!) will stop the infra after ${CAPSTAN_INFRA_TTL}s"
fi

{
  echo "# written by tests/infra/up.sh; stop with tests/infra/down.sh"
  cat "$ROOT/target/tools/env"
  echo "export CAPSTAN_INFRA_DIR='$DIR'"
  echo "export KUBECONFIG='$KUBECONFIG_FILE'"
  echo "export CAPSTAN_KUBE_API='https://127.0.0.1:$KUBE_PORT'"
  echo "export CAPSTAN_KUBE_PORT='$KUBE_PORT'"
  echo "export CAPSTAN_KUBE_CA='$C/ca.crt'"
  echo "export CAPSTAN_KUBE_ADMIN_CERT='$C/admin.crt'"
  echo "export CAPSTAN_KUBE_ADMIN_KEY='$C/admin.key'"
  echo "export CAPSTAN_ETCD_ENDPOINT='http://127.0.0.1:$ETCD_PORT'"
  echo "export CAPSTAN_ETCD_PORT='$ETCD_PORT'"
  echo "export CONSUL_HTTP_ADDR='127.0.0.1:$CONSUL_HTTP_PORT'"
  echo "export CAPSTAN_CONSUL_HTTP_PORT='$CONSUL_HTTP_PORT'"
  echo "export CAPSTAN_CONSUL_GRPC_PORT='$CONSUL_GRPC_PORT'"
} >"$DIR/env.tmp"
mv "$DIR/env.tmp" "$DIR/env"
log "infra up: source target/infra/env"
