//! Gateway validation cases: Istio docs tasks (valid) and one invalid case per rule.

mod support;
use support::{assert_round_trip, run_cases, Case, Expect};

#[test]
fn valid_gateways_from_istio_docs() {
    run_cases(&[
        Case {
            name: "bookinfo ingress HTTP",
            yaml: r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "secure ingress SIMPLE with credentialName",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "secure ingress MUTUAL with credentialName",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: MUTUAL
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "ingress without TLS termination (PASSTHROUGH)",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: PASSTHROUGH
    hosts:
    - nginx.example.com
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "HTTP to HTTPS redirect plus HTTPS server",
            yaml: r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: my-gateway, namespace: some-config-namespace}
spec:
  selector:
    app: my-gateway-controller
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      httpsRedirect: true
  - port:
      number: 443
      name: https-443
      protocol: HTTPS
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      mode: SIMPLE
      serverCertificate: /etc/certs/servercert.pem
      privateKey: /etc/certs/privatekey.pem
  - port:
      number: 9443
      name: https-9443
      protocol: HTTPS
    hosts:
    - "bookinfo-namespace/*.bookinfo.com"
    tls:
      mode: SIMPLE
      credentialName: bookinfo-secret
  - port:
      number: 9080
      name: http-wildcard
      protocol: HTTP
    hosts:
    - "ns1/*"
    - "ns2/foo.bar.com"
  - port:
      number: 2379
      name: mongo
      protocol: MONGO
    hosts:
    - "*"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "egress gateway HTTP and ISTIO_MUTUAL",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - edition.cnn.com
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - my-nginx.mesh-external.svc.cluster.local
    tls:
      mode: ISTIO_MUTUAL
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "east-west gateway AUTO_PASSTHROUGH",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector:
    istio: eastwestgateway
  servers:
  - port:
      number: 15443
      name: tls
      protocol: TLS
    tls:
      mode: AUTO_PASSTHROUGH
    hosts:
    - "*.local"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "MUTUAL with files, SANs, versions and ciphers",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mtls-files}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/server.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      caCrl: /etc/certs/crl.pem
      subjectAltNames: [client.example.com]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "TCP server and lower-case protocol",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: tcp}
    hosts: ["*"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "unix socket bind with port 0 and IP host",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: uds}
spec:
  servers:
  - port: {number: 0, name: uds, protocol: HTTP}
    bind: unix:///var/run/gateway.sock
    hosts: ["10.1.2.3"]
  - port: {number: 8080, name: http-local, protocol: HTTP}
    bind: 127.0.0.1
    hosts: ["./*"]
    name: local
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "credentialNames and OPTIONAL_MUTUAL",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: multi-cert}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: SIMPLE
      credentialNames: [a-rsa, a-ecdsa]
  - port: {number: 8443, name: https-optional, protocol: HTTPS}
    hosts: [b.example.com]
    tls:
      mode: OPTIONAL_MUTUAL
      credentialName: b-credential
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "tlsCertificates with SIMPLE",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: multi-file}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: SIMPLE
      tlsCertificates:
      - {serverCertificate: /etc/certs/rsa.pem, privateKey: /etc/certs/rsa.key}
      - {serverCertificate: /etc/certs/ec.pem, privateKey: /etc/certs/ec.key}
"#,
            expect: Expect::Valid,
        },
    ]);
}

#[test]
fn gateway_warnings() {
    run_cases(&[
        Case {
            name: "PASSTHROUGH with certificates",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [a.example.com]
    tls: {mode: PASSTHROUGH, serverCertificate: /etc/certs/a.pem}
"#,
            expect: Expect::Warnings(&[(
                "spec.servers[0].tls",
                "PASSTHROUGH mode does not use certificates",
            )]),
        },
        Case {
            name: "httpsRedirect on an HTTPS server",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert, httpsRedirect: true}
"#,
            expect: Expect::Warnings(&[(
                "spec.servers[0].tls.httpsRedirect",
                "should only be used with http servers",
            )]),
        },
        Case {
            name: "invalid and duplicate cipher suites",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: SIMPLE
      credentialName: a-cert
      cipherSuites: [NOT-A-CIPHER, AES128-SHA, AES128-SHA]
"#,
            expect: Expect::Warnings(&[
                (
                    "spec.servers[0].tls.cipherSuites",
                    "ignoring invalid cipher suites: [NOT-A-CIPHER]",
                ),
                (
                    "spec.servers[0].tls.cipherSuites",
                    "ignoring duplicate cipher suites: [AES128-SHA]",
                ),
            ]),
        },
        Case {
            name: "TLS 1.0 without cipher suites",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert, minProtocolVersion: TLSV1_0}
"#,
            expect: Expect::Warnings(&[(
                "spec.servers[0].tls.minProtocolVersion",
                "TLS version below TLSV1_2",
            )]),
        },
    ]);
}

#[test]
fn gateway_server_rules() {
    run_cases(&[
        Case {
            name: "no servers",
            yaml: r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: empty}
spec:
  selector: {istio: ingressgateway}
"#,
            expect: Expect::Errors(&[("spec.servers", "gateway must have at least one server")]),
        },
        Case {
            name: "server without hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
"#,
            expect: Expect::Errors(&[("spec.servers[0].hosts", "at least one host")]),
        },
        Case {
            name: "bad hosts",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts:
    - bookinfo
    - "*foo.example.com"
    - "Bad_NS/foo.example.com"
    - "~/foo.example.com"
    - "/foo.example.com"
    - "ns/foo.*.com"
"#,
            expect: Expect::Errors(&[
                (
                    "spec.servers[0].hosts[0]",
                    "short names (non FQDN) are not allowed",
                ),
                ("spec.servers[0].hosts[1]", "partial wildcard"),
                (
                    "spec.servers[0].hosts[2]",
                    "invalid namespace value \"Bad_NS\" in gateway",
                ),
                (
                    "spec.servers[0].hosts[3]",
                    "invalid namespace value \"~\" in gateway",
                ),
                ("spec.servers[0].hosts[4]", "cannot be empty"),
                ("spec.servers[0].hosts[5]", "invalid"),
            ]),
        },
        Case {
            name: "missing port",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - hosts: ["*"]
"#,
            expect: Expect::Errors(&[("spec.servers[0].port", "port is required")]),
        },
        Case {
            name: "port without name, bad protocol, out of range, targetPort",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 70000, protocol: HTTP3, targetPort: 8080}
    hosts: ["*"]
"#,
            expect: Expect::Errors(&[
                ("spec.servers[0].port.name", "port name must be set"),
                (
                    "spec.servers[0].port.protocol",
                    "invalid protocol \"HTTP3\"",
                ),
                ("spec.servers[0].port.number", "port number 70000"),
                (
                    "spec.servers[0].port.targetPort",
                    "targetPort has no impact on Gateways",
                ),
            ]),
        },
        Case {
            name: "duplicate port name with different numbers",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["a.example.com"]
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["b.example.com"]
"#,
            expect: Expect::Errors(&[(
                "spec.servers[1].port.name",
                "port names in servers must be unique: duplicate name http",
            )]),
        },
        Case {
            name: "same port name reused for the same port number",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shared-port}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, credentialName: b-cert}
"#,
            expect: Expect::Errors(&[("spec.servers[1].port.name", "duplicate name https")]),
        },
        Case {
            name: "bind is not an IP",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    bind: localhost
    hosts: ["*"]
"#,
            expect: Expect::Errors(&[("spec.servers[0].bind", "localhost is not a valid IP")]),
        },
        Case {
            name: "unix bind with a port number and relative path",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    bind: unix://relative.sock
    hosts: ["*"]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.servers[0].port.number",
                    "port number must be 0 for unix domain socket",
                ),
                ("spec.servers[0].bind", "not an absolute path"),
            ]),
        },
        Case {
            name: "gateway name with dots",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: my.gateway}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#,
            expect: Expect::Errors(&[("metadata.name", "invalid gateway name")]),
        },
    ]);
}

#[test]
fn gateway_tls_rules() {
    run_cases(&[
        Case {
            name: "HTTPS without TLS settings",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
"#,
            expect: Expect::Errors(&[(
                "spec.servers[0].tls",
                "server must have TLS settings for HTTPS/TLS protocols",
            )]),
        },
        Case {
            name: "HTTP port terminating TLS",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cert}
"#,
            expect: Expect::Errors(&[(
                "spec.servers[0].tls",
                "server cannot have TLS settings for plain text HTTP ports",
            )]),
        },
        Case {
            name: "TCP port with TLS settings",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
"#,
            expect: Expect::Errors(&[(
                "spec.servers[0].tls",
                "server cannot have TLS settings for non HTTPS/TLS ports",
            )]),
        },
        Case {
            name: "SIMPLE without certificate and key",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.servers[0].tls.serverCertificate",
                    "SIMPLE TLS requires a server certificate",
                ),
                (
                    "spec.servers[0].tls.privateKey",
                    "SIMPLE TLS requires a private key",
                ),
            ]),
        },
        Case {
            name: "MUTUAL without CA bundle",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}
"#,
            expect: Expect::Errors(&[(
                "spec.servers[0].tls.caCertificates",
                "MUTUAL TLS requires a client CA bundle",
            )]),
        },
        Case {
            name: "ISTIO_MUTUAL with credentials",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL, credentialName: cert, privateKey: /k.pem}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.servers[0].tls.credentialName",
                    "ISTIO_MUTUAL TLS cannot have associated credentialName",
                ),
                (
                    "spec.servers[0].tls.privateKey",
                    "ISTIO_MUTUAL TLS cannot have associated private key",
                ),
            ]),
        },
        Case {
            name: "CRL with SIMPLE",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}
"#,
            expect: Expect::Errors(&[(
                "spec.servers[0].tls.caCrl",
                "CRL is not supported with SIMPLE TLS",
            )]),
        },
        Case {
            name: "credentialName and credentialNames",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: a, credentialNames: [b, c]}
"#,
            expect: Expect::Errors(&[(
                "spec.servers[0].tls.credentialNames",
                "only one of credentialName or credentialNames",
            )]),
        },
        Case {
            name: "tlsCertificates with serverCertificate, and missing key",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: SIMPLE
      serverCertificate: /c.pem
      tlsCertificates:
      - {serverCertificate: /rsa.pem}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.servers[0].tls.tlsCertificates",
                    "only one of serverCertificate/privateKey or tlsCertificates",
                ),
                (
                    "spec.servers[0].tls.tlsCertificates[0].privateKey",
                    "requires a private key",
                ),
            ]),
        },
    ]);
}

#[test]
fn gateway_decoding_errors() {
    run_cases(&[
        Case {
            name: "unknown field in server",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    host: foo
"#,
            expect: Expect::Errors(&[("spec.servers[0].host", "unknown field \"host\"")]),
        },
        Case {
            name: "typo in TLS mode",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPEL}
"#,
            expect: Expect::Errors(&[("spec.servers[0].tls.mode", "unknown variant \"SIMPEL\"")]),
        },
        Case {
            name: "typo in TLS version",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_4}
"#,
            expect: Expect::Errors(&[(
                "spec.servers[0].tls.minProtocolVersion",
                "unknown variant",
            )]),
        },
        Case {
            name: "selector as a list",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: [istio]
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#,
            expect: Expect::Errors(&[("spec.selector", "invalid type")]),
        },
        Case {
            name: "negative port number",
            yaml: r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: -1, name: http, protocol: HTTP}
    hosts: ["*"]
"#,
            expect: Expect::Errors(&[("spec.servers[0].port.number", "invalid value")]),
        },
    ]);
}

#[test]
fn gateway_round_trip() {
    assert_round_trip(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: everything, namespace: istio-system}
spec:
  selector: {istio: ingressgateway, app: gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com", "ns1/foo.example.com"]
    tls: {httpsRedirect: true}
    name: plain
  - port: {number: 443, name: https, protocol: HTTPS}
    bind: 0.0.0.0
    hosts: [secure.example.com]
    defaultEndpoint: 127.0.0.1:8443
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/server.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      caCrl: /etc/certs/crl.pem
      subjectAltNames: [client.example.com]
      verifyCertificateSpki: [YWJj]
      verifyCertificateHash: ["ab:cd"]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]
  - port: {number: 8443, name: https-multi, protocol: HTTPS}
    hosts: [multi.example.com]
    tls:
      mode: OPTIONAL_MUTUAL
      credentialNames: [rsa-cert, ecdsa-cert]
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
"#,
    );
}
