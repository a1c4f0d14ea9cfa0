#!/usr/bin/env bash
# Admission latency of `capstan discovery`'s validating webhook (/validate over HTTPS, the
# generated certificate) under 100 concurrent keep-alive connections (closed loop, oha).
#
#   bench/webhook.sh                          # 100 connections, 20 s, release build of this tree
#   CONNECTIONS=100 DURATION=10s CAPSTAN=/path/to/capstan bench/webhook.sh
#
# The body is one AdmissionReview (v1, CREATE) of a realistic VirtualService: two hosts, four
# HTTP routes with header and prefix matches, weighted subsets, retries and a timeout; it is
# valid, so every request runs the whole decode + validation. Prints oha's summary and the
# p50/p99 in ms.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONNECTIONS="${CONNECTIONS:-100}"
DURATION="${DURATION:-20s}"
log() { printf '[bench] %s\n' "$*" >&2; }

# shellcheck source=bench/load_tools.sh
source "$ROOT/bench/load_tools.sh"
need_oha
if [[ -z ${CAPSTAN:-} ]]; then
  (cd "$ROOT" && cargo build --release -p capstan >&2)
  CAPSTAN="$ROOT/target/release/capstan"
fi

WORK="$(mktemp -d /tmp/capstan-webhook-bench.XXXXXX)"
PID=""
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$WORK/config"
WEBHOOK=$(port); MONITORING=$(port)
"$CAPSTAN" discovery --config-dir "$WORK/config" \
  --xds-addr "127.0.0.1:$(port)" --secure-xds-addr "127.0.0.1:$(port)" \
  --debug-addr "127.0.0.1:$(port)" --monitoring-addr "127.0.0.1:$MONITORING" \
  --webhook-addr "127.0.0.1:$WEBHOOK" 2>"$WORK/discovery.log" &
PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$MONITORING/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$MONITORING/ready" >/dev/null

python3 - "$WORK/review.json" <<'EOF'
import json, sys
route = lambda i: {
    "name": f"r{i}",
    "match": [{"headers": {"end-user": {"exact": f"user{i}"}}, "uri": {"prefix": f"/api/v{i}"}}],
    "route": [
        {"destination": {"host": "reviews.shop.svc.cluster.local", "subset": "v1", "port": {"number": 9080}}, "weight": 80},
        {"destination": {"host": "reviews.shop.svc.cluster.local", "subset": "v2", "port": {"number": 9080}}, "weight": 20},
    ],
    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
    "timeout": "10s",
}
vs = {
    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop", "uid": "3c1f", "resourceVersion": "1",
                 "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"hosts": ["reviews.shop.svc.cluster.local", "reviews.example.com"],
             "gateways": ["mesh", "shop/public"], "http": [route(i) for i in range(4)]},
}
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "0d8e6a5c-1111-4000-8000-000000000001",
    "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
    "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
    "name": "reviews", "namespace": "shop", "operation": "CREATE",
    "userInfo": {"username": "admin"}, "object": vs, "dryRun": False}}
json.dump(review, open(sys.argv[1], "w"))
EOF
# The review must be admitted (a denied one would measure a shorter path).
curl -fsS --insecure -H 'Content-Type: application/json' --data-binary "@$WORK/review.json" \
  "https://127.0.0.1:$WEBHOOK/validate" | grep -q '"allowed":true'

log "oha -c $CONNECTIONS -z $DURATION POST /validate ($(wc -c <"$WORK/review.json") bytes)"
"$OHA" --no-tui -j -c "$CONNECTIONS" -z "$DURATION" -m POST -T application/json \
  -D "$WORK/review.json" --insecure "https://127.0.0.1:$WEBHOOK/validate" >"$WORK/oha.json"
python3 - "$WORK/oha.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
print(f"requests/s {s['requestsPerSec']:.0f}  success {s['successRate']*100:.2f}%  codes {codes}")
print(f"p50 {p['p50']*1000:.2f} ms  p90 {p['p90']*1000:.2f} ms  p99 {p['p99']*1000:.2f} ms  max {s['slowest']*1000:.2f} ms")
EOF
