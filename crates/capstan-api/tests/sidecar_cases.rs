//! Sidecar validation cases: Istio docs examples (valid) and one invalid case per rule.

mod support;
use support::{assert_round_trip, run_cases, Case, Expect};

#[test]
fn valid_sidecars_from_istio_docs() {
    run_cases(&[
        Case {
            name: "namespace default: own namespace and istio-system",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod-us1}
spec:
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "REGISTRY_ONLY outbound policy",
            yaml: r#"
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: default, namespace: bookinfo}
spec:
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "no-ip-tables example",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata: {name: no-ip-tables, namespace: prod-us1}
spec:
  workloadSelector:
    labels:
      app: productpage
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: 127.0.0.1:8080
    captureMode: NONE
  egress:
  - port:
      number: 3306
      protocol: MYSQL
      name: egressmysql
    captureMode: NONE
    bind: 127.0.0.1
    hosts:
    - "*/mysql.foo.com"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "partial-ip-tables example with catch-all egress",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: partial-ip-tables, namespace: prod-us1}
spec:
  workloadSelector:
    labels:
      app: productpage
  ingress:
  - bind: 172.16.1.32
    port:
      number: 80
      protocol: HTTP
      name: somename
    defaultEndpoint: 127.0.0.1:8080
    captureMode: NONE
  egress:
  - captureMode: IPTABLES
    hosts:
    - "*/*"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "port-specific listener then catch-all, unix socket listener",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: prod-us1}
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    hosts:
    - "prod-us1/*"
  - port:
      number: 0
      protocol: HTTP
      name: uds
    bind: unix:///var/run/app.sock
    captureMode: NONE
    hosts:
    - "prod-us1/*.example.com"
  - hosts:
    - "istio-system/*"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "ALLOW_ANY with an egress proxy",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: egress-proxy}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy:
      host: foo.bar
      subset: shiny
      port:
        number: 5000
  egress:
  - hosts:
    - "./*"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "inbound connection pool only",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: connection-pool}
spec:
  workloadSelector:
    labels: {app: productpage}
  inboundConnectionPool:
    http:
      http1MaxPendingRequests: 1024
      http2MaxRequests: 1024
      maxRequestsPerConnection: 1024
      maxRetries: 100
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "ingress TLS termination and per-port pool",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: prod-us1}
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTPS
      name: somename
    defaultEndpoint: 0.0.0.0:9080
    tls:
      mode: SIMPLE
      privateKey: "/etc/istio/filter-example-com-certs/tls.key"
      serverCertificate: "/etc/istio/filter-example-com-certs/tls.crt"
  - port:
      number: 8080
      protocol: HTTP
      name: http
    connectionPool:
      http:
        http1MaxPendingRequests: 100
      tcp:
        maxConnections: 10
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "special namespaces and wildcard hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: hosts}
spec:
  egress:
  - hosts:
    - "~/*"
    - "*/foo.example.com"
    - "prod/*.example.com"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "outbound traffic policy only",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: registry-only}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#,
            expect: Expect::Valid,
        },
    ]);
}

#[test]
fn sidecar_warnings() {
    run_cases(&[
        Case {
            name: "workload selector without labels",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  workloadSelector: {}
  egress:
  - hosts: ["./*"]
"#,
            expect: Expect::Warnings(&[("spec.workloadSelector", "without labels")]),
        },
        Case {
            name: "duplicated egress hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc, namespace: ns1}
spec:
  egress:
  - hosts: ["ns1/*", "./foo.example.com"]
"#,
            expect: Expect::Warnings(&[(
                "spec.egress[0].hosts[1]",
                "duplicated egress host: ./foo.example.com",
            )]),
        },
        Case {
            name: "*/* with other hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - hosts: ["*/*", "istio-system/*"]
"#,
            expect: Expect::Warnings(&[(
                "spec.egress[0].hosts",
                "`*/*` host select all resources",
            )]),
        },
        Case {
            name: "HTTP pool on a TCP ingress port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 3306, protocol: TCP, name: mysql}
    defaultEndpoint: 127.0.0.1:3306
    connectionPool:
      http: {maxRetries: 3}
"#,
            expect: Expect::Warnings(&[(
                "spec.ingress[0].connectionPool.http",
                "only TCP settings will apply",
            )]),
        },
    ]);
}

#[test]
fn sidecar_egress_rules() {
    run_cases(&[
        Case {
            name: "empty spec",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: empty}
spec: {}
"#,
            expect: Expect::Errors(&[("spec", "sidecar: empty configuration provided")]),
        },
        Case {
            name: "empty egress list (galley dataset)",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata: {name: invalid-sidecar-config}
spec:
  egress: []
"#,
            expect: Expect::Errors(&[("spec", "sidecar: empty configuration provided")]),
        },
        Case {
            name: "egress listener without hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - port: {number: 80, protocol: HTTP, name: http}
"#,
            expect: Expect::Errors(&[(
                "spec.egress[0].hosts",
                "egress listener must contain at least one host",
            )]),
        },
        Case {
            name: "bad egress hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - hosts:
    - foo.example.com
    - ns/foo
    - "Bad_NS/*"
    - "ns/*foo.com"
    - "ns/10.1.1.1"
    - "/foo.example.com"
"#,
            expect: Expect::Errors(&[
                (
                    "spec.egress[0].hosts[0]",
                    "host must be of form namespace/dnsName",
                ),
                (
                    "spec.egress[0].hosts[1]",
                    "short names (non FQDN) are not allowed",
                ),
                (
                    "spec.egress[0].hosts[2]",
                    "invalid namespace value \"Bad_NS\" in sidecar",
                ),
                ("spec.egress[0].hosts[3]", "partial wildcard"),
                ("spec.egress[0].hosts[4]", "all-numeric"),
                ("spec.egress[0].hosts[5]", "cannot be empty"),
            ]),
        },
        Case {
            name: "catch-all listener not last",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - hosts: ["*/*"]
  - port: {number: 80, protocol: HTTP, name: http}
    hosts: ["./*"]
"#,
            expect: Expect::Errors(&[(
                "spec.egress[0]",
                "the egress listener with empty port should be the last listener",
            )]),
        },
        Case {
            name: "duplicate egress ports",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - port: {number: 80, protocol: HTTP, name: http}
    hosts: ["ns1/*"]
  - port: {number: 80, protocol: HTTP, name: http2}
    hosts: ["ns2/*"]
"#,
            expect: Expect::Errors(&[(
                "spec.egress[1].port.number",
                "ports on IP bound listeners must be unique",
            )]),
        },
        Case {
            name: "port 0 without unix bind, and bad capture mode",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - port: {number: 0, protocol: HTTP, name: uds}
    bind: 127.0.0.1
    captureMode: IPTABLES
    hosts: ["./*"]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.egress[0].bind",
                    "ports with 0 value must have a unix domain socket bind address",
                ),
                (
                    "spec.egress[0].captureMode",
                    "captureMode must be DEFAULT/NONE for unix domain socket listeners",
                ),
            ]),
        },
        Case {
            name: "duplicate unix sockets",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - port: {number: 0, protocol: HTTP, name: uds1}
    bind: unix:///var/run/a.sock
    hosts: ["ns1/*"]
  - port: {number: 0, protocol: HTTP, name: uds2}
    bind: unix:///var/run/a.sock
    hosts: ["ns2/*"]
"#,
            expect: Expect::Errors(&[(
                "spec.egress[1].bind",
                "unix domain socket values for listeners must be unique",
            )]),
        },
        Case {
            name: "bad egress bind, protocol and port name",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - port: {number: 80, protocol: HTTP3, name: Bad_Name, targetPort: 8080}
    bind: 300.1.1.1
    hosts: ["./*"]
"#,
            expect: Expect::Errors(&[
                ("spec.egress[0].bind", "not a valid IP"),
                ("spec.egress[0].port.protocol", "unrecognized protocol"),
                ("spec.egress[0].port.name", "invalid port name"),
                (
                    "spec.egress[0].port.targetPort",
                    "targetPort has no impact on Sidecars",
                ),
            ]),
        },
    ]);
}

#[test]
fn sidecar_ingress_rules() {
    run_cases(&[
        Case {
            name: "ingress without port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - defaultEndpoint: 127.0.0.1:8080
"#,
            expect: Expect::Errors(&[(
                "spec.ingress[0].port",
                "port is required for ingress listeners",
            )]),
        },
        Case {
            name: "duplicate ingress ports",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: a}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9080, protocol: HTTP, name: b}
    defaultEndpoint: 127.0.0.1:8081
"#,
            expect: Expect::Errors(&[(
                "spec.ingress[1].port.number",
                "ports on IP bound listeners must be unique",
            )]),
        },
        Case {
            name: "ingress port 0 and targetPort",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 0, protocol: HTTP, name: a, targetPort: 8080}
"#,
            expect: Expect::Errors(&[
                ("spec.ingress[0].port.number", "port number 0"),
                (
                    "spec.ingress[0].port.targetPort",
                    "targetPort has no impact on Sidecars",
                ),
            ]),
        },
        Case {
            name: "defaultEndpoint on a non-loopback host",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: a}
    defaultEndpoint: 10.0.0.1:8080
"#,
            expect: Expect::Errors(&[(
                "spec.ingress[0].defaultEndpoint",
                "defaultEndpoint must be of form 127.0.0.1:<port>",
            )]),
        },
        Case {
            name: "defaultEndpoint port not a number",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: a}
    defaultEndpoint: "127.0.0.1:http"
"#,
            expect: Expect::Errors(&[(
                "spec.ingress[0].defaultEndpoint",
                "defaultEndpoint port (http) is not a number",
            )]),
        },
        Case {
            name: "defaultEndpoint unix socket with relative path",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: a}
    defaultEndpoint: unix://app.sock
"#,
            expect: Expect::Errors(&[("spec.ingress[0].defaultEndpoint", "not an absolute path")]),
        },
        Case {
            name: "ingress TLS with ISTIO_MUTUAL",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9443, protocol: HTTPS, name: a}
    tls: {mode: ISTIO_MUTUAL}
"#,
            expect: Expect::Errors(&[(
                "spec.ingress[0].tls.mode",
                "cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
            )]),
        },
        Case {
            name: "ingress TLS with unsupported fields",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9443, protocol: HTTPS, name: a}
    tls:
      mode: SIMPLE
      credentialName: cert
      httpsRedirect: true
      subjectAltNames: [foo]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.ingress[0].tls.credentialName",
                    "credentialName is not currently supported",
                ),
                (
                    "spec.ingress[0].tls.httpsRedirect",
                    "httpsRedirect is not supported",
                ),
                (
                    "spec.ingress[0].tls.subjectAltNames",
                    "subjectAltNames is not supported in ingress tls",
                ),
            ]),
        },
        Case {
            name: "ingress TLS SIMPLE without key",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9443, protocol: HTTPS, name: a}
    tls: {mode: SIMPLE, serverCertificate: /c.pem}
"#,
            expect: Expect::Errors(&[(
                "spec.ingress[0].tls.privateKey",
                "SIMPLE TLS requires a private key",
            )]),
        },
        Case {
            name: "empty inbound connection pool",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  inboundConnectionPool: {}
"#,
            expect: Expect::Errors(&[(
                "spec.inboundConnectionPool",
                "connection pool must have at least one field",
            )]),
        },
        Case {
            name: "negative per-port pool limit",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: a}
    connectionPool:
      tcp: {maxConnections: -5}
"#,
            expect: Expect::Errors(&[(
                "spec.ingress[0].connectionPool.tcp.maxConnections",
                "non-negative",
            )]),
        },
    ]);
}

#[test]
fn sidecar_policy_and_selector_rules() {
    run_cases(&[
        Case {
            name: "egress proxy with REGISTRY_ONLY",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  outboundTrafficPolicy:
    egressProxy: {host: foo.bar, port: {number: 5000}}
"#,
            expect: Expect::Errors(&[(
                "spec.outboundTrafficPolicy.egressProxy",
                "egress_proxy must be set only with ALLOW_ANY",
            )]),
        },
        Case {
            name: "egress proxy without port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: foo.bar}
"#,
            expect: Expect::Errors(&[(
                "spec.outboundTrafficPolicy.egressProxy.port",
                "egress_proxy port must be non-nil",
            )]),
        },
        Case {
            name: "egress proxy with bad host, subset and port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: "*.bar", subset: Shiny_1, port: {number: 0}}
"#,
            expect: Expect::Errors(&[
                ("spec.outboundTrafficPolicy.egressProxy.host", "invalid"),
                (
                    "spec.outboundTrafficPolicy.egressProxy.subset",
                    "subset name is invalid",
                ),
                (
                    "spec.outboundTrafficPolicy.egressProxy.port.number",
                    "port number 0",
                ),
            ]),
        },
        Case {
            name: "wildcard in workload selector",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  workloadSelector:
    labels: {app: "*"}
  egress:
  - hosts: ["./*"]
"#,
            expect: Expect::Errors(&[(
                "spec.workloadSelector.labels[app]",
                "wildcard is not supported in selector",
            )]),
        },
        Case {
            name: "matchLabels instead of labels",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  workloadSelector:
    matchLabels: {app: ratings}
  egress:
  - hosts: ["./*"]
"#,
            expect: Expect::Errors(&[(
                "spec.workloadSelector.matchLabels",
                "unknown field \"matchLabels\"",
            )]),
        },
        Case {
            name: "typo in capture mode",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - captureMode: IPTABLE
    hosts: ["./*"]
"#,
            expect: Expect::Errors(&[(
                "spec.egress[0].captureMode",
                "unknown variant \"IPTABLE\"",
            )]),
        },
        Case {
            name: "typo in outbound mode",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  outboundTrafficPolicy: {mode: ALLOW_ALL}
"#,
            expect: Expect::Errors(&[("spec.outboundTrafficPolicy.mode", "unknown variant")]),
        },
        Case {
            name: "hosts as a string",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  egress:
  - hosts: "./*"
"#,
            expect: Expect::Errors(&[("spec.egress[0].hosts", "invalid type")]),
        },
    ]);
}

#[test]
fn sidecar_round_trip() {
    assert_round_trip(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: everything, namespace: prod-us1}
spec:
  workloadSelector:
    labels: {app: productpage, version: v1}
  ingress:
  - port: {number: 9080, protocol: HTTPS, name: somename}
    bind: 0.0.0.0
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:8080
    tls:
      mode: SIMPLE
      serverCertificate: /etc/certs/tls.crt
      privateKey: /etc/certs/tls.key
      minProtocolVersion: TLSV1_2
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 1.5s}
      http: {http1MaxPendingRequests: 10, idleTimeout: 100ms}
  egress:
  - port: {number: 3306, protocol: MYSQL, name: egressmysql}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["*/mysql.foo.com"]
  - port: {number: 0, protocol: HTTP, name: uds}
    bind: unix:///var/run/app.sock
    captureMode: DEFAULT
    hosts: ["./*.example.com"]
  - captureMode: IPTABLES
    hosts: ["./*", "istio-system/*"]
  inboundConnectionPool:
    http: {maxRetries: 3, h2UpgradePolicy: DO_NOT_UPGRADE}
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy:
      host: egress.example.com
      subset: v1
      port: {number: 3128}
"#,
    );
}
