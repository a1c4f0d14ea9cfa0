//! `/stats` (Envoy's `name: value` text) and `/stats/prometheus` (Envoy's Prometheus names:
//! `envoy_` + the stat name with its tags extracted as labels, e.g.
//! `envoy_cluster_upstream_rq_total{envoy_cluster_name="..."}`).

use super::AdminState;
use crate::stats::{ClusterStats, Histogram, HttpStats, TcpStats, BUCKETS_MS};
use std::fmt::Write;

/// A stat's value.
enum Val<'a> {
    Counter(u64),
    Gauge(i64),
    Histogram(&'a Histogram),
}

/// One stat: scope (`cluster`, `http`, `tcp`, or a fixed prefix like `control_plane`), the
/// scope's name and tag, the stat's own name and, for `<class>xx` stats, the class.
struct Stat<'a> {
    scope: &'static str,
    /// The scope instance and its Prometheus label (`envoy_cluster_name`), if any.
    instance: Option<(&'a str, &'static str)>,
    name: &'static str,
    class: Option<usize>,
    value: Val<'a>,
}

impl Stat<'_> {
    fn text_name(&self) -> String {
        let name = match self.class {
            Some(c) => self.name.replace("xx", &format!("{}xx", c + 1)),
            None => self.name.to_string(),
        };
        match self.instance {
            Some((i, _)) => format!("{}.{i}.{name}", self.scope),
            None => format!("{}.{name}", self.scope),
        }
    }

    fn prom_name(&self) -> String {
        format!("envoy_{}_{}", self.scope, self.name).replace('.', "_")
    }

    fn labels(&self) -> String {
        let mut l = Vec::new();
        if let Some(c) = self.class {
            l.push(format!("envoy_response_code_class=\"{}\"", c + 1));
        }
        if let Some((i, tag)) = self.instance {
            l.push(format!("{tag}=\"{}\"", escape(i)));
        }
        l.join(",")
    }
}

/// Prometheus label value escaping.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn cluster_stats<'a>(name: &'a str, s: &'a ClusterStats, out: &mut Vec<Stat<'a>>) {
    let i = Some((name, "envoy_cluster_name"));
    let mut push = |n: &'static str, value: Val<'a>| {
        out.push(Stat {
            scope: "cluster",
            instance: i,
            name: n,
            class: None,
            value,
        })
    };
    push("upstream_rq_total", Val::Counter(s.upstream_rq_total.get()));
    push("upstream_rq_active", Val::Gauge(s.upstream_rq_active.get()));
    push(
        "upstream_rq_pending_overflow",
        Val::Counter(s.upstream_rq_pending_overflow.get()),
    );
    push("upstream_rq_retry", Val::Counter(s.upstream_rq_retry.get()));
    push(
        "upstream_rq_retry_overflow",
        Val::Counter(s.upstream_rq_retry_overflow.get()),
    );
    push(
        "retry_or_shadow_abandoned",
        Val::Counter(s.retry_or_shadow_abandoned.get()),
    );
    push(
        "upstream_rq_timeout",
        Val::Counter(s.upstream_rq_timeout.get()),
    );
    push(
        "upstream_rq_per_try_timeout",
        Val::Counter(s.upstream_rq_per_try_timeout.get()),
    );
    push(
        "upstream_rq_rx_reset",
        Val::Counter(s.upstream_rq_rx_reset.get()),
    );
    push("upstream_cx_total", Val::Counter(s.upstream_cx_total.get()));
    push("upstream_cx_active", Val::Gauge(s.upstream_cx_active.get()));
    push(
        "upstream_cx_connect_fail",
        Val::Counter(s.upstream_cx_connect_fail.get()),
    );
    push(
        "upstream_cx_overflow",
        Val::Counter(s.upstream_cx_overflow.get()),
    );
    push(
        "upstream_cx_none_healthy",
        Val::Counter(s.upstream_cx_none_healthy.get()),
    );
    push(
        "outlier_detection.ejections_active",
        Val::Gauge(s.ejections_active.get()),
    );
    push(
        "outlier_detection.ejections_enforced_total",
        Val::Counter(s.ejections_enforced_total.get()),
    );
    push("membership_total", Val::Gauge(s.membership_total.get()));
    push("membership_healthy", Val::Gauge(s.membership_healthy.get()));
    for (c, counter) in s.upstream_rq_class.iter().enumerate() {
        out.push(Stat {
            scope: "cluster",
            instance: i,
            name: "upstream_rq_xx",
            class: Some(c),
            value: Val::Counter(counter.get()),
        });
    }
}

fn http_stats<'a>(prefix: &'a str, s: &'a HttpStats, out: &mut Vec<Stat<'a>>) {
    let i = Some((prefix, "envoy_http_conn_manager_prefix"));
    let mut push = |n: &'static str, value: Val<'a>| {
        out.push(Stat {
            scope: "http",
            instance: i,
            name: n,
            class: None,
            value,
        })
    };
    push(
        "downstream_rq_total",
        Val::Counter(s.downstream_rq_total.get()),
    );
    push(
        "downstream_rq_active",
        Val::Gauge(s.downstream_rq_active.get()),
    );
    push(
        "downstream_cx_total",
        Val::Counter(s.downstream_cx_total.get()),
    );
    push(
        "downstream_cx_active",
        Val::Gauge(s.downstream_cx_active.get()),
    );
    push(
        "downstream_cx_upgrades_total",
        Val::Counter(s.downstream_cx_upgrades_total.get()),
    );
    push(
        "downstream_cx_upgrades_active",
        Val::Gauge(s.downstream_cx_upgrades_active.get()),
    );
    push("no_route", Val::Counter(s.no_route.get()));
    push(
        "fault.delays_injected",
        Val::Counter(s.fault_delays_injected.get()),
    );
    push(
        "fault.aborts_injected",
        Val::Counter(s.fault_aborts_injected.get()),
    );
    push("rbac.allowed", Val::Counter(s.rbac_allowed.get()));
    push("rbac.denied", Val::Counter(s.rbac_denied.get()));
    push("jwt_authn.allowed", Val::Counter(s.jwt_authn_allowed.get()));
    push("jwt_authn.denied", Val::Counter(s.jwt_authn_denied.get()));
    push("downstream_rq_time", Val::Histogram(&s.downstream_rq_time));
    for (c, counter) in s.downstream_rq_class.iter().enumerate() {
        out.push(Stat {
            scope: "http",
            instance: i,
            name: "downstream_rq_xx",
            class: Some(c),
            value: Val::Counter(counter.get()),
        });
    }
}

fn tcp_stats<'a>(prefix: &'a str, s: &'a TcpStats, out: &mut Vec<Stat<'a>>) {
    let i = Some((prefix, "envoy_tcp_prefix"));
    let mut push = |n: &'static str, value: Val<'a>| {
        out.push(Stat {
            scope: "tcp",
            instance: i,
            name: n,
            class: None,
            value,
        })
    };
    push(
        "downstream_cx_total",
        Val::Counter(s.downstream_cx_total.get()),
    );
    push(
        "downstream_cx_active",
        Val::Gauge(s.downstream_cx_active.get()),
    );
    push(
        "downstream_cx_tx_bytes_total",
        Val::Counter(s.tx_bytes.get()),
    );
    push(
        "downstream_cx_rx_bytes_total",
        Val::Counter(s.rx_bytes.get()),
    );
}

/// Collects every stat and hands the list to `f` (the scopes' `Arc`s must outlive the list).
fn with_stats<R>(state: &AdminState, f: impl FnOnce(&[Stat<'_>]) -> R) -> R {
    let stats = &state.stats;
    let clusters = stats.clusters();
    let http = stats.http_scopes();
    let tcp = stats.tcp_scopes();
    let rbac = stats.network_rbac_scopes();
    let (acks, nacks) = state.status.totals();
    let cds = state.status.type_status(crate::resources::CLUSTER);
    let lds = state.status.type_status(crate::resources::LISTENER);
    let live = state.readiness() == super::Readiness::Live;
    let global = |scope, name, value| Stat {
        scope,
        instance: None,
        name,
        class: None,
        value,
    };
    let mut out = vec![
        global(
            "control_plane",
            "connected_state",
            Val::Gauge(i64::from(state.status.connected())),
        ),
        global("server", "live", Val::Gauge(i64::from(live))),
        global(
            "server",
            "total_connections",
            Val::Gauge(stats.server.total_connections.get()),
        ),
        global("xds", "update_success", Val::Counter(acks)),
        global("xds", "update_rejected", Val::Counter(nacks)),
        global(
            "cluster_manager",
            "cds.update_success",
            Val::Counter(cds.as_ref().map_or(0, |t| t.acks)),
        ),
        global(
            "cluster_manager",
            "cds.update_rejected",
            Val::Counter(cds.as_ref().map_or(0, |t| t.nacks)),
        ),
        global(
            "listener_manager",
            "lds.update_success",
            Val::Counter(lds.as_ref().map_or(0, |t| t.acks)),
        ),
        global(
            "listener_manager",
            "lds.update_rejected",
            Val::Counter(lds.as_ref().map_or(0, |t| t.nacks)),
        ),
    ];
    for (n, s) in &clusters {
        cluster_stats(n, s, &mut out);
    }
    for (n, s) in &http {
        http_stats(n, s, &mut out);
    }
    for (n, s) in &tcp {
        tcp_stats(n, s, &mut out);
    }
    // Envoy's tag extraction reads `tcp.rbac.allowed` as `envoy_tcp_allowed{envoy_tcp_prefix="rbac"}`.
    for (n, s) in &rbac {
        for (name, c) in [("allowed", &s.allowed), ("denied", &s.denied)] {
            out.push(Stat {
                scope: "tcp",
                instance: Some((n, "envoy_tcp_prefix")),
                name,
                class: None,
                value: Val::Counter(c.get()),
            });
        }
    }
    f(&out)
}

/// Envoy's text summary of a histogram: `P50(nan,<cumulative>) ...`, quantiles estimated as
/// the upper bound of the bucket they fall in.
fn quantiles(h: &Histogram) -> String {
    let (buckets, count, _) = h.read();
    let qs = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];
    qs.iter()
        .map(|q| {
            let v = if count == 0 {
                "nan".to_string()
            } else {
                let target = ((q / 100.0) * count as f64).ceil().max(1.0) as u64;
                let mut seen = 0;
                let idx = buckets.iter().position(|b| {
                    seen += b;
                    seen >= target
                });
                match idx {
                    Some(i) => format!("{}", BUCKETS_MS[i]),
                    None => "+Inf".to_string(),
                }
            };
            format!("P{q}(nan,{v})")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/stats`: `name: value` lines, sorted by name.
pub fn text(state: &AdminState) -> String {
    with_stats(state, |stats| {
        let mut lines: Vec<String> = stats
            .iter()
            .map(|s| {
                let v = match &s.value {
                    Val::Counter(c) => c.to_string(),
                    Val::Gauge(g) => g.to_string(),
                    Val::Histogram(h) => quantiles(h),
                };
                format!("{}: {v}\n", s.text_name())
            })
            .collect();
        lines.sort();
        lines.concat()
    })
}

/// `/stats/prometheus`: one `# TYPE` per metric family, then its series.
pub fn prometheus(state: &AdminState) -> String {
    with_stats(state, |stats| {
        let mut families: std::collections::BTreeMap<String, (&str, Vec<&Stat<'_>>)> =
            std::collections::BTreeMap::new();
        for s in stats {
            let kind = match s.value {
                Val::Counter(_) => "counter",
                Val::Gauge(_) => "gauge",
                Val::Histogram(_) => "histogram",
            };
            families
                .entry(s.prom_name())
                .or_insert((kind, Vec::new()))
                .1
                .push(s);
        }
        let mut out = String::new();
        for (name, (kind, series)) in families {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in series {
                let labels = s.labels();
                let braces = |extra: &str| {
                    let all: Vec<&str> = [labels.as_str(), extra]
                        .into_iter()
                        .filter(|l| !l.is_empty())
                        .collect();
                    if all.is_empty() {
                        String::new()
                    } else {
                        format!("{{{}}}", all.join(","))
                    }
                };
                match &s.value {
                    Val::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {c}", braces(""));
                    }
                    Val::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {g}", braces(""));
                    }
                    Val::Histogram(h) => {
                        let (buckets, count, sum) = h.read();
                        let mut cumulative = 0;
                        for (b, n) in BUCKETS_MS.iter().zip(buckets) {
                            cumulative += n;
                            let le = format!("le=\"{b}\"");
                            let _ = writeln!(out, "{name}_bucket{} {cumulative}", braces(&le));
                        }
                        let _ = writeln!(out, "{name}_bucket{} {count}", braces("le=\"+Inf\""));
                        let _ = writeln!(out, "{name}_sum{} {sum}", braces(""));
                        let _ = writeln!(out, "{name}_count{} {count}", braces(""));
                    }
                }
            }
        }
        state.stats.istio.render(&mut out);
        out
    })
}
