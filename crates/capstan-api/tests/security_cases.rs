//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication validation cases, after
//! Istio's security validation and its docs tasks.

mod support;
use support::{assert_round_trip, run_cases, Case, Expect};

#[test]
fn peer_authentication_cases() {
    run_cases(&[
        Case {
            name: "mesh-wide STRICT",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls:
    mode: STRICT
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "namespace PERMISSIVE",
            yaml: r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls:
    mode: PERMISSIVE
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "workload STRICT with port-level DISABLE",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
    "9090":
      mode: PERMISSIVE
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "port-level mTLS without a selector",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: DISABLE}
"#,
            expect: Expect::Errors(&[(
                "spec.portLevelMtls",
                "mesh/namespace peer authentication cannot have port level mTLS",
            )]),
        },
        Case {
            name: "empty port-level mTLS",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: foo}
spec:
  selector: {matchLabels: {app: a}}
  portLevelMtls: {}
"#,
            expect: Expect::Errors(&[("spec.portLevelMtls", "must have at least one element")]),
        },
        Case {
            name: "port-level keys out of range",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: foo}
spec:
  selector: {matchLabels: {app: a}}
  portLevelMtls:
    0: {mode: DISABLE}
    70000: {mode: DISABLE}
    http: {mode: DISABLE}
"#,
            expect: Expect::Errors(&[
                ("spec.portLevelMtls[0]", "port must be in range 1..65535"),
                (
                    "spec.portLevelMtls[70000]",
                    "port must be in range 1..65535",
                ),
                ("spec.portLevelMtls[http]", "port must be in range 1..65535"),
            ]),
        },
        Case {
            name: "selector without labels (warning)",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: foo}
spec:
  selector: {}
  mtls: {mode: STRICT}
"#,
            expect: Expect::Warnings(&[(
                "spec.selector",
                "workload selector specified without labels",
            )]),
        },
        Case {
            name: "wildcard in selector",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: foo}
spec:
  selector: {matchLabels: {app: "*"}}
"#,
            expect: Expect::Errors(&[(
                "spec.selector.matchLabels[app]",
                "wildcard is not supported",
            )]),
        },
        Case {
            name: "mode typo",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: foo}
spec:
  mtls: {mode: STRICTT}
"#,
            expect: Expect::Errors(&[("spec.mtls.mode", "unknown variant \"STRICTT\"")]),
        },
        Case {
            name: "unknown field in mtls",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: foo}
spec:
  mtls: {mode: STRICT, strict: true}
"#,
            expect: Expect::Errors(&[("spec.mtls.strict", "unknown field \"strict\"")]),
        },
    ]);
}

#[test]
fn valid_authorization_policies_from_istio_docs() {
    run_cases(&[
        Case {
            name: "allow-nothing",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "deny-all with an empty rule",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: foo}
spec:
  action: DENY
  rules:
  - {}
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "allow GET from the productpage service account",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector:
    matchLabels:
      app: reviews
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "deny by ipBlocks at the ingress gateway",
            yaml: r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: istio-system}
spec:
  selector:
    matchLabels:
      app: istio-ingressgateway
  action: DENY
  rules:
  - from:
    - source:
        ipBlocks: ["1.2.3.4", "5.6.7.0/24"]
        remoteIpBlocks: ["2001:db8::/32"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "CUSTOM action with an ext-authz provider",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "require a JWT group claim",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "gateway targetRefs, ports, wildcards and many conditions",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: foo}
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  rules:
  - from:
    - source:
        namespaces: ["foo", "bar-*"]
        notPrincipals: ["*/sa/blocked"]
    to:
    - operation:
        hosts: ["*.example.com"]
        ports: ["8080"]
        notPaths: ["/admin*", "/foo/{*}/bar/{**}"]
    when:
    - key: source.ip
      values: ["10.0.0.0/8"]
    - key: destination.port
      notValues: ["9090"]
    - key: request.headers[x-token]
      values: ["*"]
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
    - key: connection.sni
      values: ["www.example.com"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "service accounts in a source",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sa, namespace: foo}
spec:
  rules:
  - from:
    - source:
        serviceAccounts: ["foo/sleep"]
        notServiceAccounts: ["foo/curl"]
"#,
            expect: Expect::Valid,
        },
    ]);
}

#[test]
fn authorization_policy_action_and_target_errors() {
    run_cases(&[
        Case {
            name: "CUSTOM without provider",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: CUSTOM
  rules: [{}]
"#,
            expect: Expect::Errors(&[("spec.provider.name", "`provider.name` must not be empty")]),
        },
        Case {
            name: "CUSTOM without rules",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: ext}
"#,
            expect: Expect::Errors(&[(
                "spec.rules",
                "CUSTOM action without `rules` is meaningless",
            )]),
        },
        Case {
            name: "provider with a DENY action",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: DENY
  provider: {name: ext}
  rules: [{}]
"#,
            expect: Expect::Errors(&[(
                "spec.provider",
                "`provider` must not be with non CUSTOM action, found DENY",
            )]),
        },
        Case {
            name: "DENY without rules",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: DENY
"#,
            expect: Expect::Errors(&[("spec.rules", "DENY action without `rules` is meaningless")]),
        },
        Case {
            // `rules: []` is no rules to Istio (protojson); found by differential fuzzing.
            name: "DENY with an empty rules list",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: DENY
  rules: []
"#,
            expect: Expect::Errors(&[("spec.rules", "DENY action without `rules` is meaningless")]),
        },
        Case {
            name: "CUSTOM with an empty rules list",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: ext}
  rules: []
"#,
            expect: Expect::Errors(&[(
                "spec.rules",
                "CUSTOM action without `rules` is meaningless",
            )]),
        },
        Case {
            name: "CUSTOM with identity-based matching",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: ext}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/bar"]
    when:
    - key: request.auth.claims[iss]
      values: ["me"]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].from[0].source.principals",
                    "currently not supported with CUSTOM action",
                ),
                (
                    "spec.rules[0].when[0].key",
                    "request.auth.claims[iss] is currently not supported with CUSTOM action",
                ),
            ]),
        },
        Case {
            name: "selector and targetRef together",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  selector: {matchLabels: {app: a}}
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}
"#,
            expect: Expect::Errors(&[(
                "spec.targetRef",
                "only one of targetRefs or workloadSelector can be set",
            )]),
        },
        Case {
            name: "targetRef with a namespace and an unsupported kind",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  targetRef: {kind: Deployment, group: apps, name: web, namespace: bar}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.targetRef.namespace",
                    "cross namespace referencing is not supported",
                ),
                ("spec.targetRef.kind", "targetRef must be to one of"),
            ]),
        },
        Case {
            name: "targetRefs entry without a name",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  targetRefs:
  - {kind: Service, name: reviews}
  - {kind: ServiceEntry, group: networking.istio.io}
"#,
            expect: Expect::Errors(&[("spec.targetRefs[1].name", "targetRef name must be set")]),
        },
        Case {
            name: "action typo",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: ALLOWED
"#,
            expect: Expect::Errors(&[("spec.action", "unknown variant \"ALLOWED\"")]),
        },
        Case {
            name: "unknown field in a source",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principal: ["x"]
"#,
            expect: Expect::Errors(&[(
                "spec.rules[0].from[0].source.principal",
                "unknown field \"principal\"",
            )]),
        },
        Case {
            name: "methods must be a list",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        methods: GET
"#,
            expect: Expect::Errors(&[(
                "spec.rules[0].to[0].operation.methods",
                "expected a sequence",
            )]),
        },
    ]);
}

#[test]
fn authorization_policy_rule_errors() {
    run_cases(&[
        Case {
            // protojson reads `[]` as an unset list, so Istio accepts it as no `from` at all
            // (istioctl agrees; found by differential fuzzing).
            name: "empty from list is no from",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from: []
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "from entry without source, to entry without operation",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from: [{}]
    to: [{}]
"#,
            expect: Expect::Errors(&[
                ("spec.rules[0].from[0]", "`from.source` must not be nil"),
                ("spec.rules[0].to[0]", "`to.operation` must not be nil"),
            ]),
        },
        Case {
            name: "empty source and empty operation",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from: [{source: {}}]
    to: [{operation: {}}]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].from[0].source",
                    "`from.source` must not be empty",
                ),
                (
                    "spec.rules[0].to[0].operation",
                    "`to.operation` must not be empty",
                ),
            ]),
        },
        Case {
            name: "empty to list is no to",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - to: []
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "bad IP blocks",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from:
    - source:
        ipBlocks: ["1.2.3.256"]
        notRemoteIpBlocks: ["10.0.0.0/40"]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].from[0].source.ipBlocks[0]",
                    "bad IP address (1.2.3.256)",
                ),
                (
                    "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
                    "bad CIDR range (10.0.0.0/40)",
                ),
            ]),
        },
        Case {
            name: "bad ports",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        ports: ["http"]
        notPorts: ["65536"]
"#,
            expect: Expect::Errors(&[
                ("spec.rules[0].to[0].operation.ports[0]", "bad port (http)"),
                (
                    "spec.rules[0].to[0].operation.notPorts[0]",
                    "bad port (65536)",
                ),
            ]),
        },
        Case {
            name: "empty values in lists",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: [""]
    to:
    - operation:
        hosts: [""]
        methods: ["GET", ""]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].from[0].source.principals[0]",
                    "empty value not allowed",
                ),
                (
                    "spec.rules[0].to[0].operation.hosts[0]",
                    "empty value not allowed",
                ),
                (
                    "spec.rules[0].to[0].operation.methods[1]",
                    "empty value not allowed",
                ),
            ]),
        },
        Case {
            name: "unsupported path templates",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        paths: ["/{foo}/{*}", "/api/*/{**}"]
        notPaths: ["/{name=*}/{*}"]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].to[0].operation.paths[0]",
                    "invalid or unsupported path template",
                ),
                (
                    "spec.rules[0].to[0].operation.paths[1]",
                    "invalid or unsupported path template",
                ),
                (
                    "spec.rules[0].to[0].operation.notPaths[0]",
                    "invalid or unsupported path template",
                ),
            ]),
        },
        Case {
            name: "service accounts with principals, malformed service account",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/a"]
        serviceAccounts: ["sleep"]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].from[0].source",
                    "cannot set serviceAccounts with namespaces or principals",
                ),
                (
                    "spec.rules[0].from[0].source.serviceAccounts[0]",
                    "<namespace>/<name>",
                ),
            ]),
        },
    ]);
}

#[test]
fn authorization_policy_condition_errors() {
    run_cases(&[
        Case {
            name: "empty key",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - when:
    - key: ""
      values: ["a"]
"#,
            expect: Expect::Errors(&[("spec.rules[0].when[0].key", "`key` must not be empty")]),
        },
        Case {
            name: "no values",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - when:
    - key: source.namespace
"#,
            expect: Expect::Errors(&[(
                "spec.rules[0].when[0]",
                "at least one of `values` or `notValues` must be set for key source.namespace",
            )]),
        },
        Case {
            name: "unknown and replaced attributes",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - when:
    - key: source.user
      values: ["a"]
    - key: destination.labels[app]
      values: ["a"]
    - key: destination.namespace
      values: ["a"]
    - key: destination.user
      values: ["a"]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].when[0].key",
                    "unknown attribute: source.user",
                ),
                (
                    "spec.rules[0].when[1].key",
                    "replaced by the workload selector",
                ),
                (
                    "spec.rules[0].when[2].key",
                    "replaced by the metadata.namespace",
                ),
                ("spec.rules[0].when[3].key", "only supported in v1alpha1"),
            ]),
        },
        Case {
            name: "map keys must look like a[b]",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - when:
    - key: request.headers[]
      values: ["a"]
    - key: request.auth.claims
      values: ["a"]
"#,
            expect: Expect::Errors(&[
                ("spec.rules[0].when[0].key", "should have format a[b]"),
                ("spec.rules[0].when[1].key", "should have format a[b]"),
            ]),
        },
        Case {
            name: "bad IP and port values",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - when:
    - key: source.ip
      values: ["10.0.0.1", "not-an-ip"]
    - key: destination.port
      notValues: ["99999"]
    - key: remote.ip
      values: [""]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.rules[0].when[0].values[1]",
                    "invalid `value` for `key` source.ip",
                ),
                (
                    "spec.rules[0].when[1].notValues[0]",
                    "invalid `notValue` for `key` destination.port",
                ),
                ("spec.rules[0].when[2].values[0]", "empty value not allowed"),
            ]),
        },
    ]);
}

#[test]
fn authorization_policy_warnings() {
    run_cases(&[
        Case {
            name: "DENY rule with only HTTP attributes",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["POST"]
"#,
            expect: Expect::Warnings(&[("spec.rules[0]", "will deny all traffic to TCP ports")]),
        },
        Case {
            name: "DENY rule with only request principals",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
"#,
            expect: Expect::Warnings(&[("spec.rules[0]", "will deny all traffic to TCP ports")]),
        },
        Case {
            name: "wildcard in the middle of a principal",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/*/sa/sleep"]
"#,
            expect: Expect::Warnings(&[(
                "spec.rules[0].from[0].source.principals[0]",
                "wildcard matching is only supported as a prefix, a suffix or the whole value",
            )]),
        },
        Case {
            name: "selector without labels",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: foo}
spec:
  selector: {matchLabels: {}}
"#,
            expect: Expect::Warnings(&[(
                "spec.selector",
                "workload selector specified without labels",
            )]),
        },
    ]);
}

#[test]
fn request_authentication_cases() {
    run_cases(&[
        Case {
            name: "jwksUri with outputClaimToHeaders (docs)",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json"
    outputClaimToHeaders:
    - header: "x-jwt-claim-foo"
      claim: "foo"
    - header: "x-jwt-nested"
      claim: "nested.key.group"
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "ingress gateway JWT with headers, params, cookies and timeout",
            yaml: r#"
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: ingress-jwt, namespace: istio-system}
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "https://accounts.example.com"
    audiences: ["api", "web"]
    jwksUri: "http://jwks.example.com:8080/keys"
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams: ["my_token"]
    fromCookies: ["session"]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    timeout: 5s
    spaceDelimitedClaims: ["permissions"]
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "inline jwks and a waypoint targetRef",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: inline, namespace: foo}
spec:
  targetRef:
    kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  jwtRules:
  - issuer: "issuer-foo"
    jwks: '{"keys":[{"kty":"RSA","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}'
"#,
            expect: Expect::Valid,
        },
        Case {
            name: "issuer and jwksUri both empty",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - audiences: ["a"]
"#,
            expect: Expect::Errors(&[(
                "spec.jwtRules[0].issuer",
                "issuer or jwksUri must be non-empty string",
            )]),
        },
        Case {
            name: "jwksUri with an unsupported scheme",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    jwksUri: "ftp://example.com/keys"
"#,
            expect: Expect::Errors(&[(
                "spec.jwtRules[0].jwksUri",
                "URI scheme \"ftp\" is not supported",
            )]),
        },
        Case {
            name: "jwksUri with a bad port",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    jwksUri: "https://example.com:port/keys"
"#,
            expect: Expect::Errors(&[("spec.jwtRules[0].jwksUri", "invalid port")]),
        },
        Case {
            name: "unparseable jwks",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    jwks: "not json"
"#,
            expect: Expect::Errors(&[("spec.jwtRules[0].jwks", "jwks parse error")]),
        },
        Case {
            name: "jwks and jwksUri together (warning)",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    jwksUri: "https://example.com/keys"
    jwks: '{"kty":"oct","k":"c2VjcmV0"}'
"#,
            expect: Expect::Warnings(&[("spec.jwtRules[0].jwks", "only one of jwksUri and jwks")]),
        },
        Case {
            name: "empty locations and audiences",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    audiences: [""]
    fromHeaders: [{prefix: "Bearer "}]
    fromParams: [""]
    fromCookies: [""]
"#,
            expect: Expect::Errors(&[
                (
                    "spec.jwtRules[0].audiences[0]",
                    "audience must be non-empty string",
                ),
                (
                    "spec.jwtRules[0].fromHeaders[0].name",
                    "location header name must be non-empty string",
                ),
                (
                    "spec.jwtRules[0].fromParams[0]",
                    "location query must be non-empty string",
                ),
                (
                    "spec.jwtRules[0].fromCookies[0]",
                    "cookie name must be non-empty string",
                ),
            ]),
        },
        Case {
            name: "bad outputClaimToHeaders",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    outputClaimToHeaders:
    - {header: ":authority", claim: sub}
    - {header: x-sub}
"#,
            expect: Expect::Errors(&[
                (
                    "spec.jwtRules[0].outputClaimToHeaders[0].header",
                    "not a valid header name",
                ),
                (
                    "spec.jwtRules[0].outputClaimToHeaders[1]",
                    "header and claim value must be non-empty string",
                ),
            ]),
        },
        Case {
            name: "timeout below 1ms",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    timeout: 0.5ms
"#,
            expect: Expect::Errors(&[(
                "spec.jwtRules[0].timeout",
                "duration must be greater than 1ms",
            )]),
        },
        Case {
            name: "malformed timeout",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    timeout: 5
"#,
            expect: Expect::Errors(&[("spec.jwtRules[0].timeout", "duration")]),
        },
        Case {
            name: "selector and targetRefs together",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  selector: {matchLabels: {app: a}}
  targetRefs: [{kind: Service, name: a}]
"#,
            expect: Expect::Errors(&[(
                "spec.targetRefs",
                "only one of targetRefs or workloadSelector can be set",
            )]),
        },
        Case {
            name: "unknown field jwksUrl",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: foo}
spec:
  jwtRules:
  - issuer: foo
    jwksUrl: "https://example.com/keys"
"#,
            expect: Expect::Errors(&[("spec.jwtRules[0].jwksUrl", "unknown field \"jwksUrl\"")]),
        },
    ]);
}

#[test]
fn peer_authentication_round_trip() {
    assert_round_trip(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance, version: v1}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    8080: {mode: DISABLE}
    "8443": {mode: STRICT}
    9000: {}
"#,
    );
}

#[test]
fn authorization_policy_round_trip() {
    assert_round_trip(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: rich, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: AUDIT
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/a"]
        notPrincipals: ["*/sa/b"]
        requestPrincipals: ["iss/sub"]
        notRequestPrincipals: ["iss/other"]
        namespaces: ["foo"]
        notNamespaces: ["bar"]
        ipBlocks: ["10.0.0.0/8"]
        notIpBlocks: ["10.1.0.0/16"]
        remoteIpBlocks: ["1.2.3.4"]
        notRemoteIpBlocks: ["1.2.3.5"]
    to:
    - operation:
        hosts: ["a.example.com"]
        notHosts: ["b.example.com"]
        ports: ["80"]
        notPorts: ["81"]
        methods: ["GET"]
        notMethods: ["DELETE"]
        paths: ["/api/*"]
        notPaths: ["/api/admin"]
    when:
    - key: request.auth.claims[groups]
      values: ["admins"]
      notValues: ["guests"]
  - {}
"#,
    );
    assert_round_trip(
        r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: foo}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}
  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
"#,
    );
}

#[test]
fn request_authentication_round_trip() {
    assert_round_trip(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: rich, namespace: foo}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}
  jwtRules:
  - issuer: "https://issuer.example.com"
    audiences: ["a", "b"]
    jwksUri: "https://issuer.example.com/.well-known/jwks.json"
    fromHeaders: [{name: authorization, prefix: "Bearer "}, {name: x-token}]
    fromParams: ["token"]
    outputPayloadToHeader: x-payload
    fromCookies: ["auth"]
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    timeout: 1.5s
    spaceDelimitedClaims: ["scope2"]
  - issuer: other
    jwks: '{"keys":[]}'
    timeout: 100ms
"#,
    );
}
