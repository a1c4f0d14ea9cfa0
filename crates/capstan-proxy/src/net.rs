//! Socket helpers: a connection's original destination (`SO_ORIGINAL_DST`, set by an iptables
//! REDIRECT as Istio's init container installs), and a stream that replays the bytes the
//! listener filters already read.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const SO_ORIGINAL_DST: libc::c_int = 80;
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination a redirected connection was made to, or `None` when the connection was not
/// redirected (the kernel has no NAT entry for it).
pub fn original_dst(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let fd = stream.as_raw_fd();
    let local = stream.local_addr().ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed sockaddr storage we own,
    // and `fd` is a live socket borrowed from `stream` for the duration of the call.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let (level, opt) = if local.is_ipv4() {
            (libc::SOL_IP, SO_ORIGINAL_DST)
        } else {
            (libc::SOL_IPV6, IP6T_SO_ORIGINAL_DST)
        };
        let rc = libc::getsockopt(
            fd,
            level,
            opt,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        );
        if rc != 0 {
            return None;
        }
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                let sin = *(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 =
                    *(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    0,
                    0,
                )))
            }
            _ => None,
        }
    }
}

/// Moves an empty buffer's start back to the start of its allocation, if nothing else shares
/// the allocation (no copy, no allocation: `try_reclaim` asked for more than the room left
/// only reclaims what is before the start). A connection's read or write buffer that keeps
/// advancing through its allocation touches a cold cache line for each small message; rewound
/// whenever it is empty, it reuses the lines the last message warmed.
pub fn rewind(buf: &mut bytes::BytesMut) {
    debug_assert!(buf.is_empty());
    let _ = buf.try_reclaim(buf.capacity() + 1);
}

/// A stream whose first bytes were already read (by the listener filters): reads return them
/// first, then the stream's own.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: bytes::Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: bytes::Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }

    /// The bytes still to be replayed before `inner`'s.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The bytes still to be replayed, and the stream after them.
    pub fn into_parts(self) -> (bytes::Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn rewind_starts_an_unshared_buffer_over() {
        let mut buf = bytes::BytesMut::with_capacity(4096);
        let start = buf.as_ptr();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(buf.len()).freeze();
        // Shared with the head still alive: left as it is.
        rewind(&mut buf);
        assert_ne!(buf.as_ptr(), start);
        drop(head);
        rewind(&mut buf);
        assert_eq!(buf.as_ptr(), start);
        assert!(buf.capacity() >= 4096, "the whole allocation again");
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(bytes::Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn not_redirected_has_no_original_dst() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        // Without conntrack there is no entry; with it, the entry's destination is unchanged.
        let got = original_dst(&s);
        assert!(got.is_none() || got == Some(addr), "{got:?}");
    }
}
