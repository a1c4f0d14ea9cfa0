# shellcheck shell=bash
# The mesh the proxy benchmarks route (sourced by bench/proxy.sh and bench/proxy_profile.sh):
# one service with two endpoints labelled v1 and v2, a Gateway on the proxy's port, and a
# VirtualService splitting 80/20 between the two subsets.
#
#   write_gateway_mesh DIR GATEWAY_PORT V1_PORT V2_PORT
# writes DIR/registry.yaml (the file registry) and DIR/config/mesh.yaml (the Istio config).
write_gateway_mesh() {
  local dir=$1 gateway=$2 v1=$3 v2=$4
  mkdir -p "$dir/config"
  cat >"$dir/registry.yaml" <<YAML
services:
- hostname: reviews.default.svc.cluster.local
  namespace: default
  ports: [{name: http, port: 9080}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: $v1}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: $v2}, labels: {version: v2}}
YAML
  cat >"$dir/config/mesh.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: $gateway, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: ['*']
  gateways: [web]
  http:
  - route:
    - {destination: {host: reviews.default.svc.cluster.local, subset: v1}, weight: 80}
    - {destination: {host: reviews.default.svc.cluster.local, subset: v2}, weight: 20}
YAML
}
