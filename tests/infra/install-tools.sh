#!/usr/bin/env bash
# Installs the real dependencies the end-to-end tests need, pinned and cached.
#
#   tests/infra/install-tools.sh            # everything
#   tests/infra/install-tools.sh kubernetes etcd   # only some (kubernetes etcd consul helm istio istio-pilot h2spec python node iptables)
#
# Go tools are built from the Go module proxy using the wrapper modules under
# tests/infra/go/<tool>/ (committed go.mod + go.sum) and cached under
#   ${CAPSTAN_TOOLS_CACHE:-~/.cache/capstan-tools}/<tool>-<version>-<goversion>/bin
# The Python virtualenv is cached under .../python-<requirements hash>-<python version>,
# and Node modules are installed into tests/clients/node/node_modules with `npm ci`.
# Each step is skipped when its result already exists. Finally writes target/tools/env
# (CAPSTAN_TOOLS_BIN, CAPSTAN_PYTHON, CAPSTAN_NODE_MODULES) and target/tools/bin (symlinks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
INFRA="$ROOT/tests/infra"
CACHE="${CAPSTAN_TOOLS_CACHE:-$HOME/.cache/capstan-tools}"
TOOLS_OUT="$ROOT/target/tools"

# ---- pinned versions (keep in sync with tests/infra/go/*/go.mod and docs/testing.md) ----
KUBERNETES_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
CONSUL_VERSION=v1.22.0
HELM_VERSION=v3.19.5
# istio.io/istio publishes no semver tags on the Go proxy: a pseudo-version of master.
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad
# h2spec (HTTP/2 conformance cases, RFC 7540/7541) publishes no go.mod: an +incompatible version.
H2SPEC_VERSION=v2.2.1+incompatible

log() { printf '[install-tools] %s\n' "$*" >&2; }
die() { printf '[install-tools] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE/logs" "$TOOLS_OUT"

# One installer per tool at a time (parallel test binaries / CI steps may call us concurrently).
with_lock() { # with_lock NAME CMD...
  local name=$1; shift
  (
    exec 9>"$CACHE/.lock-$name"
    flock -w 3600 9 || die "could not lock $CACHE/.lock-$name within 1h"
    "$@"
  )
}

now() { date +%s; }
TIMINGS=()
timed() { # timed NAME CMD...  (a failing CMD ends the script through set -e)
  local name=$1 start; shift
  start=$(now)
  "$@"
  TIMINGS+=("$name: $(( $(now) - start ))s")
}

# ---------------------------------------------------------------- Go tools
go_env_setup() {
  command -v go >/dev/null || die "go not found in PATH (needed to build kube-apiserver/etcd/consul/helm)"
  GOVERSION="$(go env GOVERSION)"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
  # go.sum is committed, so the checksum database is only needed for modules missing from it.
  # It is not reachable from this machine: do not consult it.
  export GOSUMDB=off
  export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
  # 2-core machine: build 2 packages at a time.
  GO_P="${CAPSTAN_GO_P:-$(nproc 2>/dev/null || echo 2)}"
}

# build_go TOOL VERSION "LDFLAGS" OUTNAME=PKG...
build_go() {
  local tool=$1 version=$2 ldflags=$3; shift 3
  local dir="$CACHE/$tool-$version-$GOVERSION" logf="$CACHE/logs/$tool-$version.log"
  local want=() spec
  for spec in "$@"; do want+=("${spec%%=*}"); done
  local missing=0 b
  for b in "${want[@]}"; do [[ -x "$dir/bin/$b" ]] || missing=1; done
  if [[ $missing == 0 ]]; then
    log "$tool $version: cached in $dir/bin (${want[*]})"
    return 0
  fi
  log "$tool $version: building ${want[*]} with $GOVERSION (-p $GO_P) — log: $logf"
  local tmp="$dir/bin.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  : >"$logf"
  local start; start=$(now)
  for spec in "$@"; do
    local out=${spec%%=*} pkg=${spec#*=}
    log "  go build $pkg -> $out"
    if ! (cd "$INFRA/go/$tool" && go build -p "$GO_P" -trimpath -ldflags "-s -w $ldflags" -o "$tmp/$out" "$pkg") >>"$logf" 2>&1; then
      log "$tool: BUILD FAILED for $pkg; last lines of $logf:"
      tail -n 40 "$logf" >&2
      rm -rf "$tmp"
      exit 1
    fi
  done
  # Per binary, so building one tool's second binary later (istio-pilot) keeps the first.
  mkdir -p "$dir/bin"
  for b in "${want[@]}"; do mv -f "$tmp/$b" "$dir/bin/$b"; done
  rm -rf "$tmp"
  log "$tool $version: built in $(( $(now) - start ))s -> $dir/bin"
}

install_kubernetes() {
  local v=$KUBERNETES_VERSION minor; minor=${v#v1.}; minor=${minor%%.*}
  local ld=""
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  build_go kubernetes "$v" "$ld" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kubectl=k8s.io/kubernetes/cmd/kubectl
}
install_etcd() { build_go etcd "$ETCD_VERSION" "" etcd=.; }
install_consul() {
  build_go consul "$CONSUL_VERSION" "-X github.com/hashicorp/consul/version.GitCommit=release-$CONSUL_VERSION" \
    consul=github.com/hashicorp/consul
}
# istioctl is the reference for `capstan validate` (crates/capstan/tests/validate_differential.rs).
istio_ldflags() {
  local p=istio.io/istio/pkg/version
  echo "-X $p.buildVersion=$ISTIO_VERSION -X $p.buildGitRevision=${ISTIO_VERSION##*-} -X $p.buildStatus=Clean -X $p.buildTag=$ISTIO_VERSION"
}
install_istio() { build_go istio "$ISTIO_VERSION" "$(istio_ldflags)" istioctl=istio.io/istio/istioctl/cmd/istioctl; }
# pilot-discovery (istiod), the reference of the istiod tests (crates/capstan/tests/
# metrics_parity.rs, proxy_accepts_istiod_xds.rs). Same module and cache key as istioctl,
# separate binary; built after it, it reuses most of its packages (see docs/testing.md).
install_istio-pilot() { build_go istio "$ISTIO_VERSION" "$(istio_ldflags)" pilot-discovery=istio.io/istio/pilot/cmd/pilot-discovery; }
# h2spec, the HTTP/2 conformance suite the proxy's HTTP/2 server is held to
# (crates/capstan/tests/proxy_h2spec.rs).
install_h2spec() { build_go h2spec "$H2SPEC_VERSION" "" h2spec=github.com/summerwind/h2spec/cmd/h2spec; }
install_helm() {
  build_go helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    helm=helm.sh/helm/v3/cmd/helm
}

# ---------------------------------------------------------------- Python
py_venv_path() {
  local req="$ROOT/tests/clients/python/requirements.txt" py="${CAPSTAN_PYTHON3:-python3}" pyver
  pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  echo "$CACHE/python-$(sha256sum "$req" | cut -c1-12)-py$pyver"
}
install_python() {
  local req="$ROOT/tests/clients/python/requirements.txt"
  [[ -f $req ]] || die "missing $req"
  local py="${CAPSTAN_PYTHON3:-python3}" hash
  command -v "$py" >/dev/null || die "$py not found (needed for the Python gRPC clients)"
  hash="$(sha256sum "$req" | cut -c1-12)"
  PY_VENV="$(py_venv_path)"
  if [[ -f $PY_VENV/.complete && -x $PY_VENV/bin/python ]]; then
    log "python: cached venv $PY_VENV"
    return 0
  fi
  log "python: creating venv $PY_VENV from $req"
  local logf="$CACHE/logs/python-$hash.log"
  rm -rf "$PY_VENV"
  if ! { "$py" -m venv "$PY_VENV" &&
         "$PY_VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req"; } >"$logf" 2>&1; then
    log "python: venv install FAILED; last lines of $logf:"; tail -n 40 "$logf" >&2
    rm -rf "$PY_VENV"; exit 1
  fi
  "$PY_VENV/bin/python" -c 'import grpc, grpc_tools, google.protobuf; print("grpcio", grpc.__version__)' >&2 ||
    die "python venv is broken"
  touch "$PY_VENV/.complete"
}

# ---------------------------------------------------------------- Node
install_node() {
  local dir="$ROOT/tests/clients/node"
  [[ -f $dir/package-lock.json ]] || die "missing $dir/package-lock.json"
  command -v npm >/dev/null || die "npm not found (needed for the Node gRPC clients)"
  local hash stamp="$dir/node_modules/.capstan-lock-hash"
  hash="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -c1-16)"
  if [[ -f $stamp && "$(cat "$stamp")" == "$hash" ]]; then
    log "node: node_modules up to date ($dir/node_modules)"
    return 0
  fi
  log "node: npm ci in $dir"
  local logf="$CACHE/logs/node.log"
  if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$logf" 2>&1; then
    log "node: npm ci FAILED; last lines of $logf:"; tail -n 40 "$logf" >&2; exit 1
  fi
  echo "$hash" >"$stamp"
}

# ---------------------------------------------------------------- iptables
# The traffic-capture test redirects a network namespace's traffic to `capstan proxy` with
# iptables, as Istio's init container does. Debian's package; needs root (the test is skipped,
# loudly, without it).
install_iptables() {
  if command -v iptables >/dev/null 2>&1; then
    log "iptables: $(iptables --version)"
    return 0
  fi
  if [[ $(id -u) != 0 ]]; then
    log "iptables: not installed and not root: the capture test will be skipped"
    return 0
  fi
  log "iptables: apt-get install iptables"
  local logf="$CACHE/logs/iptables.log"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iptables; } >"$logf" 2>&1; then
    log "iptables: install FAILED; last lines of $logf:"; tail -n 20 "$logf" >&2; exit 1
  fi
  log "iptables: $(iptables --version)"
}

# ---------------------------------------------------------------- main
ALL=(kubernetes etcd consul helm istio istio-pilot h2spec python node iptables)
if [[ $# -gt 0 ]]; then SEL=("$@"); else SEL=("${ALL[@]}"); fi

total_start=$(now)
go_env_setup
for t in "${SEL[@]}"; do
  case $t in
    kubernetes|etcd|consul|helm|istio|istio-pilot|h2spec|python|node|iptables) timed "$t" with_lock "${t%%-*}" "install_$t" ;;
    *) die "unknown tool '$t' (known: ${ALL[*]})" ;;
  esac
done

# Repo-local view of the tools: target/tools/bin symlinks + target/tools/env.
write_env() {
  local bin="$TOOLS_OUT/bin"
  mkdir -p "$bin"
  local pair
  for pair in "kubernetes:$KUBERNETES_VERSION:kube-apiserver" "kubernetes:$KUBERNETES_VERSION:kubectl" \
              "etcd:$ETCD_VERSION:etcd" "consul:$CONSUL_VERSION:consul" "helm:$HELM_VERSION:helm" \
              "istio:$ISTIO_VERSION:istioctl" "istio:$ISTIO_VERSION:pilot-discovery" \
              "h2spec:$H2SPEC_VERSION:h2spec"; do
    IFS=: read -r tool ver name <<<"$pair"
    local src="$CACHE/$tool-$ver-$GOVERSION/bin/$name"
    if [[ -x $src ]]; then ln -sfn "$src" "$bin/$name"; fi
  done
  local py_venv; py_venv="$(py_venv_path)"
  {
    echo "# written by tests/infra/install-tools.sh"
    echo "export CAPSTAN_TOOLS_BIN='$bin'"
    echo "export CAPSTAN_PYTHON='$py_venv/bin/python'"
    echo "export CAPSTAN_NODE_MODULES='$ROOT/tests/clients/node/node_modules'"
    echo "export CAPSTAN_KUBERNETES_VERSION='$KUBERNETES_VERSION'"
    echo "export CAPSTAN_ETCD_VERSION='$ETCD_VERSION'"
    echo "export CAPSTAN_CONSUL_VERSION='$CONSUL_VERSION'"
    echo "export CAPSTAN_HELM_VERSION='$HELM_VERSION'"
    echo "export CAPSTAN_ISTIO_VERSION='$ISTIO_VERSION'"
    echo "export CAPSTAN_H2SPEC_VERSION='$H2SPEC_VERSION'"
  } >"$TOOLS_OUT/env.tmp"
  mv "$TOOLS_OUT/env.tmp" "$TOOLS_OUT/env"
}
write_env
log "timings: ${TIMINGS[*]} (total $(( $(now) - total_start ))s)"
log "tools: $TOOLS_OUT/bin  env: $TOOLS_OUT/env"
