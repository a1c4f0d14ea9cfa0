//! Header mutations (`*_headers_to_add` / `*_headers_to_remove`) compiled from
//! `HeaderValueOption`s, with Envoy's append semantics (`append_action`, deprecated `append`).

use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use http::{HeaderMap, HeaderName, HeaderValue};

/// `HeaderValueOption.append_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// `APPEND_IF_EXISTS_OR_ADD` (the default).
    Append,
    /// `ADD_IF_ABSENT`.
    AddIfAbsent,
    /// `OVERWRITE_IF_EXISTS_OR_ADD`.
    OverwriteOrAdd,
    /// `OVERWRITE_IF_EXISTS`.
    OverwriteIfExists,
}

/// One header to add.
#[derive(Debug, Clone)]
pub struct HeaderAdd {
    /// Header name.
    pub name: HeaderName,
    /// Header value.
    pub value: HeaderValue,
    /// How it combines with existing values.
    pub action: AppendAction,
    /// `keep_empty_value`: an empty value is added rather than skipped.
    pub keep_empty: bool,
}

/// A compiled set of removals then additions at one level (route, virtual host, ...).
#[derive(Debug, Clone, Default)]
pub struct HeaderMutation {
    /// Headers removed first.
    pub remove: Vec<HeaderName>,
    /// Headers added after removal, in order.
    pub add: Vec<HeaderAdd>,
}

fn name(n: &str, path: &str) -> Result<HeaderName, CompileError> {
    if n.starts_with(':') || n.eq_ignore_ascii_case("host") {
        return Err(CompileError::new(
            path,
            format!("header {n} cannot be mutated"),
        ));
    }
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
        .map_err(|_| CompileError::new(path, format!("invalid header name {n:?}")))
}

impl HeaderMutation {
    /// Compiles one level's additions (`add_field`) and removals (`remove_field`); the field
    /// names are used in error paths.
    pub fn compile(
        add: &[HeaderValueOption],
        remove: &[String],
        add_field: &str,
        remove_field: &str,
    ) -> Result<HeaderMutation, CompileError> {
        let mut out = HeaderMutation::default();
        for (i, r) in remove.iter().enumerate() {
            out.remove.push(name(r, &format!("{remove_field}[{i}]"))?);
        }
        for (i, o) in add.iter().enumerate() {
            let path = format!("{add_field}[{i}]");
            let h = o
                .header
                .as_ref()
                .ok_or_else(|| CompileError::new(format!("{path}.header"), "is required"))?;
            let n = name(&h.key, &format!("{path}.header.key"))?;
            let raw = if h.raw_value.is_empty() {
                h.value.as_bytes().to_vec()
            } else {
                h.raw_value.clone()
            };
            if raw.contains(&b'%') {
                // Envoy's substitution formatters (`%DOWNSTREAM_REMOTE_ADDRESS%` ...).
                let literal = String::from_utf8_lossy(&raw).replace("%%", "");
                if literal.contains('%') {
                    return Err(CompileError::new(
                        format!("{path}.header.value"),
                        "header value formatters (%...%) are not supported",
                    ));
                }
            }
            let unescaped = String::from_utf8_lossy(&raw).replace("%%", "%");
            let value = HeaderValue::from_str(&unescaped).map_err(|_| {
                CompileError::new(format!("{path}.header.value"), "invalid header value")
            })?;
            #[allow(deprecated)]
            let action = match (&o.append, o.append_action) {
                (Some(_), a) if a != 0 => {
                    return Err(CompileError::new(
                        path,
                        "append and append_action are mutually exclusive",
                    ))
                }
                (Some(b), _) if b.value => AppendAction::Append,
                (Some(_), _) => AppendAction::OverwriteOrAdd,
                (None, 0) => AppendAction::Append,
                (None, 1) => AppendAction::AddIfAbsent,
                (None, 2) => AppendAction::OverwriteOrAdd,
                (None, 3) => AppendAction::OverwriteIfExists,
                (None, a) => {
                    return Err(CompileError::new(
                        format!("{path}.append_action"),
                        format!("unknown value {a}"),
                    ))
                }
            };
            out.add.push(HeaderAdd {
                name: n,
                value,
                action,
                keep_empty: o.keep_empty_value,
            });
        }
        Ok(out)
    }

    /// Whether it does nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Applies removals, then additions.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for r in &self.remove {
            headers.remove(r);
        }
        for a in &self.add {
            if a.value.is_empty() && !a.keep_empty {
                continue;
            }
            match a.action {
                AppendAction::Append => {
                    headers.append(a.name.clone(), a.value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(&a.name) {
                        headers.insert(a.name.clone(), a.value.clone());
                    }
                }
                AppendAction::OverwriteOrAdd => {
                    headers.insert(a.name.clone(), a.value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&a.name) {
                        headers.insert(a.name.clone(), a.value.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as Hv;
    use envoy_types::pb::google::protobuf::BoolValue;

    fn opt(k: &str, v: &str, action: i32, append: Option<bool>) -> HeaderValueOption {
        #[allow(deprecated)]
        HeaderValueOption {
            header: Some(Hv {
                key: k.into(),
                value: v.into(),
                ..Hv::default()
            }),
            append_action: action,
            append: append.map(|value| BoolValue { value }),
            ..HeaderValueOption::default()
        }
    }

    #[test]
    fn append_semantics() {
        // (option, existing value, expected values)
        let cases: Vec<(HeaderValueOption, Option<&str>, Vec<&str>)> = vec![
            (opt("x", "new", 0, None), Some("old"), vec!["old", "new"]),
            (opt("x", "new", 0, None), None, vec!["new"]),
            (opt("x", "new", 1, None), Some("old"), vec!["old"]),
            (opt("x", "new", 1, None), None, vec!["new"]),
            (opt("x", "new", 2, None), Some("old"), vec!["new"]),
            (opt("x", "new", 3, None), None, vec![]),
            (opt("x", "new", 3, None), Some("old"), vec!["new"]),
            (opt("x", "new", 0, Some(false)), Some("old"), vec!["new"]),
            (
                opt("x", "new", 0, Some(true)),
                Some("old"),
                vec!["old", "new"],
            ),
            (opt("x", "", 2, None), Some("old"), vec!["old"]),
        ];
        for (i, (o, existing, want)) in cases.into_iter().enumerate() {
            let m = HeaderMutation::compile(&[o], &[], "add", "rm").unwrap();
            let mut h = HeaderMap::new();
            if let Some(e) = existing {
                h.insert("x", HeaderValue::from_static(e));
            }
            m.apply(&mut h);
            let got: Vec<&str> = h.get_all("x").iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn removal_then_add_and_errors() {
        let m =
            HeaderMutation::compile(&[opt("x", "a", 2, None)], &["y".into()], "add", "rm").unwrap();
        let mut h = HeaderMap::new();
        h.insert("y", HeaderValue::from_static("1"));
        m.apply(&mut h);
        assert!(h.get("y").is_none());
        assert_eq!(h["x"], "a");
        let bad = [
            (
                vec![opt(":path", "/", 0, None)],
                vec![],
                "add[0].header.key",
            ),
            (vec![], vec!["host".to_string()], "rm[0]"),
            (
                vec![opt("x", "%START_TIME%", 0, None)],
                vec![],
                "add[0].header.value",
            ),
            (vec![opt("x", "a", 2, Some(true))], vec![], "add[0]"),
        ];
        for (add, rm, path) in bad {
            let e = HeaderMutation::compile(&add, &rm, "add", "rm").unwrap_err();
            assert_eq!(e.path, path);
        }
        let m = HeaderMutation::compile(&[opt("x", "50%%", 2, None)], &[], "a", "r").unwrap();
        assert_eq!(m.add[0].value, "50%");
    }
}
