#!/usr/bin/env bash
# Two `capstan proxy` hops with Istio mTLS between them against the same two hops in plaintext,
# side by side in one run: client → proxy A (HTTP gateway) → proxy B → nginx backend. With
# mTLS, A's cluster has a DestinationRule ISTIO_MUTUAL and B's server `tls.mode: ISTIO_MUTUAL`;
# both get their certificates from `capstan discovery`'s CA (static development tokens).
#
#   bench/proxy_mtls.sh                        # 1,000 rps, 15 s, HTTP/1.1
#   RATE=2000 DURATION=10s bench/proxy_mtls.sh
#
# Reports p50/p90/p99 of each chain and the difference (mTLS − plaintext), and the CPU-seconds
# per 1,000 requests of the two proxies together.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RATE="${RATE:-1000}"
DURATION="${DURATION:-15s}"
log() { printf '[bench] %s\n' "$*" >&2; }
# shellcheck source=bench/load_tools.sh
source "$ROOT/bench/load_tools.sh"
need_apt nginx nginx-light
need_oha
if [[ -z ${CAPSTAN:-} ]]; then
  (cd "$ROOT" && cargo build --release -p capstan >&2)
  CAPSTAN="$ROOT/target/release/capstan"
fi
# The proxies: CAPSTAN_PROXY (split on spaces, e.g. a `capstan-proxy` binary), else `$CAPSTAN proxy`.
read -r -a PROXY_CMD <<<"${CAPSTAN_PROXY:-$CAPSTAN proxy}"
WORK="$(mktemp -d /tmp/capstan-bench-mtls.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
BACK=18181 PLAIN_A=18190 PLAIN_B=18191 MTLS_A=18192 MTLS_B=18193 XDS=18110 SECURE=18112
mkdir -p "$WORK/config" "$WORK/nginx"
cat >"$WORK/nginx/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACK; location / { return 200 "v1\n"; } } }
CONF
nginx -c "$WORK/nginx/backend.conf" -e stderr & PIDS+=($!)
cat >"$WORK/registry.yaml" <<YAML
services:
- hostname: plain-b.default.svc.cluster.local
  namespace: default
  ports: [{name: http, port: 80}]
  endpoints: [{address: 127.0.0.1, ports: {http: $PLAIN_B}}]
- hostname: mtls-b.default.svc.cluster.local
  namespace: default
  ports: [{name: http, port: 80}]
  endpoints: [{address: 127.0.0.1, ports: {http: $MTLS_B}}]
- hostname: backend.default.svc.cluster.local
  namespace: default
  ports: [{name: http, port: 80}]
  endpoints: [{address: 127.0.0.1, ports: {http: $BACK}}]
YAML
gw() { # name selector port protocol tls
  printf 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: %s, namespace: default}\nspec:\n  selector: {istio: %s}\n  servers:\n  - port: {number: %s, name: %s, protocol: %s}\n    hosts: ["*"]\n%s---\n' "$@"
}
vs() { # name gateway host
  printf 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: %s, namespace: default}\nspec:\n  hosts: ["*"]\n  gateways: [%s]\n  http:\n  - route:\n    - destination: {host: %s}\n---\n' "$@"
}
{
  gw a a "$PLAIN_A" http HTTP ""
  gw a2 a "$MTLS_A" http2 HTTP ""
  gw b b "$PLAIN_B" http HTTP ""
  gw b2 b "$MTLS_B" https HTTPS "    tls: {mode: ISTIO_MUTUAL}
"
  printf 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: default}\nspec:\n  hosts: ["*"]\n  gateways: [a]\n  http:\n  - route:\n    - destination: {host: plain-b.default.svc.cluster.local}\n---\n'
  printf 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a2, namespace: default}\nspec:\n  hosts: ["*"]\n  gateways: [a2]\n  http:\n  - route:\n    - destination: {host: mtls-b.default.svc.cluster.local}\n---\n'
  vs b "b, b2" backend.default.svc.cluster.local
  printf 'apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: mtls-b, namespace: default}\nspec:\n  host: mtls-b.default.svc.cluster.local\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n'
} >"$WORK/config/mesh.yaml"
printf 'token-a default a\ntoken-b default b\n' >"$WORK/tokens"
echo token-a >"$WORK/token-a"; echo token-b >"$WORK/token-b"
"$CAPSTAN" discovery --config-dir "$WORK/config" --registry-file "$WORK/registry.yaml" \
  --xds-addr 127.0.0.1:$XDS --secure-xds-addr 127.0.0.1:$SECURE --ca-dir "$WORK/ca" --ca-token-file "$WORK/tokens" \
  --debug-addr 127.0.0.1:18180 --monitoring-addr 127.0.0.1:18114 2>"$WORK/discovery.log" & PIDS+=($!)
for _ in $(seq 1 100); do [[ -f $WORK/ca/root-cert.pem ]] && break; sleep 0.1; done
proxy() { # name label token admin (exec: the PID is the proxy itself)
  RUST_LOG=warn exec "${PROXY_CMD[@]}" --concurrency 1 --xds-address 127.0.0.1:$SECURE --xds-tls \
    --ca-address 127.0.0.1:$SECURE --ca-root-cert "$WORK/ca/root-cert.pem" --ca-token-file "$WORK/$3" \
    --admin-address 127.0.0.1:$4 --node-id "router~127.0.0.1~$1-0.default~default.svc.cluster.local" \
    --metadata "LABELS={\"istio\":\"$2\"}" 2>"$WORK/$1.log"
}
proxy a a token-a 18100 & A_PID=$!; PIDS+=($A_PID)
proxy b b token-b 18101 & B_PID=$!; PIDS+=($B_PID)
for port in $PLAIN_A $MTLS_A; do
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$port/" || { log "port $port not answering"; tail -n 20 "$WORK"/*.log >&2; exit 1; }
done
ticks() { echo $(( $(awk '{print $14+$15}' /proc/$A_PID/stat) + $(awk '{print $14+$15}' /proc/$B_PID/stat) )); }
TCK=$(getconf CLK_TCK)
for chain in plain mtls; do
  port=$PLAIN_A; [[ $chain == mtls ]] && port=$MTLS_A
  before=$(ticks)
  "$OHA" -z "$DURATION" -c 16 -q "$RATE" --latency-correction --no-tui -j "http://127.0.0.1:$port/" >"$WORK/$chain.json"
  after=$(ticks)
  echo "$before $after" >"$WORK/$chain.ticks"
done
python3 - "$WORK" "$TCK" <<'PY'
import json, sys
work, tck = sys.argv[1], int(sys.argv[2])
rows = {}
for c in ("plain", "mtls"):
    d = json.load(open(f"{work}/{c}.json"))
    before, after = map(int, open(f"{work}/{c}.ticks").read().split())
    p = d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    n = sum(codes.values())
    rows[c] = {
        "p50": p["p50"] * 1e3, "p90": p["p90"] * 1e3, "p99": p["p99"] * 1e3,
        "ok": codes.get("200", 0), "errors": sum(d.get("errorDistribution", {}).values()),
        "cpu": (after - before) / tck / n * 1000 if n else float("nan"),
    }
print("| chain (two proxies) | p50 ms | p90 ms | p99 ms | 200s | errors | CPU-s / 1k req (both proxies) |")
print("|---|---|---|---|---|---|---|")
for c, r in rows.items():
    print(f"| {c} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | {r['ok']} | {r['errors']} | {r['cpu']:.3f} |")
m, p = rows["mtls"], rows["plain"]
for c in ("plain", "mtls"):
    errs = json.load(open(f"{work}/{c}.json")).get("errorDistribution", {})
    if errs:
        print(f"<!-- {c} errors: {errs} -->")
print(f"| mTLS − plaintext | {m['p50'] - p['p50']:+.3f} | {m['p90'] - p['p90']:+.3f} | {m['p99'] - p['p99']:+.3f} | | | {m['cpu'] - p['cpu']:+.3f} |")
PY
