//! The HTTP connection manager: HTTP/1.1 and HTTP/2 (prior knowledge) downstream, the HTTP
//! filters Istio generates (JWT authentication, RBAC, fault, CORS, router) run in the order the
//! HCM lists them, and the router's request path (route, rewrite, headers, retries, timeouts,
//! mirroring) onto a cluster.
//!
//! - [`hcm`]: compiling the `HttpConnectionManager`; [`headers`]: forwarding headers;
//! - [`jwt_authn`], [`rbac`], [`cors`], [`fault`]: the filters; [`metadata`]: the dynamic
//!   metadata they share; [`router`], [`retry`], [`mirror`]: upstream, [`replay`]: request
//!   bodies recorded as they stream for retries and mirrors; [`upgrade`]: HTTP/1.1 upgrades
//!   (WebSocket), their HTTP/2 form (RFC 8441 extended CONNECT) and their tunnels.

pub mod cors;
pub mod fault;
pub mod h1;
mod h2;
pub mod hcm;
pub mod headers;
pub mod jwt_authn;
pub mod metadata;
pub mod mirror;
pub mod names;
pub mod rbac;
pub mod replay;
pub mod retry;
pub mod router;
pub mod stream_deadline;
pub mod upgrade;

use crate::route::action::{self, Action};
use crate::route::filters::{FaultConfig, Override};
use crate::route::{RequireTls, RouteTable};
use crate::stats::HttpStats;
use crate::store::Store;
pub use hcm::compile_hcm;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type requests and responses are carried in between layers.
pub type BoxBody = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// Where an HTTP connection manager gets its routes.
#[derive(Debug, Clone)]
pub enum RouteSource {
    /// RDS: the route configuration of this name, read from the store's snapshot per request.
    Rds(String),
    /// Inline in the listener.
    Inline(Arc<RouteTable>),
}

/// `codec_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 or HTTP/2 prior knowledge, detected.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// Host-header port stripping before virtual-host matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripPort {
    /// Keep the port.
    None,
    /// `strip_matching_host_port`: strip it when it is the listener's port.
    Matching,
    /// `strip_any_host_port`.
    Any,
}

/// One HTTP filter before the router; the HCM runs them in its listed order.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// `envoy.filters.http.jwt_authn`.
    JwtAuthn(Arc<jwt_authn::JwtAuthnFilter>),
    /// `envoy.filters.http.rbac` (Istio: DENY before ALLOW).
    Rbac(Arc<rbac::RbacFilter>),
    /// `envoy.filters.http.fault`, with its filter-level config (routes may override it).
    Fault(Arc<FaultConfig>),
    /// `envoy.filters.http.cors` (the policy comes from the route).
    Cors,
}

/// A compiled `HttpConnectionManager`.
#[derive(Debug)]
pub struct HcmConfig {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// Where routes come from.
    pub routes: RouteSource,
    /// `codec_type`.
    pub codec: Codec,
    /// The HTTP filters before the router, in chain order.
    pub filters: Vec<HttpFilter>,
    /// `stream_idle_timeout` (default 5 min; None = disabled).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout` (None = disabled).
    pub request_timeout: Option<Duration>,
    /// `use_remote_address`.
    pub use_remote_address: bool,
    /// `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// `skip_xff_append`.
    pub skip_xff_append: bool,
    /// `generate_request_id` (default true).
    pub generate_request_id: bool,
    /// `preserve_external_request_id`.
    pub preserve_external_request_id: bool,
    /// `always_set_request_id_in_response`.
    pub always_set_request_id_in_response: bool,
    /// `server_name` (default `envoy`).
    pub server_name: String,
    /// `server_header_transformation` (0 overwrite, 1 append if absent, 2 pass through).
    pub server_header: i32,
    /// Host port stripping.
    pub strip_port: StripPort,
    /// `normalize_path`.
    pub normalize_path: bool,
    /// `forward_client_cert_details` and `set_current_client_cert_details`.
    pub xfcc: headers::Xfcc,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `upgrade_configs`: the upgrade types allowed unless a route says otherwise.
    pub upgrades: upgrade::UpgradeSettings,
    /// `http2_protocol_options.allow_connect`: HTTP/2 clients may open RFC 8441 extended
    /// CONNECT streams (WebSocket over HTTP/2), handled as HTTP/1.1 upgrades.
    pub allow_connect: bool,
    /// The rest of `http2_protocol_options` the HTTP/2 server applies.
    pub http2: Http2Settings,
}

/// The HTTP/2 server's settings from the connection manager's `http2_protocol_options`; where
/// a field is unset, the value hyper's server had for us (not Envoy's defaults, which allow
/// 2^31-1 streams and 256 MiB stream windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// `max_concurrent_streams` (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// `initial_stream_window_size` (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_stream_window_size: u32,
    /// `initial_connection_window_size`.
    pub initial_connection_window_size: u32,
    /// `hpack_table_size` (SETTINGS_HEADER_TABLE_SIZE: our decoder's dynamic table).
    pub hpack_table_size: u32,
}

impl Default for Http2Settings {
    /// The connection's own defaults ([`crate::http2::conn::ConnConfig`]).
    fn default() -> Self {
        let c = crate::http2::conn::ConnConfig::default();
        Http2Settings {
            max_concurrent_streams: c.max_concurrent_streams,
            initial_stream_window_size: c.initial_window_size,
            initial_connection_window_size: c.connection_window_size,
            hpack_table_size: c.header_table_size,
        }
    }
}

/// What the HTTP layer knows of the downstream connection.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The address the connection was made to (the original destination when captured).
    pub local: SocketAddr,
    /// Whether the connection is TLS (for `x-forwarded-proto`).
    pub tls: bool,
    /// The client's certificate, when it presented one (mTLS).
    pub peer_cert: Option<Arc<crate::identity::PeerCert>>,
    /// Its listener's `per_connection_buffer_limit_bytes`: what a request keeps of its body for
    /// retries and mirrors unless its route sets a limit.
    pub buffer_limit: usize,
    /// The TLS handshake agreed on `h2` (ALPN): the connection speaks HTTP/2 from its first
    /// byte, which codec AUTO then takes as Envoy's does, without looking for a preface.
    pub alpn_h2: bool,
}

/// A response the proxy generates itself (`text/plain` body when not empty).
pub fn local_reply(status: u16, body: &str) -> Response<BoxBody> {
    let mut r = Response::new(
        http_body_util::Full::new(bytes::Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    if !body.is_empty() {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    r
}

/// `uri` with its path and query replaced by `pq`, its scheme and authority kept: an HTTP/2
/// request's `:authority` is there and nowhere else (no `Host` header), and the route is chosen
/// by it after normalization. An unusable `pq` leaves `uri` as it was.
pub fn with_path_and_query(uri: &http::Uri, pq: &str) -> http::Uri {
    let Ok(pq) = pq.parse::<http::uri::PathAndQuery>() else {
        return uri.clone();
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Normalizes a path as `normalize_path` (RFC 3986 dot segments) and `merge_slashes` do;
/// borrowed when it is normal already (the usual case: nothing is allocated per request).
pub fn normalize(path: &str, dots: bool, merge: bool) -> std::borrow::Cow<'_, str> {
    let p = path.split_once('?').map_or(path, |(p, _)| p);
    let normal = p.starts_with('/')
        && !(merge && p.contains("//"))
        && !(dots && p.split('/').any(|s| s == "." || s == ".."));
    if normal {
        std::borrow::Cow::Borrowed(path)
    } else {
        std::borrow::Cow::Owned(normalized(path, dots, merge))
    }
}

fn normalized(path: &str, dots: bool, merge: bool) -> String {
    let (p, q) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = p.split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *s {
            "." if dots => {
                if last {
                    out.push("");
                }
            }
            ".." if dots => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            "" if merge && i > 0 && !last => {}
            s => out.push(s),
        }
    }
    let mut p = out.join("/");
    if !p.starts_with('/') {
        p.insert(0, '/');
    }
    match q {
        Some(q) => format!("{p}?{q}"),
        None => p,
    }
}

struct Ctx {
    hcm: Arc<HcmConfig>,
    store: Arc<Store>,
    down: Downstream,
    stats: Arc<HttpStats>,
    /// The `server` header value (`server_name`), built once per connection.
    server: HeaderValue,
    /// An upgraded request's tunnel, run by the connection once hyper hands it over.
    tunnel: std::sync::Mutex<Option<upgrade::Tunnel>>,
    /// The listener's drain, which ends the tunnels of HTTP/2 extended CONNECT streams.
    drain: crate::drain::Drain,
}

/// The request's authority as routed: a shared handle on the header or URI bytes it came from
/// (no copy per request), without its port when the connection manager strips it.
#[derive(Clone)]
struct RoutedHost {
    source: HostSource,
    /// How much of the source is the host: less than all of it when the port is stripped,
    /// `usize::MAX` for all of it.
    len: usize,
}

#[derive(Clone)]
enum HostSource {
    /// A header whose value is visible ASCII (checked when it was chosen).
    Header(HeaderValue),
    Uri(http::uri::Authority),
    Empty,
}

impl RoutedHost {
    fn as_str(&self) -> &str {
        let all = match &self.source {
            HostSource::Header(v) => v.to_str().unwrap_or(""),
            HostSource::Uri(a) => a.as_str(),
            HostSource::Empty => "",
        };
        all.get(..self.len).unwrap_or(all)
    }
}

/// Whether `digits` (ASCII digits) is `port` written as `u16::to_string` writes it.
fn is_port(digits: &str, port: u16) -> bool {
    digits.parse::<u16>().is_ok_and(|n| n == port)
        && (digits.len() == 1 || !digits.starts_with('0'))
}

fn authority(
    req: &http::request::Parts,
    hcm: &HcmConfig,
    table: &RouteTable,
    local: SocketAddr,
) -> RoutedHost {
    let header = |v: Option<&HeaderValue>| {
        v.filter(|v| v.to_str().is_ok())
            .map(|v| HostSource::Header(v.clone()))
    };
    let source = match &table.vhost_header {
        Some(h) => header(req.headers.get(h.as_str())),
        None => req
            .uri
            .authority()
            .map(|a| HostSource::Uri(a.clone()))
            .or_else(|| header(req.headers.get(http::header::HOST))),
    }
    .unwrap_or(HostSource::Empty);
    let mut host = RoutedHost {
        source,
        len: usize::MAX,
    };
    let raw = host.as_str();
    let (bare, port) = action::split_host_port(raw);
    let len = match (hcm.strip_port, port) {
        (StripPort::Any, Some(_)) => bare.len(),
        (StripPort::Matching, Some(p)) if is_port(p, local.port()) => bare.len(),
        _ => raw.len(),
    };
    host.len = len;
    host
}

/// The route a request matched, looked up when a filter or the router first needs it (and
/// again after a filter that may change what it matches, as Envoy's `clearRouteCache`).
struct Matched<'t> {
    host: RoutedHost,
    /// A shared handle on the request line's bytes, not a copy.
    path_and_query: Option<http::uri::PathAndQuery>,
    route: Option<(&'t crate::route::VirtualHost, &'t crate::route::Route)>,
    /// The virtual host requires TLS and the request is not: the router redirects.
    tls_redirect: bool,
}

fn match_route<'t>(
    ctx: &Ctx,
    table: &'t RouteTable,
    parts: &http::request::Parts,
    trusted: bool,
) -> Matched<'t> {
    let host = authority(parts, &ctx.hcm, table, ctx.down.local);
    let path_and_query = parts.uri.path_and_query().cloned();
    let route = table.route(
        host.as_str(),
        path_and_query.as_ref().map_or("/", |p| p.as_str()),
        &parts.headers,
    );
    let xfp_https = parts
        .headers
        .get(names::X_FORWARDED_PROTO)
        .is_some_and(|v| v == "https");
    let tls_redirect = route.is_some_and(|(vh, _)| match vh.require_tls {
        RequireTls::None => false,
        RequireTls::All => !ctx.down.tls && !xfp_https,
        RequireTls::ExternalOnly => !ctx.down.tls && !xfp_https && !trusted,
    });
    Matched {
        host,
        path_and_query,
        route,
        tls_redirect,
    }
}

/// Serves one request, its head lent by [`serve_request`] (which keeps it, once, for every
/// layer down to the upstream connection).
async fn handle(ctx: &Ctx, parts: &mut http::request::Parts, body: BoxBody) -> Response<BoxBody> {
    let pending_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    // Envoy's HTTP/2 codec turns an extended CONNECT into an HTTP/1.1 upgrade (only offered
    // with `allow_connect`: without it h2 resets a `:protocol` request).
    let extended_connect = ctx.hcm.allow_connect && upgrade::extended_connect_to_upgrade(parts);
    let upgrade = upgrade::requested(&parts.method, parts.version, &mut parts.headers);
    let snapshot = ctx.store.snapshot();
    let table = match &ctx.hcm.routes {
        RouteSource::Rds(name) => snapshot.route(name).cloned(),
        RouteSource::Inline(t) => Some(t.clone()),
    };
    let Some(table) = table else {
        ctx.stats.no_route.inc();
        return local_reply(404, "");
    };
    let trusted = headers::on_request(&ctx.hcm, &mut parts.headers, &ctx.down);
    // The connection manager normalizes the path before any filter sees it, so RBAC and JWT
    // rules match what the router routes.
    if ctx.hcm.normalize_path || ctx.hcm.merge_slashes {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let n = normalize(pq, ctx.hcm.normalize_path, ctx.hcm.merge_slashes);
        if n != pq {
            parts.uri = with_path_and_query(&parts.uri, &n);
        }
    }
    let scheme = if ctx.down.tls { "https" } else { "http" };
    let mut metadata = metadata::DynamicMetadata::default();
    let mut matched: Option<Matched<'_>> = None;
    // Envoy builds the upgrade's filter chain, or refuses it with a 403, before any HTTP filter
    // runs, with the route first matched.
    let mut tunnel = None;
    if let Some(kind) = &upgrade {
        let m = matched.get_or_insert_with(|| match_route(ctx, &table, parts, trusted));
        let forward = m.route.and_then(|(_, r)| match &r.action {
            Action::Forward(f) => Some(f),
            _ => None,
        });
        let route_level = forward.map(|f| &f.upgrades);
        match pending_upgrade {
            Some(p) if upgrade::allowed(&ctx.hcm.upgrades, route_level, kind) => {
                ctx.stats.downstream_cx_upgrades_total.inc();
                let idle = upgrade::idle_timeout(
                    forward.and_then(|f| f.idle_timeout),
                    ctx.hcm.stream_idle_timeout,
                );
                tunnel = Some((p, idle));
            }
            _ => {
                tracing::debug!(upgrade = kind.as_str(), "upgrade refused");
                return local_reply(403, "");
            }
        }
    }
    let mut cors_headers = None;
    for filter in &ctx.hcm.filters {
        match filter {
            HttpFilter::JwtAuthn(f) => {
                if let Some(refused) = authenticate(ctx, f, parts, &mut metadata) {
                    return refused;
                }
                // clear_route_cache: claim headers may change the route.
                matched = None;
            }
            HttpFilter::Rbac(f) => {
                if let Some(denied) = authorize(ctx, f, parts, &metadata) {
                    return denied;
                }
            }
            HttpFilter::Cors => {
                let m = matched.get_or_insert_with(|| match_route(ctx, &table, parts, trusted));
                let Some((_, route)) = m.route.filter(|_| !m.tls_redirect) else {
                    continue;
                };
                if let Override::Set(c) = &route.filters.cors {
                    match cors::evaluate(c, &parts.method, &parts.headers) {
                        cors::Cors::Preflight(h) => {
                            let mut r = local_reply(200, "");
                            r.headers_mut().extend(h);
                            return r;
                        }
                        cors::Cors::Response(h) => cors_headers = Some(h),
                        cors::Cors::Pass => {}
                    }
                }
            }
            HttpFilter::Fault(filter_level) => {
                let m = matched.get_or_insert_with(|| match_route(ctx, &table, parts, trusted));
                let Some((_, route)) = m.route.filter(|_| !m.tls_redirect) else {
                    continue;
                };
                let cfg = match &route.filters.fault {
                    Override::Set(c) => Some(c.clone()),
                    Override::Inherit => Some(filter_level.clone()),
                    Override::Disabled => None,
                };
                if let Some(cfg) = cfg {
                    let cluster = match &route.action {
                        Action::Forward(f) => match &f.clusters {
                            action::ClusterChoice::Single(c) => Some(c.as_str()),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(r) = fault::apply(&cfg, &parts.headers, cluster, &ctx.stats).await {
                        return r;
                    }
                }
            }
        }
    }
    let Matched {
        host,
        path_and_query,
        route,
        tls_redirect,
    } = matched.unwrap_or_else(|| match_route(ctx, &table, parts, trusted));
    let Some((vh, route)) = route else {
        ctx.stats.no_route.inc();
        return local_reply(404, "");
    };
    let host = host.as_str();
    let path_and_query = path_and_query.as_ref().map_or("/", |p| p.as_str());
    if tls_redirect {
        let r = action::Redirect {
            scheme: Some("https".into()),
            status: 301,
            ..action::Redirect::default()
        };
        return redirect(&action::location(&r, scheme, host, path_and_query, None));
    }
    let (mut resp, cookie) = match &route.action {
        Action::Direct(d) => (local_reply(d.status, ""), None).map_body(d.body.clone()),
        Action::Redirect(r) => (
            redirect(&action::location(
                r,
                scheme,
                host,
                path_and_query,
                route.matched_prefix(),
            ))
            .with_status(r.status),
            None,
        ),
        Action::Forward(f) => {
            let m = router::Matched {
                table: &table,
                vh,
                route,
                forward: f,
            };
            router::forward(
                m,
                &snapshot,
                parts,
                body,
                host,
                router::Caller {
                    down: &ctx.down,
                    trusted,
                    stats: ctx.store.stats(),
                    upgrade: tunnel.is_some(),
                },
            )
            .await
        }
    };
    if !matches!(route.action, Action::Forward(_)) {
        let m_levels = [
            &route.response_headers,
            &vh.response_headers,
            &table.response_headers,
        ];
        let mut order: Vec<_> = m_levels.to_vec();
        if table.most_specific_wins {
            order.reverse();
        }
        for l in order {
            l.apply(resp.headers_mut());
        }
    }
    if let Some((downstream, idle)) = tunnel {
        let t = upgrade::Tunnel::from_response(downstream, &mut resp, idle);
        if extended_connect {
            // The HTTP/2 client waits for a 200 on its stream; the tunnel is one stream of
            // the connection, which goes on serving the others.
            upgrade::upgrade_response_to_h2(&mut resp);
            if let Some(t) = t {
                let (stats, mut drain) = (ctx.stats.clone(), ctx.drain.clone());
                tokio::spawn(async move { t.run(&stats, drain.ended()).await });
            }
        } else if let Some(t) = t {
            if let Ok(mut slot) = ctx.tunnel.lock() {
                *slot = Some(t);
            }
        }
    }
    if let Some(h) = cors_headers {
        resp.headers_mut().extend(h);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(http::header::SET_COOKIE, c);
    }
    resp
}

/// Runs the JWT filter; a refusal is Envoy's 401/403 with the status as body.
fn authenticate(
    ctx: &Ctx,
    filter: &jwt_authn::JwtAuthnFilter,
    parts: &mut http::request::Parts,
    metadata: &mut metadata::DynamicMetadata,
) -> Option<Response<BoxBody>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    match filter.on_request(
        &parts.method,
        &path_and_query,
        &mut parts.headers,
        metadata,
        now,
    ) {
        Ok(()) => {
            ctx.stats.jwt_authn_allowed.inc();
            None
        }
        Err(status) => {
            ctx.stats.jwt_authn_denied.inc();
            tracing::debug!(status = status.message(), "jwt_authn: request refused");
            // Envoy's realm: the original URL, `x-forwarded-proto://host/path`, no query.
            let proto = parts
                .headers
                .get(names::X_FORWARDED_PROTO)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(if ctx.down.tls { "https" } else { "http" });
            let host = parts
                .uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| {
                    parts
                        .headers
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                })
                .unwrap_or("");
            let uri = format!("{proto}://{host}{}", parts.uri.path());
            Some(jwt_authn::refusal(status, &uri))
        }
    }
}

/// Runs one RBAC filter; a refusal is Envoy's `403 RBAC: access denied`.
fn authorize(
    ctx: &Ctx,
    filter: &rbac::RbacFilter,
    parts: &http::request::Parts,
    metadata: &metadata::DynamicMetadata,
) -> Option<Response<BoxBody>> {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let remote =
        headers::client_ip(&ctx.hcm, &parts.headers, &ctx.down).unwrap_or(ctx.down.peer.ip());
    let request = rbac::RbacRequest {
        headers: &parts.headers,
        method: parts.method.as_str(),
        path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        authority,
        scheme: if ctx.down.tls { "https" } else { "http" },
        destination: ctx.down.local,
        direct_remote: ctx.down.peer.ip(),
        remote,
        peer: ctx.down.peer_cert.as_deref(),
        server_name: None,
        metadata,
    };
    let (allowed, policy) = filter.check(&request);
    if !allowed {
        ctx.stats.rbac_denied.inc();
        tracing::debug!(?policy, peer = ?request.peer.and_then(|p| p.spiffe()), "RBAC: access denied");
        return Some(local_reply(403, "RBAC: access denied"));
    }
    ctx.stats.rbac_allowed.inc();
    None
}

trait ReplyExt {
    fn map_body(self, b: bytes::Bytes) -> (Response<BoxBody>, Option<String>);
}

impl ReplyExt for (Response<BoxBody>, Option<String>) {
    fn map_body(self, b: bytes::Bytes) -> (Response<BoxBody>, Option<String>) {
        let (mut parts, _) = self.0.into_parts();
        if !b.is_empty() {
            parts.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
        (
            Response::from_parts(
                parts,
                http_body_util::Full::new(b).map_err(|e| match e {}).boxed(),
            ),
            self.1,
        )
    }
}

trait StatusExt {
    fn with_status(self, s: u16) -> Self;
}

impl StatusExt for Response<BoxBody> {
    fn with_status(mut self, s: u16) -> Self {
        if let Ok(s) = http::StatusCode::from_u16(s) {
            *self.status_mut() = s;
        }
        self
    }
}

fn redirect(location: &str) -> Response<BoxBody> {
    let mut r = local_reply(301, "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// Runs one request through the connection manager: counters, request timeout, `server`.
///
/// The request's head is split off before its future is made, so that the future holds it
/// once and lends it to the layers below ([`handle`], the router, the cluster, the upstream
/// connection); an `async fn` taking the request would hold it twice (its argument and a
/// copy), and each layer taking it by value twice more, in a future that is copied as it is
/// moved.
fn serve_request(
    ctx: Arc<Ctx>,
    req: Request<BoxBody>,
) -> impl std::future::Future<Output = Response<BoxBody>> + Send {
    let (mut parts, body) = req.into_parts();
    async move {
        let start = Instant::now();
        ctx.stats.downstream_rq_total.inc();
        let _active = ActiveRequest::new(&ctx.stats);
        let request_id = if ctx.hcm.always_set_request_id_in_response {
            parts.headers.get(names::X_REQUEST_ID).cloned()
        } else {
            None
        };
        // The request's future is made where it is awaited, not moved there from a local: it
        // holds the router's and the upstream's futures, and a move copies all of it.
        let mut resp = match ctx.hcm.request_timeout {
            Some(t) => match tokio::time::timeout(t, handle(&ctx, &mut parts, body)).await {
                Ok(r) => r,
                Err(_) => local_reply(408, "request timeout"),
            },
            None => handle(&ctx, &mut parts, body).await,
        };
        let h = resp.headers_mut();
        let server = ctx.server.clone();
        match ctx.hcm.server_header {
            0 => {
                h.insert(http::header::SERVER, server);
            }
            1 if !h.contains_key(http::header::SERVER) => {
                h.insert(http::header::SERVER, server);
            }
            _ => {}
        }
        if let Some(id) = request_id {
            h.insert(names::X_REQUEST_ID, id);
        }
        let status = resp.status().as_u16();
        if let Some(c) = ctx
            .stats
            .downstream_rq_class
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            c.inc();
        }
        ctx.stats.downstream_rq_time.record(start.elapsed());
        resp
    }
}

/// Counts a request in `downstream_rq_active` while it is served. The count drops with the
/// request's future, also when that future is dropped unfinished: an HTTP/2 client's reset, a
/// client closing its HTTP/1.1 connection, or the end of a drain window cancels the request.
struct ActiveRequest<'a>(&'a HttpStats);

impl<'a> ActiveRequest<'a> {
    fn new(stats: &'a HttpStats) -> Self {
        stats.downstream_rq_active.inc();
        ActiveRequest(stats)
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.downstream_rq_active.dec();
    }
}

/// Serves one downstream connection (after filter-chain selection) until it closes or its
/// listener drains: then in-flight requests finish and the connection closes gracefully; an
/// upgraded stream, or a response still open, is closed when the drain window ends.
pub async fn serve_connection<IO>(
    io: IO,
    hcm: Arc<HcmConfig>,
    store: Arc<Store>,
    downstream: Downstream,
    mut drain: crate::drain::Drain,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stats = store.stats().http(&hcm.stat_prefix);
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let ctx = Arc::new(Ctx {
        hcm: hcm.clone(),
        store,
        down: downstream,
        stats: stats.clone(),
        server: HeaderValue::from_str(&hcm.server_name)
            .unwrap_or(HeaderValue::from_static("envoy")),
        tunnel: std::sync::Mutex::new(None),
        drain: drain.clone(),
    });
    let codec = match hcm.codec {
        Codec::Auto if ctx.down.alpn_h2 => Codec::Http2,
        c => c,
    };
    // Plain HTTP/1.1 requests are served without hyper's codec until the first that is not.
    let io = match codec {
        Codec::Http2 => crate::net::Prefixed::new(bytes::Bytes::new(), io),
        Codec::Http1 | Codec::Auto => match h1::serve(io, &ctx, &mut drain).await {
            h1::Served::Closed => {
                stats.downstream_cx_active.dec();
                return;
            }
            h1::Served::Handoff(io) => io,
        },
    };
    // HTTP/2 is served by our own codec, unless extended CONNECT may open tunnels,
    // which hyper's upgrades carry.
    let http2 = match codec {
        Codec::Http2 => true,
        Codec::Auto => h2::starts_preface(io.prefix()),
        Codec::Http1 => false,
    };
    if http2 && !hcm.allow_connect {
        let (read, io) = io.into_parts();
        h2::serve(read, io, &ctx, &mut drain).await;
        stats.downstream_cx_active.dec();
        return;
    }
    let svc_ctx = ctx.clone();
    // Not boxed: hyper serves HTTP/1 requests inside the connection's task, and HTTP/2 only
    // under `allow_connect` (where each stream's task copies the future a few times).
    let svc = hyper::service::service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move {
            let req = req
                .map(|b: hyper::body::Incoming| b.map_err(|e| -> BoxError { Box::new(e) }).boxed());
            Ok::<_, std::convert::Infallible>(serve_request(ctx, req).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    match codec {
        Codec::Http1 => builder = builder.http1_only(),
        Codec::Http2 => builder = builder.http2_only(),
        Codec::Auto => {}
    }
    if hcm.allow_connect {
        builder.http2().enable_connect_protocol();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("http connection: {e}");
            }
        }
        _ = drain.started() => {
            conn.as_mut().graceful_shutdown();
            // In-flight requests finish within the drain window; a response still open when
            // it ends (a stream, a slow client) is cut with its connection, as Envoy closes a
            // draining listener's last connections.
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("http connection (draining): {e}");
                    }
                }
                () = drain.ended() => {
                    tracing::debug!("http connection still busy at the end of the drain window: closed");
                }
            }
        }
    }
    // After a 101 hyper has handed the connection over: the tunnel is the rest of its life,
    // up to the end of a drain window.
    let tunnel = ctx.tunnel.lock().ok().and_then(|mut t| t.take());
    if let Some(t) = tunnel {
        t.run(&stats, drain.ended()).await;
    }
    stats.downstream_cx_active.dec();
}

#[cfg(test)]
mod buffer_limit_tests;
#[cfg(test)]
mod extended_connect_tests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod upgrade_tests;
