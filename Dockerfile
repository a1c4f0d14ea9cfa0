# syntax=docker/dockerfile:1
# The `capstan` image: `capstan discovery` (the chart's Deployment), `capstan proxy-init` (the
# injected istio-init, which needs iptables) and `capstan-proxy` (the injected istio-proxy: the
# data plane alone, so the sidecar maps no control-plane code; `capstan proxy` is the same).
# Build: docker build -t capstan:0.1.0 .   (docs/operations.md)

# ---- build: the `dist` profile (release with whole-program LTO), with the committed Cargo.lock.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist -p capstan -p capstan-proxy --locked \
 && install -D -m 0755 target/dist/capstan /out/capstan \
 && install -D -m 0755 target/dist/capstan-proxy /out/capstan-proxy

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
