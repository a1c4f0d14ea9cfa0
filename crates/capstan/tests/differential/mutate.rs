//! Field-by-field mutations of valid Istio objects for differential fuzzing: every field of
//! `spec` is removed, emptied, or set to boundary and malformed values chosen by the value's
//! shape (durations, hosts, addresses, ports, percentages, enums). Deterministic: the same
//! inputs and seed give the same mutants in the same order.

use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// One mutated object.
#[derive(Clone, Debug)]
pub struct Mutant {
    /// `fuzz <source id> <Kind> <field path> <operation>`: stable across runs.
    pub id: String,
    /// The mutated object (its `metadata.name` is set by the caller).
    pub object: Value,
}

/// A small deterministic generator (SplitMix64) for sampling without extra dependencies.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// A change to one place of the object.
#[derive(Clone, Debug)]
enum Op {
    Remove,
    Set(Value),
    AddUnknownField,
    DuplicateFirst,
    RenameKey(String),
    /// An enum's value given as a number: protojson takes it, the CRD schema does not.
    EnumNumber(i64),
    /// A value of another JSON type (type confusion): a number as a string ("number as
    /// string"), a boolean as a string, a string as a number.
    Retyped(Value, &'static str),
}

/// Fields whose keys are data (label names, header names, port numbers), not schema fields:
/// their keys are renamed too.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "matchLabels",
    "sourceLabels",
    "headers",
    "withoutHeaders",
    "queryParams",
    "portLevelMtls",
    "ports",
    "set",
    "add",
];

/// Replacement keys for a map field.
const KEYS: &[&str] = &[
    "",
    "UPPER",
    "with space",
    "a*",
    "-dash",
    ":authority",
    "app.kubernetes.io/name",
    "0",
    "65536",
];

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Remove => "removed".into(),
            Op::Set(v) => format!("= {v}"),
            Op::AddUnknownField => "+ unknownField".into(),
            Op::DuplicateFirst => "+ copy of [0]".into(),
            Op::RenameKey(k) => format!("renamed to {k:?}"),
            Op::EnumNumber(n) => format!("= {n} (enum as number)"),
            Op::Retyped(v, what) => format!("= {v} ({what})"),
        }
    }
}

fn is_duration(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && matches!(unit, "ns" | "us" | "ms" | "s" | "m" | "h")
}

fn is_address(s: &str) -> bool {
    let ip = s.split('/').next().unwrap_or("");
    ip.parse::<std::net::IpAddr>().is_ok()
}

fn is_enum(s: &str) -> bool {
    s.len() > 1
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
}

/// Replacement values for a string, by what the string looks like.
fn string_values(key: &str, s: &str) -> Vec<Value> {
    let mut out = vec![json!("")];
    if key == "regex" {
        out.extend(["(", "a{2,1}", ".*", "(?i)abc", "\\d+"].map(|v| json!(v)));
    } else if is_duration(s) {
        out.extend(["0s", "-1s", "1.5s", "0.5ms", "1ns", "100000h", "1", "1s1"].map(|v| json!(v)));
    } else if is_address(s) {
        out.extend(
            [
                "256.1.1.1",
                "10.0.0.0/33",
                "::1",
                "2001:db8::/129",
                "1.2.3.4/32",
                "host.example",
            ]
            .map(|v| json!(v)),
        );
    } else if is_enum(s) {
        out.extend([json!("NOT_A_VALUE"), json!(s.to_ascii_lowercase())]);
    } else if s.contains('/') && !s.contains('.') || key == "prefix" || key == "exact" {
        // Paths and URIs.
        out.extend(["/", "relative", "/a b", "/%zz", "*"].map(|v| json!(v)));
    } else {
        // Hosts, names, ports given as strings.
        out.extend(
            [
                "*",
                "*.example.com",
                "ex*ample.com",
                "UPPER.example.com",
                "under_score",
                "-dash.example.com",
                "trailing.dot.",
                "a..b",
                "ns/host.example.com",
                "./host",
                "host:80",
                "192.168.0.1",
                "0.0.0.0/0",
                "*.",
                "*.*.example.com",
            ]
            .map(|v| json!(v)),
        );
        out.push(json!(format!("{}.example.com", "a".repeat(64))));
        out.push(json!("x".repeat(254)));
    }
    out
}

fn number_values(key: &str) -> Vec<Value> {
    let mut out: Vec<Value> = [json!(0), json!(-1), json!(1.5), json!(4294967296u64)].to_vec();
    let k = key.to_ascii_lowercase();
    if k.contains("port") || k == "number" || k == "targetport" {
        out.extend([json!(65535), json!(65536)]);
    } else if k.contains("percent") || k == "value" || k == "weight" {
        out.extend([json!(100), json!(100.5), json!(101)]);
    } else {
        out.push(json!(2147483648u64));
    }
    out
}

fn ops_for(key: &str, parent: &str, value: &Value, removable: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    if removable {
        ops.push(Op::Remove);
    }
    if MAP_FIELDS.contains(&parent) {
        ops.extend(KEYS.iter().map(|k| Op::RenameKey((*k).to_owned())));
    }
    match value {
        Value::Object(_) => {
            ops.push(Op::AddUnknownField);
            ops.push(Op::Set(json!({})));
        }
        Value::Array(items) => {
            ops.push(Op::Set(json!([])));
            if !items.is_empty() {
                ops.push(Op::DuplicateFirst);
            }
        }
        Value::String(s) => {
            ops.extend(string_values(key, s).into_iter().map(Op::Set));
            if is_enum(s) {
                ops.extend([Op::EnumNumber(0), Op::EnumNumber(99)]);
            } else {
                ops.push(Op::Retyped(json!(7), "string as number"));
            }
        }
        Value::Number(n) => {
            ops.extend(number_values(key).into_iter().map(Op::Set));
            ops.push(Op::Retyped(json!(n.to_string()), "number as string"));
        }
        Value::Bool(b) => ops.extend([
            Op::Set(json!(!b)),
            Op::Retyped(json!(b.to_string()), "bool as string"),
        ]),
        Value::Null => {}
    }
    ops
}

/// Every (path, op) under `value`, with `path` in capstan's notation (`spec.http[0].timeout`);
/// `parent` is the field holding `value` when `value` is one entry of a map field.
fn collect(
    value: &Value,
    path: &str,
    key: &str,
    parent: &str,
    removable: bool,
    out: &mut Vec<(String, Op)>,
) {
    for op in ops_for(key, parent, value, removable) {
        out.push((path.to_owned(), op));
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect(v, &format!("{path}.{k}"), k, key, true, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect(v, &format!("{path}[{i}]"), key, "", true, out);
            }
        }
        _ => {}
    }
}

/// Splits `spec.http[0].timeout` into steps: `spec`, `http`, `0`, `timeout`.
enum Step {
    Key(String),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        out.push(Step::Key(name.to_owned()));
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Step::Index(i));
            }
        }
    }
    out
}

/// Applies `op` at `path`; keys containing `.` or `[` are never produced by Istio's schema, so
/// the textual path is unambiguous.
fn apply(object: &mut Value, path: &str, op: &Op) -> bool {
    let steps = steps(path);
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut cur = object;
    for step in parents {
        cur = match (step, cur) {
            (Step::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Step::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur, op) {
        (Step::Key(k), Value::Object(m), Op::Remove) => m.remove(k).is_some(),
        (Step::Key(k), Value::Object(m), Op::RenameKey(new)) => {
            if m.contains_key(new.as_str()) {
                return false;
            }
            match m.remove(k) {
                Some(v) => {
                    m.insert(new.clone(), v);
                    true
                }
                None => false,
            }
        }
        (Step::Index(i), Value::Array(a), Op::Remove) if *i < a.len() => {
            a.remove(*i);
            true
        }
        (Step::Key(k), Value::Object(m), _) => m.get_mut(k).is_some_and(|t| set(t, op)),
        (Step::Index(i), Value::Array(a), _) => a.get_mut(*i).is_some_and(|t| set(t, op)),
        _ => false,
    }
}

fn set(target: &mut Value, op: &Op) -> bool {
    match (op, target) {
        (Op::Set(v), t) => {
            *t = v.clone();
            true
        }
        (Op::EnumNumber(n), t) => {
            *t = json!(n);
            true
        }
        (Op::Retyped(v, _), t) => {
            *t = v.clone();
            true
        }
        (Op::AddUnknownField, Value::Object(m)) => {
            m.insert("unknownField".into(), json!("x"));
            true
        }
        (Op::DuplicateFirst, Value::Array(a)) if !a.is_empty() => {
            let first = a[0].clone();
            a.push(first);
            true
        }
        _ => false,
    }
}

/// All mutants of `object` (parsed from case `source`), one per (field, operation), with
/// identical results (same kind and spec) removed across calls through `seen`.
pub fn mutants(source: &str, object: &Value, seen: &mut BTreeSet<String>) -> Vec<Mutant> {
    let Some(spec) = object.get("spec") else {
        return Vec::new();
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let mut places = Vec::new();
    collect(spec, "spec", "spec", "", false, &mut places);
    let mut out = Vec::new();
    for (path, op) in places {
        let mut mutated = object.clone();
        if !apply(&mut mutated, &path, &op) {
            continue;
        }
        let key = format!("{kind} {}", mutated["spec"]);
        if !seen.insert(key) {
            continue;
        }
        out.push(Mutant {
            id: format!("fuzz {source} {kind} {path} {}", op.describe()),
            object: mutated,
        });
    }
    out
}

/// Gives an object of a generated batch its unique name, the key of istioctl's batch output;
/// other metadata is kept.
pub fn name(object: &mut Value, name: &str) {
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]["name"] = json!(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutates_each_field_and_dedups() {
        let object = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r"}, "spec": {"hosts": ["r"], "http": [{"timeout": "5s"}]}});
        let mut seen = BTreeSet::new();
        let all = mutants("f#0", &object, &mut seen);
        let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        assert!(
            ids.contains(&"fuzz f#0 VirtualService spec.http[0].timeout = \"-1s\""),
            "{ids:?}"
        );
        assert!(
            ids.contains(&"fuzz f#0 VirtualService spec.hosts removed"),
            "{ids:?}"
        );
        let m = all
            .iter()
            .find(|m| m.id.ends_with("timeout = \"-1s\""))
            .unwrap();
        assert_eq!(m.object["spec"]["http"][0]["timeout"], "-1s");
        assert_eq!(
            object["spec"]["http"][0]["timeout"], "5s",
            "the input is not changed"
        );
        assert!(
            mutants("f#0", &object, &mut seen).is_empty(),
            "a second pass adds nothing new"
        );
    }

    #[test]
    fn shuffles_deterministically() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        SplitMix::new(7).shuffle(&mut a);
        SplitMix::new(7).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
    }
}
