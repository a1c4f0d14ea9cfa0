//! The `proxy.istio.io/config` annotation: a per-pod ProxyConfig overlay in YAML.
//!
//! Istio merges it into the mesh's default ProxyConfig with `protomarshal.ApplyYAML`, which
//! retries with unknown fields allowed: unknown fields are ignored, but malformed YAML or a
//! known field of the wrong type is an error and the pod is refused. Capstan does the same for
//! the fields its proxy has a flag for; the others are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

/// The ProxyConfig fields Capstan maps onto `capstan proxy` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfigOverlay {
    /// `discoveryAddress` → `--xds-address`.
    pub discovery_address: Option<String>,
    /// `concurrency` → `--concurrency`.
    pub concurrency: Option<u32>,
    /// `terminationDrainDuration` → `--drain-time`.
    pub termination_drain_duration: Option<Duration>,
    /// `drainDuration`: Envoy's listener drain on hot restart. Parsed (so a malformed value is
    /// refused as Istio refuses it) but `capstan proxy` has no hot restart: not passed on.
    pub drain_duration: Option<Duration>,
    /// `proxyMetadata` → the sidecar's environment (`ISTIO_META_*` become node metadata).
    pub proxy_metadata: BTreeMap<String, String>,
}

/// Parses a protobuf-JSON duration as Istio's ProxyConfig takes it: seconds with an optional
/// fraction and the `s` suffix (`5s`, `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = s
        .strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n >= 0.0 && *n < 1e9)
        .ok_or_else(|| format!("{s:?} is not a duration like \"5s\" or \"1.5s\""))?;
    Ok(Duration::from_secs_f64(secs))
}

fn field_err(field: &str, message: impl std::fmt::Display) -> String {
    format!("proxy.istio.io/config: {field}: {message}")
}

impl ProxyConfigOverlay {
    /// Parses the annotation's YAML. Unknown fields are ignored; malformed YAML or a known
    /// field of the wrong type is an error naming the field.
    pub fn parse(yaml: &str) -> Result<ProxyConfigOverlay, String> {
        use serde_yaml_ng::Value;
        let doc: Value = serde_yaml_ng::from_str(yaml)
            .map_err(|e| format!("proxy.istio.io/config: malformed YAML: {e}"))?;
        let map = match doc {
            Value::Null => return Ok(ProxyConfigOverlay::default()),
            Value::Mapping(m) => m,
            other => {
                return Err(format!(
                    "proxy.istio.io/config: expected a mapping of ProxyConfig fields, got {}",
                    kind(&other)
                ))
            }
        };
        let mut out = ProxyConfigOverlay::default();
        for (key, value) in &map {
            let Some(key) = key.as_str() else {
                return Err(field_err("?", "field names must be strings"));
            };
            match key {
                "discoveryAddress" => {
                    let s = value
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| field_err(key, "expected a non-empty HOST:PORT string"))?;
                    out.discovery_address = Some(s.to_string());
                }
                "concurrency" => {
                    // Int32Value in protobuf JSON: a number or a numeric string.
                    let n = match value {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse::<u64>().ok(),
                        _ => None,
                    }
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| field_err(key, "expected a non-negative integer"))?;
                    out.concurrency = Some(n);
                }
                "terminationDrainDuration" | "drainDuration" => {
                    let d = value
                        .as_str()
                        .ok_or_else(|| field_err(key, "expected a duration string like \"5s\""))
                        .and_then(|s| parse_duration(s).map_err(|m| field_err(key, m)))?;
                    if key == "drainDuration" {
                        out.drain_duration = Some(d);
                    } else {
                        out.termination_drain_duration = Some(d);
                    }
                }
                "proxyMetadata" => {
                    let Value::Mapping(m) = value else {
                        return Err(field_err(key, "expected a mapping of strings"));
                    };
                    for (k, v) in m {
                        let (Some(k), Some(v)) = (k.as_str(), scalar(v)) else {
                            return Err(field_err(key, "expected a mapping of strings"));
                        };
                        out.proxy_metadata.insert(k.to_string(), v);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &serde_yaml_ng::Value) -> &'static str {
    match v {
        serde_yaml_ng::Value::Null => "null",
        serde_yaml_ng::Value::Bool(_) => "a boolean",
        serde_yaml_ng::Value::Number(_) => "a number",
        serde_yaml_ng::Value::String(_) => "a string",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a mapping",
        serde_yaml_ng::Value::Tagged(_) => "a tagged value",
    }
}

/// Renders a duration for `capstan proxy`'s flags (`ms` keeps fractions of a second).
pub fn proxy_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
