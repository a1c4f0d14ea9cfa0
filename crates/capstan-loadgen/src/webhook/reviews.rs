//! The AdmissionReviews the webhook benchmark sends: VirtualServices and DestinationRules as
//! the API server hands them to a validating webhook (v1 AdmissionReview, the stored object's
//! metadata with `managedFields`, `kubectl apply`'s last-applied annotation on client-side
//! applies, the old object on updates), valid and invalid, each with the verdict both Istio
//! and Capstan give it. The invalid ones break rules istiod's `ValidateConfig` states plainly
//! (a negative weight, a route without a host, a subset without a name, an ejection
//! percentage over 100), so a verdict that differs is a bug, not a judgement call.

use serde_json::{json, Value};

/// One review of the mix.
#[derive(Clone, Debug)]
pub struct Review {
    /// What it is, for reports.
    pub name: &'static str,
    /// The AdmissionReview, serialized.
    pub body: Vec<u8>,
    /// Whether a correct webhook admits it.
    pub allowed: bool,
    /// How many of every 20 requests send it (one round of [`schedule`]).
    pub weight: usize,
}

fn metadata(kind: &str, name: &str, generation: u64, last_applied: Option<&Value>) -> Value {
    let mut meta = json!({
        "name": name,
        "namespace": "shop",
        "uid": format!("6b1d4c2e-{:04x}-4a7e-9f00-{:012x}", kind.len(), generation),
        "resourceVersion": (41_000 + generation).to_string(),
        "generation": generation,
        "creationTimestamp": "2026-11-30T09:12:44Z",
        "labels": {"app": "reviews", "team": "shop-platform"},
        "managedFields": [{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": "networking.istio.io/v1",
            "time": "2026-11-30T09:12:44Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                         "f:labels": {".": {}, "f:app": {}, "f:team": {}}},
                         "f:spec": {".": {}, "f:hosts": {}, "f:http": {}}}
        }]
    });
    if let Some(applied) = last_applied {
        meta["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n")
        });
    }
    meta
}

/// An Istio object of `kind` with `spec`; with `applied`, as `kubectl apply` stores it (the
/// last-applied annotation repeats the object).
fn object(kind: &str, name: &str, generation: u64, spec: Value, applied: bool) -> Value {
    let bare = json!({
        "apiVersion": "networking.istio.io/v1", "kind": kind,
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec.clone()
    });
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": kind,
        "metadata": metadata(kind, name, generation, applied.then_some(&bare)),
        "spec": spec
    })
}

/// The AdmissionReview of `operation` on `object` (and `old` on UPDATE), as the API server
/// sends it.
fn review(operation: &str, object: Value, old: Option<Value>, seq: u64) -> Vec<u8> {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let name = object["metadata"]["name"].clone();
    let resource = match kind.as_str() {
        "VirtualService" => "virtualservices",
        _ => "destinationrules",
    };
    let gvk = json!({"group": "networking.istio.io", "version": "v1", "kind": kind});
    let gvr = json!({"group": "networking.istio.io", "version": "v1", "resource": resource});
    let options = if operation == "CREATE" {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-client-side-apply"})
    } else {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions", "fieldManager": "kubectl-client-side-apply"})
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("0d8e6a5c-1111-4000-8000-{seq:012x}"),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": name, "namespace": "shop", "operation": operation,
            "userInfo": {"username": "system:serviceaccount:ci:deployer",
                         "uid": "c1b5e1f0-7d1c-4a55-b1a4-0f3cfd0a6b11",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]},
            "object": object, "oldObject": old, "dryRun": false, "options": options
        }
    });
    serde_json::to_vec(&review).expect("a JSON value serializes")
}

fn destination(subset: &str, weight: i64) -> Value {
    json!({"destination": {"host": "reviews.shop.svc.cluster.local", "subset": subset,
                           "port": {"number": 9080}}, "weight": weight})
}

/// A VirtualService of a real service: header-matched canary routes, 80/20 splits, retries,
/// timeouts, for the mesh and a gateway.
fn routing_virtual_service() -> Value {
    let route = |i: usize| {
        json!({
            "name": format!("r{i}"),
            "match": [{"headers": {"end-user": {"exact": format!("user{i}")}},
                       "uri": {"prefix": format!("/api/v{i}")}}],
            "route": [destination("v1", 80), destination("v2", 20)],
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
            "timeout": "10s"
        })
    };
    let mut http: Vec<Value> = (0..4).map(route).collect();
    http.push(json!({"name": "default", "route": [destination("v1", 100)]}));
    json!({"hosts": ["reviews.shop.svc.cluster.local", "reviews.example.com"],
           "gateways": ["mesh", "shop/public"], "http": http})
}

fn split_virtual_service(v1: i64) -> Value {
    json!({"hosts": ["reviews"], "http": [{
        "route": [destination("v1", v1), destination("v2", 100 - v1)], "timeout": "2s"}]})
}

/// Fault injection, CORS, header rewriting: what a test or edge route carries.
fn fault_virtual_service() -> Value {
    json!({"hosts": ["ratings"], "http": [
        {"match": [{"headers": {"x-chaos": {"exact": "on"}}}],
         "fault": {"delay": {"percentage": {"value": 10.0}, "fixedDelay": "5s"},
                   "abort": {"percentage": {"value": 1.0}, "httpStatus": 503}},
         "route": [{"destination": {"host": "ratings", "subset": "v1"}}]},
        {"corsPolicy": {"allowOrigins": [{"exact": "https://shop.example.com"}],
                        "allowMethods": ["GET", "POST"], "allowHeaders": ["authorization"],
                        "maxAge": "24h"},
         "headers": {"request": {"set": {"x-route": "ratings"}}, "response": {"remove": ["x-envoy-upstream-service-time"]}},
         "route": [{"destination": {"host": "ratings", "subset": "v1", "port": {"number": 9080}}}]}
    ]})
}

fn subsets() -> Value {
    json!([{"name": "v1", "labels": {"version": "v1"}},
           {"name": "v2", "labels": {"version": "v2"},
            "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}])
}

/// Connection pools, outlier detection, Istio mTLS and subsets.
fn policy_destination_rule() -> Value {
    json!({"host": "reviews.shop.svc.cluster.local", "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnections": 100, "connectTimeout": "3s"},
                           "http": {"http1MaxPendingRequests": 64, "http2MaxRequests": 1000,
                                    "maxRequestsPerConnection": 10, "maxRetries": 3}},
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s",
                             "baseEjectionTime": "30s", "maxEjectionPercent": 50},
        "tls": {"mode": "ISTIO_MUTUAL"}}, "subsets": subsets()})
}

fn simple_destination_rule() -> Value {
    json!({"host": "reviews", "subsets": subsets()})
}

/// Per-port settings and consistent hashing on a cookie.
fn port_destination_rule() -> Value {
    json!({"host": "cart.shop.svc.cluster.local", "trafficPolicy": {
        "loadBalancer": {"consistentHash": {"httpCookie": {"name": "session", "ttl": "3600s"}}},
        "portLevelSettings": [{"port": {"number": 8443}, "tls": {"mode": "SIMPLE", "sni": "cart.example.com"}},
                              {"port": {"number": 9080}, "connectionPool": {"tcp": {"maxConnections": 50}}}]}})
}

/// The mix: 80 % valid (most writes in a cluster are), 20 % invalid, VirtualServices and
/// DestinationRules about half each, creates and updates.
pub fn mix() -> Vec<Review> {
    let vs =
        |name, generation, spec, applied| object("VirtualService", name, generation, spec, applied);
    let dr = |name, generation, spec, applied| {
        object("DestinationRule", name, generation, spec, applied)
    };
    let invalid_weight = json!({"hosts": ["reviews"], "http": [{
        "route": [destination("v1", 110), destination("v2", -10)]}]});
    let no_host =
        json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"subset": "v1"}}]}]});
    let unnamed_subset = json!({"host": "reviews", "subsets": [{"labels": {"version": "v1"}}]});
    let mut ejection = policy_destination_rule();
    ejection["trafficPolicy"]["outlierDetection"]["maxEjectionPercent"] = json!(150);
    let reviews = [
        (
            "VirtualService routes, kubectl apply (create)",
            true,
            4,
            review(
                "CREATE",
                vs("reviews", 1, routing_virtual_service(), true),
                None,
                1,
            ),
        ),
        (
            "VirtualService 80/20 split (update)",
            true,
            3,
            review(
                "UPDATE",
                vs("reviews-split", 7, split_virtual_service(50), false),
                Some(vs("reviews-split", 6, split_virtual_service(80), false)),
                2,
            ),
        ),
        (
            "VirtualService faults and CORS (create)",
            true,
            1,
            review(
                "CREATE",
                vs("ratings", 1, fault_virtual_service(), false),
                None,
                3,
            ),
        ),
        (
            "DestinationRule pools, outliers, mTLS, kubectl apply (create)",
            true,
            4,
            review(
                "CREATE",
                dr("reviews", 1, policy_destination_rule(), true),
                None,
                4,
            ),
        ),
        (
            "DestinationRule subsets (update)",
            true,
            3,
            review(
                "UPDATE",
                dr("reviews-subsets", 3, simple_destination_rule(), false),
                Some(dr("reviews-subsets", 2, simple_destination_rule(), false)),
                5,
            ),
        ),
        (
            "DestinationRule port settings (create)",
            true,
            1,
            review(
                "CREATE",
                dr("cart", 1, port_destination_rule(), false),
                None,
                6,
            ),
        ),
        (
            "invalid VirtualService: negative weight (create)",
            false,
            1,
            review("CREATE", vs("bad-weight", 1, invalid_weight, true), None, 7),
        ),
        (
            "invalid VirtualService: destination without host (update)",
            false,
            1,
            review(
                "UPDATE",
                vs("bad-host", 2, no_host, false),
                Some(vs("bad-host", 1, split_virtual_service(80), false)),
                8,
            ),
        ),
        (
            "invalid DestinationRule: subset without name (create)",
            false,
            1,
            review(
                "CREATE",
                dr("bad-subset", 1, unnamed_subset, false),
                None,
                9,
            ),
        ),
        (
            "invalid DestinationRule: maxEjectionPercent 150 (create)",
            false,
            1,
            review("CREATE", dr("bad-ejection", 1, ejection, true), None, 10),
        ),
    ];
    reviews
        .into_iter()
        .map(|(name, allowed, weight, body)| Review {
            name,
            body,
            allowed,
            weight,
        })
        .collect()
}

/// One round of the mix, as indices into `mix`: each review `weight` times, interleaved by
/// smooth weighted round robin (nginx's `upstream` balancing: every step each review gains
/// its weight, the one with the most credit is sent and pays the round's length), so any
/// window of the run sees the whole mix. The i-th request sends `schedule[i % len]`.
pub fn schedule(mix: &[Review]) -> Vec<usize> {
    let total: usize = mix.iter().map(|r| r.weight).sum();
    let mut credit = vec![0i64; mix.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        for (c, r) in credit.iter_mut().zip(mix) {
            *c += r.weight as i64;
        }
        let mut pick = 0;
        for (i, c) in credit.iter().enumerate() {
            if *c > credit[pick] {
                pick = i;
            }
        }
        credit[pick] -= total as i64;
        out.push(pick);
    }
    out
}

/// What a response says: `Some(allowed)` when it is an AdmissionReview answer. Looks for the
/// `allowed` field as both servers write it (compact JSON, Go's `encoding/json` and
/// serde_json alike), without decoding the rest.
pub fn verdict(body: &[u8]) -> Option<bool> {
    if memchr::memmem::find(body, br#""allowed":true"#).is_some() {
        Some(true)
    } else if memchr::memmem::find(body, br#""allowed":false"#).is_some() {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_a_fifth_invalid_and_half_each_kind() {
        let mix = mix();
        let total: usize = mix.iter().map(|r| r.weight).sum();
        assert_eq!(total, 20);
        let invalid: usize = mix.iter().filter(|r| !r.allowed).map(|r| r.weight).sum();
        assert_eq!(invalid * 5, total, "20 % invalid");
        let kind = |k: &str| -> usize {
            mix.iter()
                .filter(|r| {
                    let v: Value = serde_json::from_slice(&r.body).expect("JSON");
                    v["request"]["object"]["kind"] == k
                })
                .map(|r| r.weight)
                .sum()
        };
        assert_eq!(kind("VirtualService"), 10);
        assert_eq!(kind("DestinationRule"), 10);
    }

    #[test]
    fn reviews_are_what_the_api_server_sends() {
        for r in mix() {
            let v: Value = serde_json::from_slice(&r.body).expect("JSON");
            let req = &v["request"];
            assert_eq!(v["apiVersion"], "admission.k8s.io/v1", "{}", r.name);
            assert_eq!(req["kind"]["kind"], req["object"]["kind"], "{}", r.name);
            assert_eq!(req["name"], req["object"]["metadata"]["name"], "{}", r.name);
            let update = req["operation"] == "UPDATE";
            assert_eq!(update, req["oldObject"].is_object(), "{}", r.name);
            // The object only has the top-level fields istiod's `checkFields` allows.
            let keys: Vec<&String> = req["object"].as_object().expect("object").keys().collect();
            assert_eq!(
                keys,
                ["apiVersion", "kind", "metadata", "spec"],
                "{}",
                r.name
            );
        }
    }

    #[test]
    fn schedule_spreads_each_review_by_its_weight() {
        let mix = mix();
        let s = schedule(&mix);
        assert_eq!(s.len(), 20);
        for (i, r) in mix.iter().enumerate() {
            assert_eq!(
                s.iter().filter(|&&x| x == i).count(),
                r.weight,
                "{}",
                r.name
            );
        }
        // The four uses of the heaviest review are a quarter of the round apart, give or take.
        let at: Vec<usize> = s
            .iter()
            .enumerate()
            .filter(|(_, &x)| x == 0)
            .map(|(p, _)| p)
            .collect();
        for w in at.windows(2) {
            assert!((3..=7).contains(&(w[1] - w[0])), "{at:?}");
        }
    }

    #[test]
    fn verdict_reads_both_servers_answers() {
        let go = br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","response":{"uid":"x","allowed":false,"status":{"metadata":{},"message":"configuration is invalid: weight -10 < 0"}}}"#;
        let rust = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}"#;
        assert_eq!(verdict(go), Some(false));
        assert_eq!(verdict(rust), Some(true));
        assert_eq!(verdict(b"no body found"), None);
    }
}
