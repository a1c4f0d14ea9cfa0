//! `creationTimestamp` (RFC 3339 text) to `google.protobuf.Timestamp` and back, for the MCP
//! metadata's `create_time`. Kubernetes writes `2024-05-01T10:00:00Z`; that form round-trips
//! to the same text, which matters because generation orders policies by comparing the text.

use envoy_types::pb::google::protobuf::Timestamp;

/// Days from 1970-01-01 to the civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    // ASCII only, so that slicing at fixed offsets stays on character boundaries.
    if !text.is_ascii()
        || b.len() < 20
        || !matches!(b[10], b'T' | b't')
        || b[4] != b'-'
        || b[7] != b'-'
    {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i64::from(digits(&text[0..4])?);
    let month = digits(&text[5..7])?;
    let day = digits(&text[8..10])?;
    let (hour, minute, second) = (
        digits(&text[11..13])?,
        digits(&text[14..16])?,
        digits(&text[17..19])?,
    );
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 || end > 9 {
            return None;
        }
        nanos = digits(&fraction[..end])? * 10u32.pow(9 - end as u32);
        rest = &fraction[end..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m) = (digits(h)?, digits(m)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * i64::from(h * 3600 + m * 60)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_seconds;
    Some(Timestamp {
        seconds,
        nanos: nanos as i32,
    })
}

/// Formats as UTC RFC 3339, with a fraction only when there is one (Go's `RFC3339Nano`).
/// `None` for a timestamp outside years 1 to 9999 or with invalid nanoseconds.
pub fn format_rfc3339(ts: &Timestamp) -> Option<String> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if ts.nanos != 0 {
        let fraction = format!("{:09}", ts.nanos);
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_timestamps_round_trip_to_the_same_text() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2000-03-01T12:30:05Z",
            "1969-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2024-05-01T10:00:00.5Z",
            "2024-05-01T10:00:00.123456789Z",
        ] {
            let ts = parse_rfc3339(text).unwrap_or_else(|| panic!("{text} parses"));
            assert_eq!(format_rfc3339(&ts).as_deref(), Some(text));
        }
        assert_eq!(
            parse_rfc3339("1970-01-02T00:00:01Z"),
            Some(Timestamp {
                seconds: 86_401,
                nanos: 0
            })
        );
    }

    #[test]
    fn offsets_become_utc_and_garbage_is_refused() {
        let ts = parse_rfc3339("2024-05-01T12:00:00+02:00").expect("offset");
        assert_eq!(format_rfc3339(&ts).as_deref(), Some("2024-05-01T10:00:00Z"));
        let ts = parse_rfc3339("2024-05-01T00:30:00-01:00").expect("negative offset");
        assert_eq!(format_rfc3339(&ts).as_deref(), Some("2024-05-01T01:30:00Z"));
        for bad in [
            "",
            "yesterday",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01 10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00.1234567890Z",
            "2024-05-01T10:00:00+0200",
            "0000-01-01T00:00:00Z",
            "+024-05-01T10:00:00Z",
            "2024-05-01T10:00:00Zé",
            "2024-05-01Té0:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert_eq!(
            format_rfc3339(&Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
    }
}
