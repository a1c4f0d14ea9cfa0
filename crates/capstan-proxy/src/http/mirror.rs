//! Request mirroring (`request_mirror_policies`): a fire-and-forget copy of the request to the
//! mirror cluster, Host suffixed `-shadow` as Envoy does; its response is discarded.

use super::BoxBody;
use crate::cluster::{Cluster, LbContext};
use crate::route::action::split_host_port;
use http_body_util::BodyExt;
use std::sync::Arc;

/// `foo:8080` → `foo-shadow:8080` (Envoy inserts the suffix before the port).
pub fn shadow_host(host: &str) -> String {
    match split_host_port(host) {
        (h, Some(p)) => format!("{h}-shadow:{p}"),
        (h, None) => format!("{h}-shadow"),
    }
}

/// Sends a copy of a buffered request to `cluster` in the background.
pub fn spawn(
    cluster: Arc<Cluster>,
    parts: &http::request::Parts,
    body: bytes::Bytes,
    host: &str,
    keep_host: bool,
) {
    let mut req = http::Request::new(
        http_body_util::Full::new(body)
            .map_err(|e| match e {})
            .boxed(),
    );
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    let host = if keep_host {
        host.to_string()
    } else {
        shadow_host(host)
    };
    if let Ok(v) = http::HeaderValue::from_str(&host) {
        req.headers_mut().insert(http::header::HOST, v);
    }
    let req: http::Request<BoxBody> = req;
    tokio::spawn(async move {
        match cluster.request(req, &LbContext::default()).await {
            Ok((resp, _)) => {
                // Drain so the connection can be reused.
                let _ = resp.into_body().collect().await;
            }
            Err(e) => tracing::debug!(cluster = %cluster.config().name, "mirror failed: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts() {
        for (host, want) in [
            ("foo", "foo-shadow"),
            ("foo:8080", "foo-shadow:8080"),
            (
                "reviews.default.svc.cluster.local:9080",
                "reviews.default.svc.cluster.local-shadow:9080",
            ),
            ("[::1]:80", "[::1]-shadow:80"),
        ] {
            assert_eq!(shadow_host(host), want);
        }
    }
}
