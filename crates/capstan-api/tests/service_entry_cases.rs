//! ServiceEntry validation cases, after Istio's `ValidateServiceEntry` and its docs tasks.

mod support;
use support::{assert_round_trip, run_cases, Case, Expect};

#[test]
fn valid_service_entries_from_istio_docs() {
    run_cases(&[
        Case {
            name: "egress httpbin.org over HTTP",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-ext, namespace: default}
spec:
  hosts:
  - httpbin.org
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "egress www.google.com with TLS origination by the app",
            yaml: r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: google, namespace: default}
spec:
  hosts:
  - www.google.com
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
  location: MESH_EXTERNAL
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "egress TLS passthrough to edition.cnn.com on two ports",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: cnn}
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "MESH_INTERNAL VM endpoints with STATIC resolution",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysqldb, namespace: vm}
spec:
  hosts:
  - mysqldb.vm.svc.cluster.local
  location: MESH_INTERNAL
  ports:
  - number: 3306
    name: mysql
    protocol: MYSQL
    targetPort: 3306
  resolution: STATIC
  endpoints:
  - address: 10.128.0.12
    labels: {app: mysqldb, class: vm}
    serviceAccount: mysqldb
    ports: {mysql: 3307}
  - address: 10.128.0.13
    network: vm-network
    locality: us-central1/us-central1-a
    weight: 20
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "MESH_INTERNAL service spanning VMs and pods with workloadSelector",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details-svc, namespace: bookinfo}
spec:
  hosts:
  - details.bookinfo.com
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  workloadSelector:
    labels:
      app: details
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "DNS resolution with hostname endpoints and port mapping",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc-dns}
spec:
  hosts:
  - foo.bar.com
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  endpoints:
  - address: us.foo.bar.com
    ports:
      http: 8080
  - address: uk.foo.bar.com
    ports:
      http: 9080
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "STATIC addresses with a CIDR and IP endpoints (mongo cluster)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc-mongocluster}
spec:
  hosts:
  - mymongodb.somedomain
  addresses:
  - 192.192.192.192/24
  ports:
  - number: 27018
    name: mongodb
    protocol: MONGO
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - address: 3.3.3.3
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "wildcard hosts with NONE resolution",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc-wildcard-example}
spec:
  hosts:
  - "*.bar.com"
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: NONE
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "unix domain socket endpoint with one port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: unix-domain-socket-example}
spec:
  hosts:
  - example.unix.local
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: unix:///var/run/example/socket
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "DNS_ROUND_ROBIN with one endpoint, IPv6 address and exportTo",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr, namespace: egress}
spec:
  hosts:
  - api.example.com
  addresses:
  - 2001:db8::10
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS_ROUND_ROBIN
  endpoints:
  - address: lb.example.com
  exportTo: [".", "istio-system"]
  subjectAltNames: ["spiffe://example.com/api"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "exportTo ~ (only the proxies of the service)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden}
spec:
  hosts: [hidden.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
  exportTo: ["~"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "DYNAMIC_DNS with wildcard hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dynamic}
spec:
  hosts: ["*.wikipedia.org"]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DYNAMIC_DNS
  location: MESH_EXTERNAL
"#,
            expect: Expect::Valid,
        },
    ]);
}

#[test]
fn service_entry_warnings() {
    run_cases(&[
        Case {
            name: "partial wildcard host",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: ["*foo.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
            expect: Expect::Warnings(&[("spec.hosts[0]", "partial wildcard")]),
        },
        Case {
            name: "TCP port without addresses and NONE resolution",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
  resolution: NONE
"#,
            expect: Expect::Warnings(&[(
                "spec.ports[0]",
                "addresses are required for ports serving TCP",
            )]),
        },
        Case {
            name: "workloadSelector without labels",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [svc.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {}
"#,
            expect: Expect::Warnings(&[("spec.workloadSelector", "without labels")]),
        },
        Case {
            name: "workloadSelector with NONE resolution",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [svc.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc}}
"#,
            expect: Expect::Warnings(&[(
                "spec.workloadSelector",
                "should not be set when resolution mode is NONE",
            )]),
        },
        Case {
            name: "DNS with address, several hosts and a TCP-carried port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com, b.example.com]
  addresses: [10.1.1.1]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
"#,
            expect: Expect::Warnings(&[("spec.hosts", "more than one host")]),
        },
        Case {
            name: "DYNAMIC_DNS ignores endpoints",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DYNAMIC_DNS
  endpoints: [{address: 1.2.3.4}]
"#,
            expect: Expect::Warnings(&[("spec.endpoints", "ignored")]),
        },
    ]);
}

#[test]
fn service_entry_host_address_and_port_errors() {
    run_cases(&[
        Case {
            name: "no hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
            expect: Expect::Errors(&[("spec.hosts", "at least one host")]),
        },
        Case {
            name: "full wildcard host",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: ["*"]
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
            expect: Expect::Errors(&[("spec.hosts[0]", "invalid host *")]),
        },
        Case {
            name: "malformed host",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: ["foo_bar.example.com", "foo.*.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
            expect: Expect::Errors(&[("spec.hosts[0]", "invalid"), ("spec.hosts[1]", "invalid")]),
        },
        Case {
            name: "bad IP address",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  addresses: [300.1.1.1]
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
            expect: Expect::Errors(&[("spec.addresses[0]", "is not a valid IP")]),
        },
        Case {
            name: "bad CIDR block",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  addresses: [10.0.0.0/33]
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
            expect: Expect::Errors(&[("spec.addresses[0]", "is not a valid CIDR block")]),
        },
        Case {
            name: "CIDR with DNS resolution",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  addresses: [10.0.0.0/16]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"#,
            expect: Expect::Errors(&[(
                "spec.addresses",
                "CIDR addresses are allowed only for NONE/STATIC",
            )]),
        },
        Case {
            name: "duplicate port name and number",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 80, name: http, protocol: HTTP}
"#,
            expect: Expect::Errors(&[
                ("spec.ports[1].name", "port name \"http\" already defined"),
                ("spec.ports[1].number", "port 80 already defined"),
            ]),
        },
        Case {
            name: "unknown protocol",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: FOO}]
"#,
            expect: Expect::Errors(&[("spec.ports[0].protocol", "unrecognized protocol")]),
        },
        Case {
            name: "port number zero and bad targetPort",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 0, name: http, protocol: HTTP, targetPort: 70000}]
"#,
            expect: Expect::Errors(&[
                ("spec.ports[0].number", "port number 0"),
                ("spec.ports[0].targetPort", "port number 70000"),
            ]),
        },
        Case {
            name: "invalid and missing port names",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports:
  - {number: 80, name: http_1, protocol: HTTP}
  - {number: 81, protocol: HTTP}
"#,
            expect: Expect::Errors(&[
                ("spec.ports[0].name", "invalid port name"),
                ("spec.ports[1].name", "invalid port name"),
            ]),
        },
        Case {
            name: "multiple hosts with a TCP port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com, b.example.com]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: DNS
"#,
            expect: Expect::Errors(&[(
                "spec.ports[0].protocol",
                "multiple hosts provided with non-HTTP, non-TLS ports",
            )]),
        },
        Case {
            name: "invalid exportTo entries",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: default}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  exportTo: ["Bad_NS", "*"]
"#,
            expect: Expect::Errors(&[
                ("spec.exportTo[0]", "only . or * or valid namespace names"),
                (
                    "spec.exportTo",
                    "cannot have both public (*) and non-public",
                ),
            ]),
        },
    ]);
}

#[test]
fn service_entry_resolution_and_endpoint_errors() {
    run_cases(&[
        Case {
            name: "NONE resolution with endpoints",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 1.1.1.1}]
"#,
            expect: Expect::Errors(&[(
                "spec.endpoints",
                "no endpoints should be provided for resolution type none",
            )]),
        },
        Case {
            name: "workloadSelector and endpoints together",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: a}}
  endpoints: [{address: 1.1.1.1}]
"#,
            expect: Expect::Errors(&[(
                "spec.workloadSelector",
                "only one of WorkloadSelector or Endpoints",
            )]),
        },
        Case {
            name: "wildcard in workloadSelector",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: "a*"}}
"#,
            expect: Expect::Errors(&[(
                "spec.workloadSelector.labels[app]",
                "wildcard is not supported",
            )]),
        },
        Case {
            name: "STATIC endpoint with a host name",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: vm.example.com}]
"#,
            expect: Expect::Errors(&[("spec.endpoints[0].address", "is not a valid IP address")]),
        },
        Case {
            name: "STATIC endpoint ports must name service ports and be in range",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - address: 1.1.1.1
    ports: {grpc: 9090, http: 0}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.endpoints[0].ports[grpc]",
                    "not defined by the service entry",
                ),
                ("spec.endpoints[0].ports[http]", "port number 0"),
            ]),
        },
        Case {
            name: "unix endpoint with ports",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: "unix:///var/run/sock", ports: {http: 80}}]
"#,
            expect: Expect::Errors(&[("spec.endpoints[0].ports", "must not include ports")]),
        },
        Case {
            name: "unix endpoint with a relative path",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: "unix://var/run/sock"}]
"#,
            expect: Expect::Errors(&[("spec.endpoints[0].address", "not an absolute path")]),
        },
        Case {
            name: "unix endpoint needs exactly one service port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 81, name: http2, protocol: HTTP2}
  resolution: STATIC
  endpoints: [{address: "unix:///var/run/sock"}]
"#,
            expect: Expect::Errors(&[(
                "spec.endpoints[0].address",
                "exactly 1 service port required",
            )]),
        },
        Case {
            name: "STATIC endpoint without address or network, and a bad label",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - labels: {app: a}
  - address: 1.1.1.1
    labels: {app: "has space"}
"#,
            expect: Expect::Errors(&[
                ("spec.endpoints[0].address", "address is required"),
                ("spec.endpoints[1].labels[app]", "invalid label value"),
            ]),
        },
        Case {
            name: "DNS with a wildcard host and no endpoints",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"#,
            expect: Expect::Errors(&[(
                "spec.hosts[0]",
                "hosts must be FQDN if no endpoints are provided for resolution mode DNS",
            )]),
        },
        Case {
            name: "DNS_ROUND_ROBIN with two endpoints",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: a1.example.com}, {address: a2.example.com}]
"#,
            expect: Expect::Errors(&[(
                "spec.endpoints",
                "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
            )]),
        },
        Case {
            name: "DNS endpoints must be IPs or FQDNs (no unix sockets)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints:
  - address: "not_valid!"
  - address: "unix:///var/run/sock"
  - address: 1.2.3.4
    ports: {https: 443}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.endpoints[0].address",
                    "is not a valid FQDN or an IP address",
                ),
                (
                    "spec.endpoints[1].address",
                    "is not a valid FQDN or an IP address",
                ),
                (
                    "spec.endpoints[2].ports[https]",
                    "not defined by the service entry",
                ),
            ]),
        },
        Case {
            name: "DYNAMIC_DNS needs wildcard hosts and MESH_EXTERNAL",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  location: MESH_INTERNAL
  resolution: DYNAMIC_DNS
"#,
            expect: Expect::Errors(&[
                (
                    "spec.hosts[0]",
                    "hosts must be wildcard for resolution mode DYNAMIC_DNS",
                ),
                ("spec.location", "only supported for MESH_EXTERNAL"),
            ]),
        },
    ]);
}

#[test]
fn service_entry_decoding_errors() {
    run_cases(&[
        Case {
            name: "unknown field in a port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP, nmae: x}]
"#,
            expect: Expect::Errors(&[("spec.ports[0].nmae", "unknown field \"nmae\"")]),
        },
        Case {
            name: "unknown field in an endpoint",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  resolution: STATIC
  endpoints: [{address: 1.1.1.1, zone: a}]
"#,
            expect: Expect::Errors(&[("spec.endpoints[0].zone", "unknown field \"zone\"")]),
        },
        Case {
            name: "hosts must be a list",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: a.example.com
"#,
            expect: Expect::Errors(&[("spec.hosts", "expected a sequence")]),
        },
        Case {
            name: "resolution typo",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  resolution: DNS_RR
"#,
            expect: Expect::Errors(&[("spec.resolution", "unknown variant \"DNS_RR\"")]),
        },
        Case {
            name: "location typo",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  location: EXTERNAL
"#,
            expect: Expect::Errors(&[("spec.location", "unknown variant \"EXTERNAL\"")]),
        },
        Case {
            name: "negative endpoint weight",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  resolution: STATIC
  endpoints: [{address: 1.1.1.1, weight: -1}]
"#,
            expect: Expect::Errors(&[("spec.endpoints[0].weight", "invalid value")]),
        },
        Case {
            name: "networking workloadSelector uses labels, not matchLabels",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
  resolution: STATIC
  workloadSelector: {matchLabels: {app: a}}
"#,
            expect: Expect::Errors(&[(
                "spec.workloadSelector.matchLabels",
                "unknown field \"matchLabels\"",
            )]),
        },
    ]);
}

#[test]
fn service_entry_round_trip() {
    assert_round_trip(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rich, namespace: default}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.1]
  ports:
  - {number: 443, name: https, protocol: HTTPS, targetPort: 8443}
  - {number: 80, name: http, protocol: HTTP}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    ports: {https: 9443, http: 8080}
    labels: {app: api, version: v1}
    network: net1
    locality: us/us-east-1/az-1
    weight: 3
    serviceAccount: api
  - address: 10.0.0.2
  exportTo: [".", "istio-system"]
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/api"]
"#,
    );
    assert_round_trip(
        r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: selector}
spec:
  hosts: [details.bookinfo.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
  workloadSelector: {labels: {app: details}}
"#,
    );
}
