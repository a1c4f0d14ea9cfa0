//! Request matching as Envoy's `RouteMatch`: path (prefix, exact, safe_regex,
//! path_separated_prefix; `case_sensitive`), headers (`HeaderMatcher`), query parameters and gRPC.

use crate::CompileError;
use envoy_types::pb::envoy::config::route::v3 as rpb;
use envoy_types::pb::envoy::r#type::matcher::v3 as mpb;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use regex::Regex;

/// Compiles an RE2-style pattern that must match the whole input, as Envoy's `safe_regex` does.
pub fn full_regex(pattern: &str) -> Result<Regex, CompileError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| CompileError::new("regex", format!("invalid regex {pattern:?}: {e}")))
}

/// Compiles a `RegexMatcher`.
pub fn regex_matcher(r: &mpb::RegexMatcher) -> Result<Regex, CompileError> {
    full_regex(&r.regex)
}

/// An unanchored regex for rewrites (`RegexMatchAndSubstitute` replaces every match).
pub fn rewrite_regex(r: &mpb::RegexMatchAndSubstitute) -> Result<(Regex, String), CompileError> {
    let p = r
        .pattern
        .as_ref()
        .ok_or_else(|| CompileError::new("pattern", "is required"))?;
    let re = Regex::new(&p.regex)
        .map_err(|e| CompileError::new("pattern.regex", format!("invalid regex: {e}")))?;
    // RE2 substitutions use `\1`; the regex crate uses `${1}`.
    let sub = Regex::new(r"\\(\d)")
        .expect("constant regex compiles")
        .replace_all(&r.substitution, "$${$1}")
        .into_owned();
    Ok((re, sub))
}

/// A compiled `StringMatcher`.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    /// `exact`.
    Exact(String, bool),
    /// `prefix`.
    Prefix(String, bool),
    /// `suffix`.
    Suffix(String, bool),
    /// `contains`.
    Contains(String, bool),
    /// `safe_regex` (never case-folded, as Envoy).
    Regex(Regex),
}

impl StringMatcher {
    /// Compiles a `StringMatcher`; `custom` matchers are an error.
    pub fn compile(m: &mpb::StringMatcher) -> Result<StringMatcher, CompileError> {
        use mpb::string_matcher::MatchPattern as P;
        let ic = m.ignore_case;
        let fold = |s: &str| if ic { s.to_lowercase() } else { s.to_string() };
        Ok(match &m.match_pattern {
            Some(P::Exact(s)) => StringMatcher::Exact(fold(s), ic),
            Some(P::Prefix(s)) => StringMatcher::Prefix(fold(s), ic),
            Some(P::Suffix(s)) => StringMatcher::Suffix(fold(s), ic),
            Some(P::Contains(s)) => StringMatcher::Contains(fold(s), ic),
            Some(P::SafeRegex(r)) => {
                StringMatcher::Regex(regex_matcher(r).map_err(|e| e.within("safe_regex"))?)
            }
            Some(P::Custom(_)) => return Err(CompileError::new("custom", "is not supported")),
            None => return Err(CompileError::new("match_pattern", "is required")),
        })
    }

    /// Whether `v` matches.
    pub fn matches(&self, v: &str) -> bool {
        let folded = |ic: bool| {
            if ic {
                std::borrow::Cow::Owned(v.to_lowercase())
            } else {
                std::borrow::Cow::Borrowed(v)
            }
        };
        match self {
            StringMatcher::Exact(s, ic) => folded(*ic) == s.as_str(),
            StringMatcher::Prefix(s, ic) => folded(*ic).starts_with(s.as_str()),
            StringMatcher::Suffix(s, ic) => folded(*ic).ends_with(s.as_str()),
            StringMatcher::Contains(s, ic) => folded(*ic).contains(s.as_str()),
            StringMatcher::Regex(r) => r.is_match(v),
        }
    }
}

/// A fraction of requests (`FractionalPercent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator (clamped to the denominator).
    pub numerator: u32,
    /// 100, 10 000 or 1 000 000.
    pub denominator: u32,
}

impl Fraction {
    /// Every request.
    pub const ALL: Fraction = Fraction {
        numerator: 100,
        denominator: 100,
    };
    /// Compiles a `FractionalPercent`.
    pub fn compile(p: &FractionalPercent) -> Result<Fraction, CompileError> {
        let denominator = match p.denominator {
            0 => 100,
            1 => 10_000,
            2 => 1_000_000,
            d => {
                return Err(CompileError::new(
                    "denominator",
                    format!("unknown value {d}"),
                ))
            }
        };
        Ok(Fraction {
            numerator: p.numerator.min(denominator),
            denominator,
        })
    }
    /// Whether a request drawn with random value `r` in `0..denominator` is in the fraction.
    pub fn contains(&self, r: u32) -> bool {
        r < self.numerator
    }
    /// Draws once.
    pub fn sample(&self) -> bool {
        self.contains(fastrand::u32(0..self.denominator))
    }
}

/// How a header is matched.
#[derive(Debug, Clone)]
pub enum HeaderSpec {
    /// `present_match`: true = present, false = absent.
    Present(bool),
    /// A string match on the value (all values joined with `,`).
    String(StringMatcher),
    /// `range_match`: `[start, end)` on the value as an integer.
    Range(i64, i64),
}

/// A compiled `HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Lower-case header name.
    pub name: String,
    /// The match.
    pub spec: HeaderSpec,
    /// `invert_match`.
    pub invert: bool,
    /// `treat_missing_header_as_empty`.
    pub missing_as_empty: bool,
}

impl HeaderMatcher {
    /// Compiles a `HeaderMatcher`.
    #[allow(deprecated)]
    pub fn compile(h: &rpb::HeaderMatcher) -> Result<HeaderMatcher, CompileError> {
        use rpb::header_matcher::HeaderMatchSpecifier as S;
        let s = |v: &str| StringMatcher::Exact(v.to_string(), false);
        let spec = match &h.header_match_specifier {
            Some(S::ExactMatch(v)) => HeaderSpec::String(s(v)),
            Some(S::PrefixMatch(v)) => HeaderSpec::String(StringMatcher::Prefix(v.clone(), false)),
            Some(S::SuffixMatch(v)) => HeaderSpec::String(StringMatcher::Suffix(v.clone(), false)),
            Some(S::ContainsMatch(v)) => {
                HeaderSpec::String(StringMatcher::Contains(v.clone(), false))
            }
            Some(S::SafeRegexMatch(r)) => HeaderSpec::String(StringMatcher::Regex(
                regex_matcher(r).map_err(|e| e.within("safe_regex_match"))?,
            )),
            Some(S::RangeMatch(r)) => HeaderSpec::Range(r.start, r.end),
            Some(S::PresentMatch(p)) => HeaderSpec::Present(*p),
            Some(S::StringMatch(m)) => {
                HeaderSpec::String(StringMatcher::compile(m).map_err(|e| e.within("string_match"))?)
            }
            // Envoy: no specifier means "present".
            None => HeaderSpec::Present(true),
        };
        Ok(HeaderMatcher {
            name: h.name.to_ascii_lowercase(),
            spec,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    /// Whether the headers match.
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        self.matches_value(header_value(headers, &self.name))
    }

    /// Whether a header with this value (None: absent) matches; for pseudo-headers the caller
    /// supplies the value.
    pub fn matches_value(&self, value: Option<String>) -> bool {
        let value = match (value, self.missing_as_empty) {
            (Some(v), _) => Some(v),
            (None, true) => Some(String::new()),
            (None, false) => None,
        };
        let Some(v) = value else {
            return match self.spec {
                HeaderSpec::Present(p) => !p ^ self.invert,
                _ => self.invert,
            };
        };
        let m = match &self.spec {
            HeaderSpec::Present(p) => *p,
            HeaderSpec::String(s) => s.matches(&v),
            HeaderSpec::Range(a, b) => v.parse::<i64>().is_ok_and(|n| n >= *a && n < *b),
        };
        m ^ self.invert
    }
}

/// A header's values joined with `,` (Envoy's view of repeated headers); `:authority`,
/// `:method`, `:scheme` and `:path` are read from the pseudo-header equivalents stored by the
/// caller as ordinary headers when needed.
pub fn header_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let mut it = headers.get_all(name).iter().peekable();
    it.peek()?;
    let parts: Vec<&str> = it.filter_map(|v| v.to_str().ok()).collect();
    Some(parts.join(","))
}

/// A compiled `QueryParameterMatcher`.
#[derive(Debug, Clone)]
pub struct QueryMatcher {
    name: String,
    /// None: `present_match`.
    value: Option<StringMatcher>,
}

impl QueryMatcher {
    /// Compiles a `QueryParameterMatcher`.
    pub fn compile(q: &rpb::QueryParameterMatcher) -> Result<QueryMatcher, CompileError> {
        use rpb::query_parameter_matcher::QueryParameterMatchSpecifier as S;
        let value = match &q.query_parameter_match_specifier {
            Some(S::StringMatch(m)) => {
                Some(StringMatcher::compile(m).map_err(|e| e.within("string_match"))?)
            }
            Some(S::PresentMatch(true)) | None => None,
            Some(S::PresentMatch(false)) => {
                return Err(CompileError::new("present_match", "false is not supported"))
            }
        };
        Ok(QueryMatcher {
            name: q.name.clone(),
            value,
        })
    }

    /// Whether the query string matches (the parameter's first value, as Envoy).
    pub fn matches(&self, query: Option<&str>) -> bool {
        let first = query.and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == self.name).then_some(v)
            })
        });
        match (first, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(v),
        }
    }
}

/// How the path is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// `prefix`.
    Prefix(String),
    /// `path`.
    Exact(String),
    /// `safe_regex` (on the path without query).
    Regex(Regex),
    /// `path_separated_prefix`: the prefix followed by end, `/`, `?` or `#`.
    SeparatedPrefix(String),
}

/// A compiled `RouteMatch`.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    /// The path match.
    pub path: PathMatch,
    /// `case_sensitive` (default true; regexes are unaffected, as Envoy).
    pub case_sensitive: bool,
    /// Header matchers (all must match).
    pub headers: Vec<HeaderMatcher>,
    /// Query matchers (all must match).
    pub query: Vec<QueryMatcher>,
    /// `grpc`: only gRPC requests.
    pub grpc: bool,
    /// `runtime_fraction`: the route applies to this fraction of requests.
    pub fraction: Option<Fraction>,
}

impl RouteMatcher {
    /// Compiles a `RouteMatch`.
    pub fn compile(m: &rpb::RouteMatch) -> Result<RouteMatcher, CompileError> {
        use rpb::route_match::PathSpecifier as P;
        let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
        let fold = |s: &String| {
            if case_sensitive {
                s.clone()
            } else {
                s.to_lowercase()
            }
        };
        let path = match &m.path_specifier {
            Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(P::Path(p)) => PathMatch::Exact(fold(p)),
            Some(P::SafeRegex(r)) => {
                PathMatch::Regex(regex_matcher(r).map_err(|e| e.within("safe_regex"))?)
            }
            Some(P::PathSeparatedPrefix(p)) => {
                if p.contains(['?', '#']) || p.ends_with('/') {
                    return Err(CompileError::new(
                        "path_separated_prefix",
                        "must not contain ? or # nor end with /",
                    ));
                }
                PathMatch::SeparatedPrefix(fold(p))
            }
            Some(P::ConnectMatcher(_)) => {
                return Err(CompileError::new("connect_matcher", "is not supported"))
            }
            Some(P::PathMatchPolicy(_)) => {
                return Err(CompileError::new("path_match_policy", "is not supported"))
            }
            None => return Err(CompileError::new("path_specifier", "is required")),
        };
        let unsupported = [
            ("cookies", !m.cookies.is_empty()),
            ("tls_context", m.tls_context.is_some()),
            ("dynamic_metadata", !m.dynamic_metadata.is_empty()),
            ("filter_state", !m.filter_state.is_empty()),
        ];
        if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(CompileError::new(*f, "is not supported"));
        }
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatcher::compile(h).map_err(|e| e.within(&format!("headers[{i}]"))))
            .collect::<Result<_, _>>()?;
        let query = m
            .query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| {
                QueryMatcher::compile(q).map_err(|e| e.within(&format!("query_parameters[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        let grpc = m.grpc.is_some();
        let fraction = match &m.runtime_fraction {
            Some(r) => Some(
                Fraction::compile(
                    r.default_value
                        .as_ref()
                        .unwrap_or(&FractionalPercent::default()),
                )
                .map_err(|e| e.within("runtime_fraction.default_value"))?,
            ),
            None => None,
        };
        Ok(RouteMatcher {
            path,
            case_sensitive,
            headers,
            query,
            grpc,
            fraction,
        })
    }

    /// Whether the request (its path-and-query and headers) matches.
    pub fn matches(&self, path_and_query: &str, headers: &http::HeaderMap) -> bool {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let path = path.split('#').next().unwrap_or(path);
        let folded = if self.case_sensitive {
            std::borrow::Cow::Borrowed(path)
        } else {
            std::borrow::Cow::Owned(path.to_lowercase())
        };
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => folded.starts_with(p.as_str()),
            PathMatch::Exact(p) => *folded == **p,
            PathMatch::Regex(r) => r.is_match(path),
            PathMatch::SeparatedPrefix(p) => {
                folded.starts_with(p.as_str())
                    && matches!(folded.as_bytes().get(p.len()), None | Some(b'/'))
            }
        };
        path_ok
            && (!self.grpc || is_grpc(headers))
            && self.headers.iter().all(|h| h.matches(headers))
            && self.query.iter().all(|q| q.matches(query))
            && self.fraction.is_none_or(|f| f.sample())
    }
}

/// Whether the request is gRPC (`content-type: application/grpc*`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
