//! A realistic mixed corpus: the shapes of Istio's traffic-management and security tasks with
//! varied names, shared by the benchmark and the profiling example.
#![allow(dead_code)]

pub fn object(i: usize) -> String {
    let ns = format!("team-{}", i % 17);
    match i % 8 {
        0 => format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews-{i}\n  namespace: {ns}\nspec:\n  hosts:\n  - reviews-{i}.{ns}.svc.cluster.local\n  http:\n  - match:\n    - headers:\n        end-user:\n          exact: jason\n      uri:\n        prefix: /api/v1\n    route:\n    - destination:\n        host: reviews-{i}\n        subset: v2\n    fault:\n      delay:\n        percentage:\n          value: 10\n        fixedDelay: 5s\n  - route:\n    - destination:\n        host: reviews-{i}\n        subset: v1\n      weight: 80\n    - destination:\n        host: reviews-{i}\n        subset: v3\n      weight: 20\n    timeout: 1.5s\n    retries:\n      attempts: 3\n      perTryTimeout: 100ms\n      retryOn: gateway-error,connect-failure,refused-stream\n"
        ),
        1 => format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews-{i}\n  namespace: {ns}\nspec:\n  host: reviews-{i}.{ns}.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      simple: LEAST_REQUEST\n    connectionPool:\n      tcp:\n        maxConnections: 100\n        connectTimeout: 30ms\n      http:\n        http1MaxPendingRequests: 10\n        maxRequestsPerConnection: 1\n    outlierDetection:\n      consecutive5xxErrors: 7\n      interval: 5m\n      baseEjectionTime: 15m\n    tls:\n      mode: ISTIO_MUTUAL\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n    trafficPolicy:\n      loadBalancer:\n        simple: ROUND_ROBIN\n"
        ),
        2 => format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata:\n  name: gateway-{i}\n  namespace: {ns}\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: 80\n      name: http\n      protocol: HTTP\n    hosts:\n    - \"app-{i}.example.com\"\n    tls:\n      httpsRedirect: true\n  - port:\n      number: 443\n      name: https\n      protocol: HTTPS\n    tls:\n      mode: SIMPLE\n      credentialName: app-{i}-cert\n    hosts:\n    - \"app-{i}.example.com\"\n"
        ),
        3 => format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: external-{i}\n  namespace: {ns}\nspec:\n  hosts:\n  - api-{i}.example.com\n  location: MESH_EXTERNAL\n  ports:\n  - number: 443\n    name: https\n    protocol: TLS\n  resolution: DNS\n"
        ),
        4 => format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: policy-{i}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels:\n      app: productpage-{i}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/{ns}/sa/bookinfo-reviews\"]\n    to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/api/*\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [\"group1\"]\n"
        ),
        5 => format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: mtls-{i}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels:\n      app: app-{i}\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    \"8080\":\n      mode: DISABLE\n"
        ),
        6 => format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: sidecar-{i}\n  namespace: {ns}\nspec:\n  workloadSelector:\n    labels:\n      app: app-{i}\n  egress:\n  - hosts:\n    - \"./*\"\n    - \"istio-system/*\"\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n"
        ),
        _ => format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-{i}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels:\n      app: app-{i}\n  jwtRules:\n  - issuer: \"issuer-{i}@example.com\"\n    jwksUri: \"https://example.com/{i}/jwks.json\"\n"
        ),
    }
}

/// A corpus of `n` objects as one multi-document YAML text.
pub fn yaml_corpus(n: usize) -> String {
    (0..n).map(object).collect::<Vec<_>>().join("---\n")
}

/// The same objects as JSON documents (the shape the Kubernetes API server sends).
pub fn json_corpus(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let v: serde_json::Value =
                serde_yaml_ng::from_str(&object(i)).expect("corpus object is YAML");
            serde_json::to_string(&v).expect("JSON")
        })
        .collect()
}
