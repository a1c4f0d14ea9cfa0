//! Which peers a TLS context accepts by their subject alternative names, as Envoy's
//! `CertificateValidationContext`: `match_typed_subject_alt_names` (a `SubjectAltNameMatcher`
//! reads one SAN type) or the deprecated `match_subject_alt_names` (each `StringMatcher` reads
//! the DNS, URI, email and IP address SANs alike; istiod sends this form, e.g. `prefix:
//! "spiffe://cluster.local/"` for the peer's trust domain on inbound mTLS). A peer passes when
//! any matcher matches any SAN of a type it reads; no matchers accept any peer the roots vouch
//! for. When both lists are set, Envoy ignores the deprecated one, and so does this.

use super::verify::Leaf;
use crate::route::matcher::StringMatcher;
use crate::CompileError;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    subject_alt_name_matcher, CertificateValidationContext, SubjectAltNameMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3 as mpb;
use std::fmt;

/// A SAN type a matcher reads (RFC 5280's `GeneralName` choices that Envoy matches on as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    /// `dNSName`.
    Dns,
    /// `uniformResourceIdentifier` (SPIFFE ids).
    Uri,
    /// `rfc822Name`.
    Email,
    /// `iPAddress`, as text (`10.0.0.1`, `2001:db8::1`).
    IpAddress,
}

impl SanType {
    const EVERY: &'static [SanType] = &[
        SanType::Dns,
        SanType::Uri,
        SanType::Email,
        SanType::IpAddress,
    ];

    fn only(self) -> &'static [SanType] {
        match self {
            SanType::Dns => &[SanType::Dns],
            SanType::Uri => &[SanType::Uri],
            SanType::Email => &[SanType::Email],
            SanType::IpAddress => &[SanType::IpAddress],
        }
    }

    fn of(self, leaf: &Leaf) -> &[String] {
        match self {
            SanType::Dns => &leaf.dns,
            SanType::Uri => &leaf.uris,
            SanType::Email => &leaf.emails,
            SanType::IpAddress => &leaf.ips,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SanType::Dns => "DNS",
            SanType::Uri => "URI",
            SanType::Email => "EMAIL",
            SanType::IpAddress => "IP_ADDRESS",
        }
    }
}

/// One compiled SAN matcher: the SAN types it reads and the `StringMatcher` for their values.
#[derive(Debug, Clone)]
pub struct SanMatcher {
    types: &'static [SanType],
    value: StringMatcher,
    /// The configured matcher: equality and messages (a compiled regex has neither).
    source: mpb::StringMatcher,
}

impl PartialEq for SanMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types && self.source == other.source
    }
}

impl Eq for SanMatcher {}

impl SanMatcher {
    fn new(types: &'static [SanType], m: &mpb::StringMatcher) -> Result<SanMatcher, CompileError> {
        Ok(SanMatcher {
            types,
            value: StringMatcher::compile(m)?,
            source: m.clone(),
        })
    }

    /// A `SubjectAltNameMatcher`; OTHER_NAME (ASN.1-typed values under an OID) is refused.
    fn typed(m: &SubjectAltNameMatcher) -> Result<SanMatcher, CompileError> {
        use subject_alt_name_matcher::SanType as T;
        let san_type = match T::try_from(m.san_type) {
            Ok(T::Dns) => SanType::Dns,
            Ok(T::Uri) => SanType::Uri,
            Ok(T::Email) => SanType::Email,
            Ok(T::IpAddress) => SanType::IpAddress,
            Ok(T::OtherName) => {
                return Err(CompileError::new("san_type", "OTHER_NAME is not supported"))
            }
            Ok(T::Unspecified) => return Err(CompileError::new("san_type", "is required")),
            Err(_) => {
                return Err(CompileError::new(
                    "san_type",
                    format!("unknown value {}", m.san_type),
                ))
            }
        };
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| CompileError::new("matcher", "is required"))?;
        SanMatcher::new(san_type.only(), matcher).map_err(|e| e.within("matcher"))
    }

    /// Whether one of `leaf`'s SANs of the types this matcher reads matches.
    pub fn matches(&self, leaf: &Leaf) -> bool {
        self.types
            .iter()
            .any(|&t| t.of(leaf).iter().any(|san| self.matches_value(t, san)))
    }

    fn matches_value(&self, t: SanType, san: &str) -> bool {
        match (&self.source.match_pattern, t) {
            // Envoy's SubjectAltNameMatcher doc: an exact match on a DNS SAN honours the
            // certificate's wildcard (RFC 6125 §6.4.3).
            (Some(mpb::string_matcher::MatchPattern::Exact(name)), SanType::Dns) => {
                dns_san_covers(san, name)
            }
            _ => self.value.matches(san),
        }
    }
}

impl fmt::Display for SanMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use mpb::string_matcher::MatchPattern as P;
        if let [t] = self.types {
            write!(f, "{} ", t.name())?;
        }
        match &self.source.match_pattern {
            Some(P::Exact(s)) => write!(f, "exact {s:?}")?,
            Some(P::Prefix(s)) => write!(f, "prefix {s:?}")?,
            Some(P::Suffix(s)) => write!(f, "suffix {s:?}")?,
            Some(P::Contains(s)) => write!(f, "contains {s:?}")?,
            Some(P::SafeRegex(r)) => write!(f, "safe_regex {:?}", r.regex)?,
            Some(P::Custom(_)) | None => f.write_str("?")?,
        }
        if self.source.ignore_case && !matches!(self.source.match_pattern, Some(P::SafeRegex(_))) {
            f.write_str(" (ignore_case)")?;
        }
        Ok(())
    }
}

/// Whether the certificate's DNS SAN `san` covers the configured name `name`. DNS names compare
/// without ASCII case. A wildcard stands only in the SAN's leftmost label and covers exactly one
/// label of `name`: `*.example.com` covers `api.example.com`, not `example.com` nor
/// `a.b.example.com`; a partial label (`api*.example.com`) covers labels with that prefix and
/// suffix, except IDNA A-labels (`xn--`), where a fragment of the encoding means nothing.
pub fn dns_san_covers(san: &str, name: &str) -> bool {
    if san.eq_ignore_ascii_case(name) {
        return true;
    }
    let (Some((san_label, san_rest)), Some((label, rest))) =
        (san.split_once('.'), name.split_once('.'))
    else {
        return false;
    };
    let Some((before, after)) = san_label.split_once('*') else {
        return false;
    };
    if after.contains('*') || label.is_empty() || san_rest.is_empty() {
        return false;
    }
    if !rest.eq_ignore_ascii_case(san_rest) {
        return false;
    }
    let head = |n: usize| label.get(..n);
    if san_label != "*" && head(4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")) {
        return false;
    }
    let starts = head(before.len()).is_some_and(|p| p.eq_ignore_ascii_case(before));
    let ends = label.len() >= before.len() + after.len()
        && label
            .get(label.len() - after.len()..)
            .is_some_and(|s| s.eq_ignore_ascii_case(after));
    starts && ends
}

/// The SAN checks of a validation context: any matcher passing admits the peer; none
/// configured admits any peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanMatchers(Vec<SanMatcher>);

impl SanMatchers {
    /// Exact matches in the deprecated form (any SAN type), as istiod writes identities.
    pub fn exact<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> SanMatchers {
        SanMatchers(
            names
                .into_iter()
                .map(|n| {
                    let m = mpb::StringMatcher {
                        match_pattern: Some(mpb::string_matcher::MatchPattern::Exact(
                            n.as_ref().to_string(),
                        )),
                        ..Default::default()
                    };
                    SanMatcher::new(SanType::EVERY, &m)
                        .expect("an exact StringMatcher always compiles")
                })
                .collect(),
        )
    }

    /// The matchers of `v` (`match_typed_subject_alt_names`, else `match_subject_alt_names`);
    /// errors name the list entry (`match_subject_alt_names[1].safe_regex.regex`).
    pub fn compile(v: &CertificateValidationContext) -> Result<SanMatchers, CompileError> {
        let at = |list: &str, i: usize| format!("{list}[{i}]");
        let mut out = Vec::new();
        if !v.match_typed_subject_alt_names.is_empty() {
            for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
                out.push(
                    SanMatcher::typed(m)
                        .map_err(|e| e.within(&at("match_typed_subject_alt_names", i)))?,
                );
            }
        } else {
            #[allow(deprecated)] // what istiod sends
            let deprecated = &v.match_subject_alt_names;
            for (i, m) in deprecated.iter().enumerate() {
                out.push(
                    SanMatcher::new(SanType::EVERY, m)
                        .map_err(|e| e.within(&at("match_subject_alt_names", i)))?,
                );
            }
        }
        Ok(SanMatchers(out))
    }

    /// Whether there are no matchers (any peer passes).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `leaf` passes.
    pub fn accepts(&self, leaf: &Leaf) -> bool {
        self.0.is_empty() || self.0.iter().any(|m| m.matches(leaf))
    }

    /// `Ok` when `leaf` passes, else why not (its SANs and the matchers), for the TLS alert's
    /// log line.
    pub fn check(&self, leaf: &Leaf) -> Result<(), String> {
        if self.accepts(leaf) {
            return Ok(());
        }
        let mut sans = Vec::new();
        for &t in SanType::EVERY {
            sans.extend(t.of(leaf).iter().map(|s| format!("{}:{s}", t.name())));
        }
        Err(format!(
            "peer SANs [{}] match none of {self}",
            sans.join(", ")
        ))
    }
}

impl fmt::Display for SanMatchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpb::string_matcher::MatchPattern as P;

    fn leaf(sans: &[(SanType, &str)]) -> Leaf {
        let mut l = Leaf {
            uris: vec![],
            dns: vec![],
            emails: vec![],
            ips: vec![],
            subject: String::new(),
            not_before: std::time::SystemTime::UNIX_EPOCH,
            not_after: std::time::SystemTime::UNIX_EPOCH,
        };
        for (t, s) in sans {
            match t {
                SanType::Dns => l.dns.push(s.to_string()),
                SanType::Uri => l.uris.push(s.to_string()),
                SanType::Email => l.emails.push(s.to_string()),
                SanType::IpAddress => l.ips.push(s.to_string()),
            }
        }
        l
    }

    fn string(p: P, ignore_case: bool) -> mpb::StringMatcher {
        mpb::StringMatcher {
            match_pattern: Some(p),
            ignore_case,
        }
    }

    fn regex(r: &str) -> P {
        P::SafeRegex(mpb::RegexMatcher {
            regex: r.into(),
            ..Default::default()
        })
    }

    #[allow(deprecated)]
    fn untyped(matchers: Vec<mpb::StringMatcher>) -> CertificateValidationContext {
        CertificateValidationContext {
            match_subject_alt_names: matchers,
            ..Default::default()
        }
    }

    fn typed(
        san_type: subject_alt_name_matcher::SanType,
        m: mpb::StringMatcher,
    ) -> SubjectAltNameMatcher {
        SubjectAltNameMatcher {
            san_type: san_type as i32,
            matcher: Some(m),
            ..Default::default()
        }
    }

    const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    /// A certificate's SANs in a case.
    type Sans = Vec<(SanType, &'static str)>;

    #[test]
    fn string_matchers_read_every_san_type_in_the_deprecated_form() {
        use SanType::*;
        let cases: Vec<(P, bool, Sans, bool)> = vec![
            // istiod's inbound trust-domain check.
            (
                P::Prefix("spiffe://cluster.local/".into()),
                false,
                vec![(Uri, SPIFFE)],
                true,
            ),
            (
                P::Prefix("spiffe://cluster.local/".into()),
                false,
                vec![(Uri, "spiffe://other.domain/ns/a/sa/b")],
                false,
            ),
            (
                P::Prefix("SPIFFE://CLUSTER.LOCAL/".into()),
                false,
                vec![(Uri, SPIFFE)],
                false,
            ),
            (
                P::Prefix("SPIFFE://CLUSTER.LOCAL/".into()),
                true,
                vec![(Uri, SPIFFE)],
                true,
            ),
            (P::Exact(SPIFFE.into()), false, vec![(Uri, SPIFFE)], true),
            (
                P::Exact(SPIFFE.into()),
                false,
                vec![(Uri, "spiffe://cluster.local/ns/default/sa/ratings")],
                false,
            ),
            (
                P::Exact(SPIFFE.to_uppercase()),
                false,
                vec![(Uri, SPIFFE)],
                false,
            ),
            (
                P::Exact(SPIFFE.to_uppercase()),
                true,
                vec![(Uri, SPIFFE)],
                true,
            ),
            (
                P::Suffix("/sa/reviews".into()),
                false,
                vec![(Uri, SPIFFE)],
                true,
            ),
            (
                P::Suffix("/sa/ratings".into()),
                false,
                vec![(Uri, SPIFFE)],
                false,
            ),
            (
                P::Contains("/ns/default/".into()),
                false,
                vec![(Uri, SPIFFE)],
                true,
            ),
            (
                P::Contains("/NS/DEFAULT/".into()),
                true,
                vec![(Uri, SPIFFE)],
                true,
            ),
            (
                P::Contains("/ns/prod/".into()),
                false,
                vec![(Uri, SPIFFE)],
                false,
            ),
            // safe_regex matches the whole value (RE2 full match) and ignores ignore_case.
            (
                regex(r"spiffe://cluster\.local/ns/[^/]+/sa/reviews"),
                false,
                vec![(Uri, SPIFFE)],
                true,
            ),
            (regex(r"ns/default"), false, vec![(Uri, SPIFFE)], false),
            (regex(r"SPIFFE://.*"), true, vec![(Uri, SPIFFE)], false),
            // Every SAN type is read; any SAN of the certificate may match.
            (
                P::Exact("api.example.com".into()),
                false,
                vec![(Uri, SPIFFE), (Dns, "api.example.com")],
                true,
            ),
            (
                P::Exact("ops@example.com".into()),
                false,
                vec![(Email, "ops@example.com")],
                true,
            ),
            (
                P::Exact("10.0.0.7".into()),
                false,
                vec![(IpAddress, "10.0.0.7")],
                true,
            ),
            (
                P::Prefix("2001:db8::".into()),
                false,
                vec![(IpAddress, "2001:db8::1")],
                true,
            ),
            (P::Exact("api.example.com".into()), false, vec![], false),
            // DNS SANs: an exact match honours wildcard certificates, without ASCII case.
            (
                P::Exact("api.example.com".into()),
                false,
                vec![(Dns, "*.example.com")],
                true,
            ),
            (
                P::Exact("API.Example.com".into()),
                false,
                vec![(Dns, "api.example.com")],
                true,
            ),
            (
                P::Exact("example.com".into()),
                false,
                vec![(Dns, "*.example.com")],
                false,
            ),
            (
                P::Exact("a.b.example.com".into()),
                false,
                vec![(Dns, "*.example.com")],
                false,
            ),
            // ... but only on DNS SANs, and only for exact matches.
            (
                P::Exact("api.example.com".into()),
                false,
                vec![(Uri, "*.example.com")],
                false,
            ),
            (
                P::Suffix("api.example.com".into()),
                false,
                vec![(Dns, "*.example.com")],
                false,
            ),
        ];
        for (i, (pattern, ignore_case, sans, want)) in cases.into_iter().enumerate() {
            let m = SanMatchers::compile(&untyped(vec![string(pattern, ignore_case)])).unwrap();
            let l = leaf(&sans);
            assert_eq!(m.accepts(&l), want, "case {i}: {m} against {sans:?}");
            assert_eq!(m.check(&l).is_ok(), want, "case {i}");
        }
    }

    #[test]
    fn typed_matchers_read_one_san_type() {
        use subject_alt_name_matcher::SanType as T;
        let exact = |s: &str| string(P::Exact(s.into()), false);
        let cases: Vec<(SubjectAltNameMatcher, Sans, bool)> = vec![
            (
                typed(T::Uri, exact(SPIFFE)),
                vec![(SanType::Uri, SPIFFE)],
                true,
            ),
            (
                typed(T::Dns, exact(SPIFFE)),
                vec![(SanType::Uri, SPIFFE)],
                false,
            ),
            (
                typed(T::Dns, exact("api.example.com")),
                vec![(SanType::Dns, "*.example.com")],
                true,
            ),
            (
                typed(T::Email, exact("api.example.com")),
                vec![(SanType::Dns, "api.example.com")],
                false,
            ),
            (
                typed(T::Email, exact("ops@example.com")),
                vec![(SanType::Email, "ops@example.com")],
                true,
            ),
            (
                typed(T::IpAddress, exact("10.0.0.7")),
                vec![(SanType::IpAddress, "10.0.0.7")],
                true,
            ),
            (
                typed(T::IpAddress, exact("10.0.0.7")),
                vec![(SanType::Dns, "10.0.0.7")],
                false,
            ),
        ];
        for (i, (m, sans, want)) in cases.into_iter().enumerate() {
            let v = CertificateValidationContext {
                match_typed_subject_alt_names: vec![m],
                ..Default::default()
            };
            let m = SanMatchers::compile(&v).unwrap();
            assert_eq!(
                m.accepts(&leaf(&sans)),
                want,
                "case {i}: {m} against {sans:?}"
            );
        }
    }

    #[test]
    fn the_typed_list_wins_over_the_deprecated_one() {
        use subject_alt_name_matcher::SanType as T;
        #[allow(deprecated)]
        let v = CertificateValidationContext {
            match_subject_alt_names: vec![string(P::Exact(SPIFFE.into()), false)],
            match_typed_subject_alt_names: vec![typed(
                T::Dns,
                string(P::Exact("a.b".into()), false),
            )],
            ..Default::default()
        };
        let m = SanMatchers::compile(&v).unwrap();
        assert!(!m.accepts(&leaf(&[(SanType::Uri, SPIFFE)])));
        assert!(m.accepts(&leaf(&[(SanType::Dns, "a.b")])));
    }

    #[test]
    fn no_matchers_accept_any_peer() {
        let m = SanMatchers::compile(&CertificateValidationContext::default()).unwrap();
        assert!(m.is_empty());
        assert!(m.accepts(&leaf(&[])));
        assert!(SanMatchers::default().accepts(&leaf(&[(SanType::Uri, SPIFFE)])));
    }

    #[test]
    fn dns_wildcards_cover_one_label() {
        let cases = [
            ("api.example.com", "api.example.com", true),
            ("API.EXAMPLE.COM", "api.example.com", true),
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "API.Example.COM", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "api.example.org", false),
            ("api*.example.com", "api1.example.com", true),
            ("api*.example.com", "api.example.com", true),
            ("api*.example.com", "web1.example.com", false),
            ("*1.example.com", "api1.example.com", true),
            ("a*z.example.com", "abcz.example.com", true),
            ("a*z.example.com", "az.example.com", true),
            ("a*z.example.com", "abc.example.com", false),
            ("xn--*.example.com", "xn--bcher-kva.example.com", false),
            ("*.example.com", "xn--bcher-kva.example.com", true),
            ("a.*.example.com", "a.b.example.com", false),
            ("**.example.com", "ab.example.com", false),
            ("*", "localhost", false),
            ("*.", "a.", false),
        ];
        for (san, name, want) in cases {
            assert_eq!(dns_san_covers(san, name), want, "{san} covers {name}");
        }
    }

    #[test]
    fn errors_name_the_matcher() {
        use subject_alt_name_matcher::SanType as T;
        let ok = string(P::Exact(SPIFFE.into()), false);
        let cases: Vec<(CertificateValidationContext, &str)> = vec![
            (
                untyped(vec![ok.clone(), string(regex("(unclosed"), false)]),
                "match_subject_alt_names[1].safe_regex.regex: invalid regex",
            ),
            (
                untyped(vec![mpb::StringMatcher::default()]),
                "match_subject_alt_names[0].match_pattern: is required",
            ),
            (
                CertificateValidationContext {
                    match_typed_subject_alt_names: vec![typed(T::OtherName, ok.clone())],
                    ..Default::default()
                },
                "match_typed_subject_alt_names[0].san_type: OTHER_NAME is not supported",
            ),
            (
                CertificateValidationContext {
                    match_typed_subject_alt_names: vec![
                        typed(T::Uri, ok.clone()),
                        typed(T::Unspecified, ok.clone()),
                    ],
                    ..Default::default()
                },
                "match_typed_subject_alt_names[1].san_type: is required",
            ),
            (
                CertificateValidationContext {
                    match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                        san_type: T::Uri as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                "match_typed_subject_alt_names[0].matcher: is required",
            ),
            (
                CertificateValidationContext {
                    match_typed_subject_alt_names: vec![typed(
                        T::Dns,
                        string(regex("[z-a]"), false),
                    )],
                    ..Default::default()
                },
                "match_typed_subject_alt_names[0].matcher.safe_regex.regex: invalid regex",
            ),
        ];
        for (v, want) in cases {
            let err = SanMatchers::compile(&v).expect_err(want).to_string();
            assert!(err.starts_with(want), "{err}\n(expected {want})");
        }
    }

    #[test]
    fn refusals_list_the_sans_and_the_matchers() {
        let m = SanMatchers::compile(&untyped(vec![
            string(P::Prefix("spiffe://cluster.local/".into()), false),
            string(P::Exact("api".into()), true),
        ]))
        .unwrap();
        let err = m
            .check(&leaf(&[
                (SanType::Uri, "spiffe://other/ns/a/sa/b"),
                (SanType::Dns, "b.example"),
            ]))
            .unwrap_err();
        assert_eq!(
            err,
            r#"peer SANs [DNS:b.example, URI:spiffe://other/ns/a/sa/b] match none of [prefix "spiffe://cluster.local/", exact "api" (ignore_case)]"#
        );
    }
}
