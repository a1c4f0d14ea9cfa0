#!/usr/bin/env bash
# Side-by-side benchmark of `capstan-proxy` (the injected sidecar's binary) against HAProxy and
# nginx (Debian's packages), and direct to the backend, all routing 80/20 between two backends,
# on one machine in one run.
#
#   bench/proxy.sh                         # rates 1000 and 10000 rps, 15 s each, HTTP/1.1 and HTTP/2
#   RATES="1000" DURATION=10s bench/proxy.sh
#   MAX_ONLY=1 MAX_ROUNDS=3 PIN=1 bench/proxy.sh  # only maximum throughput, 3 alternating rounds,
#                                                # proxies on CPU 1, load and backends on CPU 0
#   MAX_HTTP="1 2" MAX_SECONDS=5 ...              # maximum throughput over HTTP/1.1 and h2c
#   MAX_ONLY=1 MAX_ROUNDS=0 TOGETHER_ROUNDS=5 PIN=1 ...  # capstan and HAProxy loaded at once,
#                                                # sharing one CPU: the steadiest ratio
#
# Load: oha (open loop at a fixed rate, --latency-correction: no coordinated omission), 16
# keep-alive connections. Backends: nginx answering 200 from two ports. Each proxy runs one worker
# (capstan-proxy --concurrency 1, HAProxy nbthread 1, nginx worker_processes 1). Reports added
# latency (proxy percentile minus direct percentile), CPU-seconds per 1,000 requests and peak RSS
# of the proxy process, and maximum throughput (closed loop, 64 connections, 10 s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RATES="${RATES:-1000 10000}"
DURATION="${DURATION:-15s}"
log() { printf '[bench] %s\n' "$*" >&2; }

# ---- tools (pinned, cached)
# shellcheck source=bench/load_tools.sh
source "$ROOT/bench/load_tools.sh"
need_apt haproxy haproxy
need_apt nginx nginx-light
need_oha
# The proxy measured is the `capstan-proxy` binary (what the injected sidecar runs); `capstan`
# runs discovery. CAPSTAN=/path/to/capstan benchmarks a given build instead of building this
# tree; its proxy is CAPSTAN_PROXY, by default the `capstan-proxy` beside it, else (a build from
# before the proxy-only binary) `$CAPSTAN proxy`. CAPSTAN_PROXY is split on spaces, so
# CAPSTAN_PROXY="$CAPSTAN proxy" measures the all-in-one binary's proxy.
if [[ -z ${CAPSTAN:-} ]]; then
  # The `dist` profile: what the image ships (Dockerfile).
  (cd "$ROOT" && cargo build --profile dist -p capstan -p capstan-proxy >&2)
  CAPSTAN="$ROOT/target/dist/capstan"
fi
if [[ -z ${CAPSTAN_PROXY:-} ]]; then
  if [[ -x "$(dirname "$CAPSTAN")/capstan-proxy" ]]; then
    CAPSTAN_PROXY="$(dirname "$CAPSTAN")/capstan-proxy"
  else
    CAPSTAN_PROXY="$CAPSTAN proxy"
  fi
fi
read -r -a PROXY_CMD <<<"$CAPSTAN_PROXY"
log "discovery: $CAPSTAN; proxy: ${PROXY_CMD[*]}"

WORK="$(mktemp -d /tmp/capstan-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

V1=18081 V2=18082 CAP=18090 HAP=18091 NGX=18092 XDS=18010 ADMIN=18000
mkdir -p "$WORK/config" "$WORK/nginx"

# ---- backends: nginx, two ports, a small fixed body
cat >"$WORK/nginx/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$V1 http2; listen 127.0.0.1:$((V1+100)); location / { return 200 "v1\n"; } }
  server { listen 127.0.0.1:$V2 http2; listen 127.0.0.1:$((V2+100)); location / { return 200 "v2\n"; } }
}
CONF
# The h2c ports above serve HTTP/2 with prior knowledge; +100 serve HTTP/1.1.
nginx -c "$WORK/nginx/backend.conf" -e stderr & PIDS+=($!)

# ---- capstan: discovery (file config + registry) and the proxy as a gateway
# shellcheck source=bench/proxy_mesh.sh
source "$ROOT/bench/proxy_mesh.sh"
write_gateway_mesh "$WORK" "$CAP" $((V1+100)) $((V2+100))
"$CAPSTAN" discovery --config-dir "$WORK/config" --registry-file "$WORK/registry.yaml" \
  --xds-addr 127.0.0.1:$XDS --debug-addr 127.0.0.1:18080 --monitoring-addr 127.0.0.1:18014 2>"$WORK/discovery.log" & PIDS+=($!)
sleep 1
RUST_LOG=warn "${PROXY_CMD[@]}" --concurrency 1 --xds-address 127.0.0.1:$XDS --admin-address 127.0.0.1:$ADMIN \
  --node-id "router~127.0.0.1~gw-0.default~default.svc.cluster.local" --metadata 'LABELS={"istio":"ingressgateway"}' \
  2>"$WORK/proxy.log" & CAP_PID=$!; PIDS+=($CAP_PID)

# ---- HAProxy, one thread, 80/20
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
  bind 127.0.0.1:$((HAP+100)) proto h2
  default_backend reviews
backend reviews
  balance roundrobin
  server v1 127.0.0.1:$((V1+100)) weight 80
  server v2 127.0.0.1:$((V2+100)) weight 20
CONF
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & HAP_PID=$!; PIDS+=($HAP_PID)

# ---- nginx as the proxy, one worker, 80/20 (weights 4:1), upstream keep-alive
cat >"$WORK/nginx/proxy.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx/proxy.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream reviews { server 127.0.0.1:$((V1+100)) weight=4; server 127.0.0.1:$((V2+100)) weight=1; keepalive 64; }
  server { listen 127.0.0.1:$NGX; listen 127.0.0.1:$((NGX+100)) http2;
    location / { proxy_pass http://reviews; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
nginx -c "$WORK/nginx/proxy.conf" -e stderr & PIDS+=($!)

# Wait until every target answers.
for port in $((V1+100)) $CAP $HAP $NGX; do
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$port/" || { log "port $port not answering"; tail -n 20 "$WORK"/*.log >&2; exit 1; }
done
NGX_PID=$(cat "$WORK/nginx/proxy.pid")
NGX_WORKER=$(pgrep -P "$NGX_PID" | head -1)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
# The resident set split: anonymous (heap, stacks) and file-backed (the binary's pages touched).
rss_split_kb() { awk '/RssAnon/{a=$2} /RssFile/{f=$2} END{print a, f}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)

# run NAME PID URL RATE HTTPVERSION -> one JSON line
run() {
  local name=$1 pid=$2 url=$3 rate=$4 ver=$5 extra=()
  [[ $ver == 2 ]] && extra=(--http2)
  local before; before=$([[ $pid == - ]] && echo 0 || cpu_ticks "$pid")
  local json
  json=$("${OHA_RUN[@]}" -z "$DURATION" -c 16 -q "$rate" --latency-correction --no-tui -j "${extra[@]}" "$url")
  local after; after=$([[ $pid == - ]] && echo 0 || cpu_ticks "$pid")
  local rss; rss=$([[ $pid == - ]] && echo 0 || rss_kb "$pid")
  local split; split=$([[ $pid == - ]] && echo "0 0" || rss_split_kb "$pid")
  python3 - "$name" "$rate" "$ver" "$before" "$after" "$TCK" "$rss" $split <<PY
import json, sys
name, rate, ver, before, after, tck, rss, anon, filed = sys.argv[1:10]
d = json.loads('''$json''')
p = d["latencyPercentiles"]
s = d["summary"]
total = sum(d.get("statusCodeDistribution", {}).values())
cpu = (int(after) - int(before)) / int(tck)
print(json.dumps({"target": name, "rate": int(rate), "http": ver,
  "p50": p["p50"]*1e3, "p90": p["p90"]*1e3, "p99": p["p99"]*1e3, "p99.9": p["p99.9"]*1e3,
  "rps": s["requestsPerSec"], "ok": total, "errors": sum(d.get("errorDistribution", {}).values()),
  "cpu_s_per_1k": (cpu / total * 1000) if total else None, "rss_mb": int(rss) / 1024,
  "rss_anon_mb": int(anon) / 1024, "rss_file_mb": int(filed) / 1024}))
PY
}

# PIN=1: each proxy measured gets CPU 1 to itself (all its threads), and everything else
# (backends, discovery, the load generator) shares CPU 0, so a proxy's worker is never
# descheduled for the load it is measured under. Needs 2 CPUs or more.
OHA_RUN=("$OHA")
if [[ ${PIN:-0} == 1 ]]; then
  for pid in "${PIDS[@]}" $(pgrep -P "$(cat "$WORK/nginx/backend.pid")") $(pgrep -P "$NGX_PID"); do
    taskset -a -pc 0 "$pid" >/dev/null 2>&1 || true
  done
  for pid in "$CAP_PID" "$HAP_PID" "$NGX_WORKER"; do taskset -a -pc 1 "$pid" >/dev/null; done
  OHA_RUN=(taskset -c 0 "$OHA")
  log "pinned: proxies on CPU 1, load, backends and discovery on CPU 0"
fi

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
[[ ${MAX_ONLY:-0} == 1 ]] && VERSIONS="" || VERSIONS="1 2"
for ver in $VERSIONS; do
  for rate in $RATES; do
    # HTTP/1.1 targets on the base ports (backends on +100); h2c on +100 (backends on the base).
    if [[ $ver == 1 ]]; then off=0; direct=$((V1+100)); else off=100; direct=$V1; fi
    run direct - "http://127.0.0.1:$direct/" "$rate" "$ver" >>"$RESULTS"
    run capstan "$CAP_PID" "http://127.0.0.1:$CAP/" "$rate" "$ver" >>"$RESULTS"
    run haproxy "$HAP_PID" "http://127.0.0.1:$((HAP+off))/" "$rate" "$ver" >>"$RESULTS"
    run nginx "$NGX_WORKER" "http://127.0.0.1:$((NGX+off))/" "$rate" "$ver" >>"$RESULTS"
  done
done
# Maximum throughput: closed loop, 64 connections, 10 s; MAX_ROUNDS times, the targets taken
# in turn each round so that a change in the machine's load falls on all of them. Beside the
# rate, the proxy's CPU use over the run (utime+stime, in cores): a proxy that is not using its
# whole core is not the bottleneck, and `rps / cpu` is what one busy worker of it would serve.
# Each target first serves 3 s at that concurrency unmeasured, so that all of them start the
# rounds with their upstream connections open and their memory grown.
# MAX_HTTP="1 2" measures h2c too (64 connections of one stream each, as oha --http2 opens
# them); MAX_SECONDS sets a round's length.
for ver in ${MAX_HTTP:-1}; do
  if [[ $ver == 1 ]]; then off=0; direct=$((V1+100)); h2=(); else off=100; direct=$V1; h2=(--http2); fi
  for port in $CAP $((HAP+off)) $((NGX+off)); do
    "${OHA_RUN[@]}" -z 3s -c 64 "${h2[@]}" --no-tui -j "http://127.0.0.1:$port/" >/dev/null
  done
  for round in $(seq 1 "${MAX_ROUNDS:-1}"); do
    for t in "capstan $CAP_PID $CAP" "haproxy $HAP_PID $((HAP+off))" "nginx $NGX_WORKER $((NGX+off))" "direct - $direct"; do
      read -r name pid port <<<"$t"
      before=$([[ $pid == - ]] && echo 0 || cpu_ticks "$pid")
      json=$("${OHA_RUN[@]}" -z "${MAX_SECONDS:-10}s" -c 64 "${h2[@]}" --no-tui -j "http://127.0.0.1:$port/")
      after=$([[ $pid == - ]] && echo 0 || cpu_ticks "$pid")
      hwm=$([[ $pid == - ]] && echo 0 || hwm_kb "$pid")
      python3 - "$name" "$round" "$before" "$after" "$TCK" "$hwm" "$ver" <<PY >>"$RESULTS"
import json, sys
name, rnd, before, after, tck, hwm, ver = sys.argv[1:8]
d = json.loads('''$json''')
s = d["summary"]
cpu = (int(after) - int(before)) / int(tck) / s["total"] if s.get("total") else None
print(json.dumps({"target": name, "round": int(rnd), "http": int(ver), "max_rps": s["requestsPerSec"],
  "cores": cpu if name != "direct" else None, "rss_peak_mb": int(hwm) / 1024}))
PY
    done
  done
done
# TOGETHER_ROUNDS=N: capstan and HAProxy at the same time, each under its own closed-loop load
# (64 connections), both proxies on the same CPU (with PIN=1, CPU 1, which they then share
# half and half under the kernel's fair scheduler), for N rounds of MAX_SECONDS. Whatever
# the machine does meanwhile falls on both at once, so the ratio of their requests per
# CPU-second repeats far better than rounds taken one after the other.
for ver in ${MAX_HTTP:-1}; do
  if [[ $ver == 1 ]]; then off=0; h2=(); else off=100; h2=(--http2); fi
  for round in $(seq 1 "${TOGETHER_ROUNDS:-0}"); do
    b_cap=$(cpu_ticks "$CAP_PID") b_hap=$(cpu_ticks "$HAP_PID")
    "${OHA_RUN[@]}" -z "${MAX_SECONDS:-10}s" -c 64 "${h2[@]}" --no-tui -j "http://127.0.0.1:$CAP/" >"$WORK/together-capstan.json" &
    a=$!
    "${OHA_RUN[@]}" -z "${MAX_SECONDS:-10}s" -c 64 "${h2[@]}" --no-tui -j "http://127.0.0.1:$((HAP+off))/" >"$WORK/together-haproxy.json" &
    b=$!
    wait $a $b
    e_cap=$(cpu_ticks "$CAP_PID") e_hap=$(cpu_ticks "$HAP_PID")
    python3 - "$round" "$ver" "$TCK" "$((e_cap - b_cap))" "$((e_hap - b_hap))" "$WORK" <<'PY' >>"$RESULTS"
import json, sys
rnd, ver, tck, cap, hap, work = sys.argv[1:7]
for name, ticks in (("capstan", cap), ("haproxy", hap)):
    s = json.load(open(f"{work}/together-{name}.json"))["summary"]
    cores = int(ticks) / int(tck) / s["total"]
    print(json.dumps({"target": name, "together": int(rnd), "http": int(ver),
                      "rps": s["requestsPerSec"], "cores": cores}))
PY
  done
done
python3 "$ROOT/bench/proxy_report.py" "$RESULTS"
