# syntax=docker/dockerfile:1
# The `capstan` image: `capstan discovery` (the chart's Deployment), `capstan proxy-init` (the
# injected istio-init, which needs iptables) and `capstan-proxy` (the injected istio-proxy: the
# data plane alone, so the sidecar maps no control-plane code; `capstan proxy` is the same).
# Build: docker build -t capstan:0.1.0 .   (docs/operations.md)

# ---- build: the `dist` profile (release with whole-program LTO), with the committed Cargo.lock.
# `capstan-proxy` is built profile-guided (bench/pgo_proxy.sh: an instrumented build serves the
# benchmarks' HTTP/1.1, h2c and mTLS traffic on loopback, then the proxy is rebuilt with that
# profile; ~20 % fewer instructions per request, docs/benchmarks.md). `--build-arg PGO=0`
# builds it plainly, as `capstan` is.
FROM docker.io/library/rust:1.95-bookworm AS build
ARG PGO=1
WORKDIR /src
COPY . .
# llvm-profdata of rustc's LLVM (22, from bookworm-security), nginx (the training's backend) and
# what the benchmark scripts run (python3, curl).
RUN if [ "$PGO" = 1 ]; then apt-get update \
      && apt-get install -y --no-install-recommends llvm-22 nginx-light python3 curl \
      && rm -rf /var/lib/apt/lists/*; fi
# The caches keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist -p capstan -p capstan-proxy --locked \
 && install -D -m 0755 target/dist/capstan /out/capstan \
 && if [ "$PGO" = 1 ]; then \
      install -D -m 0755 "$(CAPSTAN=target/dist/capstan CAPSTAN_TOOLS_CACHE=target/tools-cache bench/pgo_proxy.sh)" /out/capstan-proxy; \
    else install -D -m 0755 target/dist/capstan-proxy /out/capstan-proxy; fi

# ---- runtime: Debian slim rather than distroless, because `capstan proxy-init` runs
# iptables-save / iptables-restore in the pod, and distroless images ship no iptables.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 capstan \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin capstan
COPY --from=build /out/capstan /out/capstan-proxy /usr/local/bin/
# Non-root by default (the chart runs discovery as 65532 too); the injected containers set
# their own users: istio-proxy 1337, istio-init root with NET_ADMIN/NET_RAW only.
USER 65532:65532
ENTRYPOINT ["capstan"]
CMD ["--help"]
