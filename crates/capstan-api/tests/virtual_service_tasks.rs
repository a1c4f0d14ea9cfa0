//! Realistic VirtualServices from Istio's traffic-management tasks and API reference:
//! each must validate with no errors and no warnings.

mod support;
use support::{run_cases, Case, Expect};

#[test]
fn istio_traffic_management_tasks_are_valid() {
    run_cases(&[
        Case {
            name: "request routing: all traffic to reviews v1",
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
        subset: v1
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "request routing: end-user jason to reviews v2",
            yaml: r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "fault injection: 7s delay for jason",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "fault injection: http abort 500 for jason",
            yaml: r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        percentage:
          value: 100.0
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "fault injection: delay and abort together on a fraction",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - fault:
      delay:
        percentage:
          value: 0.1
        fixedDelay: 5s
      abort:
        percentage:
          value: 0.1
        httpStatus: 400
    route:
    - destination:
        host: ratings.prod.svc.cluster.local
        subset: v1
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "traffic shifting 50/50",
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
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "traffic shifting 80/20",
            yaml: r#"apiVersion: networking.istio.io/v1beta1
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
        subset: v1
      weight: 80
    - destination:
        host: reviews
        subset: v2
      weight: 20
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "tcp traffic shifting through a gateway",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
      weight: 80
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v2
      weight: 20
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "mesh tcp route for mongo",
            yaml: r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - mongo.prod.svc.cluster.local
  tcp:
  - match:
    - port: 27017
    route:
    - destination:
        host: mongo.backup.svc.cluster.local
        port:
          number: 5555
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "request timeouts: 0.5s on reviews",
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
        subset: v2
    timeout: 0.5s
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "request timeouts: 2s delay on ratings",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "retries with per-try timeout and retryOn",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings
  http:
  - route:
    - destination:
        host: ratings
        subset: v1
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "retries with status codes, localities, previous hosts and backoff",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings
  http:
  - route:
    - destination:
        host: ratings
    timeout: 10s
    retries:
      attempts: 5
      perTryTimeout: 1500ms
      retryOn: 5xx,retriable-status-codes,503,reset-before-request,unavailable
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: true
      backoff: 25ms
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "retries disabled with attempts 0",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings
  http:
  - route:
    - destination:
        host: ratings
    retries:
      attempts: 0
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "mirroring to v2 with mirrorPercentage",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
    mirror:
      host: httpbin
      subset: v2
    mirrorPercentage:
      value: 100.0
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "mirroring to several destinations with mirrors",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
    mirrors:
    - destination:
        host: httpbin
        subset: v2
      percentage:
        value: 50
    - destination:
        host: httpbin
        subset: v3
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "ingress gateway routing for httpbin",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "httpbin.example.com"
  gateways:
  - httpbin-gateway
  http:
  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "bookinfo gateway virtual service",
            yaml: r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "egress through an egress gateway: mesh and gateway bound",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 80
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 80
      weight: 100
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "egress TLS passthrough through an egress gateway",
            yaml: r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - mesh
  - istio-egressgateway
  tls:
  - match:
    - gateways:
      - mesh
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 443
  - match:
    - gateways:
      - istio-egressgateway
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
      weight: 100
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "tls sni routing on an ingress gateway",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*.bookinfo.com"
  gateways:
  - istio-system/mygateway
  tls:
  - match:
    - port: 443
      sniHosts:
      - login.bookinfo.com
    route:
    - destination:
        host: login.prod.svc.cluster.local
  - match:
    - port: 443
      sniHosts:
      - reviews.bookinfo.com
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "cors policy with allowOrigins",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - route:
    - destination:
        host: ratings.prod.svc.cluster.local
        subset: v1
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      - regex: "https://.*[.]example[.]org"
      allowMethods:
      - POST
      - GET
      allowCredentials: false
      allowHeaders:
      - X-Foo-Bar
      exposeHeaders:
      - X-Trace-Id
      maxAge: "24h"
      unmatchedPreflights: IGNORE
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "redirect to a new path and authority",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - match:
    - uri:
        exact: /v1/getProductRatings
    redirect:
      uri: /v1/bookRatings
      authority: newratings.default.svc.cluster.local
  - route:
    - destination:
        host: ratings.prod.svc.cluster.local
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "https redirect with derived port and 308",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - www.example.com
  gateways:
  - istio-system/public
  http:
  - redirect:
      scheme: https
      derivePort: FROM_PROTOCOL_DEFAULT
      redirectCode: 308
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "rewrite a prefix",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - match:
    - uri:
        prefix: /ratings
    rewrite:
      uri: /v1/bookRatings
    route:
    - destination:
        host: ratings.prod.svc.cluster.local
        subset: v1
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "regex rewrite",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - ratings.prod.svc.cluster.local
  http:
  - match:
    - uri:
        regex: "^/service/([^/]+)(/.*)$"
    rewrite:
      uriRegexRewrite:
        match: "^/service/([^/]+)(/.*)$"
        rewrite: '\2/instance/\1'
    route:
    - destination:
        host: ratings.prod.svc.cluster.local
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "direct response with a string body",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - httpbin.example.com
  gateways:
  - httpbin-gateway
  http:
  - match:
    - uri:
        exact: /unknown
    directResponse:
      status: 503
      body:
        string: "unknown path"
  - route:
    - destination:
        host: httpbin
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "direct response with bytes",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - httpbin
  http:
  - directResponse:
      status: 200
      body:
        bytes: "aGVsbG8gd29ybGQ="
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "delegate root virtual service",
            yaml: r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "bookinfo.com"
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        prefix: "/productpage"
    delegate:
      name: productpage
      namespace: nsa
  - match:
    - uri:
        prefix: "/reviews"
    delegate:
      name: reviews
      namespace: nsb
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "delegate virtual service without hosts",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
  namespace: nsa
spec:
  http:
  - match:
    - uri:
        prefix: "/productpage/v1/"
    route:
    - destination:
        host: productpage-v1.nsa.svc.cluster.local
  - route:
    - destination:
        host: productpage.nsa.svc.cluster.local
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "header manipulation on route and destination",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews.prod.svc.cluster.local
  http:
  - headers:
      request:
        set:
          test: "true"
          x-forwarded-host: "%HOSTNAME%"
        add:
          x-request-start: "t=%START_TIME(%s.%3f)%"
      response:
        remove:
        - x-internal
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v2
      weight: 25
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v1
      headers:
        response:
          remove:
          - foo
      weight: 75
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "authority rewrite via header set",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - headers:
      request:
        set:
          ":authority": reviews.internal
    route:
    - destination:
        host: reviews
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "jwt claim routing on an ingress gateway",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - "*"
  gateways:
  - httpbin-gateway
  http:
  - match:
    - uri:
        prefix: /headers
      headers:
        "@request.auth.claims.groups":
          exact: group1
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "rich match: scheme, method, authority, query, withoutHeaders, source",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - api.example.com
  - 10.1.2.3
  http:
  - name: api
    match:
    - name: v2
      uri:
        prefix: /api/v2
      ignoreUriCase: true
      scheme:
        exact: https
      method:
        regex: "GET|HEAD"
      authority:
        prefix: api.
      queryParams:
        debug:
          exact: ""
      withoutHeaders:
        x-canary:
          regex: "*"
      sourceLabels:
        app: frontend
        app.kubernetes.io/version: v1.2_3
      sourceNamespace: web
      statPrefix: api_v2
    route:
    - destination:
        host: api-v2
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "grpc abort with status name",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - grpc-svc
  http:
  - fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage:
          value: 10
    route:
    - destination:
        host: grpc-svc
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "weights need not sum to 100",
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
      weight: 75
    - destination:
        host: c
        subset: v2
      weight: 15
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "exportTo current namespace and another",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts:
  - reviews
  exportTo:
  - "."
  - istio-system
  http:
  - route:
    - destination:
        host: reviews
"#,
            expect: Expect::Valid,
        },
    ]);
}
