//! DestinationRule validation cases: Istio docs tasks (valid) and one invalid case per rule.

mod support;
use support::{assert_round_trip, run_cases, Case, Expect};

#[test]
fn valid_destination_rules_from_istio_docs() {
    run_cases(&[
        Case {
            name: "bookinfo reviews subsets v1 v2 v3",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
  - name: v3
    labels: {version: v3}
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "circuit breaking httpbin",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "session affinity with a cookie",
            yaml: r#"
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: bookinfo-ratings}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 0s
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "consistent hash on header with ring hash",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hash-header}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        ringHash:
          minimumRingSize: 1024
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "consistent hash on source ip with maglev",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hash-ip}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        useSourceIp: true
        maglev:
          tableSize: 65537
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "consistent hash on query parameter",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hash-query}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpQueryParameterName: user
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "locality failover with outlier detection",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld, namespace: sample}
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http:
        maxRequestsPerConnection: 1
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover:
        - from: region1
          to: region2
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 1m
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "locality weighted distribution",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld, namespace: sample}
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        distribute:
        - from: region1/zone1/*
          to:
            "region1/zone1/*": 70
            "region1/zone2/*": 20
            "region3/zone4/*": 10
        - from: region1/zone2/*
          to:
            "region1/zone2/*": 100
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "failover priority labels",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld}
spec:
  host: helloworld
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failoverPriority:
        - topology.istio.io/network
        - topology.kubernetes.io/region
        - topology.kubernetes.io/zone
    outlierDetection:
      consecutive5xxErrors: 5
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "egress TLS origination SIMPLE on port 80",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: edition-cnn-com}
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: SIMPLE
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "mutual TLS origination with credentialName",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate-mtls-for-nginx, namespace: istio-system}
spec:
  host: my-nginx.mesh-external.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: MUTUAL
        credentialName: client-credential
        sni: my-nginx.mesh-external.svc.cluster.local
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "mutual TLS with certificate files",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-mtls}
spec:
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/myclientcert.pem
      privateKey: /etc/certs/client_private_key.pem
      caCertificates: /etc/certs/rootcacerts.pem
      subjectAltNames: [mydbserver.prod.svc.cluster.local]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "egress gateway subset with ISTIO_MUTUAL",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway-for-cnn}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
      portLevelSettings:
      - port:
          number: 443
        tls:
          mode: ISTIO_MUTUAL
          sni: edition.cnn.com
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "wildcard host with SIMPLE TLS",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls-foo}
spec:
  host: "*.foo.com"
  trafficPolicy:
    tls:
      mode: SIMPLE
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "workload selector exported to own namespace",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: configure-client-mtls-dr-with-workloadselector, namespace: default}
spec:
  host: example.com
  workloadSelector:
    matchLabels:
      app: ratings
  exportTo: ["."]
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 31443
      tls:
        credentialName: client-credential
        mode: MUTUAL
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "tunnel over CONNECT",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tunnel}
spec:
  host: external.example.com
  trafficPolicy:
    tunnel:
      protocol: CONNECT
      targetHost: egress-gw.corp.example.com
      targetPort: 8080
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "proxy protocol v2 and export to all",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pp}
spec:
  host: backend.example.com
  exportTo: ["*"]
  trafficPolicy:
    proxyProtocol:
      version: V2
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "warmup, keepalive, h2 upgrade and idle timeouts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tuned}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      warmup:
        duration: 60s
        minimumPercent: 10
        aggression: 1.5
    connectionPool:
      tcp:
        connectTimeout: 30ms
        maxConnectionDuration: 1h
        idleTimeout: 300s
        tcpKeepalive:
          probes: 9
          time: 7200s
          interval: 75s
      http:
        h2UpgradePolicy: UPGRADE
        idleTimeout: 1.5s
        maxConcurrentStreams: 100
        maxRetries: 3
    retryBudget:
      percent: 25
      minRetryConcurrency: 5
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "insecureSkipVerify with SIMPLE",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: skip}
spec:
  host: self-signed.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      insecureSkipVerify: true
"#,
            expect: Expect::Valid,
        },
    ]);
}

#[test]
fn destination_rule_warnings() {
    run_cases(&[
        Case {
            name: "deprecated consecutiveErrors",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: old}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutiveErrors: 5
"#,
            expect: Expect::Warnings(&[(
                "spec.trafficPolicy.outlierDetection.consecutiveErrors",
                "deprecated",
            )]),
        },
        Case {
            name: "deprecated minimumRingSize",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: old}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        minimumRingSize: 1024
"#,
            expect: Expect::Warnings(&[(
                "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
                "deprecated",
            )]),
        },
        Case {
            name: "failover without outlier detection",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: fo}
spec:
  host: helloworld
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failover:
        - from: us-east
          to: eu-west
"#,
            expect: Expect::Warnings(&[(
                "spec.trafficPolicy.loadBalancer.localityLbSetting",
                "outlier detection policy must be provided for failover",
            )]),
        },
        Case {
            name: "workload selector without labels",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ws}
spec:
  host: reviews
  workloadSelector: {}
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
"#,
            expect: Expect::Warnings(&[("spec.workloadSelector", "without labels")]),
        },
    ]);
}

#[test]
fn destination_rule_host_subsets_export() {
    run_cases(&[
        Case {
            name: "missing host",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: nohost}
spec:
  subsets:
  - name: v1
"#,
            expect: Expect::Errors(&[("spec.host", "empty domain name")]),
        },
        Case {
            name: "wildcard in the middle of the host",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: badhost}
spec:
  host: "foo.*.com"
"#,
            expect: Expect::Errors(&[("spec.host", "invalid")]),
        },
        Case {
            name: "duplicate subset names",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dup}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {version: v2}
"#,
            expect: Expect::Errors(&[("spec.subsets[1].name", "duplicate subset names: v1")]),
        },
        Case {
            name: "invalid subset name",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: badsubset}
spec:
  host: reviews
  subsets:
  - name: v_1
"#,
            expect: Expect::Errors(&[("spec.subsets[0].name", "subset name is invalid")]),
        },
        Case {
            name: "empty subset name",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: emptysubset}
spec:
  host: reviews
  subsets:
  - labels: {version: v1}
"#,
            expect: Expect::Errors(&[("spec.subsets[0].name", "subset name cannot be empty")]),
        },
        Case {
            name: "invalid subset label key",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: badlabel}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {"bad key": v1}
"#,
            expect: Expect::Errors(&[("spec.subsets[0].labels[bad key]", "invalid label key")]),
        },
        Case {
            name: "subset traffic policy is validated",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: subsetpolicy}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool:
        tcp: {maxConnections: -1}
"#,
            expect: Expect::Errors(&[(
                "spec.subsets[0].trafficPolicy.connectionPool.tcp.maxConnections",
                "max connections must be non-negative",
            )]),
        },
        Case {
            name: "workload selector exported beyond namespace",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wsexport, namespace: default}
spec:
  host: reviews
  workloadSelector:
    matchLabels: {app: ratings}
  exportTo: ["*"]
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
"#,
            expect: Expect::Errors(&[(
                "spec.exportTo",
                "cannot have exportTo beyond current namespace",
            )]),
        },
        Case {
            name: "workload selector exported to several namespaces",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wsexport, namespace: default}
spec:
  host: reviews
  workloadSelector:
    matchLabels: {app: ratings}
  exportTo: [".", "other"]
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
"#,
            expect: Expect::Errors(&[(
                "spec.exportTo",
                "cannot have multiple entries in exportTo",
            )]),
        },
        Case {
            name: "invalid exportTo namespace",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: badexport}
spec:
  host: reviews
  exportTo: ["Bad_NS"]
"#,
            expect: Expect::Errors(&[("spec.exportTo[0]", "valid namespace names")]),
        },
        Case {
            name: "wildcard in workload selector",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wswild}
spec:
  host: reviews
  workloadSelector:
    matchLabels: {app: "*"}
"#,
            expect: Expect::Errors(&[(
                "spec.workloadSelector.matchLabels[app]",
                "wildcard is not supported",
            )]),
        },
    ]);
}

#[test]
fn destination_rule_traffic_policy_rules() {
    run_cases(&[
        Case {
            name: "empty traffic policy",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: emptytp}
spec:
  host: reviews
  trafficPolicy: {}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy",
                "traffic policy must have at least one field",
            )]),
        },
        Case {
            name: "tunnel with proxy protocol",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tunnelpp}
spec:
  host: reviews
  trafficPolicy:
    tunnel: {targetHost: proxy.example.com, targetPort: 8080}
    proxyProtocol: {version: V1}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy",
                "tunnel and proxyProtocol must not be set together",
            )]),
        },
        Case {
            name: "bad tunnel settings",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: badtunnel}
spec:
  host: reviews
  trafficPolicy:
    tunnel: {protocol: GET, targetHost: "not a host", targetPort: 0}
"#,
            expect: Expect::Errors(&[
                ("spec.trafficPolicy.tunnel.protocol", "CONNECT"),
                (
                    "spec.trafficPolicy.tunnel.targetHost",
                    "valid FQDN or IP address",
                ),
                (
                    "spec.trafficPolicy.tunnel.targetPort",
                    "tunnel target port is invalid",
                ),
            ]),
        },
        Case {
            name: "port level setting without port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: noport}
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
    - loadBalancer: {simple: RANDOM}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.portLevelSettings[0].port",
                "portTrafficPolicy must have valid port",
            )]),
        },
        Case {
            name: "port level setting with nothing but a port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: onlyport}
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.portLevelSettings[0]",
                "port traffic policy must have at least one field",
            )]),
        },
        Case {
            // Istio accepts it (the first policy for the port applies); found by differential
            // fuzzing against istioctl.
            name: "duplicate port level settings warn",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dupport}
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: RANDOM}
    - port: {number: 80}
      loadBalancer: {simple: ROUND_ROBIN}
"#,
            expect: Expect::Warnings(&[(
                "spec.trafficPolicy.portLevelSettings[1].port.number",
                "duplicate port 80 in portLevelSettings: only the first policy for a port applies",
            )]),
        },
        Case {
            name: "port level settings on port 0 warn",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: port0}
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
    - port: {}
      loadBalancer: {simple: RANDOM}
"#,
            expect: Expect::Warnings(&[(
                "spec.trafficPolicy.portLevelSettings[0].port.number",
                "port number 0 must be in the range 1..65535: the policy applies to no port",
            )]),
        },
        Case {
            name: "retry budget percent out of range",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: rb}
spec:
  host: reviews
  trafficPolicy:
    retryBudget: {percent: 120}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.retryBudget.percent",
                "not in range 0..100",
            )]),
        },
    ]);
}

#[test]
fn destination_rule_connection_pool_and_outlier_rules() {
    run_cases(&[
        Case {
            name: "empty connection pool",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cp}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.connectionPool",
                "connection pool must have at least one field",
            )]),
        },
        Case {
            name: "negative http limits",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cp}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      http:
        http1MaxPendingRequests: -1
        http2MaxRequests: -2
        maxRequestsPerConnection: -3
        maxRetries: -4
        maxConcurrentStreams: -5
"#,
            expect: Expect::Errors(&[
                (
                    "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                    "non-negative",
                ),
                (
                    "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
                    "non-negative",
                ),
                (
                    "spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection",
                    "non-negative",
                ),
                (
                    "spec.trafficPolicy.connectionPool.http.maxRetries",
                    "non-negative",
                ),
                (
                    "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
                    "non-negative",
                ),
            ]),
        },
        Case {
            name: "connect timeout below 1ms",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cp}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 500us
        tcpKeepalive: {interval: 0s}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
                    "greater than 1ms",
                ),
                (
                    "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval",
                    "greater than 1ms",
                ),
            ]),
        },
        Case {
            name: "use client protocol with UPGRADE",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cp}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.connectionPool.http.useClientProtocol",
                "must not be true when H2UpgradePolicy is UPGRADE",
            )]),
        },
        Case {
            name: "ejection percent over 100",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: od}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      maxEjectionPercent: 101
      minHealthPercent: -1
"#,
            expect: Expect::Errors(&[
                (
                    "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                    "percentage 101 is not in range 0..100",
                ),
                (
                    "spec.trafficPolicy.outlierDetection.minHealthPercent",
                    "not in range",
                ),
            ]),
        },
        Case {
            name: "zero interval and ejection time",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: od}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      interval: 0s
      baseEjectionTime: 1.0005s
"#,
            expect: Expect::Errors(&[
                (
                    "spec.trafficPolicy.outlierDetection.interval",
                    "greater than 1ms",
                ),
                (
                    "spec.trafficPolicy.outlierDetection.baseEjectionTime",
                    "ms precision",
                ),
            ]),
        },
        Case {
            name: "local origin failures without split",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: od}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutiveLocalOriginFailures: 3
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
                "split external local origin errors is set to false",
            )]),
        },
    ]);
}

#[test]
fn destination_rule_load_balancer_rules() {
    run_cases(&[
        Case {
            name: "cookie without name",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {ttl: 10s}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "name required for HttpCookie")]),
        },
        Case {
            name: "maglev table size not prime",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        useSourceIp: true
        maglev: {tableSize: 65536}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "prime")]),
        },
        Case {
            name: "maglev table size too large",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        useSourceIp: true
        maglev: {tableSize: "18446744073709551557"}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "less than 5000011")]),
        },
        Case {
            name: "minimumRingSize together with ringHash",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        minimumRingSize: 100
        ringHash: {minimumRingSize: 100}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize", "only one of MinimumRingSize or Maglev/Ringhash")]),
        },
        Case {
            name: "two hash keys",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        useSourceIp: true
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.consistentHash", "only one of httpHeaderName")]),
        },
        Case {
            name: "simple and consistent hash",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      consistentHash: {useSourceIp: true}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer", "only one of simple or consistentHash")]),
        },
        Case {
            name: "warmup minimum percent over 100",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmup: {duration: 10s, minimumPercent: 150}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.warmup.minimumPercent", "not in range 0..100")]),
        },
        Case {
            name: "distribute together with failover",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: loc}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-west/*
          to: {"us-west/*": 100}
        failover:
        - from: us-west
          to: us-east
    outlierDetection: {consecutive5xxErrors: 3}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.localityLbSetting", "can not simultaneously specify 'distribute' and 'failover'")]),
        },
        Case {
            name: "distribute weights do not sum to 100",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: loc}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 10}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "total locality weight 90 != 100")]),
        },
        Case {
            name: "distribute weight zero",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: loc}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 0, "us-west/zone2/*": 100}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[us-west/zone1/*]", "locality weight must be in range [1, 100]")]),
        },
        Case {
            name: "overlapping source localities",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: loc}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-west/*
          to: {"us-west/*": 100}
        - from: us-west/zone1
          to: {"us-west/*": 100}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute", "overlap with previous specified ones")]),
        },
        Case {
            name: "failover to the same region, with zones and wildcards",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: loc}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failover:
        - from: us-east
          to: us-east
        - from: us-east/zone1
          to: eu-west
        - from: "us-*"
          to: eu-west
    outlierDetection: {consecutive5xxErrors: 3}
"#,
            expect: Expect::Errors(&[
                ("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "must specify different regions"),
                ("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]", "only specify region"),
                ("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[2]", "should not contain '*' wildcard"),
            ]),
        },
        Case {
            name: "failover with topology failover priority",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: loc}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failover:
        - from: us-east
          to: eu-west
        failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region]
    outlierDetection: {consecutive5xxErrors: 3}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[1]", "can not simultaneously set 'failover'")]),
        },
    ]);
}

#[test]
fn destination_rule_client_tls_rules() {
    run_cases(&[
        Case {
            name: "MUTUAL without certificate and key",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls}
spec:
  host: db.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      caCertificates: /etc/certs/ca.pem
"#,
            expect: Expect::Errors(&[
                (
                    "spec.trafficPolicy.tls.clientCertificate",
                    "client certificate required for mutual tls",
                ),
                (
                    "spec.trafficPolicy.tls.privateKey",
                    "private key required for mutual tls",
                ),
            ]),
        },
        Case {
            name: "credentialName with certificate files",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls}
spec:
  host: db.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      credentialName: db-credential
      caCertificates: /etc/certs/ca.pem
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.tls",
                "cannot specify client certificates or CA certificate",
            )]),
        },
        Case {
            name: "insecureSkipVerify with CA certificates",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls}
spec:
  host: db.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      insecureSkipVerify: true
      caCertificates: /etc/certs/ca.pem
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.tls.insecureSkipVerify",
                "when InsecureSkipVerify is set true",
            )]),
        },
        Case {
            name: "configmap credential from another namespace",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls, namespace: default}
spec:
  host: db.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      credentialName: configmap://other/ca-bundle
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.tls.credentialName",
                "namespace must match the configuration namespace",
            )]),
        },
        Case {
            name: "port level MUTUAL without key",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls}
spec:
  host: db.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 5432}
      tls: {mode: MUTUAL, clientCertificate: /etc/certs/c.pem}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.portLevelSettings[0].tls.privateKey",
                "private key required",
            )]),
        },
    ]);
}

#[test]
fn destination_rule_decoding_errors() {
    run_cases(&[
        Case {
            name: "unknown field in traffic policy",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: unknown}
spec:
  host: reviews
  trafficPolicy:
    foo: 1
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.foo", "unknown field \"foo\"")]),
        },
        Case {
            name: "unknown field in subset",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: unknown}
spec:
  host: reviews
  subsets:
  - name: v1
    version: v1
"#,
            expect: Expect::Errors(&[("spec.subsets[0].version", "unknown field \"version\"")]),
        },
        Case {
            name: "typo in load balancer enum",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: typo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBBIN}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.loadBalancer.simple",
                "unknown variant \"ROUND_ROBBIN\"",
            )]),
        },
        Case {
            name: "typo in TLS mode",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: typo}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MTLS}
"#,
            expect: Expect::Errors(&[("spec.trafficPolicy.tls.mode", "unknown variant")]),
        },
        Case {
            name: "string where a number is expected",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wrongtype}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: many}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.connectionPool.tcp.maxConnections",
                "invalid type",
            )]),
        },
        Case {
            name: "duration without unit",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wrongtype}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {interval: "10"}
"#,
            expect: Expect::Errors(&[(
                "spec.trafficPolicy.outlierDetection.interval",
                "missing unit",
            )]),
        },
    ]);
}

#[test]
fn destination_rule_round_trip() {
    assert_round_trip(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: everything, namespace: prod}
spec:
  host: reviews.prod.svc.cluster.local
  exportTo: ["."]
  workloadSelector:
    matchLabels: {app: productpage}
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: session
          path: /
          ttl: 1.5s
          attributes:
          - {name: SameSite, value: Strict}
          - {name: Secure}
        ringHash: {minimumRingSize: "2048"}
      localityLbSetting:
        enabled: true
        failoverPriority: [topology.istio.io/network]
      warmup: {duration: 100ms, minimumPercent: 12.5, aggression: 2}
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}
        maxConnectionDuration: 1h
        idleTimeout: 1.5s
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 100ms
        h2UpgradePolicy: DO_NOT_UPGRADE
        useClientProtocol: true
        maxConcurrentStreams: 100
    outlierDetection:
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 5
      consecutiveGatewayErrors: 3
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
      minHealthPercent: 10
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/cert.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      caCrl: /etc/certs/crl.pem
      subjectAltNames: [reviews.prod.svc.cluster.local]
      sni: reviews.example.com
      insecureSkipVerify: false
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: LEAST_REQUEST}
      tls: {mode: ISTIO_MUTUAL}
    tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 3128}
    retryBudget: {percent: 20, minRetryConcurrency: 3}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash:
          useSourceIp: true
          maglev: {tableSize: 65537}
"#,
    );
}
