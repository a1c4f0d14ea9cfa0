//! HTTP/1.1 upgrades (WebSocket and any other `Upgrade:` protocol) and their HTTP/2 form, RFC
//! 8441 extended CONNECT, as Envoy's "HTTP upgrades" architecture page describes them:
//!
//! - a request is an upgrade when it is HTTP/1.1 with `Connection: upgrade` and an `Upgrade`
//!   header (`h2c` excepted: its headers are dropped and the request goes on as a plain one),
//!   or a `CONNECT`; a plain request loses its `Connection` and `Upgrade` headers, as Envoy's
//!   connection manager removes them. With the connection manager's
//!   `http2_protocol_options.allow_connect`, an HTTP/2 client's extended CONNECT (`:protocol`)
//!   is first turned into the HTTP/1.1 upgrade it stands for
//!   ([`extended_connect_to_upgrade`]), as Envoy's HTTP/2 codec does, and its `101` back into
//!   the `200` the client waits for ([`upgrade_response_to_h2`]);
//! - the upgrade type is allowed by the route's `RouteAction.upgrade_configs` when it names the
//!   type (enabled or not), else by the connection manager's `upgrade_configs` (`enabled`
//!   defaults to true); a refused upgrade is answered `403` with no body before any HTTP filter
//!   runs, as Envoy refuses to build the upgrade filter chain;
//! - an allowed upgrade is routed like any request and sent once (no retries, mirrors, route or
//!   per-try timeout: Envoy's route timeout starts at the end of the request, which an upgrade
//!   never reaches): over HTTP/1.1 with its upgrade headers, or, to a cluster that speaks
//!   HTTP/2 upstream, as an RFC 8441 extended CONNECT (`:method CONNECT`, `:protocol` the
//!   upgrade type), Envoy's "WebSocket over HTTP/2 hops", whose `200` is turned back into a
//!   `101` with `Upgrade` and `Connection: upgrade` ([`h1_to_extended_connect`],
//!   [`extended_connect_to_h1`]); an upstream that does not accept extended CONNECT resets the
//!   stream, answered `503` as Envoy does;
//! - a `101` hands both connections (or their HTTP/2 streams) to a [`Tunnel`] that
//!   copies bytes both ways until both sides have closed, the stream idle timeout passes with
//!   no byte (the route's `idle_timeout` else the connection manager's
//!   `stream_idle_timeout`), or the listener's drain window ends.
//!
//! Not supported, NACKed by path: `CONNECT` upgrade configs (and `connect_config`), custom
//! upgrade filter chains.

use super::BoxBody;
use crate::cluster::pool::UpstreamProtocol;
use crate::cluster::{Cluster, LbContext};
use crate::stats::HttpStats;
use crate::CompileError;
use envoy_types::pb::envoy::config::route::v3::route_action::UpgradeConfig as RouteUpgradeConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::UpgradeConfig as HcmUpgradeConfig;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

/// Upgrade types (lower case) and whether each is enabled: the `upgrade_configs` of a
/// connection manager or of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeSettings(Vec<(String, bool)>);

impl UpgradeSettings {
    /// Whether this level names `kind` (lower case), and if so whether it is enabled.
    pub fn get(&self, kind: &str) -> Option<bool> {
        self.0.iter().find(|(k, _)| k == kind).map(|(_, on)| *on)
    }

    fn add(&mut self, kind: &str, enabled: bool) -> Result<(), CompileError> {
        let kind = kind.to_ascii_lowercase();
        if kind == "connect" {
            return Err(CompileError::new(
                "upgrade_type",
                "CONNECT is not supported",
            ));
        }
        if self.get(&kind).is_some() {
            return Err(CompileError::new(
                "upgrade_type",
                format!("{kind} is configured twice"),
            ));
        }
        self.0.push((kind, enabled));
        Ok(())
    }
}

/// Compiles the connection manager's `upgrade_configs` (paths relative to the list).
pub fn compile_hcm(configs: &[HcmUpgradeConfig]) -> Result<UpgradeSettings, CompileError> {
    let mut out = UpgradeSettings::default();
    for (i, c) in configs.iter().enumerate() {
        let at = format!("[{i}]");
        if !c.filters.is_empty() {
            return Err(CompileError::new(
                "filters",
                "custom upgrade filter chains are not supported",
            )
            .within(&at));
        }
        out.add(&c.upgrade_type, c.enabled.is_none_or(|b| b.value))
            .map_err(|e| e.within(&at))?;
    }
    Ok(out)
}

/// Compiles a route's `RouteAction.upgrade_configs` (paths relative to the list).
pub fn compile_route(configs: &[RouteUpgradeConfig]) -> Result<UpgradeSettings, CompileError> {
    let mut out = UpgradeSettings::default();
    for (i, c) in configs.iter().enumerate() {
        let at = format!("[{i}]");
        if c.connect_config.is_some() {
            return Err(CompileError::new("connect_config", "is not supported").within(&at));
        }
        out.add(&c.upgrade_type, c.enabled.is_none_or(|b| b.value))
            .map_err(|e| e.within(&at))?;
    }
    Ok(out)
}

/// Whether an upgrade of type `kind` may go through: the route's setting when it names the
/// type, else the connection manager's; a type neither names is refused.
pub fn allowed(hcm: &UpgradeSettings, route: Option<&UpgradeSettings>, kind: &str) -> bool {
    match route.and_then(|r| r.get(kind)) {
        Some(enabled) => enabled,
        None => hcm.get(kind).unwrap_or(false),
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The upgrade a request asks for (its type, lower case), or None for a plain request, whose
/// `Connection` and `Upgrade` headers are then removed (they concern this hop only).
pub fn requested(method: &Method, version: Version, headers: &mut HeaderMap) -> Option<String> {
    if method == Method::CONNECT {
        return Some("connect".into());
    }
    let upgrade = headers.get(header::UPGRADE);
    let has_upgrade = upgrade.is_some();
    let kind = upgrade
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty());
    match kind {
        // HTTP/2 only after an extended CONNECT became an upgrade: h2 refuses a request with
        // `Connection` or `Upgrade` headers.
        Some(k)
            if matches!(version, Version::HTTP_11 | Version::HTTP_2)
                && k != "h2c"
                && has_token(headers, header::CONNECTION, "upgrade") =>
        {
            Some(k)
        }
        k => {
            if k.as_deref() == Some("h2c") {
                headers.remove("http2-settings");
            }
            headers.remove(header::CONNECTION);
            if has_upgrade {
                headers.remove(header::UPGRADE);
            }
            None
        }
    }
}

/// Sends an allowed upgrade request once to `cluster`: over HTTP/1.1 with its upgrade headers,
/// or, to a cluster that speaks HTTP/2 upstream, as an RFC 8441 extended CONNECT whose `200`
/// comes back as a `101`. A `101` response keeps the upstream's pending upgrade in its
/// extensions (hyper's [`OnUpgrade`]) for the connection manager to build the [`Tunnel`].
pub async fn send(
    cluster: &Cluster,
    parts: &mut http::request::Parts,
    body: BoxBody,
    ctx: &LbContext,
) -> Response<BoxBody> {
    let h2 = match cluster.config().pool.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => parts.version == Version::HTTP_2,
    };
    // Envoy's HTTP/2 codec carries an upgrade as an extended CONNECT whatever the upstream's
    // SETTINGS_ENABLE_CONNECT_PROTOCOL says; an upstream without it resets the stream, which
    // is answered 503 and counted in `upstream_rq_rx_reset`.
    let upgrade = if h2 {
        h1_to_extended_connect(parts)
    } else {
        None
    };
    let started = Instant::now();
    let out = crate::cluster::Outgoing {
        head: parts,
        body,
        keep: false,
    };
    match cluster.send(out, ctx).await {
        Err(e) => super::router::upstream_error_reply(&e),
        Ok((resp, _)) => {
            let (mut p, b) = resp.into_parts();
            if let Some(u) = upgrade {
                extended_connect_to_h1(&mut p, u);
            }
            p.headers.insert(
                super::names::X_ENVOY_UPSTREAM_SERVICE_TIME,
                HeaderValue::from(started.elapsed().as_millis() as u64),
            );
            Response::from_parts(p, b.boxed())
        }
    }
}

/// Turns an HTTP/2 extended CONNECT (a `CONNECT` with `:protocol`) into the HTTP/1.1 upgrade
/// it stands for, as Envoy's `transformUpgradeRequestFromH2toH1`: `GET` (Envoy's documented
/// flaw: a non-WebSocket upgrade's original method is not carried), `Upgrade` the protocol,
/// `Connection: upgrade`; `:path` and `:authority` stay. Returns whether it was one.
pub fn extended_connect_to_upgrade(parts: &mut http::request::Parts) -> bool {
    if parts.method != Method::CONNECT {
        return false;
    }
    let Some(protocol) = parts.extensions.remove::<hyper::ext::Protocol>() else {
        return false;
    };
    let Ok(upgrade) = HeaderValue::from_str(protocol.as_str()) else {
        // Not a header value: left a plain CONNECT, which is refused.
        return false;
    };
    parts.method = Method::GET;
    parts.headers.insert(header::UPGRADE, upgrade);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    true
}

/// Turns the `101` of an upgrade that came as an extended CONNECT into the `200` its HTTP/2
/// client waits for, without `Upgrade`, `Connection` or a `content-length: 0`, as Envoy's
/// `transformUpgradeResponseFromH1toH2`; any other status keeps its status.
pub fn upgrade_response_to_h2<B>(resp: &mut Response<B>) {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        *resp.status_mut() = StatusCode::OK;
    }
    let h = resp.headers_mut();
    h.remove(header::UPGRADE);
    h.remove(header::CONNECTION);
    if h.get(header::CONTENT_LENGTH).is_some_and(|v| v == "0") {
        h.remove(header::CONTENT_LENGTH);
    }
}

/// Turns an HTTP/1.1 upgrade request into an RFC 8441 extended CONNECT (`:method CONNECT`,
/// `:protocol` the `Upgrade` value; `:scheme`, `:path` and `:authority` stay), as Envoy's
/// `transformUpgradeRequestFromH1toH2`: the `Upgrade` and `Connection` headers go, and so does
/// a `content-length: 0` (a CONNECT has no body). Returns the `Upgrade` value, None (the
/// request unchanged) when there is none.
pub fn h1_to_extended_connect(parts: &mut http::request::Parts) -> Option<HeaderValue> {
    let upgrade = parts.headers.remove(header::UPGRADE)?;
    let Ok(protocol) = upgrade.to_str().map(|p| p.trim().to_string()) else {
        parts.headers.insert(header::UPGRADE, upgrade);
        return None;
    };
    parts.method = Method::CONNECT;
    parts
        .extensions
        .insert(hyper::ext::Protocol::from(protocol.as_str()));
    parts.headers.remove(header::CONNECTION);
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0")
    {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    Some(upgrade)
}

/// Turns the upstream's `200` to an extended CONNECT into the `101 Switching Protocols` an
/// HTTP/1.1 client waits for, with `Upgrade` (the request's value) and `Connection: upgrade`,
/// as Envoy's `transformUpgradeResponseFromH2toH1`; any other status passes unchanged. Like
/// Envoy, no `Sec-WebSocket-Accept` is made up: RFC 8441 has no key exchange, so the client
/// gets the one the upstream sent, if any (an Envoy or Capstan second hop passes on its
/// application's).
pub fn extended_connect_to_h1(parts: &mut http::response::Parts, upgrade: HeaderValue) {
    if parts.status != StatusCode::OK {
        return;
    }
    parts.status = StatusCode::SWITCHING_PROTOCOLS;
    parts.headers.insert(header::UPGRADE, upgrade);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// An upgraded stream: the downstream and upstream connections, once hyper hands them over
/// (after the `101` has been written downstream and read from upstream).
pub struct Tunnel {
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    idle: Option<Duration>,
}

impl Tunnel {
    /// A tunnel for an upgraded request whose response (a `101`) carries the upstream's
    /// pending upgrade; None when the response is no upgrade.
    pub fn from_response(
        downstream: OnUpgrade,
        resp: &mut Response<BoxBody>,
        idle: Option<Duration>,
    ) -> Option<Tunnel> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        let upstream = resp.extensions_mut().remove::<OnUpgrade>()?;
        Some(Tunnel {
            downstream,
            upstream,
            idle,
        })
    }

    /// Copies bytes both ways until both sides have closed, the idle timeout passes, or
    /// `drained` resolves (the listener's drain window has ended: both connections are closed,
    /// as Envoy closes a draining listener's remaining connections); counted in
    /// `downstream_cx_upgrades_active` meanwhile.
    pub async fn run(self, stats: &HttpStats, drained: impl std::future::Future<Output = ()>) {
        let (down, up) = match tokio::try_join!(self.downstream, self.upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!("upgrade not completed: {e}");
                return;
            }
        };
        stats.downstream_cx_upgrades_active.inc();
        // Dropping the copy drops both connections, which closes them.
        tokio::select! {
            (sent, received) = crate::tcp::copy_with_idle(TokioIo::new(down), TokioIo::new(up), self.idle) => {
                tracing::debug!(sent, received, "upgraded stream closed");
            }
            _ = drained => tracing::debug!("upgraded stream closed: the drain window has ended"),
        }
        stats.downstream_cx_upgrades_active.dec();
    }
}

/// The idle timeout of an upgraded stream: the route's `idle_timeout` when set (zero
/// disables), else the connection manager's `stream_idle_timeout`.
pub fn idle_timeout(route: Option<Duration>, hcm: Option<Duration>) -> Option<Duration> {
    match route {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => hcm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::BoolValue;
    use http::Request;

    fn hcm_config(kind: &str, enabled: Option<bool>) -> HcmUpgradeConfig {
        HcmUpgradeConfig {
            upgrade_type: kind.into(),
            enabled: enabled.map(|value| BoolValue { value }),
            ..HcmUpgradeConfig::default()
        }
    }

    fn route_config(kind: &str, enabled: Option<bool>) -> RouteUpgradeConfig {
        RouteUpgradeConfig {
            upgrade_type: kind.into(),
            enabled: enabled.map(|value| BoolValue { value }),
            ..RouteUpgradeConfig::default()
        }
    }

    #[test]
    fn hcm_and_route_settings_combine_as_envoy_documents() {
        let hcm = |enabled| compile_hcm(&[hcm_config("WebSocket", enabled)]).unwrap();
        let route = |enabled| compile_route(&[route_config("websocket", enabled)]).unwrap();
        // Envoy's table (HCM enabled, route enabled → allowed), then the unset cases.
        let cases = [
            (hcm(None), Some(route(None)), true),
            (hcm(None), Some(route(Some(false))), false),
            (hcm(Some(false)), Some(route(Some(true))), true),
            (hcm(Some(false)), Some(route(Some(false))), false),
            (hcm(None), None, true),
            (hcm(Some(false)), None, false),
            (UpgradeSettings::default(), None, false),
            (UpgradeSettings::default(), Some(route(None)), true),
            (hcm(None), Some(UpgradeSettings::default()), true),
        ];
        for (i, (h, r, want)) in cases.iter().enumerate() {
            assert_eq!(allowed(h, r.as_ref(), "websocket"), *want, "case {i}");
        }
        assert!(!allowed(&hcm(None), None, "spdy/3.1"));
    }

    #[test]
    fn unsupported_configs_are_nacked_by_path() {
        let path = |r: Result<UpgradeSettings, CompileError>| r.err().map(|e| e.path);
        assert_eq!(path(compile_hcm(&[hcm_config("websocket", None)])), None);
        assert_eq!(
            path(compile_hcm(&[
                hcm_config("websocket", None),
                hcm_config("CONNECT", None)
            ])),
            Some("[1].upgrade_type".into())
        );
        assert_eq!(
            path(compile_hcm(&[
                hcm_config("websocket", None),
                hcm_config("WEBSOCKET", Some(false))
            ])),
            Some("[1].upgrade_type".into())
        );
        let with_filters = HcmUpgradeConfig {
            filters: vec![Default::default()],
            ..hcm_config("websocket", None)
        };
        assert_eq!(
            path(compile_hcm(&[with_filters])),
            Some("[0].filters".into())
        );
        let connect = RouteUpgradeConfig {
            connect_config: Some(Default::default()),
            ..route_config("CONNECT", None)
        };
        assert_eq!(
            path(compile_route(&[connect])),
            Some("[0].connect_config".into())
        );
        assert_eq!(
            path(compile_route(&[route_config("connect", Some(false))])),
            Some("[0].upgrade_type".into())
        );
    }

    #[test]
    fn recognises_upgrade_requests() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        type Headers<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(Method, Version, Headers, Option<&str>, bool)> = vec![
            // (method, version, headers, upgrade, Connection/Upgrade kept)
            (
                Method::GET,
                Version::HTTP_11,
                ws.to_vec(),
                Some("websocket"),
                true,
            ),
            (
                Method::GET,
                Version::HTTP_11,
                vec![
                    ("connection", "keep-alive"),
                    ("connection", "upgrade"),
                    ("upgrade", "foo"),
                ],
                Some("foo"),
                true,
            ),
            // No `Connection: upgrade`: a plain request, the Upgrade header dropped.
            (
                Method::GET,
                Version::HTTP_11,
                vec![("upgrade", "websocket")],
                None,
                false,
            ),
            (Method::GET, Version::HTTP_10, ws.to_vec(), None, false),
            (
                Method::GET,
                Version::HTTP_11,
                vec![
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", "h2c"),
                    ("http2-settings", "AAA"),
                ],
                None,
                false,
            ),
            (
                Method::GET,
                Version::HTTP_11,
                vec![("connection", "close")],
                None,
                false,
            ),
            (
                Method::CONNECT,
                Version::HTTP_11,
                vec![],
                Some("connect"),
                false,
            ),
            (
                Method::CONNECT,
                Version::HTTP_2,
                vec![],
                Some("connect"),
                false,
            ),
        ];
        for (i, (method, version, pairs, want, kept)) in cases.into_iter().enumerate() {
            let mut h = headers(&pairs);
            assert_eq!(
                requested(&method, version, &mut h).as_deref(),
                want,
                "case {i}"
            );
            assert_eq!(
                h.contains_key(header::CONNECTION) && h.contains_key(header::UPGRADE),
                kept,
                "case {i}"
            );
            assert!(!h.contains_key("http2-settings"), "case {i}");
        }
    }

    #[test]
    fn upgrades_become_extended_connects_and_back_as_envoy_transforms_them() {
        let (mut req, ()) = Request::get("http://app/chat?x=1")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", " WebSocket ")
            .header("content-length", "0")
            .header("sec-websocket-key", "k")
            .body(())
            .unwrap()
            .into_parts();
        let upgrade = h1_to_extended_connect(&mut req).expect("an upgrade");
        assert_eq!(upgrade, " WebSocket ");
        assert_eq!(req.method, Method::CONNECT);
        assert_eq!(
            req.extensions
                .get::<hyper::ext::Protocol>()
                .map(|p| p.as_str()),
            Some("WebSocket")
        );
        assert_eq!(req.uri, "http://app/chat?x=1", ":path and :authority kept");
        let names: Vec<_> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["sec-websocket-key"]);
        // A non-empty length stays (hyper's h2 client then refuses the CONNECT, as nghttp2).
        let (mut req, ()) = Request::get("/")
            .header("upgrade", "foo")
            .header("content-length", "3")
            .body(())
            .unwrap()
            .into_parts();
        assert!(h1_to_extended_connect(&mut req).is_some());
        assert_eq!(req.headers["content-length"], "3");
        let (mut plain, ()) = Request::get("/").body(()).unwrap().into_parts();
        assert_eq!(h1_to_extended_connect(&mut plain), None);
        assert_eq!(plain.method, Method::GET);

        let response = |status: u16| {
            Response::builder()
                .status(status)
                .header("sec-websocket-extensions", "x")
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let mut ok = response(200);
        extended_connect_to_h1(&mut ok, HeaderValue::from_static("websocket"));
        assert_eq!(ok.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ok.headers["upgrade"], "websocket");
        assert_eq!(ok.headers["connection"], "upgrade");
        assert_eq!(ok.headers["sec-websocket-extensions"], "x");
        // Only a 200 is a tunnel (Envoy's `getResponseStatus(headers) == 200`).
        for status in [201, 404, 503] {
            let mut other = response(status);
            extended_connect_to_h1(&mut other, HeaderValue::from_static("websocket"));
            assert_eq!(other.status.as_u16(), status);
            assert!(!other.headers.contains_key("upgrade"));
        }
    }

    #[test]
    fn extended_connects_become_upgrades_and_back_as_envoy_transforms_them() {
        let extended = |protocol: Option<&str>| {
            let mut parts = Request::connect("http://app/chat")
                .header("sec-websocket-version", "13")
                .body(())
                .unwrap()
                .into_parts()
                .0;
            if let Some(p) = protocol {
                parts.extensions.insert(hyper::ext::Protocol::from(p));
            }
            parts
        };
        let mut req = extended(Some("websocket"));
        assert!(extended_connect_to_upgrade(&mut req));
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.uri, "http://app/chat");
        assert_eq!(req.headers["upgrade"], "websocket");
        assert_eq!(req.headers["connection"], "upgrade");
        assert_eq!(req.headers["sec-websocket-version"], "13");
        assert!(req.extensions.get::<hyper::ext::Protocol>().is_none());
        // And it is then an upgrade on HTTP/2 too.
        assert_eq!(
            requested(&req.method, Version::HTTP_2, &mut req.headers).as_deref(),
            Some("websocket")
        );
        // A CONNECT without `:protocol` stays one (refused as an upgrade type), and so does a
        // GET.
        let mut plain = extended(None);
        assert!(!extended_connect_to_upgrade(&mut plain));
        assert_eq!(plain.method, Method::CONNECT);
        let mut get = Request::get("/").body(()).unwrap().into_parts().0;
        get.extensions
            .insert(hyper::ext::Protocol::from("websocket"));
        assert!(!extended_connect_to_upgrade(&mut get));
        assert!(!get.headers.contains_key("upgrade"));

        let response = |status: u16| {
            Response::builder()
                .status(status)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("content-length", "0")
                .header("sec-websocket-accept", "a")
                .body(())
                .unwrap()
        };
        let mut switched = response(101);
        upgrade_response_to_h2(&mut switched);
        assert_eq!(switched.status(), StatusCode::OK);
        let names: Vec<_> = switched.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["sec-websocket-accept"]);
        let mut refused = response(403);
        upgrade_response_to_h2(&mut refused);
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn idle_timeouts() {
        let s = Duration::from_secs;
        assert_eq!(idle_timeout(None, Some(s(300))), Some(s(300)));
        assert_eq!(idle_timeout(Some(s(5)), Some(s(300))), Some(s(5)));
        assert_eq!(idle_timeout(Some(Duration::ZERO), Some(s(300))), None);
        assert_eq!(idle_timeout(None, None), None);
    }
}
