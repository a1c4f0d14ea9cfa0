#!/usr/bin/env bash
# CPU per request of `capstan-proxy` and HAProxy at a fixed rate, user and system time apart:
# bench/proxy.sh's gateway setup (HTTP/1.1 keep-alive, 80/20 between two nginx backends, one
# worker each), then for each round capstan and HAProxy in turn: a 2,000-request warm-up, then
# RATE rps for 10 s (oha, 16 connections), the proxy's utime and stime (/proc/<pid>/stat)
# divided by the requests served. Less noisy than a closed-loop maximum on a shared machine:
# one worker's maximum is about 1 / (user + sys per request).
#
#   CAPSTAN=<capstan for discovery> CAPSTAN_PROXY=<capstan-proxy> bench/proxy_cpu.sh
#   RATE=5000 ROUNDS=2 (defaults)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CAPSTAN_TOOLS_CACHE:-$HOME/.cache/capstan-tools}"
OHA="$CACHE/oha-1.8.0/bin/oha"
[[ -x $OHA ]] || { echo "run bench/proxy.sh once first (installs oha)" >&2; exit 1; }
CAPSTAN="${CAPSTAN:?CAPSTAN=/path/to/capstan (discovery)}"
PROXY="${CAPSTAN_PROXY:?CAPSTAN_PROXY=/path/to/capstan-proxy}"
RATE=${RATE:-5000}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
V1=18281 V2=18282 CAP=18290 HAP=18291 XDS=18210 ADMIN=18200
mkdir -p $WORK/config $WORK/nginx
cat >"$WORK/nginx/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$V1; location / { return 200 "v1\n"; } }
  server { listen 127.0.0.1:$V2; location / { return 200 "v2\n"; } }
}
CONF
nginx -c "$WORK/nginx/backend.conf" -e stderr & PIDS+=($!)
source "$ROOT/bench/proxy_mesh.sh"
write_gateway_mesh "$WORK" "$CAP" "$V1" "$V2"
$CAPSTAN discovery --config-dir "$WORK/config" --registry-file "$WORK/registry.yaml" --xds-addr 127.0.0.1:$XDS --debug-addr 127.0.0.1:18280 --monitoring-addr 127.0.0.1:18214 2>$WORK/d.log & PIDS+=($!)
sleep 1
RUST_LOG=warn $PROXY --concurrency 1 --xds-address 127.0.0.1:$XDS --admin-address 127.0.0.1:$ADMIN --node-id "router~127.0.0.1~gw-0.default~default.svc.cluster.local" --metadata 'LABELS={"istio":"ingressgateway"}' 2>$WORK/p.log & CAPPID=$!; PIDS+=($CAPPID)
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend web
  bind 127.0.0.1:$HAP
  default_backend reviews
backend reviews
  balance roundrobin
  server v1 127.0.0.1:$V1 weight 80
  server v2 127.0.0.1:$V2 weight 20
CONF
haproxy -f $WORK/haproxy.cfg -db >$WORK/h.log 2>&1 & HAPPID=$!; PIDS+=($HAPPID)
for port in $CAP $HAP; do for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:$port/ && break; sleep 0.1; done; done
echo "threads: capstan-proxy $(ls /proc/$CAPPID/task | wc -l), haproxy $(ls /proc/$HAPPID/task | wc -l)"
TCK=$(getconf CLK_TCK)
for round in $(seq 1 "${ROUNDS:-2}"); do
for t in "capstan $CAPPID $CAP" "haproxy $HAPPID $HAP"; do
  read -r name pid port <<<"$t"
  $OHA -n 2000 -c 16 --no-tui -j http://127.0.0.1:$port/ >/dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  n=$($OHA -z 10s -c 16 -q $RATE --no-tui -j http://127.0.0.1:$port/ | python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(d['statusCodeDistribution'].values()))")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  python3 -c "import sys; u,s,n,t=(int(a) for a in sys.argv[1:5]); k=1e6/t/n; print(f'round $round $name: {n} requests, user {u*k:.1f} us, sys {s*k:.1f} us, total {(u+s)*k:.1f} us per request')" $((u1-u0)) $((s1-s0)) "$n" "$TCK"
done
done
