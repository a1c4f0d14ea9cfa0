#!/usr/bin/env bash
# Validating-webhook admission latency side by side with istiod (issue 11): istiod's and
# Capstan's `/validate`, each over HTTPS with the same serving certificate, answer the same
# mix of AdmissionReviews (valid and invalid VirtualServices and DestinationRules, creates and
# updates) from `capstan-loadgen webhook`: 100 keep-alive connections, closed loop, a warm-up,
# then the measured requests. One server at a time (istiod, then Capstan), both against one
# private kube-apiserver holding Istio's CRDs (istiod serves its webhooks only with a
# Kubernetes client; Capstan is run the same way). Prints each server's row and the ratios
# Capstan / istiod.
#
#   bench/webhook_vs_istiod.sh
#   CONCURRENCY=100 REQUESTS=50000 bench/webhook_vs_istiod.sh
#   SERVERS=capstan NO_BUILD=1 bench/webhook_vs_istiod.sh
#
# Env: CONCURRENCY (100), REQUESTS (50000), WARMUP (2000), SERVERS (istiod,capstan),
# LOADGEN_ARGS (extra `capstan-loadgen webhook` flags, e.g. --threads 2), NO_BUILD=1 (use the
# built binaries), CAPSTAN / LOADGEN (measure these binaries instead of building this tree),
# RESULTS (JSON lines file, default target/bench/webhook-vs-istiod.jsonl), KEEP=1 (keep the
# servers' logs and the API server's directory).
#
# Needs tests/infra/install-tools.sh to have run (etcd, kube-apiserver, kubectl, pilot-discovery).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=webhook-bench
# shellcheck source=bench/private_kube.sh
source "$ROOT/bench/private_kube.sh"

SERVERS="${SERVERS:-istiod,capstan}"
NEEDED=(kubectl)
[[ $SERVERS == *istiod* ]] && NEEDED+=(pilot-discovery)
for b in "${NEEDED[@]}"; do
  [[ -x $TOOLS/$b ]] || die "$b not in $TOOLS: run tests/infra/install-tools.sh (pilot-discovery: tests/infra/install-tools.sh istio-pilot)"
done

if [[ -z ${NO_BUILD:-} && -z ${CAPSTAN:-} && -z ${LOADGEN:-} ]]; then
  (cd "$ROOT" && cargo build --release -p capstan -p capstan-loadgen >&2)
fi
LOADGEN="${LOADGEN:-$ROOT/target/release/capstan-loadgen}"
CAPSTAN="${CAPSTAN:-$ROOT/target/release/capstan}"
[[ -x $LOADGEN && -x $CAPSTAN ]] || die "build target/release/capstan and capstan-loadgen first"

start_private_kube
KUBECTL=("$TOOLS/kubectl" --kubeconfig "$KUBECONFIG_FILE")
"${KUBECTL[@]}" apply --server-side -f "$ROOT/deploy/crds" >"$WORK/kubectl.log"
"${KUBECTL[@]}" apply --server-side -f - >>"$WORK/kubectl.log" <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: ''
  meshNetworks: 'networks: {}'
EOF

# One serving certificate for both webhooks, as the API server would reach them: the
# in-cluster name istiod's certificate carries, and the loopback address dialled here.
sign webhook "/CN=istiod.istio-system.svc" "$(printf '%s\n' 'basicConstraints=CA:FALSE' \
  'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' \
  'subjectAltName=DNS:istiod.istio-system.svc,IP:127.0.0.1')"
CERTS="$WORK/webhook-certs"; mkdir -p "$CERTS"
cp "$C/webhook.crt" "$CERTS/tls.crt"; cp "$C/webhook.key" "$CERTS/tls.key"; cp "$C/ca.crt" "$CERTS/ca.crt"

RESULTS="${RESULTS:-$ROOT/target/bench/webhook-vs-istiod.jsonl}"
mkdir -p "$(dirname "$RESULTS")"
RUN_RESULTS="$WORK/results.jsonl"
machine_line
echo "command: bench/webhook_vs_istiod.sh (CONCURRENCY=${CONCURRENCY:-100} REQUESTS=${REQUESTS:-50000} WARMUP=${WARMUP:-2000} LOADGEN_ARGS='${LOADGEN_ARGS:-}')"

measure() { # measure LABEL PID PORT
  # shellcheck disable=SC2086
  "$LOADGEN" webhook --url "https://127.0.0.1:$3/validate" --ca "$CERTS/ca.crt" \
    --concurrency "${CONCURRENCY:-100}" --requests "${REQUESTS:-50000}" --warmup "${WARMUP:-2000}" \
    --server-pid "$2" --label "$1" --results "$RUN_RESULTS" ${LOADGEN_ARGS:-}
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

if [[ $SERVERS == *istiod* ]]; then
  read -r GRPC MONITORING HTTP HTTPS CTRLZ <<<"$(free_ports 5)"
  # Out of cluster, as tests/src/istiod.rs runs it, but with its HTTPS webhook server on and
  # the certificate given by --tlsCertFile/--tlsKeyFile/--caCertFile (istiod's
  # `hasCustomTLSCerts`: all three set means no CA of its own is needed for its DNS cert).
  ENABLE_CA_SERVER=false INJECT_ENABLED=false VALIDATION_WEBHOOK_CONFIG_NAME= \
  POD_NAMESPACE=istio-system PILOT_ENABLE_ANALYSIS=false \
  "$TOOLS/pilot-discovery" discovery --kubeconfig "$KUBECONFIG_FILE" \
    --grpcAddr "127.0.0.1:$GRPC" --secureGRPCAddr "" --monitoringAddr "127.0.0.1:$MONITORING" \
    --httpAddr "127.0.0.1:$HTTP" --httpsAddr "127.0.0.1:$HTTPS" --ctrlz_port "$CTRLZ" \
    --tlsCertFile "$CERTS/tls.crt" --tlsKeyFile "$CERTS/tls.key" --caCertFile "$CERTS/ca.crt" \
    >"$WORK/istiod.log" 2>&1 </dev/null &
  ISTIOD=$!
  PIDS+=("$ISTIOD")
  wait_for istiod 120 curl -sf --max-time 2 "http://127.0.0.1:$HTTP/ready"
  log "istiod ready (pid $ISTIOD), webhook on 127.0.0.1:$HTTPS"
  measure istiod "$ISTIOD" "$HTTPS" || log "istiod: the measurement failed; log in $WORK/istiod.log (KEEP=1 keeps it)"
  stop "$ISTIOD"
fi

if [[ $SERVERS == *capstan* ]]; then
  read -r XDS SECURE DEBUG MONITORING WEBHOOK <<<"$(free_ports 5)"
  RUST_LOG=warn "$CAPSTAN" discovery --kubeconfig "$KUBECONFIG_FILE" \
    --xds-addr "127.0.0.1:$XDS" --secure-xds-addr "127.0.0.1:$SECURE" \
    --debug-addr "127.0.0.1:$DEBUG" --monitoring-addr "127.0.0.1:$MONITORING" \
    --webhook-addr "127.0.0.1:$WEBHOOK" --webhook-cert-dir "$CERTS" \
    >"$WORK/capstan.log" 2>&1 </dev/null &
  CAPSTAN_PID=$!
  PIDS+=("$CAPSTAN_PID")
  wait_for capstan 120 curl -sf --max-time 2 "http://127.0.0.1:$MONITORING/ready"
  log "capstan ready (pid $CAPSTAN_PID), webhook on 127.0.0.1:$WEBHOOK"
  measure capstan "$CAPSTAN_PID" "$WEBHOOK" || log "capstan: the measurement failed; log in $WORK/capstan.log (KEEP=1 keeps it)"
  stop "$CAPSTAN_PID"
fi

[[ -s $RUN_RESULTS ]] || die "no server was measured"
cat "$RUN_RESULTS" >>"$RESULTS"
python3 - "$RUN_RESULTS" <<'EOF'
import json, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
print()
print("| server | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | wrong verdicts | server CPU-s | client CPU-s | client/server CPU | server CPU-ms per 1k reviews | server peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for label, r in rows.items():
    cpu = r.get("server_cpu_secs") or 0.0
    print(f"| {label} | {r['requests_per_sec']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} "
          f"| {r['errors']} | {r['wrong_verdicts']} | {cpu:.2f} | {r['client_cpu_secs']:.2f} "
          f"| {r['client_cpu_secs'] / cpu if cpu else 0:.2f} | {1e6 * cpu / max(r['answered'], 1):.0f} "
          f"| {r.get('server_peak_rss_mib') or 0:.0f} |")
if "capstan" in rows and "istiod" in rows:
    c, i = rows["capstan"], rows["istiod"]
    ratio = lambda k: c[k] / i[k] if i[k] else float("nan")
    per_k = lambda r: (r.get("server_cpu_secs") or 0) / max(r["answered"], 1)
    print(f"| **Capstan / istiod** | {ratio('requests_per_sec'):.2f} | {ratio('p50_ms'):.3f} | {ratio('p90_ms'):.3f} "
          f"| {ratio('p99_ms'):.3f} | {ratio('max_ms'):.3f} | | | | | | {per_k(c) / per_k(i) if per_k(i) else float('nan'):.3f} "
          f"| {(c.get('server_peak_rss_mib') or 0) / (i.get('server_peak_rss_mib') or 1):.3f} |")
EOF
log "JSON lines appended to $RESULTS"
