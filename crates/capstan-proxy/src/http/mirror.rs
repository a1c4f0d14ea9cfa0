//! Request mirroring (`request_mirror_policies`): a fire-and-forget copy of the request to the
//! mirror cluster, Host suffixed `-shadow` as Envoy does, sent once the request body is complete
//! (only when it fit in the buffer limit, see [`super::replay`]); its response is discarded.

use super::BoxBody;
use crate::cluster::{Cluster, LbContext};
use crate::route::action::split_host_port;
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::Arc;

/// `foo:8080` → `foo-shadow:8080` (Envoy inserts the suffix before the port).
pub fn shadow_host(host: &str) -> String {
    match split_host_port(host) {
        (h, Some(p)) => format!("{h}-shadow:{p}"),
        (h, None) => format!("{h}-shadow"),
    }
}

/// Sends a copy of the request to `cluster` in the background once `body` gives the whole
/// request body (Envoy shadows a request when it is complete); a body of None (it outgrew the
/// buffer limit) sends nothing.
pub fn spawn(
    cluster: Arc<Cluster>,
    parts: &http::request::Parts,
    body: impl Future<Output = Option<BoxBody>> + Send + 'static,
    host: &str,
    keep_host: bool,
) {
    let mut head = http::Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    let host = if keep_host {
        host.to_string()
    } else {
        shadow_host(host)
    };
    if let Ok(v) = http::HeaderValue::from_str(&host) {
        head.headers_mut().insert(http::header::HOST, v);
    }
    tokio::spawn(async move {
        let Some(body) = body.await else {
            tracing::debug!(cluster = %cluster.config().name, "mirror skipped: the request body did not end within the buffer limit");
            return;
        };
        let req = head.map(|()| body);
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
