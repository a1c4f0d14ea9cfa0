//! Listener filters (`original_dst`, `tls_inspector`, `http_inspector`) in their listed order,
//! and their `filter_disabled` predicates (Envoy's `ListenerFilterChainMatchPredicate`): istiod
//! disables virtualInbound's inspectors on the ports whose chains do not need them, so a
//! server-first protocol there is not held back waiting for the client's first bytes.
//! Pure: which filters run on a connection is decided from its ports (see [`crate::server`]).

use crate::CompileError;
use envoy_types::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::{
    MatchSet, Rule,
};
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, ListenerFilter as ListenerFilterProto, ListenerFilterChainMatchPredicate,
};

const ORIGINAL_DST_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
const TLS_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const HTTP_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";

/// What a listener filter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// `envoy.filters.listener.original_dst`: the connection's original destination becomes its
    /// local address.
    OriginalDst,
    /// `envoy.filters.listener.tls_inspector`: detect TLS, read SNI and ALPN.
    Tls,
    /// `envoy.filters.listener.http_inspector`: detect plaintext HTTP/1.x and h2c.
    Http,
}

/// A compiled `ListenerFilterChainMatchPredicate`, evaluated on the connection's local port as
/// the filter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortPredicate {
    /// `or_match`: any rule matches.
    Or(Vec<PortPredicate>),
    /// `and_match`: every rule matches.
    And(Vec<PortPredicate>),
    /// `not_match`.
    Not(Box<PortPredicate>),
    /// `any_match`: always matches.
    Any,
    /// `destination_port_range`: `start` inclusive, `end` exclusive (`Int32Range`).
    Ports {
        /// First port matched.
        start: i32,
        /// First port past the range.
        end: i32,
    },
}

impl PortPredicate {
    /// Whether the predicate matches a connection whose local port is `port`.
    pub fn matches(&self, port: u16) -> bool {
        match self {
            PortPredicate::Or(rules) => rules.iter().any(|r| r.matches(port)),
            PortPredicate::And(rules) => rules.iter().all(|r| r.matches(port)),
            PortPredicate::Not(rule) => !rule.matches(port),
            PortPredicate::Any => true,
            PortPredicate::Ports { start, end } => (*start..*end).contains(&i32::from(port)),
        }
    }

    /// Compiles a predicate, with Envoy's validation: a rule is required, a set has at least two
    /// rules, `any_match` can only be true.
    pub fn compile(p: &ListenerFilterChainMatchPredicate) -> Result<Self, CompileError> {
        let set = |s: &MatchSet, field: &str| -> Result<Vec<PortPredicate>, CompileError> {
            if s.rules.len() < 2 {
                return Err(CompileError::new(
                    format!("{field}.rules"),
                    "needs at least 2 rules",
                ));
            }
            s.rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    PortPredicate::compile(r).map_err(|e| e.within(&format!("{field}.rules[{i}]")))
                })
                .collect()
        };
        match &p.rule {
            None => Err(CompileError::new("", "a rule is required")),
            Some(Rule::OrMatch(s)) => Ok(PortPredicate::Or(set(s, "or_match")?)),
            Some(Rule::AndMatch(s)) => Ok(PortPredicate::And(set(s, "and_match")?)),
            Some(Rule::NotMatch(r)) => Ok(PortPredicate::Not(Box::new(
                PortPredicate::compile(r).map_err(|e| e.within("not_match"))?,
            ))),
            Some(Rule::AnyMatch(true)) => Ok(PortPredicate::Any),
            Some(Rule::AnyMatch(false)) => Err(CompileError::new("any_match", "must be true")),
            Some(Rule::DestinationPortRange(r)) => Ok(PortPredicate::Ports {
                start: r.start,
                end: r.end,
            }),
        }
    }
}

/// One listener filter and the predicate that turns it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFilter {
    /// What it does.
    pub kind: FilterKind,
    /// `filter_disabled`: the filter is skipped on connections it matches.
    pub disabled: Option<PortPredicate>,
}

/// Which listener filters run on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enabled {
    /// `original_dst`.
    pub original_dst: bool,
    /// The TLS inspector.
    pub tls: bool,
    /// The HTTP inspector.
    pub http: bool,
}

/// A listener's filters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerFilters(pub Vec<ListenerFilter>);

impl ListenerFilters {
    /// Whether an `original_dst` filter is listed (enabled or not on a given connection).
    pub fn lists_original_dst(&self) -> bool {
        self.0.iter().any(|f| f.kind == FilterKind::OriginalDst)
    }

    /// The filters that run on a connection whose local port is `local` and whose original
    /// destination port is `original`. As in Envoy, each predicate sees the local port as it
    /// stands when its filter's turn comes: the original destination's once an enabled
    /// `original_dst` has run, the listener's own before.
    pub fn enabled(&self, local: u16, original: u16) -> Enabled {
        let mut port = local;
        let mut on = Enabled::default();
        for f in &self.0 {
            if f.disabled.as_ref().is_some_and(|p| p.matches(port)) {
                continue;
            }
            match f.kind {
                FilterKind::OriginalDst => {
                    on.original_dst = true;
                    port = original;
                }
                FilterKind::Tls => on.tls = true,
                FilterKind::Http => on.http = true,
            }
        }
        on
    }
}

/// Compiles `listener_filters`; any other filter is an error naming it.
pub fn compile(filters: &[ListenerFilterProto]) -> Result<ListenerFilters, CompileError> {
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let at = format!("listener_filters[{i}]");
        let type_url = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            _ => "",
        };
        let kind = match (f.name.as_str(), type_url) {
            (_, ORIGINAL_DST_TYPE) | ("envoy.filters.listener.original_dst", "") => {
                FilterKind::OriginalDst
            }
            (_, TLS_INSPECTOR_TYPE) | ("envoy.filters.listener.tls_inspector", "") => {
                FilterKind::Tls
            }
            (_, HTTP_INSPECTOR_TYPE) | ("envoy.filters.listener.http_inspector", "") => {
                FilterKind::Http
            }
            _ => {
                return Err(CompileError::new(
                    at,
                    format!("listener filter {} ({type_url}) is not supported", f.name),
                ))
            }
        };
        let disabled = f
            .filter_disabled
            .as_ref()
            .map(|p| {
                PortPredicate::compile(p).map_err(|e| e.within(&format!("{at}.filter_disabled")))
            })
            .transpose()?;
        out.push(ListenerFilter { kind, disabled });
    }
    Ok(ListenerFilters(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::v3::Int32Range;

    fn ports(start: i32, end: i32) -> ListenerFilterChainMatchPredicate {
        ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range { start, end })),
        }
    }
    fn or(rules: Vec<ListenerFilterChainMatchPredicate>) -> ListenerFilterChainMatchPredicate {
        ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet { rules })),
        }
    }
    fn and(rules: Vec<ListenerFilterChainMatchPredicate>) -> ListenerFilterChainMatchPredicate {
        ListenerFilterChainMatchPredicate {
            rule: Some(Rule::AndMatch(MatchSet { rules })),
        }
    }
    fn not(rule: ListenerFilterChainMatchPredicate) -> ListenerFilterChainMatchPredicate {
        ListenerFilterChainMatchPredicate {
            rule: Some(Rule::NotMatch(Box::new(rule))),
        }
    }
    fn any(b: bool) -> ListenerFilterChainMatchPredicate {
        ListenerFilterChainMatchPredicate {
            rule: Some(Rule::AnyMatch(b)),
        }
    }

    fn filter(
        name: &str,
        disabled: Option<ListenerFilterChainMatchPredicate>,
    ) -> ListenerFilterProto {
        let type_url = match name {
            "original_dst" => ORIGINAL_DST_TYPE,
            "tls_inspector" => TLS_INSPECTOR_TYPE,
            _ => HTTP_INSPECTOR_TYPE,
        };
        ListenerFilterProto {
            name: format!("envoy.filters.listener.{name}"),
            filter_disabled: disabled,
            config_type: Some(listener_filter::ConfigType::TypedConfig(
                envoy_types::pb::google::protobuf::Any {
                    type_url: type_url.into(),
                    value: vec![],
                },
            )),
        }
    }

    /// Each predicate shape against ports inside, at the edges of and outside its ranges;
    /// `destination_port_range` is `[start, end)`.
    #[test]
    fn predicates_match_ports() {
        let cases: Vec<(ListenerFilterChainMatchPredicate, &[u16], &[u16])> = vec![
            (ports(3306, 3307), &[3306], &[3305, 3307]),
            (ports(9000, 9100), &[9000, 9050, 9099], &[8999, 9100]),
            (ports(10, 10), &[], &[9, 10, 11]),
            (ports(20, 10), &[], &[10, 15, 20]),
            (ports(0, 65536), &[0, 1, 65535], &[]),
            (
                or(vec![ports(3306, 3307), ports(15000, 15001)]),
                &[3306, 15000],
                &[3307, 80],
            ),
            (
                and(vec![ports(9000, 9100), not(ports(9080, 9081))]),
                &[9000, 9079, 9081],
                &[9080, 8000],
            ),
            (not(ports(80, 81)), &[79, 81, 9080], &[80]),
            // istiod's "include" form: the filter runs only on 9080 and 9443.
            (
                not(or(vec![ports(9080, 9081), ports(9443, 9444)])),
                &[80, 15006],
                &[9080, 9443],
            ),
            (any(true), &[0, 80, 65535], &[]),
        ];
        for (i, (proto, hits, misses)) in cases.into_iter().enumerate() {
            let p = PortPredicate::compile(&proto).unwrap();
            for port in hits {
                assert!(p.matches(*port), "case {i}: {port} should match {p:?}");
            }
            for port in misses {
                assert!(!p.matches(*port), "case {i}: {port} should not match {p:?}");
            }
        }
    }

    #[test]
    fn invalid_predicates_are_named() {
        let cases = [
            (
                ListenerFilterChainMatchPredicate { rule: None },
                "a rule is required",
            ),
            (any(false), "any_match: must be true"),
            (
                or(vec![ports(1, 2)]),
                "or_match.rules: needs at least 2 rules",
            ),
            (and(vec![]), "and_match.rules: needs at least 2 rules"),
            (
                not(or(vec![ports(1, 2), any(false)])),
                "not_match.or_match.rules[1].any_match: must be true",
            ),
        ];
        for (proto, want) in cases {
            assert_eq!(
                PortPredicate::compile(&proto).unwrap_err().to_string(),
                want
            );
        }
        let e = compile(&[
            filter("original_dst", None),
            filter("tls_inspector", Some(any(false))),
        ])
        .unwrap_err();
        assert_eq!(e.path, "listener_filters[1].filter_disabled.any_match");
    }

    /// istiod's virtualInbound: `original_dst`, then the TLS inspector off on the ports whose
    /// chains need no TLS detection, then the HTTP inspector only on the ports that need it.
    /// Predicates after `original_dst` see the original destination's port.
    #[test]
    fn which_filters_run_follows_the_port_each_filter_sees() {
        let filters = compile(&[
            filter("original_dst", None),
            filter(
                "tls_inspector",
                Some(or(vec![ports(3306, 3307), ports(9000, 9001)])),
            ),
            filter("http_inspector", Some(not(ports(9080, 9081)))),
        ])
        .unwrap();
        assert!(filters.lists_original_dst());
        let on = |original| filters.enabled(15006, original);
        let all = Enabled {
            original_dst: true,
            tls: true,
            http: true,
        };
        assert_eq!(on(9080), all);
        assert_eq!(
            on(3306),
            Enabled {
                tls: false,
                http: false,
                ..all
            }
        );
        assert_eq!(on(8080), Enabled { http: false, ..all });

        // Before `original_dst` (or without it) a predicate sees the listener's own port.
        let before = compile(&[
            filter("tls_inspector", Some(ports(15006, 15007))),
            filter("original_dst", None),
            filter("http_inspector", Some(ports(15006, 15007))),
        ])
        .unwrap();
        assert_eq!(before.enabled(15006, 9080), Enabled { tls: false, ..all });
        // A disabled `original_dst` leaves the local port as it was.
        let skipped = compile(&[
            filter("original_dst", Some(any(true))),
            filter("http_inspector", Some(ports(15006, 15007))),
        ])
        .unwrap();
        assert_eq!(skipped.enabled(15006, 9080), Enabled::default());
        assert!(!compile(&[filter("http_inspector", None)])
            .unwrap()
            .lists_original_dst());
    }
}
