//! The `date` header's value, formatted once a second per thread (as hyper caches it).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An IMF-fixdate is always this long (`Sun, 06 Nov 1994 08:49:37 GMT`).
const LEN: usize = 29;

thread_local! {
    /// The second the value was made for, and the value (a `HeaderValue` so that HTTP/2
    /// responses share its bytes; HTTP/1 heads copy them).
    static CACHED: RefCell<(u64, http::HeaderValue)> =
        const { RefCell::new((u64::MAX, http::HeaderValue::from_static(""))) };
}

/// Runs `f` on the current date's value, remade when the second has changed.
fn with_current<R>(f: impl FnOnce(&http::HeaderValue) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            debug_assert_eq!(s.len(), LEN, "an IMF-fixdate this side of year 10000");
            if let Ok(v) = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(s)) {
                *c = (secs, v);
            }
        }
        f(&c.1)
    })
}

/// Appends the current date as an HTTP date.
pub fn extend(dst: &mut Vec<u8>) {
    with_current(|v| dst.extend_from_slice(v.as_bytes()));
}

/// The current date as a `date` header value (HTTP/2 responses carry it as a header, as hyper
/// added it).
pub fn header_value() -> http::HeaderValue {
    with_current(http::HeaderValue::clone)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_is_an_http_date_of_now() {
        let mut v = Vec::new();
        super::extend(&mut v);
        let s = std::str::from_utf8(&v).expect("ASCII");
        let parsed = httpdate::parse_http_date(s).expect("an HTTP date");
        let age = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(age.as_secs() <= 2, "{s}");
        let mut again = Vec::new();
        super::extend(&mut again);
        assert_eq!(again.len(), 29);
    }

    #[test]
    fn the_header_value_is_the_date_of_now() {
        let v = super::header_value();
        let parsed = httpdate::parse_http_date(v.to_str().expect("ASCII")).expect("an HTTP date");
        let age = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(age.as_secs() <= 2, "{v:?}");
    }
}
