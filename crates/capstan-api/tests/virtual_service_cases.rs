//! VirtualService validation cases: one or more per rule ported from Istio's
//! `pkg/config/validation` (errors with field paths, warnings apart), decoding errors, and a
//! rich round trip.

mod support;
use support::{assert_round_trip, run_cases, Case, Expect};

#[test]
fn top_level_hosts_gateways_and_delegates() {
    run_cases(&[
        Case {
            name: "no routes at all",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
"#,
            expect: Expect::Errors(&[(r#"spec"#, r#"http, tcp or tls must be provided"#)]),
        },
        Case {
            name: "delegate with gateways",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  gateways:
  - mygateway
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.gateways"#,
                r#"delegate virtual service must have no gateways"#,
            )]),
        },
        Case {
            name: "delegate with tcp",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  tcp:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.tcp"#,
                r#"delegate virtual service must have no tcp route"#,
            )]),
        },
        Case {
            name: "delegate with tls",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  tls:
  - match:
    - sniHosts:
      - a.example.com
    route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.tls"#,
                r#"delegate virtual service must have no tls route"#,
            )]),
        },
        Case {
            name: "delegate route cannot delegate again",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  http:
  - delegate:
      name: other
    route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].delegate"#,
                r#"delegate HTTP route cannot contain delegate"#,
            )]),
        },
        Case {
            name: "root route with route",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - bookinfo.com
  http:
  - name: root
    delegate:
      name: productpage
    route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route"#,
                r#"root HTTP route root must not specify route"#,
            )]),
        },
        Case {
            name: "root route with redirect",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - bookinfo.com
  http:
  - delegate:
      name: productpage
    redirect:
      uri: /x
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].redirect"#, r#"must not specify redirect"#)]),
        },
        Case {
            name: "invalid host",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - -bad.example.com
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.hosts[0]"#, r#"invalid"#)]),
        },
        Case {
            name: "partial wildcard host",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - foo.*.com
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.hosts[0]"#, r#"invalid"#)]),
        },
        Case {
            name: "wildcard host bound to mesh",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*"
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.hosts[0]"#,
                r#"wildcard host * is not allowed for virtual services bound to the mesh gateway"#,
            )]),
        },
        Case {
            name: "wildcard host bound to gateway and mesh",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*"
  gateways:
  - gw
  - mesh
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.hosts[0]"#, r#"wildcard host *"#)]),
        },
        Case {
            name: "duplicate hosts",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  - reviews
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.hosts[1]"#,
                r#"duplicate hosts in virtual service: reviews & reviews"#,
            )]),
        },
        Case {
            name: "overlapping wildcard hosts",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*.foo.com"
  - "*.com"
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.hosts[1]"#, r#"duplicate hosts"#)]),
        },
        Case {
            name: "gateway name invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews.example.com
  gateways:
  - istio-system/Bad_Gateway
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.gateways[0]"#, r#"invalid value for gateway name"#)]),
        },
        Case {
            name: "gateway namespace invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews.example.com
  gateways:
  - bad_ns/gw
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.gateways[0]"#, r#"invalid value for namespace"#)]),
        },
        Case {
            name: "gateway namespace empty",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews.example.com
  gateways:
  - /gw
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.gateways[0]"#,
                r#"config namespace and gateway name cannot be empty"#,
            )]),
        },
        Case {
            name: "gateway short name invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews.example.com
  gateways:
  - my_gw
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.gateways[0]"#, r#"invalid"#)]),
        },
        Case {
            name: "legacy gateway name format warns",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews.example.com
  gateways:
  - my-gateway.istio-system.svc.cluster.local
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Warnings(&[(
                r#"spec.gateways[0]"#,
                r#"prefer the <namespace>/<name> format: "istio-system/my-gateway""#,
            )]),
        },
        Case {
            name: "export to invalid namespace",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  exportTo:
  - Bad_NS
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.exportTo[0]"#, r#"exportTo"#)]),
        },
        Case {
            name: "export to no one is for service entries",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  exportTo:
  - "~"
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.exportTo[0]"#,
                r#"only allowed for service entries"#,
            )]),
        },
        Case {
            name: "IP hosts are accepted",
            yaml: r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - 192.168.1.10
  - "2001:db8::1"
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Valid,
        },
    ]);
}

#[test]
fn route_kinds_destinations_and_weights() {
    run_cases(&[
        Case {
            name: "no route, redirect or direct response",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - timeout: 1s
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0]"#,
                r#"HTTP route, redirect or direct_response is required"#,
            )]),
        },
        Case {
            name: "route and redirect",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - redirect:
      uri: /v2
    route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].route"#, r#"both route and redirect"#)]),
        },
        Case {
            name: "fault and redirect",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - redirect:
      uri: /v2
    fault:
      abort:
        httpStatus: 500
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].fault"#, r#"both fault and redirect"#)]),
        },
        Case {
            name: "rewrite and redirect",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - redirect:
      uri: /v2
    rewrite:
      uri: /v3
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].rewrite"#, r#"both rewrite and redirect"#)]),
        },
        Case {
            name: "direct response and redirect",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - redirect:
      uri: /v2
    directResponse:
      status: 200
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].directResponse"#,
                r#"both direct_response and redirect"#,
            )]),
        },
        Case {
            name: "route and direct response",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - directResponse:
      status: 200
    route:
    - destination:
        host: reviews
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route"#,
                r#"both route and direct_response"#,
            )]),
        },
        Case {
            name: "fault and direct response",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - directResponse:
      status: 200
    fault:
      delay:
        fixedDelay: 1s
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault"#,
                r#"both fault and direct_response"#,
            )]),
        },
        Case {
            name: "rewrite and direct response",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - directResponse:
      status: 200
    rewrite:
      uri: /x
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].rewrite"#,
                r#"both rewrite and direct_response"#,
            )]),
        },
        Case {
            name: "mirror and mirrors",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
    mirror:
      host: reviews-shadow
    mirrors:
    - destination:
        host: reviews-shadow2
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].mirrors"#, r#"both mirror and mirrors"#)]),
        },
        Case {
            name: "negative weight (upstream invalid dataset)",
            yaml: r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
        subset: v1
      weight: 75
    - destination:
        host: c
        subset: v2
      weight: -15
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].route[1].weight"#, r#"weight -15 < 0"#)]),
        },
        Case {
            name: "all weights zero",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
        subset: v1
    - destination:
        host: c
        subset: v2
      weight: 0
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].route"#, r#"total destination weight = 0"#)]),
        },
        Case {
            name: "destination missing",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - weight: 100
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route[0].destination"#,
                r#"destination is required"#,
            )]),
        },
        Case {
            name: "destination host wildcard",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: "*"
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route[0].destination.host"#,
                r#"invalid destination host *"#,
            )]),
        },
        Case {
            name: "destination host empty",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        subset: v1
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route[0].destination.host"#,
                r#"empty domain name not allowed"#,
            )]),
        },
        Case {
            name: "destination host invalid label",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: reviews..default
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].route[0].destination.host"#, r#"invalid"#)]),
        },
        Case {
            name: "destination subset invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
        subset: v1_beta
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route[0].destination.subset"#,
                r#"subset name is invalid: v1_beta"#,
            )]),
        },
        Case {
            name: "destination port zero",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
        port:
          number: 0
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route[0].destination.port.number"#,
                r#"port number 0 must be in the range 1..65535"#,
            )]),
        },
        Case {
            name: "destination port too large",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
        port:
          number: 70000
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route[0].destination.port.number"#,
                r#"1..65535"#,
            )]),
        },
        Case {
            name: "timeout below 1ms",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - timeout: 0s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].timeout"#,
                r#"duration must be greater than 1ms"#,
            )]),
        },
        Case {
            name: "timeout not in whole ms",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - timeout: 1500us
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].timeout"#, r#"ms precision"#)]),
        },
    ]);
}

#[test]
fn http_matches() {
    run_cases(&[
        Case {
            name: "match header name invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - headers:
        "x user":
          exact: a
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].headers[x user]"#,
                r#"is not a valid header name"#,
            )]),
        },
        Case {
            name: "match header empty prefix",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - headers:
        end-user:
          prefix: ""
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].headers[end-user].prefix"#,
                r#"prefix string match should not be empty"#,
            )]),
        },
        Case {
            name: "uri empty prefix is allowed, scheme is not",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - uri:
        prefix: ""
      scheme:
        prefix: ""
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].scheme.prefix"#,
                r#""scheme": prefix string match should not be empty"#,
            )]),
        },
        Case {
            name: "uri regex look-ahead is not RE2",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - uri:
        regex: "^(?!/admin).*"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].uri.regex"#,
                r#"Istio uses RE2 style regex"#,
            )]),
        },
        Case {
            name: "empty regex",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - method:
        regex: ""
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].method.regex"#,
                r#"regex string match should not be empty"#,
            )]),
        },
        Case {
            name: "string match with two alternatives",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - uri:
        exact: /a
        prefix: /b
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].uri"#,
                r#"only one of exact, prefix or regex"#,
            )]),
        },
        Case {
            name: "withoutHeaders invalid regex",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - withoutHeaders:
        x-canary:
          regex: "("
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].withoutHeaders[x-canary].regex"#,
                r#"withoutHeaders"#,
            )]),
        },
        Case {
            name: "queryParams invalid regex",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - queryParams:
        id:
          regex: "[0-9"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].queryParams[id].regex"#,
                r#"queryParams"#,
            )]),
        },
        Case {
            name: "authority empty prefix",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - authority:
        prefix: ""
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].authority.prefix"#,
                r#"prefix string match should not be empty"#,
            )]),
        },
        Case {
            name: "match port out of range",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - port: 70000
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].match[0].port"#, r#"1..65535"#)]),
        },
        Case {
            name: "match sourceLabels invalid key",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - sourceLabels:
        "-app": web
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].sourceLabels[-app]"#,
                r#"invalid label key"#,
            )]),
        },
        Case {
            name: "match sourceLabels invalid value",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - sourceLabels:
        app: "has space"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].sourceLabels[app]"#,
                r#"invalid label value"#,
            )]),
        },
        Case {
            name: "match sourceNamespace invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - sourceNamespace: Bad_NS
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].sourceNamespace"#,
                r#"sourceNamespace match Bad_NS is invalid"#,
            )]),
        },
        Case {
            name: "match gateways invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - gateways:
      - ns/Bad_Gw
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].gateways[0]"#,
                r#"invalid value for gateway name"#,
            )]),
        },
        Case {
            name: "jwt claim routing needs a gateway",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - headers:
        "@request.auth.claims.groups":
          exact: admin
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].headers[@request.auth.claims.groups]"#,
                r#"JWT claim based routing"#,
            )]),
        },
        Case {
            name: "regex too long",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - uri:
        regex: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].uri.regex"#,
                r#"regex is too large, max length allowed is 1024"#,
            )]),
        },
    ]);
}

#[test]
fn header_operations() {
    run_cases(&[
        Case {
            name: "request set pseudo header",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - headers:
      request:
        set:
          ":path": /x
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].headers.request.set[:path]"#,
                r#"header cannot have ":" prefix"#,
            )]),
        },
        Case {
            name: "response set host",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - headers:
      response:
        set:
          Host: x
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].headers.response.set[Host]"#,
                r#"cannot set Host header"#,
            )]),
        },
        Case {
            name: "request remove authority",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - headers:
      request:
        remove:
        - ":authority"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].headers.request.remove[0]"#,
                r#"header cannot have ":" prefix"#,
            )]),
        },
        Case {
            name: "header value with unterminated variable",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - headers:
      request:
        add:
          x-cost: "abc%123"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].headers.request.add[x-cost]"#,
                r#"Un-terminated variable expression"#,
            )]),
        },
        Case {
            name: "header value with control character",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - headers:
      response:
        add:
          x-a: "a\u0001b"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].headers.response.add[x-a]"#,
                r#"header value configuration"#,
            )]),
        },
        Case {
            name: "authority rewritten twice",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - rewrite:
      authority: a.example.com
    headers:
      request:
        set:
          host: b.example.com
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].headers.request.set[host]"#,
                r#"authority header cannot be set multiple times"#,
            )]),
        },
        Case {
            name: "destination header operation invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
      headers:
        response:
          add:
            host: x
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].route[0].headers.response.add[host]"#,
                r#"cannot set Host header"#,
            )]),
        },
        Case {
            name: "empty header name to remove",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - headers:
      response:
        remove:
        - ""
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].headers.response.remove[0]"#,
                r#"header name cannot be empty"#,
            )]),
        },
    ]);
}

#[test]
fn cors_policies() {
    run_cases(&[
        Case {
            name: "cors allowOrigins empty",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      allowOrigins:
      - exact: ""
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].corsPolicy.allowOrigins[0]"#,
                r#"is not a valid match type for CORS allow origins"#,
            )]),
        },
        Case {
            name: "cors allowOrigins invalid regex",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      allowOrigins:
      - regex: "(?<=x)y"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].corsPolicy.allowOrigins[0].regex"#,
                r#"corsPolicy.allowOrigins"#,
            )]),
        },
        Case {
            name: "cors unsupported method",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      allowMethods:
      - FETCH
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].corsPolicy.allowMethods[0]"#,
                r#""FETCH" is not a supported HTTP method"#,
            )]),
        },
        Case {
            name: "cors invalid allow header",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      allowHeaders:
      - "bad header"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].corsPolicy.allowHeaders[0]"#,
                r#"is not a valid header name"#,
            )]),
        },
        Case {
            name: "cors invalid expose header",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      exposeHeaders:
      - "x(y)"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].corsPolicy.exposeHeaders[0]"#,
                r#"is not a valid header name"#,
            )]),
        },
        Case {
            name: "cors maxAge with fractional seconds",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      maxAge: 1.5s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].corsPolicy.maxAge"#,
                r#"accurate only to seconds precision"#,
            )]),
        },
        Case {
            name: "cors maxAge zero",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      maxAge: 0s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].corsPolicy.maxAge"#, r#"greater than 1ms"#)]),
        },
        Case {
            name: "cors deprecated allowOrigin warns",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      allowOrigin:
      - example.com
      allowMethods:
      - "*"
      allowHeaders:
      - "*"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[0].corsPolicy.allowOrigin"#,
                r#"deprecated"#,
            )]),
        },
    ]);
}

#[test]
fn fault_injection() {
    run_cases(&[
        Case {
            name: "fault without abort or delay",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault: {}
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault"#,
                r#"must have an abort and/or a delay"#,
            )]),
        },
        Case {
            name: "abort percentage over 100",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        httpStatus: 503
        percentage:
          value: 150
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.abort.percentage"#,
                r#"is neither 0.0, nor in range [0.0001, 100.0]"#,
            )]),
        },
        Case {
            name: "abort percentage too small",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        httpStatus: 503
        percentage:
          value: 0.00001
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.abort.percentage"#,
                r#"is neither 0.0"#,
            )]),
        },
        Case {
            name: "abort http status too large",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        httpStatus: 700
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.abort.httpStatus"#,
                r#"HTTP status 700 is not in range 200-599"#,
            )]),
        },
        Case {
            name: "abort http status too small",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        httpStatus: 199
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.abort.httpStatus"#,
                r#"not in range 200-599"#,
            )]),
        },
        Case {
            name: "abort unknown grpc status",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        grpcStatus: BOGUS
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.abort.grpcStatus"#,
                r#"gRPC status "BOGUS" is not supported"#,
            )]),
        },
        Case {
            name: "abort http2 error unsupported",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        http2Error: PROTOCOL_ERROR
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.abort.http2Error"#,
                r#"HTTP/2 abort fault injection not supported yet"#,
            )]),
        },
        Case {
            name: "abort with two error types",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        httpStatus: 503
        grpcStatus: UNAVAILABLE
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.abort"#,
                r#"only one of httpStatus, grpcStatus or http2Error"#,
            )]),
        },
        Case {
            name: "abort without error type warns",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      abort:
        percentage:
          value: 5
    route:
    - destination:
        host: c
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[0].fault.abort"#,
                r#"abort configured, but error type not set"#,
            )]),
        },
        Case {
            name: "delay below 1ms",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      delay:
        fixedDelay: 500us
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.delay.fixedDelay"#,
                r#"greater than 1ms"#,
            )]),
        },
        Case {
            name: "delay not whole ms",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      delay:
        fixedDelay: 1.0005s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.delay.fixedDelay"#,
                r#"ms precision"#,
            )]),
        },
        Case {
            name: "exponential delay unsupported",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      delay:
        exponentialDelay: 1s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.delay.exponentialDelay"#,
                r#"exponentialDelay not supported yet"#,
            )]),
        },
        Case {
            name: "delay with fixed and exponential",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      delay:
        fixedDelay: 1s
        exponentialDelay: 1s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].fault.delay"#,
                r#"only one of fixedDelay or exponentialDelay"#,
            )]),
        },
        Case {
            // Istio does not range-check the deprecated field (found by differential fuzzing
            // against istioctl); the route clamps it.
            name: "deprecated delay percent out of range warns",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      delay:
        percent: 150
        fixedDelay: 1s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[0].fault.delay.percent"#,
                r#"percentage 150 is not in range 0..100; it is clamped"#,
            )]),
        },
        Case {
            name: "deprecated delay percent warns",
            yaml: r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - fault:
      delay:
        percent: 10
        fixedDelay: 1s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[0].fault.delay.percent"#,
                r#"deprecated setting "percent""#,
            )]),
        },
    ]);
}

#[test]
fn retries() {
    run_cases(&[
        Case {
            name: "negative attempts",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - retries:
      attempts: -1
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].retries.attempts"#,
                r#"attempts cannot be negative"#,
            )]),
        },
        Case {
            name: "retry policy with zero attempts",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - retries:
      perTryTimeout: 2s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].retries"#,
                r#"http retry policy configured when attempts are set to 0 (disabled)"#,
            )]),
        },
        Case {
            name: "unknown retryOn policy",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - retries:
      attempts: 2
      retryOn: 5xx,bogus
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].retries.retryOn"#,
                r#""bogus" is not a valid retryOn policy"#,
            )]),
        },
        Case {
            name: "unknown retryOn status code",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - retries:
      attempts: 2
      retryOn: "599"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].retries.retryOn"#,
                r#""599" is not a valid retryOn policy"#,
            )]),
        },
        Case {
            name: "retryOn with a space",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - retries:
      attempts: 2
      retryOn: "5xx, reset"
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].retries.retryOn"#,
                r#"" reset" is not a valid retryOn policy"#,
            )]),
        },
        Case {
            name: "perTryTimeout zero",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - retries:
      attempts: 2
      perTryTimeout: 0s
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].retries.perTryTimeout"#,
                r#"greater than 1ms"#,
            )]),
        },
        Case {
            name: "backoff below 1ms",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - retries:
      attempts: 2
      backoff: 100us
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].retries.backoff"#, r#"greater than 1ms"#)]),
        },
    ]);
}

#[test]
fn mirroring() {
    run_cases(&[
        Case {
            name: "deprecated mirrorPercent over 100",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirror:
      host: c-shadow
    mirrorPercent: 150
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].mirrorPercent"#,
                r#"mirror_percent must have a max value of 100 (it has 150)"#,
            )]),
        },
        Case {
            name: "deprecated mirrorPercent warns",
            yaml: r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirror:
      host: c-shadow
    mirrorPercent: 50
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[0].mirrorPercent"#,
                r#"deprecated setting "mirrorPercent""#,
            )]),
        },
        Case {
            name: "mirrorPercentage over 100",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirror:
      host: c-shadow
    mirrorPercentage:
      value: 100.5
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].mirrorPercentage"#,
                r#"mirror_percentage must have a max value of 100"#,
            )]),
        },
        Case {
            name: "mirrorPercentage negative",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirror:
      host: c-shadow
    mirrorPercentage:
      value: -1
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].mirrorPercentage"#,
                r#"must have a min value of 0"#,
            )]),
        },
        Case {
            name: "mirror host invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirror:
      host: "*"
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].mirror.host"#,
                r#"invalid destination host"#,
            )]),
        },
        Case {
            name: "mirrors without destination",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirrors:
    - percentage:
        value: 10
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].mirrors[0].destination"#,
                r#"destination is required for mirrors"#,
            )]),
        },
        Case {
            name: "mirrors percentage over 100",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirrors:
    - destination:
        host: c-shadow
      percentage:
        value: 200
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].mirrors[0].percentage"#,
                r#"mirror percentage must have a max value of 100"#,
            )]),
        },
    ]);
}

#[test]
fn redirects_direct_responses_and_rewrites() {
    run_cases(&[
        Case {
            name: "empty redirect",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - redirect: {}
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].redirect"#,
                r#"redirect must specify URI, authority, scheme, or port"#,
            )]),
        },
        Case {
            name: "redirect code not 3xx",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - redirect:
      uri: /x
      redirectCode: 200
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].redirect.redirectCode"#,
                r#"200 is not a valid redirect code, must be 3xx"#,
            )]),
        },
        Case {
            name: "redirect scheme invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - redirect:
      scheme: ftp
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].redirect.scheme"#,
                r#"must be "http" or "https""#,
            )]),
        },
        Case {
            name: "redirect port out of range",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - redirect:
      port: 70000
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].redirect.port"#, r#"1..65535"#)]),
        },
        Case {
            name: "redirect port and derivePort",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - redirect:
      port: 8443
      derivePort: FROM_REQUEST_PORT
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].redirect"#,
                r#"only one of port or derivePort"#,
            )]),
        },
        Case {
            name: "direct response status out of range",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - directResponse:
      status: 700
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].directResponse.status"#,
                r#"HTTP status 700 is not in range 200-599"#,
            )]),
        },
        Case {
            name: "direct response status missing",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - directResponse:
      body:
        string: hi
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].directResponse.status"#,
                r#"HTTP status 0"#,
            )]),
        },
        Case {
            name: "direct response string and bytes",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - directResponse:
      status: 200
      body:
        string: hi
        bytes: aGk=
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].directResponse.body"#,
                r#"only one of string or bytes"#,
            )]),
        },
        Case {
            name: "direct response bytes not base64",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - directResponse:
      status: 200
      body:
        bytes: "not base64!"
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].directResponse.body.bytes"#, r#"base64"#)]),
        },
        Case {
            name: "empty rewrite",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - rewrite: {}
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].rewrite"#,
                r#"rewrite must specify at least one of URI, UriRegexRewrite, or authority"#,
            )]),
        },
        Case {
            name: "rewrite uri and regex rewrite",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - rewrite:
      uri: /x
      uriRegexRewrite:
        match: ^/a
        rewrite: /b
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].rewrite"#,
                r#"rewrite may only contain one of URI or UriRegexRewrite"#,
            )]),
        },
        Case {
            name: "regex rewrite missing rewrite",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - rewrite:
      uriRegexRewrite:
        match: ^/a
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].rewrite.uriRegexRewrite"#,
                r#"requires both Rewrite and Match"#,
            )]),
        },
        Case {
            name: "regex rewrite invalid regex",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - rewrite:
      uriRegexRewrite:
        match: "(a"
        rewrite: /b
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].rewrite.uriRegexRewrite.match"#,
                r#"HTTPRewrite.UriRegexRewrite.Match"#,
            )]),
        },
    ]);
}

#[test]
fn tls_and_tcp_routes() {
    run_cases(&[
        Case {
            name: "tls route without match",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - a.example.com
  tls:
  - route:
    - destination:
        host: a
"#,
            expect: Expect::Errors(&[(
                r#"spec.tls[0].match"#,
                r#"TLS route must have at least one match condition"#,
            )]),
        },
        Case {
            name: "tls match without sni hosts",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - a.example.com
  tls:
  - match:
    - port: 443
    route:
    - destination:
        host: a
"#,
            expect: Expect::Errors(&[(
                r#"spec.tls[0].match[0].sniHosts"#,
                r#"TLS match must have at least one SNI host"#,
            )]),
        },
        Case {
            name: "sni host outside the virtual service hosts",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*.bookinfo.com"
  gateways:
  - mygateway
  tls:
  - match:
    - sniHosts:
      - login.example.com
    route:
    - destination:
        host: login
"#,
            expect: Expect::Errors(&[(
                r#"spec.tls[0].match[0].sniHosts[0]"#,
                r#"SNI host "login.example.com" is not a compatible subset of any of the virtual service hosts: [*.bookinfo.com]"#,
            )]),
        },
        Case {
            name: "sni host that is an IP warns",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - a.example.com
  gateways:
  - mygateway
  tls:
  - match:
    - sniHosts:
      - 10.0.0.1
    route:
    - destination:
        host: a
"#,
            expect: Expect::Warnings(&[(
                r#"spec.tls[0].match[0].sniHosts[0]"#,
                r#"goes against SNI spec"#,
            )]),
        },
        Case {
            name: "tls route without destinations",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - a.example.com
  tls:
  - match:
    - sniHosts:
      - a.example.com
"#,
            expect: Expect::Errors(&[(r#"spec.tls[0].route"#, r#"TLS route is required"#)]),
        },
        Case {
            name: "tls destination subnet invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - a.example.com
  tls:
  - match:
    - sniHosts:
      - a.example.com
      destinationSubnets:
      - 10.0.0.0/99
    route:
    - destination:
        host: a
"#,
            expect: Expect::Errors(&[(
                r#"spec.tls[0].match[0].destinationSubnets[0]"#,
                r#"10.0.0.0/99 is not a valid CIDR block"#,
            )]),
        },
        Case {
            name: "tcp route without destinations",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - mongo
  tcp:
  - match:
    - port: 27017
"#,
            expect: Expect::Errors(&[(r#"spec.tcp[0].route"#, r#"TCP route is required"#)]),
        },
        Case {
            name: "tcp match invalid subnet and port",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - mongo
  tcp:
  - match:
    - destinationSubnets:
      - not-an-ip
      port: 0
    - port: 99999
    route:
    - destination:
        host: mongo
"#,
            expect: Expect::Errors(&[
                (
                    r#"spec.tcp[0].match[0].destinationSubnets[0]"#,
                    r#"not-an-ip is not a valid IP"#,
                ),
                (r#"spec.tcp[0].match[1].port"#, r#"1..65535"#),
            ]),
        },
        Case {
            name: "tcp destinations all zero weight",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - mongo
  tcp:
  - route:
    - destination:
        host: mongo
        subset: a
    - destination:
        host: mongo
        subset: b
"#,
            expect: Expect::Errors(&[(r#"spec.tcp[0].route"#, r#"total destination weight = 0"#)]),
        },
        Case {
            name: "tcp destination port invalid",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - mongo
  tcp:
  - route:
    - destination:
        host: mongo
        port:
          number: 0
"#,
            expect: Expect::Errors(&[(
                r#"spec.tcp[0].route[0].destination.port.number"#,
                r#"port number 0"#,
            )]),
        },
    ]);
}

#[test]
fn unreachable_rule_warnings() {
    run_cases(&[
        Case {
            name: "two rules without matches",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
  - route:
    - destination:
        host: d
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[1]"#,
                r#"virtualService rule #1 not used (only the last rule can have no matches)"#,
            )]),
        },
        Case {
            name: "rule after a catch-all",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
  - name: late
    match:
    - uri:
        prefix: /x
    route:
    - destination:
        host: d
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[1]"#,
                r#"virtualService rule "late" not used (route without matches defined before)"#,
            )]),
        },
        Case {
            name: "duplicate match",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - uri:
        exact: /a
    route:
    - destination:
        host: c
  - match:
    - name: again
      uri:
        exact: /a
    route:
    - destination:
        host: d
"#,
            expect: Expect::Warnings(&[
                (
                    r#"spec.http[1].match[0]"#,
                    r#"virtualService rule #1 match "again" is not used (duplicate/overlapping match in rule #0)"#,
                ),
                (r#"spec.http[1]"#, r#"all matches used by prior rules"#),
            ]),
        },
        Case {
            name: "overlapping prefix",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - uri:
        prefix: /api
    route:
    - destination:
        host: c
  - match:
    - uri:
        prefix: /api/v1
    route:
    - destination:
        host: d
"#,
            expect: Expect::Warnings(&[(
                r#"spec.http[1].match[0]"#,
                r#"match #0 of prefix /api/v1 is not used (duplicate/overlapping match in rule #0 of prefix /api on #0)"#,
            )]),
        },
        Case {
            name: "duplicate tcp match",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - mongo
  tcp:
  - match:
    - port: 27017
    route:
    - destination:
        host: mongo
  - match:
    - port: 27017
    route:
    - destination:
        host: mongo-backup
"#,
            expect: Expect::Warnings(&[(
                r#"spec.tcp[1].match[0]"#,
                r#"virtualService rule #1 match #0 is not used"#,
            )]),
        },
    ]);
}

#[test]
fn decoding_errors() {
    run_cases(&[
        Case {
            name: "unknown field in an http route",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - foo: 1
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].foo"#, r#"unknown field "foo""#)]),
        },
        Case {
            name: "unknown field in a string match",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - match:
    - uri:
        exakt: /a
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].match[0].uri.exakt"#,
                r#"unknown field "exakt""#,
            )]),
        },
        Case {
            name: "unknown top-level spec field",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  host: c
  http:
  - route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.host"#, r#"unknown field "host""#)]),
        },
        Case {
            name: "weight of the wrong type",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
      weight: abc
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].route[0].weight"#, r#"invalid type"#)]),
        },
        Case {
            name: "hosts as a string",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts: c
  http:
  - route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.hosts"#, r#"expected a sequence"#)]),
        },
        Case {
            name: "timeout as a number",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - timeout: 5
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].timeout"#, r#"duration"#)]),
        },
        Case {
            name: "malformed duration",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - timeout: 5 seconds
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].timeout"#, r#"invalid duration"#)]),
        },
        Case {
            name: "unmatchedPreflights typo",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - corsPolicy:
      unmatchedPreflights: FORWRD
    route:
    - destination:
        host: c
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].corsPolicy.unmatchedPreflights"#,
                r#"unknown variant "FORWRD""#,
            )]),
        },
        Case {
            name: "derivePort typo",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - redirect:
      derivePort: FROM_REQUEST
"#,
            expect: Expect::Errors(&[(
                r#"spec.http[0].redirect.derivePort"#,
                r#"unknown variant"#,
            )]),
        },
        Case {
            name: "negative mirrorPercent",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - c
  http:
  - route:
    - destination:
        host: c
    mirrorPercent: -5
"#,
            expect: Expect::Errors(&[(r#"spec.http[0].mirrorPercent"#, r#"invalid value"#)]),
        },
    ]);
}

#[test]
fn large_direct_response_bodies() {
    use capstan_api::{check_text, CheckOptions, Verdict};
    let doc = |size: usize| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: big\nspec:\n  hosts:\n  - c\n  http:\n  - directResponse:\n      status: 200\n      body:\n        string: \"{}\"\n",
            "x".repeat(size)
        )
    };
    let warned = check_text(&doc(200 * 1024), &CheckOptions::default());
    assert_eq!(warned[0].verdict, Verdict::Valid, "{:?}", warned[0].errors);
    assert!(warned[0]
        .warnings
        .iter()
        .any(|d| d.path == "spec.http[0].directResponse.body"
            && d.message.contains("may impact control plane performance")));
    let rejected = check_text(&doc(1024 * 1024 + 1), &CheckOptions::default());
    assert_eq!(rejected[0].verdict, Verdict::Invalid);
    assert!(rejected[0]
        .errors
        .iter()
        .any(|d| d.path == "spec.http[0].directResponse.body"
            && d.message.contains("must be less than 1MB")));
}

#[test]
fn hostile_inputs_do_not_panic() {
    use capstan_api::{check_text, CheckOptions};
    let docs = [
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [\"\", \"*\", \"**\", \"*.\", \".\", \"a..b\"]\n  gateways: [\"/\", \"a/\", \"//\", \".\", \"a.\"]\n  tls:\n  - match:\n    - sniHosts: [\"outbound_\", \"outbound_._._.\", \"outbound_.80_._.x\", \"\"]\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - headers:\n      request:\n        set: {\"\": \"%\", \"x\": \"%(\", \"y\": \"%V([\\\"a\\\\\"\"}\n    route: [{destination: {host: a}, weight: 2147483647}, {destination: {host: a}, weight: 2147483647}]\n    match:\n    - headers: {\"@request.auth.claims[\": {exact: a}, \"@request.auth.claims[]\": {exact: b}}\n      uri: {}\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - directResponse: {status: 4294967295, body: {bytes: \"====\"}}\n    corsPolicy: {maxAge: -1s, allowOrigins: [{}]}\n    fault: {delay: {percentage: {value: .nan}}, abort: {httpStatus: -2147483648}}\n    mirrorPercentage: {value: .inf}\n",
    ];
    for d in docs {
        let r = check_text(d, &CheckOptions::default());
        assert_eq!(r.len(), 1);
        assert!(!r[0].errors.is_empty());
    }
}

#[test]
fn round_trip_rich_virtual_service() {
    assert_round_trip(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: rich
  namespace: shop
spec:
  hosts:
  - shop.example.com
  - shop.shop.svc.cluster.local
  gateways:
  - istio-system/public
  - mesh
  exportTo:
  - "."
  http:
  - name: checkout
    match:
    - name: v2
      uri:
        prefix: /checkout
      ignoreUriCase: true
      method:
        exact: POST
      headers:
        x-canary:
          regex: "^(yes|true)$"
      withoutHeaders:
        x-debug:
          exact: "1"
      queryParams:
        mode:
          exact: fast
      port: 443
      sourceLabels:
        app: web
      gateways:
      - mesh
      sourceNamespace: web
      statPrefix: checkout
    route:
    - destination:
        host: checkout
        subset: v2
        port:
          number: 8080
      weight: 90
      headers:
        request:
          set:
            x-version: v2
    - destination:
        host: checkout
        subset: v1
      weight: 10
    rewrite:
      uri: /
      authority: checkout.internal
    timeout: 1.5s
    retries:
      attempts: 3
      perTryTimeout: 100ms
      retryOn: 5xx,reset,503
      retryRemoteLocalities: false
      retryIgnorePreviousHosts: true
      backoff: 50ms
    fault:
      delay:
        fixedDelay: 2s
        percentage:
          value: 0.5
      abort:
        httpStatus: 503
        percentage:
          value: 1.25
    mirrors:
    - destination:
        host: checkout-shadow
      percentage:
        value: 12.5
    corsPolicy:
      allowOrigins:
      - prefix: https://shop.
      allowMethods: [GET, POST]
      allowHeaders: [content-type]
      exposeHeaders: [x-trace]
      maxAge: 2h
      allowCredentials: true
      unmatchedPreflights: FORWARD
    headers:
      request:
        add:
          x-shop: "1"
      response:
        remove: [server]
  - name: legacy
    match:
    - uri:
        exact: /old
    redirect:
      uri: /new
      authority: shop.example.com
      port: 8443
      scheme: https
      redirectCode: 302
  - name: teapot
    match:
    - uri:
        exact: /teapot
    directResponse:
      status: 418
      body:
        bytes: dGVhcG90
  - name: regex
    match:
    - uri:
        regex: "^/r/(.*)$"
    rewrite:
      uriRegexRewrite:
        match: "^/r/(.*)$"
        rewrite: /\1
    route:
    - destination:
        host: checkout
    mirror:
      host: checkout-shadow
    mirrorPercentage:
      value: 30
  - name: default
    route:
    - destination:
        host: shop
  tls:
  - match:
    - sniHosts: [shop.example.com]
      port: 8443
      destinationSubnets: [10.0.0.0/8]
    route:
    - destination:
        host: shop-tls
      weight: 100
  tcp:
  - match:
    - port: 9000
      destinationSubnets: [192.168.0.1]
      sourceLabels:
        app: batch
    route:
    - destination:
        host: shop-tcp
        port:
          number: 9000
"#,
    );
}

#[test]
fn large_inputs_use_linear_checks() {
    use capstan_api::{check_text, CheckOptions, Verdict};
    use std::fmt::Write;
    // Many hosts: overlaps are still found (exact and wildcard), SNI subsets still checked.
    let mut doc = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: big\nspec:\n  hosts:\n",
    );
    for i in 0..3000 {
        let _ = writeln!(doc, "  - h{i}.example.com");
    }
    doc.push_str("  - h7.example.com\n  - \"*.example.com\"\n  gateways: [gw]\n  tls:\n  - match:\n    - sniHosts: [h5.example.com, other.org]\n    route:\n    - destination: {host: a}\n");
    let r = check_text(&doc, &CheckOptions::default());
    assert_eq!(r[0].verdict, Verdict::Invalid);
    let has = |path: &str, msg: &str| {
        r[0].errors
            .iter()
            .any(|d| d.path == path && d.message.contains(msg))
    };
    assert!(
        has(
            "spec.hosts[3000]",
            "duplicate hosts in virtual service: h7.example.com & h7.example.com"
        ),
        "{:?}",
        &r[0].errors[..r[0].errors.len().min(5)]
    );
    assert!(has("spec.hosts[3001]", "duplicate hosts"));
    assert!(has(
        "spec.tls[0].match[0].sniHosts[1]",
        "not a compatible subset"
    ));
    assert!(!has(
        "spec.tls[0].match[0].sniHosts[0]",
        "not a compatible subset"
    ));

    // Many matches: duplicates are found through hashing; the run stays fast.
    let mut doc = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: big\nspec:\n  hosts: [a]\n  http:\n  - match:\n",
    );
    for i in 0..20000 {
        let _ = writeln!(doc, "    - uri: {{prefix: /p{i}}}");
    }
    doc.push_str("    route:\n    - destination: {host: a}\n  - match:\n    - uri: {prefix: /p19999}\n    route:\n    - destination: {host: b}\n");
    let start = std::time::Instant::now();
    let r = check_text(&doc, &CheckOptions::default());
    assert!(start.elapsed().as_secs() < 20);
    assert_eq!(r[0].verdict, Verdict::Valid, "{:?}", r[0].errors);
    assert!(
        r[0].warnings
            .iter()
            .any(|d| d.path == "spec.http[1]"
                && d.message.contains("all matches used by prior rules"))
    );
}
