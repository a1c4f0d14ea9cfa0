//! The subset of Envoy's v3 bootstrap that Istio's pilot-agent writes (JSON or YAML), or the
//! same fields from flags.
//!
//! Read: `node` (id, cluster, metadata, locality), `dynamic_resources.ads_config` (api_type,
//! transport_api_version, `grpc_services[0].envoy_grpc.cluster_name`), the static cluster that
//! names (its `load_assignment`'s first endpoint: a `socket_address` or a `pipe`), and
//! `admin.address.socket_address`. Everything else (stats_config, layered_runtime, tracing, the
//! other static clusters) is ignored. Field names are accepted in snake_case and in the
//! lowerCamelCase of proto3's JSON mapping, as Envoy does.

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, NullValue, Struct, Value};
use serde_json::Value as Json;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// What the proxy needs from its bootstrap.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `node`: id, cluster, metadata, locality — sent on every xDS request.
    pub node: envoy_types::pb::envoy::config::core::v3::Node,
    /// `dynamic_resources.ads_config`: where and how to speak ADS.
    pub ads: Option<AdsConfig>,
    /// `admin.address`.
    pub admin: Option<SocketAddr>,
}

/// The ADS server and protocol.
#[derive(Debug, Clone)]
pub struct AdsConfig {
    /// `http://host:port` of each xDS server (the endpoints of the static cluster the ADS config
    /// names, in order; never empty), or `unix:/path` when an endpoint is a `pipe`
    /// (pilot-agent's local xDS proxy). Each connection attempt takes the next one, so proxies
    /// of a replica that went away move to the others.
    pub endpoints: Vec<String>,
    /// `DELTA_GRPC` (true) or `GRPC` (false).
    pub delta: bool,
}

/// Why a bootstrap cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file could not be read.
    #[error("cannot read bootstrap {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is neither JSON nor YAML.
    #[error("bootstrap is neither JSON nor YAML: {0}")]
    Syntax(String),
    /// A field is missing or has the wrong shape; `path` is its JSON path.
    #[error("bootstrap {path}: {message}")]
    Field {
        /// JSON path of the field, e.g. `static_resources.clusters[1].load_assignment`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn field_err(path: &str, message: impl Into<String>) -> BootstrapError {
    BootstrapError::Field {
        path: path.to_string(),
        message: message.into(),
    }
}

/// `snake_case` → `lowerCamelCase`, proto3 JSON's other spelling of a field name.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value with the path that led to it, for errors that name the field.
#[derive(Clone, Copy)]
struct At<'a> {
    value: &'a Json,
    path: &'a str,
}

impl<'a> At<'a> {
    fn join(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The field `name` (either spelling), if present and not null.
    fn get(&self, name: &str) -> Option<&'a Json> {
        let obj = self.value.as_object()?;
        obj.get(name)
            .or_else(|| obj.get(&camel(name)))
            .filter(|v| !v.is_null())
    }

    fn require(&self, name: &str, path: &str) -> Result<&'a Json, BootstrapError> {
        if !self.value.is_object() {
            return Err(field_err(self.path, "expected an object"));
        }
        self.get(name).ok_or_else(|| field_err(path, "required"))
    }

    fn str_field(&self, name: &str) -> Result<Option<String>, BootstrapError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(field_err(&self.join(name), "expected a string")),
        }
    }
}

/// Proto3 JSON: a `uint32` may be a number or a decimal string.
fn port(v: &Json, path: &str) -> Result<u16, BootstrapError> {
    let n = match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
        .ok_or_else(|| field_err(path, format!("expected a port number 1-65535, got {v}")))
}

/// A JSON object as a `google.protobuf.Struct` (numbers become doubles, as in protobuf).
pub fn json_to_struct(map: &serde_json::Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(NullValue::NullValue as i32),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as JSON (for `/config_dump`'s bootstrap).
pub fn struct_to_json(s: &Struct) -> Json {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    Json::Object(
        keys.into_iter()
            .map(|k| (k.clone(), value_to_json(&s.fields[k])))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

fn parse_node(root: At<'_>) -> Result<Node, BootstrapError> {
    let value = root.require("node", "node")?;
    let node = At {
        value,
        path: "node",
    };
    let id = node
        .str_field("id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| field_err("node.id", "required"))?;
    let cluster = node.str_field("cluster")?.unwrap_or_default();
    let metadata = match node.get("metadata") {
        None => None,
        Some(Json::Object(m)) => Some(json_to_struct(m)),
        Some(_) => return Err(field_err("node.metadata", "expected an object")),
    };
    let locality = match node.get("locality") {
        None => None,
        Some(v @ Json::Object(_)) => {
            let l = At {
                value: v,
                path: "node.locality",
            };
            Some(Locality {
                region: l.str_field("region")?.unwrap_or_default(),
                zone: l.str_field("zone")?.unwrap_or_default(),
                sub_zone: l.str_field("sub_zone")?.unwrap_or_default(),
            })
        }
        Some(_) => return Err(field_err("node.locality", "expected an object")),
    };
    Ok(Node {
        id,
        cluster,
        metadata,
        locality,
        user_agent_name: node
            .str_field("user_agent_name")?
            .unwrap_or_else(|| "envoy".to_string()),
        ..Default::default()
    })
}

/// Every endpoint address of a static cluster's `load_assignment`, in order (istiod's
/// replicas, say: the client moves to the next one when a stream ends).
fn cluster_endpoints(cluster: At<'_>) -> Result<Vec<String>, BootstrapError> {
    let first = cluster.join("load_assignment.endpoints[0].lb_endpoints[0].endpoint.address");
    let localities = cluster
        .get("load_assignment")
        .and_then(|la| {
            At {
                value: la,
                path: "",
            }
            .get("endpoints")
        })
        .and_then(Json::as_array)
        .ok_or_else(|| field_err(&first, "required"))?;
    let mut out = Vec::new();
    for (i, locality) in localities.iter().enumerate() {
        let lb = At {
            value: locality,
            path: "",
        }
        .get("lb_endpoints")
        .and_then(Json::as_array);
        for (j, lb) in lb.into_iter().flatten().enumerate() {
            let path = cluster.join(&format!(
                "load_assignment.endpoints[{i}].lb_endpoints[{j}].endpoint.address"
            ));
            let address = At {
                value: lb,
                path: "",
            }
            .get("endpoint")
            .and_then(|e| At { value: e, path: "" }.get("address"))
            .ok_or_else(|| field_err(&path, "required"))?;
            out.push(endpoint_address(At {
                value: address,
                path: &path,
            })?);
        }
    }
    if out.is_empty() {
        return Err(field_err(&first, "required"));
    }
    Ok(out)
}

/// One endpoint's `address`: `http://host:port` or `unix:/path`.
fn endpoint_address(address: At<'_>) -> Result<String, BootstrapError> {
    let path = address.path.to_string();
    if let Some(sa) = address.get("socket_address") {
        let sa_path = address.join("socket_address");
        let sa = At {
            value: sa,
            path: &sa_path,
        };
        let host = sa
            .str_field("address")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| field_err(&sa.join("address"), "required"))?;
        let port_path = sa.join("port_value");
        let p = port(sa.require("port_value", &port_path)?, &port_path)?;
        // An IPv6 literal needs brackets in a URI.
        let host = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => host,
        };
        return Ok(format!("http://{host}:{p}"));
    }
    if let Some(pipe) = address.get("pipe") {
        let pipe_path = address.join("pipe");
        let p = At {
            value: pipe,
            path: &pipe_path,
        }
        .str_field("path")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| field_err(&format!("{pipe_path}.path"), "required"))?;
        return Ok(format!("unix:{p}"));
    }
    Err(field_err(&path, "expected socket_address or pipe"))
}

fn parse_ads(root: At<'_>) -> Result<Option<AdsConfig>, BootstrapError> {
    let Some(ads) = root
        .get("dynamic_resources")
        .and_then(|d| At { value: d, path: "" }.get("ads_config"))
    else {
        return Ok(None);
    };
    let ads = At {
        value: ads,
        path: "dynamic_resources.ads_config",
    };
    let delta = match ads.str_field("api_type")?.as_deref() {
        Some("GRPC") => false,
        Some("DELTA_GRPC") => true,
        Some(other) => {
            return Err(field_err(
                &ads.join("api_type"),
                format!("{other} is not supported (GRPC or DELTA_GRPC)"),
            ))
        }
        None => return Err(field_err(&ads.join("api_type"), "required")),
    };
    if let Some(v) = ads.str_field("transport_api_version")? {
        if v != "V3" {
            return Err(field_err(
                &ads.join("transport_api_version"),
                format!("{v}: only V3 is supported"),
            ));
        }
    }
    let services_path = ads.join("grpc_services");
    let first = match ads.require("grpc_services", &services_path)? {
        Json::Array(a) => a
            .first()
            .ok_or_else(|| field_err(&services_path, "must not be empty"))?,
        _ => return Err(field_err(&services_path, "expected a list")),
    };
    let first_path = format!("{services_path}[0]");
    let first = At {
        value: first,
        path: &first_path,
    };
    let Some(envoy_grpc) = first.get("envoy_grpc") else {
        let message = if first.get("google_grpc").is_some() {
            "google_grpc is not supported: use envoy_grpc"
        } else {
            "required"
        };
        return Err(field_err(&first.join("envoy_grpc"), message));
    };
    let eg_path = first.join("envoy_grpc");
    let cluster_name = At {
        value: envoy_grpc,
        path: &eg_path,
    }
    .str_field("cluster_name")?
    .filter(|s| !s.is_empty())
    .ok_or_else(|| field_err(&format!("{eg_path}.cluster_name"), "required"))?;

    let clusters = root
        .get("static_resources")
        .and_then(|s| At { value: s, path: "" }.get("clusters"))
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let found = clusters.iter().enumerate().find(|(_, c)| {
        At { value: c, path: "" }.get("name").and_then(Json::as_str) == Some(&cluster_name)
    });
    let Some((i, cluster)) = found else {
        return Err(field_err(
            "static_resources.clusters",
            format!("no cluster named {cluster_name} (named by {eg_path}.cluster_name)"),
        ));
    };
    let cluster_path = format!("static_resources.clusters[{i}]");
    let endpoints = cluster_endpoints(At {
        value: cluster,
        path: &cluster_path,
    })?;
    Ok(Some(AdsConfig { endpoints, delta }))
}

fn parse_admin(root: At<'_>) -> Result<Option<SocketAddr>, BootstrapError> {
    let Some(sa) = root
        .get("admin")
        .and_then(|a| At { value: a, path: "" }.get("address"))
        .and_then(|a| At { value: a, path: "" }.get("socket_address"))
    else {
        return Ok(None);
    };
    let sa = At {
        value: sa,
        path: "admin.address.socket_address",
    };
    let host = sa.str_field("address")?.unwrap_or_default();
    let ip: IpAddr = match host.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h
            .parse()
            .map_err(|_| field_err(&sa.join("address"), format!("{h:?} is not an IP address")))?,
    };
    let port_path = sa.join("port_value");
    let p = port(sa.require("port_value", &port_path)?, &port_path)?;
    Ok(Some(SocketAddr::new(ip, p)))
}

impl Bootstrap {
    /// Parses a bootstrap in JSON or YAML.
    pub fn parse(text: &str) -> Result<Bootstrap, BootstrapError> {
        let root: Json = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json_err) => serde_yaml_ng::from_str(text).map_err(|yaml_err| {
                BootstrapError::Syntax(format!("as JSON: {json_err}; as YAML: {yaml_err}"))
            })?,
        };
        Bootstrap::from_json(&root)
    }

    /// Reads and parses a bootstrap file (JSON or YAML).
    pub fn from_file(path: &Path) -> Result<Bootstrap, BootstrapError> {
        let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Bootstrap::parse(&text)
    }

    /// Builds the bootstrap from an already decoded JSON document.
    pub fn from_json(root: &Json) -> Result<Bootstrap, BootstrapError> {
        if !root.is_object() {
            return Err(field_err("", "the bootstrap must be an object"));
        }
        let root = At {
            value: root,
            path: "",
        };
        Ok(Bootstrap {
            node: parse_node(root)?,
            ads: parse_ads(root)?,
            admin: parse_admin(root)?,
        })
    }

    /// The same fields from flags: `xds_address` is `host:port`, `http://host:port` or
    /// `unix:/path`; `metadata` is the node's metadata (a JSON object, or null for none).
    pub fn from_parts(
        node_id: &str,
        cluster: &str,
        xds_address: &str,
        delta: bool,
        admin: Option<SocketAddr>,
        metadata: Json,
    ) -> Result<Bootstrap, BootstrapError> {
        if node_id.is_empty() {
            return Err(field_err("node.id", "required"));
        }
        let metadata = match &metadata {
            Json::Null => None,
            Json::Object(m) => Some(json_to_struct(m)),
            _ => return Err(field_err("node.metadata", "expected an object")),
        };
        let endpoint = if xds_address.starts_with("http://")
            || xds_address.starts_with("https://")
            || xds_address.starts_with("unix:")
        {
            xds_address.to_string()
        } else if xds_address.is_empty() {
            return Err(field_err("xds_address", "required"));
        } else {
            format!("http://{xds_address}")
        };
        Ok(Bootstrap {
            node: Node {
                id: node_id.to_string(),
                cluster: cluster.to_string(),
                metadata,
                user_agent_name: "envoy".to_string(),
                ..Default::default()
            },
            ads: Some(AdsConfig {
                endpoints: vec![endpoint],
                delta,
            }),
            admin,
        })
    }
}

#[cfg(test)]
#[path = "bootstrap_tests.rs"]
mod tests;
