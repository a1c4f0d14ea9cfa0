//! The router: a forwarding route's cluster choice, rewrites and header mutations, then the
//! upstream attempts (retries, per-try and route timeouts, back-off, previous-hosts avoidance)
//! and the response streamed back.

use super::replay::Replay;
use super::retry::{self, Outcome};
use super::{local_reply, BoxBody, Downstream};
use crate::cluster::{Cluster, LbContext, Outgoing, UpstreamError};
use crate::route::action::{ClusterChoice, Forward, HostRewrite, WeightedTarget};
use crate::route::headers::HeaderMutation;
use crate::route::{Route, RouteTable, VirtualHost};
use crate::store::Snapshot;
use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the router needs about the matched route.
pub struct Matched<'a> {
    /// The route table.
    pub table: &'a RouteTable,
    /// The virtual host.
    pub vh: &'a VirtualHost,
    /// The route.
    pub route: &'a Route,
    /// Its forwarding action.
    pub forward: &'a Forward,
}

/// The chosen cluster and the weighted target it came from.
pub fn choose<'a>(
    f: &'a Forward,
    headers: &http::HeaderMap,
) -> Option<(Cow<'a, str>, Option<&'a WeightedTarget>)> {
    match &f.clusters {
        ClusterChoice::Single(c) => Some((Cow::Borrowed(c), None)),
        ClusterChoice::Header(h) => headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(|c| (Cow::Owned(c.to_string()), None)),
        ClusterChoice::Weighted { targets, total } => {
            let t = ClusterChoice::pick_weighted(targets, fastrand::u64(0..*total))?;
            Some((Cow::Borrowed(&t.cluster), Some(t)))
        }
    }
}

/// The mutation levels in the order they apply: by default the least specific applies last
/// (wins); with `most_specific_header_mutations_wins`, the most specific does.
pub fn levels<'a>(
    m: &Matched<'a>,
    target: Option<&'a WeightedTarget>,
    request: bool,
) -> SmallVec<[&'a HeaderMutation; 4]> {
    let pick = |r: &'a HeaderMutation, s: &'a HeaderMutation| if request { r } else { s };
    let mut v: SmallVec<[&HeaderMutation; 4]> = SmallVec::new();
    if let Some(t) = target {
        v.push(pick(&t.request_headers, &t.response_headers));
    }
    v.push(pick(&m.route.request_headers, &m.route.response_headers));
    v.push(pick(&m.vh.request_headers, &m.vh.response_headers));
    v.push(pick(&m.table.request_headers, &m.table.response_headers));
    if m.table.most_specific_wins {
        v.reverse();
    }
    v
}

/// Rewrites the path: `prefix_rewrite` replaces the matched prefix, else `regex_rewrite`.
pub fn rewrite_path(f: &Forward, matched_prefix: Option<&str>, path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let new = if let (Some(rw), Some(prefix)) = (&f.prefix_rewrite, matched_prefix) {
        if path.len() >= prefix.len() && path[..prefix.len()].eq_ignore_ascii_case(prefix) {
            format!("{rw}{}", &path[prefix.len()..])
        } else {
            path.to_string()
        }
    } else if let Some((re, sub)) = &f.regex_rewrite {
        re.replace_all(path, sub.as_str()).into_owned()
    } else {
        return path_and_query.to_string();
    };
    match query {
        Some(q) => format!("{new}?{q}"),
        None => new,
    }
}

/// The request body: read whole when small and of a known length, recorded while it streams
/// when a retry or mirror may need it again, else streamed once.
enum ReqBody {
    Buffered(Bytes),
    Replayable(Replay, BoxBody),
    Streaming(BoxBody),
}

/// A body of a known length up to this (and up to the buffer limit) is read whole before the
/// first attempt; a larger limit (`request_body_buffer_limit`, a listener without one) is
/// reached by recording as the body streams, so memory is not claimed up front.
const READ_WHOLE: usize = 1 << 20;

/// `replay`: a retry or mirror may need the body again (Envoy buffers only then). `limit` is
/// how much of it is kept for them (the route's and listener's limits, as Envoy's router
/// combines them): a small body of a known length within it is read whole before the first
/// attempt; others are recorded up to it while they stream ([`super::replay`]).
async fn buffer(
    body: BoxBody,
    replay: bool,
    limit: usize,
    stats: &Arc<crate::stats::ClusterStats>,
) -> Result<ReqBody, Response<BoxBody>> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(ReqBody::Buffered(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= limit.min(READ_WHOLE) as u64 => match body.collect().await {
            Ok(c) => Ok(ReqBody::Buffered(c.to_bytes())),
            Err(_) => Err(local_reply(400, "downstream request body error")),
        },
        // Unknown or large sizes stream as they arrive, so streaming requests still flow.
        _ if replay => {
            let (r, first) = Replay::new(body, limit, stats.clone());
            Ok(ReqBody::Replayable(r, first))
        }
        _ => Ok(ReqBody::Streaming(body)),
    }
}

/// A body of `b`; an empty one is a zero-sized `Empty`, whose box allocates nothing (the
/// usual request, a GET, is buffered empty for its retries).
fn full(b: Bytes) -> BoxBody {
    if b.is_empty() {
        return http_body_util::Empty::new().map_err(|e| match e {}).boxed();
    }
    http_body_util::Full::new(b).map_err(|e| match e {}).boxed()
}

/// Envoy's local reply for an upstream failure before the response headers.
pub(super) fn upstream_error_reply(e: &UpstreamError) -> Response<BoxBody> {
    const PREFIX: &str =
        "upstream connect error or disconnect/reset before headers. reset reason: ";
    match e {
        UpstreamError::Overflow => {
            let mut r = local_reply(503, &format!("{PREFIX}overflow"));
            r.headers_mut()
                .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
            r
        }
        UpstreamError::NoHealthyUpstream => local_reply(503, "no healthy upstream"),
        UpstreamError::ConnectFailure(m) => local_reply(
            503,
            &format!("{PREFIX}connection failure, transport failure reason: {m}"),
        ),
        UpstreamError::Reset(m) => {
            local_reply(503, &format!("{PREFIX}connection termination: {m}"))
        }
        UpstreamError::RemoteReset(r) => local_reply(503, &format!("{PREFIX}{}", r.envoy_name())),
    }
}

fn outcome_of(e: &UpstreamError) -> Outcome {
    match e {
        UpstreamError::Overflow => Outcome::Overflow,
        UpstreamError::NoHealthyUpstream => Outcome::NoHealthyUpstream,
        UpstreamError::ConnectFailure(_) => Outcome::ConnectFailure,
        UpstreamError::Reset(m) => Outcome::Reset {
            refused: m.to_ascii_lowercase().contains("refused"),
        },
        UpstreamError::RemoteReset(r) => Outcome::Reset {
            refused: *r == crate::cluster::RemoteReset::Refused,
        },
    }
}

/// Who is asking: the downstream connection, whether its `x-envoy-*` headers are trusted, and
/// where to count.
pub struct Caller<'a> {
    /// The downstream connection.
    pub down: &'a Downstream,
    /// Whether the request is internal (its `x-envoy-*` headers are honoured).
    pub trusted: bool,
    /// The process's counters.
    pub stats: &'a crate::stats::Stats,
    /// The request is an allowed upgrade ([`super::upgrade`]): sent once, without retries,
    /// mirrors or timeouts, its `101` keeping the upstream connection's pending upgrade.
    pub upgrade: bool,
}

/// Forwards a request on a matched route; `host` is the request's authority. Returns the
/// response and a generated hash-policy cookie to set.
pub async fn forward(
    m: Matched<'_>,
    snapshot: &Snapshot,
    parts: &mut http::request::Parts,
    body: BoxBody,
    host: &str,
    caller: Caller<'_>,
) -> (Response<BoxBody>, Option<String>) {
    let Caller {
        down,
        trusted,
        stats,
        upgrade,
    } = caller;
    let started = Instant::now();
    let f = m.forward;
    let Some((cluster_name, target)) = choose(f, &parts.headers) else {
        return (local_reply(f.cluster_not_found_status, ""), None);
    };
    let Some(cluster) = snapshot.cluster(&cluster_name).cloned() else {
        return (local_reply(f.cluster_not_found_status, ""), None);
    };
    // A shared handle on the request line's bytes, not a copy.
    let pq = parts.uri.path_and_query().cloned();
    let path_and_query = pq.as_ref().map_or("/", |p| p.as_str());
    let (hash, new_cookie) =
        crate::route::hash::compute(&f.hash, &parts.headers, path_and_query, down.peer);
    // Rewrites. Without one, an origin-form URI is kept as it is (no re-parse); an absolute
    // one (HTTP/2's :authority) is reduced to its path so the Host header decides upstream.
    let rewrites = f.prefix_rewrite.is_some() || f.regex_rewrite.is_some();
    if rewrites {
        let new_path = rewrite_path(f, m.route.matched_prefix(), path_and_query);
        parts.uri = new_path
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
    } else if parts.uri.authority().is_some() {
        // The same path, shared rather than written out and parsed again.
        parts.uri = pq
            .clone()
            .map_or_else(|| http::Uri::from_static("/"), http::Uri::from);
    }
    let mut new_host = Cow::Borrowed(host);
    let literal = target
        .and_then(|t| t.host_rewrite.clone())
        .or(match &f.host_rewrite {
            HostRewrite::Literal(h) => Some(h.clone()),
            _ => None,
        });
    if let Some(h) = literal {
        if f.append_x_forwarded_host {
            if let Ok(v) = HeaderValue::from_str(host) {
                parts.headers.append(super::names::X_FORWARDED_HOST, v);
            }
        }
        new_host = Cow::Owned(h);
    }
    // Usually the one Host header says this already: no new value to build.
    let already = {
        let mut all = parts.headers.get_all(http::header::HOST).iter();
        all.next().map(HeaderValue::as_bytes) == Some(new_host.as_bytes()) && all.next().is_none()
    };
    if !already {
        if let Ok(v) = HeaderValue::from_str(&new_host) {
            parts.headers.insert(http::header::HOST, v);
        }
    }
    for level in levels(&m, target, true) {
        level.apply(&mut parts.headers);
    }
    let stream_limit =
        super::stream_deadline::stream_limit(f.grpc_timeout_header_max, &parts.headers);
    // `max_grpc_timeout`: a gRPC request's `grpc-timeout` is its route timeout.
    let grpc_route_timeout = f
        .grpc_route_timeout
        .filter(|_| super::stream_deadline::is_grpc(&parts.headers));
    let route_timeout = match grpc_route_timeout {
        Some(g) => super::stream_deadline::grpc_route_timeout(g.max, g.offset, &parts.headers),
        None => f.timeout,
    };
    let state = retry::state(f.retry.as_ref(), route_timeout, &mut parts.headers, trusted);
    if grpc_route_timeout.is_some() {
        if let Some(v) = super::stream_deadline::upstream_grpc_timeout(
            state.timeout,
            state.policy.per_try_timeout,
        ) {
            parts.headers.insert(super::names::GRPC_TIMEOUT, v);
        }
    }
    if let Some(t) = state.timeout {
        parts.headers.insert(
            super::names::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
            HeaderValue::from(t.as_millis() as u64),
        );
    }
    let ctx = LbContext {
        hash,
        original_dst: Some(down.local),
        avoid: Vec::new(),
    };
    let protocol = if parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        crate::istio_metrics::RequestProtocol::Grpc
    } else {
        crate::istio_metrics::RequestProtocol::Http
    };
    let (resp, request_bytes) = if upgrade {
        // Rare, and its future is large: boxed, not carried in every request's future.
        (
            Box::pin(super::upgrade::send(&cluster, parts, body, &ctx)).await,
            0,
        )
    } else {
        let mirrors: Vec<_> = f
            .mirrors
            .iter()
            .filter_map(|m| Some((snapshot.cluster(&m.cluster)?, m)))
            .filter(|(_, m)| m.fraction.sample())
            .collect();
        // Envoy's router buffers when retries are enabled or the request is shadowed.
        let replay =
            (state.policy.num_retries > 0 && state.policy.on.0 != 0) || !mirrors.is_empty();
        let limit = m.route.buffer_limit.effective(down.buffer_limit);
        let body = match buffer(body, replay, limit, cluster.stats()).await {
            Ok(b) => b,
            Err(r) => return (r, None),
        };
        for (c, mirror) in mirrors {
            let copy = match &body {
                ReqBody::Buffered(b) => {
                    let b = b.clone();
                    futures::future::Either::Left(async move { Some(full(b)) })
                }
                ReqBody::Replayable(r, _) => futures::future::Either::Right(r.complete()),
                ReqBody::Streaming(_) => continue,
            };
            super::mirror::spawn(c.clone(), parts, copy, &new_host, mirror.keep_host);
        }
        let request_bytes = match &body {
            ReqBody::Buffered(b) => b.len() as u64,
            ReqBody::Replayable(..) | ReqBody::Streaming(_) => 0,
        };
        let attempt_header = m.vh.include_attempt_count;
        let resp = match stream_limit {
            Some(limit) => {
                let deadline = tokio::time::Instant::from_std(started) + limit;
                let sent = attempts(&cluster, &state, parts, body, ctx, attempt_header);
                match tokio::time::timeout_at(deadline, sent).await {
                    Ok(r) => super::stream_deadline::bounded(r, deadline),
                    Err(_) => super::stream_deadline::expired(),
                }
            }
            // Made where it is awaited, not moved there from a local (see `attempts`).
            None => attempts(&cluster, &state, parts, body, ctx, attempt_header).await,
        };
        (resp, request_bytes)
    };
    // Istio's standard metrics: the duration runs to the response headers (the body streams).
    let code = resp.status().as_u16();
    let series = match cluster.stats().istio.get() {
        Some(c) => c.series(code, protocol),
        None => stats.istio.request(&cluster_name, code, protocol),
    };
    series.requests.inc();
    series.duration.record(started.elapsed());
    series.request_bytes.add(request_bytes);
    if let Some(len) = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        series.response_bytes.add(len);
    }
    let mut resp = resp;
    for level in levels(&m, target, false) {
        level.apply(resp.headers_mut());
    }
    (resp, new_cookie.map(|c| c.header))
}

async fn attempts(
    cluster: &Arc<Cluster>,
    state: &retry::RetryState<'_>,
    parts: &mut http::request::Parts,
    body: ReqBody,
    mut ctx: LbContext,
    attempt_header: bool,
) -> Response<BoxBody> {
    let start = Instant::now();
    let deadline = state.timeout.map(|t| start + t);
    let (again, mut body) = match body {
        ReqBody::Buffered(b) => (Again::Bytes(b.clone()), full(b)),
        ReqBody::Replayable(r, first) => (Again::Replay(r), first),
        ReqBody::Streaming(s) => (Again::Never, s),
    };
    let policy = &state.policy;
    let mut attempt: u32 = 0;
    let mut _permit = None;
    let mut previous = None;
    loop {
        attempt += 1;
        // The head stays here, lent to each attempt; one that no retry may follow takes it
        // (a body that stops being replayable does not become replayable again).
        let keep = again.possible() && attempt <= policy.num_retries;
        if attempt_header {
            parts.headers.insert(
                super::names::X_ENVOY_ATTEMPT_COUNT,
                super::names::number(u64::from(attempt)),
            );
        }
        let out = Outgoing {
            head: &mut *parts,
            body,
            keep,
        };
        let now = if attempt == 1 { start } else { Instant::now() };
        let remaining = deadline.map(|d| d.saturating_duration_since(now));
        if remaining.is_some_and(|r| r.is_zero()) {
            cluster.stats().upstream_rq_timeout.inc();
            return local_reply(504, "upstream request timeout");
        }
        let per_try = policy.per_try_timeout;
        let limit: Option<Duration> = match (remaining, per_try) {
            (Some(r), Some(p)) => Some(r.min(p)),
            (r, p) => r.or(p),
        };
        // Each future is made where it is awaited: a future held in a local first is moved
        // (copied whole) into the awaiting state, per request.
        let result = match limit {
            Some(l) => tokio::time::timeout(l, cluster.send(out, &ctx)).await.ok(),
            None => Some(cluster.send(out, &ctx).await),
        };
        let (outcome, reply) = match result {
            None => {
                let global = deadline.is_some_and(|d| Instant::now() >= d);
                if global {
                    cluster.stats().upstream_rq_timeout.inc();
                    return local_reply(504, "upstream request timeout");
                }
                cluster.stats().upstream_rq_per_try_timeout.inc();
                (
                    Outcome::PerTryTimeout,
                    local_reply(504, "upstream request timeout"),
                )
            }
            Some(Ok((resp, addr))) => {
                let status = resp.status().as_u16();
                let grpc_status = resp
                    .headers()
                    .get(super::names::GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let outcome = Outcome::Response {
                    status,
                    grpc_status,
                };
                previous = Some(addr);
                let (mut p, b) = resp.into_parts();
                p.headers.insert(
                    super::names::X_ENVOY_UPSTREAM_SERVICE_TIME,
                    super::names::number(now.elapsed().as_millis() as u64),
                );
                let resp = Response::from_parts(p, b.boxed());
                (outcome, resp)
            }
            Some(Err(e)) => (outcome_of(&e), upstream_error_reply(&e)),
        };
        // Only after an attempt that left the head (`keep`), and while the body still replays.
        let may_retry =
            keep && again.possible() && retry::retriable(policy.on, &policy.status_codes, outcome);
        if !may_retry {
            return reply;
        }
        // `previous_hosts`: the hosts tried so far, only needed when another pick follows.
        if policy.previous_hosts {
            ctx.avoid.extend(previous.take());
        }
        match cluster.try_retry() {
            Some(p) => _permit = Some(p),
            None => return reply,
        }
        let wait = policy.backoff(attempt, fastrand::u64(..));
        if deadline.is_some_and(|d| Instant::now() + wait >= d) {
            return reply;
        }
        // Taken before the back-off, so a superseded streaming attempt stops reading the
        // downstream body now; None if the body outgrew the limit since the check above.
        body = match again.body() {
            Some(b) => b,
            None => return reply,
        };
        // The discarded response is dropped here, releasing its connection.
        drop(reply);
        tokio::time::sleep(wait).await;
    }
}

/// Where another attempt's body comes from.
enum Again {
    Bytes(Bytes),
    Replay(Replay),
    Never,
}

impl Again {
    fn possible(&self) -> bool {
        match self {
            Again::Bytes(_) => true,
            Again::Replay(r) => r.replayable(),
            Again::Never => false,
        }
    }

    fn body(&self) -> Option<BoxBody> {
        match self {
            Again::Bytes(b) => Some(full(b.clone())),
            Again::Replay(r) => r.retry(),
            Again::Never => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::action::ClusterChoice;
    use regex::Regex;

    fn fwd() -> Forward {
        Forward {
            clusters: ClusterChoice::Single("c".into()),
            cluster_not_found_status: 503,
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: HostRewrite::None,
            append_x_forwarded_host: false,
            timeout: None,
            grpc_route_timeout: None,
            idle_timeout: None,
            upgrades: Default::default(),
            grpc_timeout_header_max: None,
            retry: None,
            hash: vec![],
            mirrors: vec![],
        }
    }

    #[test]
    fn path_rewrites() {
        let prefix = |p: &str| Forward {
            prefix_rewrite: Some(p.into()),
            ..fwd()
        };
        let regex = |r: &str, s: &str| Forward {
            regex_rewrite: Some((Regex::new(r).unwrap(), s.into())),
            ..fwd()
        };
        let cases: Vec<(Forward, Option<&str>, &str, &str)> = vec![
            (
                prefix("/v2/"),
                Some("/v1/"),
                "/v1/users?x=1",
                "/v2/users?x=1",
            ),
            (prefix("/"), Some("/api"), "/api", "/"),
            (prefix("/"), Some("/api/"), "/api/x", "/x"),
            (
                regex("^/svc/([^/]+)/(.*)$", "/${2}/${1}"),
                None,
                "/svc/a/b/c?q",
                "/b/c/a?q",
            ),
            (fwd(), Some("/"), "/same?q", "/same?q"),
        ];
        for (i, (f, matched, path, want)) in cases.into_iter().enumerate() {
            assert_eq!(rewrite_path(&f, matched, path), want, "case {i}");
        }
    }

    #[test]
    fn cluster_header_choice() {
        let f = Forward {
            clusters: ClusterChoice::Header("x-cluster".into()),
            ..fwd()
        };
        let mut h = http::HeaderMap::new();
        assert!(choose(&f, &h).is_none());
        h.insert("x-cluster", "a".parse().unwrap());
        assert_eq!(choose(&f, &h).unwrap().0, "a");
    }

    #[test]
    fn upstream_error_replies() {
        let r = upstream_error_reply(&UpstreamError::Overflow);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-envoy-overloaded"], "true");
        assert_eq!(
            upstream_error_reply(&UpstreamError::NoHealthyUpstream).status(),
            503
        );
    }
}
