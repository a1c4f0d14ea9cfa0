//! What Envoy's TLS and HTTP inspector listener filters learn from a connection's first bytes:
//! TLS or not, the ClientHello's SNI and ALPN, plaintext HTTP/1.x or h2c. Pure functions over a
//! byte prefix; the caller reads more while they answer [`Sniff::NeedMore`].

/// The most bytes the inspectors look at (Envoy's TLS inspector reads at most 64 KiB; a
/// ClientHello fits well inside 16 KiB in practice, as does an HTTP/1 request line).
pub const MAX_PEEK: usize = 16 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An inspector's verdict on the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff<T> {
    /// Not enough bytes yet.
    NeedMore,
    /// The protocol is not this inspector's.
    No,
    /// Detected.
    Yes(T),
}

/// What the TLS inspector reads from a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name, lower-cased.
    pub server_name: Option<String>,
    /// The ALPN protocols offered.
    pub alpn: Vec<String>,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Inspects a connection's first bytes for a TLS ClientHello (first record only).
pub fn tls(buf: &[u8]) -> Sniff<ClientHello> {
    // Record header: handshake (22), legacy version 3.x.
    match buf {
        [] => return Sniff::NeedMore,
        [0x16] | [0x16, 0x03] | [0x16, 0x03, _] | [0x16, 0x03, _, _] => return Sniff::NeedMore,
        [0x16, 0x03, minor, ..] if *minor <= 0x04 => {}
        _ => return Sniff::No,
    }
    let record_len = usize::from(buf[3]) << 8 | usize::from(buf[4]);
    let Some(record) = buf.get(5..5 + record_len) else {
        return if 5 + record_len > MAX_PEEK {
            Sniff::No
        } else {
            Sniff::NeedMore
        };
    };
    match client_hello(record) {
        Some(hello) => Sniff::Yes(hello),
        None => Sniff::No,
    }
}

fn client_hello(record: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { buf: record };
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut r = Reader { buf: r.take(len)? };
    r.take(2 + 32)?; // client_version, random
    r.vec8()?; // session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // compression_methods
    let mut hello = ClientHello::default();
    if r.buf.is_empty() {
        return Some(hello); // no extensions
    }
    let mut ext = Reader { buf: r.vec16()? };
    while !ext.buf.is_empty() {
        let kind = ext.u16()?;
        let mut body = Reader { buf: ext.vec16()? };
        match kind {
            0 => {
                let mut list = Reader { buf: body.vec16()? };
                while !list.buf.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        let name = std::str::from_utf8(name).ok()?;
                        hello.server_name = Some(name.to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader { buf: body.vec16()? };
                while !list.buf.is_empty() {
                    let proto = list.vec8()?;
                    hello.alpn.push(String::from_utf8_lossy(proto).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// Inspects a connection's first bytes for plaintext HTTP: `h2c` (the HTTP/2 connection
/// preface), `http/1.1` or `http/1.0` (a request line), as Envoy's HTTP inspector reports them.
pub fn http(buf: &[u8]) -> Sniff<&'static str> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Sniff::Yes("h2c")
        } else {
            Sniff::NeedMore
        };
    }
    // Envoy's HTTP inspector ends the request line at the first CR or LF: a line-based
    // protocol's bare-LF line is decided at once instead of waiting for bytes that never come.
    let line_end = buf.iter().position(|b| *b == b'\r' || *b == b'\n');
    let line = match line_end {
        Some(end) => &buf[..end],
        None if buf.len() >= MAX_PEEK => return Sniff::No,
        None => buf,
    };
    // method SP target SP version
    let mut parts = line.splitn(3, |b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.is_empty() || !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-') {
        return Sniff::No;
    }
    let (Some(target), Some(version)) = (parts.next(), parts.next()) else {
        return if line_end.is_some() {
            Sniff::No
        } else {
            Sniff::NeedMore
        };
    };
    if target.is_empty() || target.iter().any(|b| b.is_ascii_control()) {
        return Sniff::No;
    }
    match (line_end, version) {
        (Some(_), b"HTTP/1.1") => Sniff::Yes("http/1.1"),
        (Some(_), b"HTTP/1.0") => Sniff::Yes("http/1.0"),
        (Some(_), _) => Sniff::No,
        (None, v) if b"HTTP/1.1".starts_with(v) || b"HTTP/1.0".starts_with(v) => Sniff::NeedMore,
        (None, _) => Sniff::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with SNI and ALPN, built by hand from RFC 8446's layout.
    fn client_hello_bytes(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let mut ext = Vec::new();
        let mut name = vec![0u8];
        name.extend((sni.len() as u16).to_be_bytes());
        name.extend(sni.as_bytes());
        let mut sni_body = (name.len() as u16).to_be_bytes().to_vec();
        sni_body.extend(name);
        ext.extend(0u16.to_be_bytes());
        ext.extend((sni_body.len() as u16).to_be_bytes());
        ext.extend(sni_body);
        let mut protos = Vec::new();
        for p in alpn {
            protos.push(p.len() as u8);
            protos.extend(p.as_bytes());
        }
        let mut alpn_body = (protos.len() as u16).to_be_bytes().to_vec();
        alpn_body.extend(protos);
        ext.extend(16u16.to_be_bytes());
        ext.extend((alpn_body.len() as u16).to_be_bytes());
        ext.extend(alpn_body);

        let mut hello = vec![0x03, 0x03];
        hello.extend([7u8; 32]);
        hello.push(0); // session id
        hello.extend([0, 2, 0x13, 0x01]); // one cipher suite
        hello.extend([1, 0]); // null compression
        hello.extend((ext.len() as u16).to_be_bytes());
        hello.extend(ext);
        let mut hs = vec![1u8];
        hs.extend(&(hello.len() as u32).to_be_bytes()[1..]);
        hs.extend(hello);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn tls_client_hello() {
        let bytes = client_hello_bytes("Reviews.Example.com", &["h2", "http/1.1"]);
        let want = ClientHello {
            server_name: Some("reviews.example.com".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
        };
        assert_eq!(tls(&bytes), Sniff::Yes(want));
        for cut in [0, 1, 3, 5, 20, bytes.len() - 1] {
            assert_eq!(tls(&bytes[..cut]), Sniff::NeedMore, "cut at {cut}");
        }
        assert_eq!(tls(b"GET / HTTP/1.1\r\n"), Sniff::No);
        assert_eq!(
            tls(&[0x16, 0x03, 0x01, 0x00, 0x05, 2, 0, 0, 1, 0]),
            Sniff::No
        );
        // Truncated inside the extensions: not a ClientHello we can read.
        let mut broken = bytes.clone();
        let len = broken.len();
        broken[len - 9] = 0xff; // the last ALPN entry's length
        assert_eq!(tls(&broken), Sniff::No);
    }

    #[test]
    fn http_detection() {
        let cases: &[(&[u8], Sniff<&str>)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Sniff::Yes("http/1.1")),
            (b"POST /x?y=1 HTTP/1.0\r\n", Sniff::Yes("http/1.0")),
            (b"GET / HTTP/1.1", Sniff::NeedMore),
            (b"GET /", Sniff::NeedMore),
            (b"G", Sniff::NeedMore),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Sniff::Yes("h2c")),
            (b"PRI * HTTP/2", Sniff::NeedMore),
            (b"GET / HTTP/2.0\r\n", Sniff::No),
            (b"\x00\x01binary", Sniff::No),
            (b"hello world\r\n", Sniff::No),
            (b"SSH-2.0-OpenSSH\r\n", Sniff::No),
            (b"HELLO WORLD\n", Sniff::No),
            (b"SET key\n", Sniff::No),
            (b"GET / HTTP/1.1\r", Sniff::Yes("http/1.1")),
        ];
        for (input, want) in cases {
            assert_eq!(&http(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }
}
