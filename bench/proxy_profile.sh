#!/usr/bin/env bash
# Instructions per request of `capstan proxy` (and of HAProxy, in the same run), under
# bench/proxy.sh's setup: HTTP/1.1 keep-alive, 80/20 between two nginx backends, one worker.
# For A/B comparisons of the proxy's hot path on a machine with noisy neighbours or no hardware
# counters: callgrind counts instructions exactly, whatever else runs.
#
#   CAPSTAN=target/profiling/capstan bench/proxy_profile.sh            # callgrind, both proxies
#   MODE=perf CAPSTAN=target/profiling/capstan bench/proxy_profile.sh  # perf record (dwarf)
#   MODE=syscalls CAPSTAN=... bench/proxy_profile.sh   # system calls per request (strace -c;
#                                                      # RATE=1000: at that fixed rate)
#   MODE=cpu TARGETS="capstan haproxy capstan haproxy" ...   # user/sys CPU per request at RATE rps
#   CALLGRIND_ARGS=--cache-sim=yes ...                 # also simulated cache misses (I1mr, D1mr, ...)
#   MODE=saturate TARGETS="capstan haproxy capstan haproxy" ...   # closed loop, 64 connections,
#                                                      # the proxy pinned alone on CPU 1: CPU per
#                                                      # request, switches, TCP segments (PERF=1:
#                                                      # also a cpu-clock profile with kernel stacks;
#                                                      # SYSCALLS=1: system calls by tracepoint)
#   MODE=copies ...                                    # bytes memcpy'd per request, by caller
#   HTTP=2 ...                                         # the clients speak h2c (prior knowledge) to
#                                                      # the proxies; upstream stays HTTP/1.1
#
# The proxy profiled is CAPSTAN_PROXY (split on spaces), by default the `capstan-proxy` binary
# the sidecar ships, beside $CAPSTAN, else `$CAPSTAN proxy` (same code, the all-in-one binary).
#
# N requests (default 20000) are sent closed loop over 16 connections after a warm-up of 2000;
# the counters are zeroed after the warm-up, so connection set-up and start-up are left out.
# callgrind output stays in $OUT (default /tmp/capstan-profile) for callgrind_annotate.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-20000}"
MODE="${MODE:-callgrind}"
OUT="${OUT:-/tmp/capstan-profile}"
TARGETS="${TARGETS:-capstan haproxy}"
CAPSTAN="${CAPSTAN:-$ROOT/target/profiling/capstan}"
if [[ -z ${CAPSTAN_PROXY:-} ]]; then
  if [[ -x "$(dirname "$CAPSTAN")/capstan-proxy" ]]; then
    CAPSTAN_PROXY="$(dirname "$CAPSTAN")/capstan-proxy"
  else
    CAPSTAN_PROXY="$CAPSTAN proxy"
  fi
fi
read -r -a PROXY <<<"$CAPSTAN_PROXY"
# HTTP=2: the load speaks h2c with prior knowledge (HAProxy's bind says `proto h2`; capstan's
# gateway listener tells the two apart itself); the backends are reached over HTTP/1.1 either way.
HTTP="${HTTP:-1}"
case $HTTP in
  1) OHA_ARGS=() CURL_ARGS=() HAP_BIND="" ;;
  2) OHA_ARGS=(--http2) CURL_ARGS=(--http2-prior-knowledge) HAP_BIND=" proto h2" ;;
  *) echo "HTTP is 1 or 2" >&2; exit 2 ;;
esac
log() { printf '[profile] %s\n' "$*" >&2; }
# shellcheck source=bench/load_tools.sh
source "$ROOT/bench/load_tools.sh"
need_apt nginx nginx-light
[[ " $TARGETS " == *" haproxy "* ]] && need_apt haproxy haproxy
need_oha
log "proxy: ${PROXY[*]}"

WORK="$(mktemp -d /tmp/capstan-profile.XXXXXX)"
mkdir -p "$OUT" "$WORK/config" "$WORK/nginx"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# PORT_OFFSET moves every port, so that two runs can share a machine.
O=${PORT_OFFSET:-0}
V1=$((18181 + O)) V2=$((18182 + O)) CAP=$((18190 + O)) HAP=$((18191 + O)) XDS=$((18110 + O)) ADMIN=$((18100 + O))
DEBUG=$((18180 + O)) MONITORING=$((18114 + O))
cat >"$WORK/nginx/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$V1; location / { return 200 "v1\n"; } }
  server { listen 127.0.0.1:$V2; location / { return 200 "v2\n"; } }
}
CONF
nginx -c "$WORK/nginx/backend.conf" -e stderr & PIDS+=($!)

# shellcheck source=bench/proxy_mesh.sh
source "$ROOT/bench/proxy_mesh.sh"
write_gateway_mesh "$WORK" "$CAP" "$V1" "$V2"
"$CAPSTAN" discovery --config-dir "$WORK/config" --registry-file "$WORK/registry.yaml" \
  --xds-addr 127.0.0.1:$XDS --debug-addr 127.0.0.1:$DEBUG --monitoring-addr 127.0.0.1:$MONITORING 2>"$WORK/discovery.log" & PIDS+=($!)
sleep 1

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
  bind 127.0.0.1:$HAP$HAP_BIND
  default_backend reviews
backend reviews
  balance roundrobin
  server v1 127.0.0.1:$V1 weight 80
  server v2 127.0.0.1:$V2 weight 20
CONF

# wrap NAME OUTFILE: the command prefix a target runs under.
wrap() {
  case $MODE in
    callgrind) echo "valgrind --tool=callgrind --callgrind-out-file=$2 --dump-instr=no ${CALLGRIND_ARGS:-}" ;;
    *) echo "" ;;
  esac
}

wait_port() {
  for _ in $(seq 1 300); do curl -sf "${CURL_ARGS[@]}" -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  log "port $1 not answering"; tail -n 20 "$WORK"/*.log >&2; exit 1
}

for target in $TARGETS; do
  case $target in
    capstan)
      port=$CAP
      # shellcheck disable=SC2046
      RUST_LOG=warn $(wrap capstan "$OUT/capstan.callgrind") "${PROXY[@]}" --concurrency 1 \
        --xds-address 127.0.0.1:$XDS --admin-address 127.0.0.1:$ADMIN \
        --node-id "router~127.0.0.1~gw-0.default~default.svc.cluster.local" \
        --metadata 'LABELS={"istio":"ingressgateway"}' 2>"$WORK/proxy.log" & pid=$!; PIDS+=($pid) ;;
    haproxy)
      port=$HAP
      # shellcheck disable=SC2046
      $(wrap haproxy "$OUT/haproxy.callgrind") haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & pid=$!; PIDS+=($pid) ;;
  esac
  wait_port $port
  "$OHA" "${OHA_ARGS[@]}" -n 2000 -c 16 --no-tui -j "http://127.0.0.1:$port/" >/dev/null
  case $MODE in
    callgrind)
      callgrind_control -z $pid >/dev/null
      "$OHA" "${OHA_ARGS[@]}" -n "$N" -c 16 --no-tui -j "http://127.0.0.1:$port/" >"$WORK/oha.json"
      callgrind_control -d "measured" $pid >/dev/null
      sleep 1
      file=$(ls -t "$OUT/$target.callgrind"* | head -1)
      ir=$(awk '/^summary:|^totals:/{print $2; exit}' "$file")
      python3 -c "import sys; ir=int(sys.argv[1]); n=int(sys.argv[2]); print(f'$target: {ir/n:,.0f} instructions per request ({ir:,} over {n}) -> $file')" "$ir" "$N"
      ;;
    cpu)
      # The proxy's utime and stime per request at a fixed rate (RATE, default 5,000 rps, 10 s):
      # one worker's maximum is about 1 / (user + sys). Repeat targets to alternate them.
      read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
      "$OHA" "${OHA_ARGS[@]}" -z 10s -c 16 -q "${RATE:-5000}" --no-tui -j "http://127.0.0.1:$port/" >"$WORK/oha.json"
      read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
      python3 - "$target" "$((u1 - u0))" "$((s1 - s0))" "$(getconf CLK_TCK)" "$WORK/oha.json" <<'PY'
import json, sys
target, u, s, tck, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
n = sum(json.load(open(path)).get("statusCodeDistribution", {}).values())
k = 1e6 / tck / n
print(f"{target}: {n} requests, user {u * k:.1f} us, sys {s * k:.1f} us, total {(u + s) * k:.1f} us per request")
PY
      ;;
    syscalls)
      strace -c -f -q -o "$OUT/$target.strace" -p $pid &
      rec=$!
      sleep 1
      # RATE set: 10 s at that fixed rate (where requests arrive one by one), else N closed loop.
      if [[ -n ${RATE:-} ]]; then load=(-z 10s -q "$RATE"); else load=(-n "$N"); fi
      "$OHA" "${OHA_ARGS[@]}" "${load[@]}" -c 16 --no-tui -j "http://127.0.0.1:$port/" >"$WORK/oha.json"
      sleep 0.5
      kill -INT $rec; wait $rec || true
      python3 - "$OUT/$target.strace" "$WORK/oha.json" "$target" <<'PY'
import json, sys
path, oha, target = sys.argv[1], sys.argv[2], sys.argv[3]
n = sum(json.load(open(oha)).get("statusCodeDistribution", {}).values())
rows = []
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls, name = int(f[3]), f[-1]
        errors = int(f[4]) if len(f) == 6 else 0
        rows.append((calls, errors, name))
total = sum(c for c, _, _ in rows)
detail = ", ".join(f"{name} {c / n:.2f}" + (f" ({e / n:.2f} failed)" if e else "")
                   for c, e, name in sorted(rows, reverse=True) if c / n >= 0.01)
print(f"{target}: {total / n:.2f} syscalls per request: {detail}")
PY
      ;;
    saturate)
      # Closed loop over C connections (default 64) for 10 s, the proxy on CPU 1 and the load
      # and backends on CPU 0 (PIN=0 to leave them unpinned). Per request: the proxy's user and
      # system time, its context switches, the host's TCP segments (nstat), and with PERF=1 a
      # perf profile (cpu-clock, kernel stacks) in $OUT/$target.saturate.perf.
      oha_pin=() rec=""
      if [[ ${PIN:-1} == 1 ]]; then
        taskset -a -pc 1 $pid >/dev/null
        for p in "${PIDS[@]}" $(pgrep -P "$(cat "$WORK/nginx/backend.pid")"); do
          [[ $p == "$pid" ]] || taskset -a -pc 0 "$p" >/dev/null 2>&1 || true
        done
        oha_pin=(taskset -c 0)
      fi
      switches() { cat /proc/$pid/task/*/status | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v + n}'; }
      read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
      c0=$(switches)
      nstat -n >/dev/null
      if [[ ${PERF:-0} == 1 ]]; then
        perf record -e cpu-clock -F 2000 -g -o "$OUT/$target.saturate.perf" -p $pid -- sleep 8 >/dev/null 2>&1 &
        rec=$!
      elif [[ ${SYSCALLS:-0} == 1 ]]; then
        # System calls by tracepoint (cheaper than strace, though it still slows the proxy).
        perf stat -x, -o "$OUT/$target.syscalls" -p $pid -e raw_syscalls:sys_enter \
          -e syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev \
          -e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_clock_gettime -- sleep 8 >/dev/null 2>&1 &
        rec=$!
      fi
      "${oha_pin[@]}" "$OHA" "${OHA_ARGS[@]}" -z 10s -c "${C:-64}" --no-tui -j "http://127.0.0.1:$port/" >"$WORK/oha.json"
      nstat >"$WORK/nstat"
      read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
      c1=$(switches)
      # Only the recorder: the backends, discovery and the proxy run on in the background.
      [[ -z $rec ]] || wait "$rec" || true
      if [[ ${SYSCALLS:-0} == 1 ]]; then
        # Per request over the 8 s window, at the run's mean rate.
        awk -F, -v n="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['summary']['requestsPerSec'] * 8)" "$WORK/oha.json")" \
          '$1 + 0 > 0 { sub(/^(raw_)?syscalls:sys_enter_?/, "", $3); printf "  %s %.2f per request\n", ($3 == "" ? "all" : $3), $1 / n }' "$OUT/$target.syscalls"
      fi
      python3 - "$target" "$((u1 - u0))" "$((s1 - s0))" "$(getconf CLK_TCK)" "$WORK/oha.json" "$((c1 - c0))" "$WORK/nstat" <<'PY'
import json, sys
target, u, s, tck, path, cs, nstat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7]
d = json.load(open(path))
n = sum(d.get("statusCodeDistribution", {}).values())
k = 1e6 / tck / n
seg = {f[0]: int(f[1]) for f in (l.split() for l in open(nstat)) if len(f) >= 2 and f[1].isdigit()}
print(f"{target}: {d['summary']['requestsPerSec']:.0f} rps, proxy CPU {(u + s) / tck / d['summary']['total']:.2f} cores, "
      f"user {u * k:.2f} us, sys {s * k:.2f} us, total {(u + s) * k:.2f} us per request; "
      f"{1e6 / ((u + s) * k):.0f} requests per proxy CPU-second; context switches {cs / n:.3f}, "
      f"TCP segments out {seg.get('TcpOutSegs', 0) / n:.2f} per request")
PY
      ;;
    copies)
      # Bytes copied by libc's memcpy/memmove per request, by calling function (a uprobe on
      # the variant this CPU uses; needs perf with uprobes). Slow: the probe fires per copy.
      libc=$(ldd "$(command -v "${PROXY[0]}")" | awk '/libc.so/{print $3}')
      sym=""
      for cand in __memmove_avx512_unaligned_erms __memmove_evex_unaligned_erms __memmove_avx_unaligned_erms __memmove_sse2_unaligned_erms; do
        perf probe -q -x "$libc" -a "capstan_copy=$cand size=%dx:u64" 2>/dev/null && { sym=$cand; break; }
        perf probe -q -l 2>/dev/null | grep -q capstan_copy && { sym=$cand; break; }
      done
      [[ -n $sym ]] || { log "no memmove variant could be probed in $libc"; exit 1; }
      perf record -e probe_libc:capstan_copy --call-graph dwarf,1024 -o "$OUT/$target.copies.perf" -p $pid >/dev/null 2>&1 &
      rec=$!
      sleep 1
      "$OHA" "${OHA_ARGS[@]}" -n 5000 -c 16 --no-tui -j "http://127.0.0.1:$port/" >"$WORK/oha.json"
      kill -INT $rec; wait $rec || true
      perf probe -q -d probe_libc:capstan_copy >/dev/null 2>&1 || true
      perf script -i "$OUT/$target.copies.perf" -F trace,ip,sym 2>/dev/null | python3 -c '
import collections, re, sys
by, total, calls, samples = collections.defaultdict(collections.Counter), 0, 0, sys.stdin.read().split("\n\n")
for blk in samples:
    m = re.search(r"size=(\d+)", blk)
    if not m:
        continue
    size = int(m.group(1))
    frames = [re.sub(r"^[0-9a-f]+\s+", "", l.strip()) for l in blk.split("\n")[1:] if l.strip()]
    caller = next((f for f in frames if "memmove" not in f and "memcpy" not in f), "?")
    by[caller[:100]][size] += 1
    total += size
    calls += 1
n = int(sys.argv[1])
print(f"{sys.argv[2]}: {total / n:,.0f} bytes copied per request in {calls / n:.1f} calls")
for caller, sizes in sorted(by.items(), key=lambda kv: -sum(s * c for s, c in kv[1].items()))[:12]:
    top = ", ".join(f"{s} B x{c / n:.2f}" for s, c in sorted(sizes.items(), key=lambda sc: -sc[0] * sc[1])[:5])
    print(f"  {sum(s * c for s, c in sizes.items()) / n:8,.0f} B/request  {caller}  ({top})")
' 5000 "$target"
      ;;
    perf)
      perf record -F 2000 -g --call-graph dwarf,16384 -o "$OUT/$target.perf.data" -p $pid 2>/dev/null &
      rec=$!
      sleep 0.5
      "$OHA" "${OHA_ARGS[@]}" -n "$N" -c 16 --no-tui -j "http://127.0.0.1:$port/" >"$WORK/oha.json"
      kill -INT $rec; wait $rec || true
      log "$target: perf report -i $OUT/$target.perf.data --no-children"
      ;;
  esac
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  ok:', sum(d.get('statusCodeDistribution',{}).values()), 'errors:', sum(d.get('errorDistribution',{}).values()))" "$WORK/oha.json"
  kill $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
done
