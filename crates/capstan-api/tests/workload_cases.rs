//! WorkloadEntry and WorkloadGroup validation cases, after Istio's `ValidateWorkloadEntry`,
//! `ValidateWorkloadGroup` and the VM onboarding docs.

mod support;
use support::{assert_round_trip, run_cases, Case, Expect};

#[test]
fn valid_workload_entries() {
    run_cases(&[
        Case {
            name: "VM running mysqldb (docs: VM onboarding)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: mysqldb-vm, namespace: vm}
spec:
  address: 10.128.0.12
  labels: {app: mysqldb, class: vm}
  serviceAccount: mysqldb
  network: vm-network
  locality: us-central1/us-central1-a
  weight: 10
  ports: {mysql: 3306}
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "VM reachable by DNS name",
            yaml: r#"
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: details-vm}
spec:
  address: vm1.corp.example.com
  labels: {app: details-legacy, instance-id: vm1}
  serviceAccount: details-legacy
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "IPv6 address",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: v6}
spec:
  address: "2001:db8::1"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "unix socket address",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: uds}
spec:
  address: "unix:///var/run/app.sock"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "no address but a network (warning)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: remote}
spec:
  network: network2
  labels: {app: remote}
"#,
            expect: Expect::Warnings(&[(
                "spec.address",
                "address is unset with network \"network2\"",
            )]),
        },
    ]);
}

#[test]
fn workload_entry_errors() {
    run_cases(&[
        Case {
            name: "no address and no network",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  labels: {app: a}
"#,
            expect: Expect::Errors(&[("spec.address", "address is required")]),
        },
        Case {
            name: "address neither IP nor FQDN",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: "not an ip!"
"#,
            expect: Expect::Errors(&[("spec.address", "is not a valid FQDN or an IP address")]),
        },
        Case {
            name: "unix socket with a relative path",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: "unix://relative/sock"
"#,
            expect: Expect::Errors(&[("spec.address", "not an absolute path")]),
        },
        Case {
            name: "unix socket naming a directory",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: "unix:///var/run/"
"#,
            expect: Expect::Errors(&[("spec.address", "not an absolute path to a file")]),
        },
        Case {
            name: "unix socket with ports",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: "unix:///var/run/app.sock"
  ports: {http: 80}
"#,
            expect: Expect::Errors(&[("spec.ports", "must not include ports")]),
        },
        Case {
            name: "bad port name and port number",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: 10.0.0.1
  ports: {my_port: 80, http: 70000}
"#,
            expect: Expect::Errors(&[
                ("spec.ports[my_port]", "invalid port name"),
                ("spec.ports[http]", "port number 70000"),
            ]),
        },
        Case {
            name: "bad labels",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: 10.0.0.1
  labels: {app: "has space", "-bad": x}
"#,
            expect: Expect::Errors(&[
                ("spec.labels[app]", "invalid label value"),
                ("spec.labels[-bad]", "invalid label key"),
            ]),
        },
        Case {
            name: "unknown field",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: 10.0.0.1
  serviceaccount: a
"#,
            expect: Expect::Errors(&[("spec.serviceaccount", "unknown field \"serviceaccount\"")]),
        },
        Case {
            name: "ports must be a map of numbers",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we}
spec:
  address: 10.0.0.1
  ports: {http: eighty}
"#,
            expect: Expect::Errors(&[("spec.ports.http", "invalid type")]),
        },
    ]);
}

#[test]
fn valid_workload_groups() {
    run_cases(&[
        Case {
            name: "VM onboarding group with an HTTPS probe (docs)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: bookinfo}
spec:
  metadata:
    labels:
      app.kubernetes.io/name: reviews
      app.kubernetes.io/version: "1.3.4"
    annotations:
      prometheus.io/scrape: "true"
  template:
    ports:
      grpc: 3550
      http: 8080
    serviceAccount: default
  probe:
    initialDelaySeconds: 5
    timeoutSeconds: 3
    periodSeconds: 4
    successThreshold: 3
    failureThreshold: 3
    httpGet:
      path: /foo/bar
      host: 127.0.0.1
      port: 3100
      scheme: HTTPS
      httpHeaders:
      - name: Lit-Header
        value: Im-The-Best
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "tcpSocket probe",
            yaml: r#"
apiVersion: networking.istio.io/v1beta1
kind: WorkloadGroup
metadata: {name: mysql, namespace: vm}
spec:
  metadata: {labels: {app: mysql}}
  template: {serviceAccount: mysql, network: vm-net}
  probe:
    periodSeconds: 10
    tcpSocket: {host: 127.0.0.1, port: 3306}
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "exec probe",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadGroup
metadata: {name: worker}
spec:
  template: {serviceAccount: worker}
  probe:
    exec:
      command: ["/bin/sh", "-c", "test -f /tmp/ready"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "grpc probe",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: grpc-svc}
spec:
  template: {}
  probe:
    grpc: {port: 9090, service: grpc.health.v1.Health}
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "template with address and labels (warnings)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template:
    address: 10.0.0.1
    labels: {app: a}
"#,
            expect: Expect::Warnings(&[
                (
                    "spec.template.address",
                    "should not be set in a WorkloadGroup template",
                ),
                ("spec.template.labels", "metadata.labels"),
            ]),
        },
    ]);
}

#[test]
fn workload_group_errors() {
    run_cases(&[
        Case {
            name: "template required",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  metadata: {labels: {app: a}}
"#,
            expect: Expect::Errors(&[("spec.template", "template is required")]),
        },
        Case {
            name: "bad metadata label",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  metadata: {labels: {"-bad": a}}
  template: {}
"#,
            expect: Expect::Errors(&[("spec.metadata.labels[-bad]", "invalid label key")]),
        },
        Case {
            name: "bad template port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {ports: {http: 0}}
"#,
            expect: Expect::Errors(&[("spec.template.ports[http]", "port number 0")]),
        },
        Case {
            name: "probe without a method",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe: {periodSeconds: 5}
"#,
            expect: Expect::Errors(&[(
                "spec.probe",
                "exactly one of httpGet, tcpSocket, exec or grpc",
            )]),
        },
        Case {
            name: "probe with two methods",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe:
    tcpSocket: {port: 80}
    exec: {command: ["true"]}
"#,
            expect: Expect::Errors(&[("spec.probe", "only one health check method")]),
        },
        Case {
            name: "negative probe timings",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe:
    periodSeconds: -1
    failureThreshold: -3
    tcpSocket: {port: 80}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.probe.periodSeconds",
                    "periodSeconds must be non-negative",
                ),
                (
                    "spec.probe.failureThreshold",
                    "failureThreshold must be non-negative",
                ),
            ]),
        },
        Case {
            name: "httpGet port, scheme and header name",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe:
    httpGet:
      port: 0
      scheme: ftp
      httpHeaders: [{name: "bad header", value: x}]
"#,
            expect: Expect::Errors(&[
                ("spec.probe.httpGet.port", "port number 0"),
                ("spec.probe.httpGet.scheme", "httpGet.scheme must be one of"),
                (
                    "spec.probe.httpGet.httpHeaders[0].name",
                    "not a valid header name",
                ),
            ]),
        },
        Case {
            name: "tcpSocket port out of range",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe: {tcpSocket: {port: 65536}}
"#,
            expect: Expect::Errors(&[(
                "spec.probe.tcpSocket.port",
                "must be in the range 1..65535",
            )]),
        },
        Case {
            name: "exec without command",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe: {exec: {}}
"#,
            expect: Expect::Errors(&[("spec.probe.exec.command", "exec.command is required")]),
        },
        Case {
            name: "grpc without port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe: {grpc: {service: foo}}
"#,
            expect: Expect::Errors(&[("spec.probe.grpc.port", "port number 0")]),
        },
        Case {
            name: "unknown probe field",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe: {httpGet: {port: 80, pth: /x}}
"#,
            expect: Expect::Errors(&[("spec.probe.httpGet.pth", "unknown field \"pth\"")]),
        },
        Case {
            name: "probe timing of the wrong type",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: wg}
spec:
  template: {}
  probe: {periodSeconds: 5s, tcpSocket: {port: 80}}
"#,
            expect: Expect::Errors(&[("spec.probe.periodSeconds", "invalid type")]),
        },
    ]);
}

#[test]
fn workload_entry_round_trip() {
    assert_round_trip(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: rich, namespace: vm}
spec:
  address: 10.0.0.7
  ports: {http: 8080, grpc: 9090}
  labels: {app: rich, version: v2}
  network: net-a
  locality: eu/eu-west-1/az-2
  weight: 7
  serviceAccount: rich-sa
"#,
    );
}

#[test]
fn workload_group_round_trip() {
    assert_round_trip(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: rich, namespace: vm}
spec:
  metadata:
    labels: {app: rich}
    annotations: {owner: team-a}
  template:
    ports: {http: 8080}
    network: net-a
    locality: eu/eu-west-1
    weight: 2
    serviceAccount: rich-sa
  probe:
    initialDelaySeconds: 1
    timeoutSeconds: 2
    periodSeconds: 3
    successThreshold: 4
    failureThreshold: 5
    httpGet:
      path: /ready
      port: 8080
      host: localhost
      scheme: HTTP
      httpHeaders:
      - {name: X-Probe, value: "1"}
      - {name: X-Probe, value: "2"}
"#,
    );
}
