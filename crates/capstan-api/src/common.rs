//! Types shared by several Istio kinds: durations, percentages, string matches,
//! workload and port selectors.

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// A `google.protobuf.Duration`. Accepts the protobuf JSON form (`1.5s`) and the Go
/// forms Istio's YAML also accepts (`100ms`, `1m30s`, `2h`); serializes as protobuf
/// JSON (`1.500s`), which parses back to the same value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    /// Whole seconds (may be negative, as in protobuf).
    pub seconds: i64,
    /// Nanoseconds, same sign as `seconds`, |nanos| < 1e9.
    pub nanos: i32,
}

/// Why a duration string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationParseError {
    input: String,
    reason: &'static str,
}

impl Duration {
    /// A duration of whole milliseconds.
    pub const fn from_millis(ms: i64) -> Duration {
        Duration {
            seconds: ms / 1000,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        }
    }

    /// A duration of whole seconds.
    pub const fn from_secs(s: i64) -> Duration {
        Duration {
            seconds: s,
            nanos: 0,
        }
    }

    /// Total nanoseconds (saturating at the i128 range, which a Duration cannot exceed).
    pub fn as_nanos(&self) -> i128 {
        self.seconds as i128 * 1_000_000_000 + self.nanos as i128
    }

    /// Builds a duration from total nanoseconds.
    pub fn from_nanos(total: i128) -> Option<Duration> {
        let seconds = i64::try_from(total / 1_000_000_000).ok()?;
        let nanos = (total % 1_000_000_000) as i32;
        Some(Duration { seconds, nanos })
    }

    /// Converts to `std::time::Duration`; `None` when negative.
    pub fn to_std(&self) -> Option<std::time::Duration> {
        if self.seconds < 0 || self.nanos < 0 {
            return None;
        }
        Some(std::time::Duration::new(
            self.seconds as u64,
            self.nanos as u32,
        ))
    }

    /// Parses `1.5s`, `100ms`, `1h2m3s`, `-2s`, `10us`, `5ns`.
    pub fn parse(input: &str) -> Result<Duration, DurationParseError> {
        let err = |reason| DurationParseError {
            input: input.to_string(),
            reason,
        };
        let mut s = input.trim();
        if s.is_empty() {
            return Err(err("empty string"));
        }
        let negative = if let Some(rest) = s.strip_prefix('-') {
            s = rest;
            true
        } else {
            s = s.strip_prefix('+').unwrap_or(s);
            false
        };
        if s == "0" {
            return Ok(Duration::default());
        }
        // protobuf caps durations at 10,000 years; anything near i128 overflow is rejected.
        const MAX_NANOS: i128 = 315_576_000_000 * 1_000_000_000;
        let mut total: i128 = 0;
        let mut rest = s;
        if rest.is_empty() {
            return Err(err("missing number"));
        }
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let (number, after) = rest.split_at(num_len);
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            let unit_nanos: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(err("missing unit (use s, ms, us, ns, m or h)")),
                _ => return Err(err("unknown unit (use s, ms, us, ns, m or h)")),
            };
            let (whole, frac) = match number.split_once('.') {
                Some((w, f)) => (w, f),
                None => (number, ""),
            };
            if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
                return Err(err("malformed number"));
            }
            if whole.len() > 20 || frac.len() > 18 {
                return Err(err("number too long"));
            }
            let whole_val: i128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| err("malformed number"))?
            };
            let mut value = whole_val
                .checked_mul(unit_nanos)
                .ok_or_else(|| err("out of range"))?;
            if !frac.is_empty() {
                let frac_val: i128 = frac.parse().map_err(|_| err("malformed number"))?;
                let scale = 10i128.pow(frac.len() as u32);
                value += frac_val * unit_nanos / scale;
            }
            total = total
                .checked_add(value)
                .ok_or_else(|| err("out of range"))?;
            if total > MAX_NANOS {
                return Err(err("out of range (max 10000 years)"));
            }
            rest = next;
        }
        if negative {
            total = -total;
        }
        Duration::from_nanos(total).ok_or_else(|| err("out of range"))
    }
}

impl fmt::Display for Duration {
    /// Protobuf JSON form: seconds with 0, 3, 6 or 9 fractional digits and an `s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.as_nanos();
        let sign = if total < 0 { "-" } else { "" };
        let abs = total.unsigned_abs();
        let secs = abs / 1_000_000_000;
        let nanos = abs % 1_000_000_000;
        if nanos == 0 {
            write!(f, "{sign}{secs}s")
        } else if nanos % 1_000_000 == 0 {
            write!(f, "{sign}{secs}.{:03}s", nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            write!(f, "{sign}{secs}.{:06}s", nanos / 1_000)
        } else {
            write!(f, "{sign}{secs}.{nanos:09}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"1.5s\" or \"100ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "description": "Duration such as 1.5s or 100ms." })
    }
    fn inline_schema() -> bool {
        true
    }
}

/// A uint64/int64 field: protobuf JSON writes these as strings, but numbers are accepted too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct U64(pub u64);

impl Serialize for U64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = U64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer (number or string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<U64, E> {
                Ok(U64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<U64, E> {
                u64::try_from(v)
                    .map(U64)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<U64, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < 1.8e19 {
                    Ok(U64(v as u64))
                } else {
                    Err(E::custom(format!("{v} is not a non-negative integer")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<U64, E> {
                v.parse()
                    .map(U64)
                    .map_err(|_| E::custom(format!("{v:?} is not a non-negative integer")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for U64 {
    fn schema_name() -> Cow<'static, str> {
        "U64".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
    fn inline_schema() -> bool {
        true
    }
}

/// `istio.networking.v1alpha3.Percent`: a percentage in the range 0.0 to 100.0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// The percentage.
    #[serde(default)]
    pub value: f64,
}

/// `StringMatch`: exactly one of `exact`, `prefix` or `regex` (RE2 syntax).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    /// Exact string match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `WorkloadSelector`: labels that select the workloads a resource applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a workload must carry (all of them).
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `istio.networking.v1alpha3.WorkloadSelector` (Sidecar, ServiceEntry): note the field is
/// `labels`, unlike the `matchLabels` of [`WorkloadSelector`] used by security kinds and DestinationRule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkingWorkloadSelector {
    /// Labels a workload must carry (all of them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `PortSelector`: a port by number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    #[serde(default)]
    pub number: u32,
}

/// gRPC status code names, indexed by code (`UNAVAILABLE` is 14): what `fault.abort.grpcStatus`
/// accepts and what generation turns into a numeric code.
pub const GRPC_STATUS_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Label map as used throughout Istio (`map<string, string>`).
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_and_protobuf_forms() {
        assert_eq!(
            Duration::parse("1.5s").unwrap(),
            Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            Duration::parse("100ms").unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(Duration::parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(Duration::parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            Duration::parse("10us").unwrap(),
            Duration {
                seconds: 0,
                nanos: 10_000
            }
        );
        assert_eq!(
            Duration::parse("-2s").unwrap(),
            Duration {
                seconds: -2,
                nanos: 0
            }
        );
        assert_eq!(Duration::parse("0").unwrap(), Duration::default());
        assert_eq!(Duration::parse(".5s").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "s",
            "10",
            "1x",
            "1.2.3s",
            "--1s",
            "1s2",
            "99999999999999999999999h",
            "abc",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn displays_protobuf_json_and_round_trips() {
        for (input, shown) in [
            ("1.5s", "1.500s"),
            ("100ms", "0.100s"),
            ("3m", "180s"),
            ("1us", "0.000001s"),
            ("5ns", "0.000000005s"),
            ("-1.5s", "-1.500s"),
        ] {
            let d = Duration::parse(input).unwrap();
            assert_eq!(d.to_string(), shown);
            assert_eq!(Duration::parse(shown).unwrap(), d);
        }
    }

    #[test]
    fn u64_accepts_numbers_and_strings() {
        let a: U64 = serde_json::from_str("1024").unwrap();
        let b: U64 = serde_json::from_str("\"1024\"").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<U64>("-1").is_err());
    }
}
