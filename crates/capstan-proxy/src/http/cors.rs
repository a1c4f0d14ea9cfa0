//! CORS (`envoy.filters.http.cors`): preflight requests answered by the proxy, allowed
//! origins echoed on responses.

use crate::route::filters::CorsConfig;
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

/// What CORS does for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// Not a CORS request, or the origin is not allowed: nothing to do.
    Pass,
    /// A preflight to answer now, with these headers.
    Preflight(HeaderMap),
    /// A CORS request: add these headers to the response.
    Response(HeaderMap),
}

fn put(h: &mut HeaderMap, name: header::HeaderName, v: &str) {
    if v.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}

/// Decides for a request with `method` and `headers`.
pub fn evaluate(c: &CorsConfig, method: &Method, headers: &HeaderMap) -> Cors {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Cors::Pass;
    };
    if !c.enabled.sample() || !c.origins.iter().any(|m| m.matches(origin)) {
        return Cors::Pass;
    }
    let mut out = HeaderMap::new();
    put(&mut out, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if c.allow_credentials {
        put(&mut out, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    let preflight =
        method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        put(
            &mut out,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &c.allow_methods,
        );
        put(
            &mut out,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &c.allow_headers,
        );
        put(&mut out, header::ACCESS_CONTROL_MAX_AGE, &c.max_age);
        return Cors::Preflight(out);
    }
    put(
        &mut out,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        &c.expose_headers,
    );
    Cors::Response(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::matcher::{Fraction, StringMatcher};

    fn config() -> CorsConfig {
        CorsConfig {
            origins: vec![StringMatcher::Exact("https://a.com".into(), false)],
            allow_methods: "GET,POST".into(),
            allow_headers: "x-a".into(),
            expose_headers: "x-b".into(),
            max_age: "60".into(),
            allow_credentials: true,
            forward_not_matching_preflights: true,
            enabled: Fraction::ALL,
        }
    }

    #[test]
    fn preflight_and_simple_requests() {
        let req = |origin: Option<&str>, acrm: bool| {
            let mut h = HeaderMap::new();
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            if acrm {
                h.insert(
                    header::ACCESS_CONTROL_REQUEST_METHOD,
                    "POST".parse().unwrap(),
                );
            }
            h
        };
        let c = config();
        assert_eq!(evaluate(&c, &Method::GET, &req(None, false)), Cors::Pass);
        assert_eq!(
            evaluate(&c, &Method::OPTIONS, &req(Some("https://b.com"), true)),
            Cors::Pass
        );
        let Cors::Preflight(h) = evaluate(&c, &Method::OPTIONS, &req(Some("https://a.com"), true))
        else {
            panic!("preflight expected")
        };
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.com");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-a");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "60");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let Cors::Response(h) = evaluate(&c, &Method::GET, &req(Some("https://a.com"), false))
        else {
            panic!("response headers expected")
        };
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-b");
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
    }
}
