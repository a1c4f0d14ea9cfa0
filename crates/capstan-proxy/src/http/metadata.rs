//! A request's dynamic metadata (Envoy's `filter_metadata`: filter name → struct) and Envoy's
//! `MetadataMatcher` over it. The JWT filter writes the verified payload here
//! (`envoy.filters.http.jwt_authn` → `{payload: {...}}`); RBAC's `metadata` permissions and
//! principals read it, which is how Istio's `requestPrincipals` and `request.auth.*` conditions
//! are enforced.

use crate::route::matcher::StringMatcher;
use crate::CompileError;
use envoy_types::pb::envoy::r#type::matcher::v3 as mpb;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Per-request dynamic metadata: one JSON object per filter name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicMetadata {
    filters: BTreeMap<String, Map<String, Value>>,
}

impl DynamicMetadata {
    /// Sets `key` in the namespace of `filter` (Envoy merges per key: a later write of the same
    /// key replaces the earlier value).
    pub fn set(&mut self, filter: &str, key: &str, value: Value) {
        self.filters
            .entry(filter.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }

    /// The namespace of `filter`, when some filter wrote to it.
    pub fn filter(&self, filter: &str) -> Option<&Map<String, Value>> {
        self.filters.get(filter)
    }

    /// The value at `path` inside the namespace of `filter`; every segment is an object key.
    pub fn lookup(&self, filter: &str, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.filters.get(filter)?.get(first)?;
        for key in rest {
            v = v.as_object()?.get(key)?;
        }
        Some(v)
    }
}

/// A compiled `ValueMatcher`.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    /// `null_match`: the value is JSON null.
    Null,
    /// `double_match` with a range `[start, end)`.
    DoubleRange(f64, f64),
    /// `double_match` exact.
    DoubleExact(f64),
    /// `string_match`: the value is a string that matches.
    String(StringMatcher),
    /// `bool_match`.
    Bool(bool),
    /// `present_match`: whether the value is present (its truth must equal the flag).
    Present(bool),
    /// `list_match.one_of`: the value is a list with some element matching. A string value
    /// does not match (Envoy's `ListMatcher`).
    ListOneOf(Box<ValueMatcher>),
    /// `or_match`: any of these.
    Or(Vec<ValueMatcher>),
}

impl ValueMatcher {
    /// Compiles a `ValueMatcher`.
    pub fn compile(m: &mpb::ValueMatcher) -> Result<ValueMatcher, CompileError> {
        use mpb::double_matcher::MatchPattern as D;
        use mpb::list_matcher::MatchPattern as L;
        use mpb::value_matcher::MatchPattern as P;
        Ok(match &m.match_pattern {
            Some(P::NullMatch(_)) => ValueMatcher::Null,
            Some(P::DoubleMatch(d)) => match &d.match_pattern {
                Some(D::Range(r)) => ValueMatcher::DoubleRange(r.start, r.end),
                Some(D::Exact(x)) => ValueMatcher::DoubleExact(*x),
                None => {
                    return Err(CompileError::new(
                        "double_match.match_pattern",
                        "is required",
                    ))
                }
            },
            Some(P::StringMatch(s)) => ValueMatcher::String(
                StringMatcher::compile(s).map_err(|e| e.within("string_match"))?,
            ),
            Some(P::BoolMatch(b)) => ValueMatcher::Bool(*b),
            Some(P::PresentMatch(b)) => ValueMatcher::Present(*b),
            Some(P::ListMatch(l)) => match &l.match_pattern {
                Some(L::OneOf(v)) => ValueMatcher::ListOneOf(Box::new(
                    ValueMatcher::compile(v).map_err(|e| e.within("list_match.one_of"))?,
                )),
                None => return Err(CompileError::new("list_match.match_pattern", "is required")),
            },
            Some(P::OrMatch(o)) => ValueMatcher::Or(
                o.value_matchers
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        ValueMatcher::compile(v)
                            .map_err(|e| e.within(&format!("or_match.value_matchers[{i}]")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            None => return Err(CompileError::new("match_pattern", "is required")),
        })
    }

    /// Whether `v` (None: absent) matches, as Envoy's value matchers do on a protobuf `Value`
    /// (JSON numbers are doubles there).
    pub fn matches(&self, v: Option<&Value>) -> bool {
        match self {
            ValueMatcher::Null => matches!(v, Some(Value::Null)),
            ValueMatcher::DoubleRange(start, end) => v
                .and_then(Value::as_f64)
                .is_some_and(|x| x >= *start && x < *end),
            ValueMatcher::DoubleExact(e) => v.and_then(Value::as_f64) == Some(*e),
            ValueMatcher::String(m) => v.and_then(Value::as_str).is_some_and(|s| m.matches(s)),
            ValueMatcher::Bool(b) => v.and_then(Value::as_bool) == Some(*b),
            ValueMatcher::Present(p) => v.is_some() == *p,
            ValueMatcher::ListOneOf(m) => v
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|x| m.matches(Some(x)))),
            ValueMatcher::Or(ms) => ms.iter().any(|m| m.matches(v)),
        }
    }
}

/// A compiled `MetadataMatcher`: the value at `path` in the `filter` namespace matches `value`,
/// XOR `invert`.
#[derive(Debug, Clone)]
pub struct MetadataMatcher {
    /// The filter namespace (`envoy.filters.http.jwt_authn`).
    pub filter: String,
    /// Object keys from the namespace down to the value.
    pub path: Vec<String>,
    /// What the value must be.
    pub value: ValueMatcher,
    /// `invert`.
    pub invert: bool,
}

impl MetadataMatcher {
    /// Compiles a `MetadataMatcher`.
    pub fn compile(m: &mpb::MetadataMatcher) -> Result<MetadataMatcher, CompileError> {
        use mpb::metadata_matcher::path_segment::Segment;
        if m.filter.is_empty() {
            return Err(CompileError::new("filter", "is required"));
        }
        if m.path.is_empty() {
            return Err(CompileError::new("path", "is required"));
        }
        let path = m
            .path
            .iter()
            .enumerate()
            .map(|(i, s)| match &s.segment {
                Some(Segment::Key(k)) => Ok(k.clone()),
                None => Err(CompileError::new(format!("path[{i}].key"), "is required")),
            })
            .collect::<Result<_, _>>()?;
        let value = match &m.value {
            Some(v) => ValueMatcher::compile(v).map_err(|e| e.within("value"))?,
            None => return Err(CompileError::new("value", "is required")),
        };
        Ok(MetadataMatcher {
            filter: m.filter.clone(),
            path,
            value,
            invert: m.invert,
        })
    }

    /// Whether the request's metadata matches.
    pub fn matches(&self, md: &DynamicMetadata) -> bool {
        self.value.matches(md.lookup(&self.filter, &self.path)) != self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpb::string_matcher::MatchPattern;
    use serde_json::json;

    fn exact(s: &str) -> ValueMatcher {
        ValueMatcher::String(
            StringMatcher::compile(&mpb::StringMatcher {
                match_pattern: Some(MatchPattern::Exact(s.into())),
                ..Default::default()
            })
            .expect("exact matchers compile"),
        )
    }

    #[test]
    fn value_matchers_follow_envoy() {
        let md = {
            let mut m = DynamicMetadata::default();
            m.set(
                "envoy.filters.http.jwt_authn",
                "payload",
                json!({"iss": "a", "groups": ["admin", "dev"], "scope": "read write",
                       "n": 3, "ok": true, "nested": {"k": "v"}, "nil": null}),
            );
            m
        };
        let at = |path: &[&str], value: ValueMatcher, invert: bool| {
            MetadataMatcher {
                filter: "envoy.filters.http.jwt_authn".into(),
                path: path.iter().map(|s| s.to_string()).collect(),
                value,
                invert,
            }
            .matches(&md)
        };
        let one_of = |s: &str| ValueMatcher::ListOneOf(Box::new(exact(s)));
        let cases: Vec<(&[&str], ValueMatcher, bool, bool)> = vec![
            (&["payload", "iss"], exact("a"), false, true),
            (&["payload", "iss"], exact("b"), false, false),
            (&["payload", "iss"], exact("a"), true, false),
            (&["payload", "groups"], one_of("admin"), false, true),
            (&["payload", "groups"], one_of("root"), false, false),
            // A list matcher on a string value does not match.
            (&["payload", "iss"], one_of("a"), false, false),
            // A string matcher on a list does not match.
            (&["payload", "groups"], exact("admin"), false, false),
            (&["payload", "nested", "k"], exact("v"), false, true),
            (
                &["payload", "missing"],
                ValueMatcher::Present(true),
                false,
                false,
            ),
            (
                &["payload", "missing"],
                ValueMatcher::Present(false),
                false,
                true,
            ),
            (
                &["payload", "iss"],
                ValueMatcher::Present(true),
                false,
                true,
            ),
            (&["payload", "missing"], exact("a"), true, true),
            (
                &["payload", "n"],
                ValueMatcher::DoubleExact(3.0),
                false,
                true,
            ),
            (
                &["payload", "n"],
                ValueMatcher::DoubleRange(0.0, 3.0),
                false,
                false,
            ),
            (&["payload", "ok"], ValueMatcher::Bool(true), false, true),
            (&["payload", "nil"], ValueMatcher::Null, false, true),
            (
                &["payload", "iss"],
                ValueMatcher::Or(vec![exact("x"), exact("a")]),
                false,
                true,
            ),
        ];
        for (i, (path, m, invert, want)) in cases.into_iter().enumerate() {
            assert_eq!(at(path, m, invert), want, "case {i}: {path:?}");
        }
        assert!(!MetadataMatcher {
            filter: "istio_authn".into(),
            path: vec!["payload".into()],
            value: ValueMatcher::Present(true),
            invert: false,
        }
        .matches(&md));
    }
}
