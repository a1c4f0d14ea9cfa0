#!/usr/bin/env bash
# Stops the processes tests/infra/up.sh started (by their pid files in target/infra/pids).
# Safe to call twice, and when nothing is running. Logs stay in target/infra/logs.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="$ROOT/target/infra"
PIDS="$DIR/pids"

log() { printf '[down] %s\n' "$*" >&2; }

[[ -d $PIDS ]] || { log "nothing to stop"; exit 0; }
rm -f "$DIR/env"

# Expected executable name per pid file, so a reused pid is never killed by mistake.
expect() {
  case $1 in
    watchdog) echo "bash" ;;
    *) echo "$1" ;;
  esac
}

stopped=0
# The watchdog goes first (it may itself be running this script: never kill our own ancestor).
for name in watchdog kube-apiserver consul etcd; do
  f="$PIDS/$name.pid"
  [[ -f $f ]] || continue
  pid="$(cat "$f")"
  rm -f "$f"
  [[ $pid =~ ^[0-9]+$ ]] || continue
  if [[ $pid == "$$" || $pid == "$PPID" ]]; then continue; fi
  kill -0 "$pid" 2>/dev/null || continue
  exe="$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null || echo '?')")"
  if [[ $exe != "$(expect "$name")" ]]; then
    log "pid $pid ($name) is now '$exe', not ours: leaving it alone"
    continue
  fi
  if [[ $name == watchdog ]]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not stop within 10s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "stopped $name (pid $pid)"
  stopped=$((stopped + 1))
done
log "done ($stopped stopped)"
