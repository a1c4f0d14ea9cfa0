//! The `date` header's value, formatted once a second per thread (as hyper caches it).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An IMF-fixdate is always this long (`Sun, 06 Nov 1994 08:49:37 GMT`).
const LEN: usize = 29;

thread_local! {
    static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
}

/// Appends the current date as an HTTP date.
pub fn extend(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == LEN {
                c.1.copy_from_slice(s.as_bytes());
                c.0 = secs;
            } else {
                // Not reached for dates this side of year 10000; written uncached if it is.
                dst.extend_from_slice(s.as_bytes());
                return;
            }
        }
        dst.extend_from_slice(&c.1);
    });
}

thread_local! {
    static VALUE: RefCell<(u64, http::HeaderValue)> =
        const { RefCell::new((u64::MAX, http::HeaderValue::from_static(""))) };
}

/// The current date as a `date` header value, made once a second per thread (HTTP/2
/// responses carry it as a header, as hyper added it).
pub fn header_value() -> http::HeaderValue {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    VALUE.with(|v| {
        let mut v = v.borrow_mut();
        if v.0 != secs {
            let mut s = Vec::with_capacity(LEN);
            extend(&mut s);
            if let Ok(h) = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(s)) {
                *v = (secs, h);
            }
        }
        v.1.clone()
    })
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
