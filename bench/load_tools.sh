# shellcheck shell=bash
# The load generator and the Debian packages the benchmarks drive traffic with, pinned and
# cached, in one place (sourced by bench/proxy.sh, proxy_mtls.sh, proxy_profile.sh,
# pgo_proxy.sh and webhook.sh).
#
#   need_oha                   # sets OHA: oha $OHA_VERSION, `cargo install`ed once into the cache
#   need_apt COMMAND PACKAGE   # apt-get install PACKAGE unless COMMAND is on PATH
OHA_VERSION=1.8.0
TOOLS_CACHE="${CAPSTAN_TOOLS_CACHE:-$HOME/.cache/capstan-tools}"
OHA="$TOOLS_CACHE/oha-$OHA_VERSION/bin/oha"

need_oha() {
  if [[ ! -x $OHA ]]; then
    printf '[bench] cargo install oha %s\n' "$OHA_VERSION" >&2
    cargo install oha --version "$OHA_VERSION" --locked --root "$TOOLS_CACHE/oha-$OHA_VERSION" >&2
  fi
}

need_apt() {
  if ! command -v "$1" >/dev/null; then
    printf '[bench] apt-get install %s\n' "$2" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
  fi
}
