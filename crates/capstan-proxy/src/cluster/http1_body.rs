//! The response body of an upstream request ([`UpstreamBody`]): hyper's body, or one read by
//! the proxy's codec off the connection it holds; either gives its HTTP/1.1 connection back to
//! the pool ([`super::Http1Pool`]) when it ends.

use super::{Conn, Http1Pool, Key, Kind};
use crate::cluster::http1_codec::decode::Decoder;
use crate::cluster::http1_codec::Connection;
use crate::cluster::http1_link::Link;
use crate::cluster::pool::Tracked;
use crate::http::{BoxBody, BoxError};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};

/// hyper's connection a response holds until its body ends.
pub(super) struct Returning {
    pub(super) pool: Weak<Http1Pool>,
    pub(super) key: Key,
    pub(super) tx: SendRequest<BoxBody>,
    pub(super) io: Link,
    /// Requests sent on it so far.
    pub(super) uses: u32,
}

/// The codec's connection a response holds until its body ends.
pub(super) struct OwnReturning {
    pub(super) pool: Weak<Http1Pool>,
    pub(super) key: Key,
    pub(super) conn: Box<Connection<Tracked>>,
    /// Requests sent on it so far.
    pub(super) uses: u32,
}

/// An upstream response body; an HTTP/1.1 one puts its connection back in the pool when it ends.
pub struct UpstreamBody(pub(super) Inner);

pub(super) enum Inner {
    /// hyper's body (HTTP/2, or an HTTP/1.1 connection hyper took over).
    Hyper {
        body: Incoming,
        conn: Option<Returning>,
    },
    /// The codec's: read off the connection it holds (None once given back or failed).
    Own {
        decoder: Decoder,
        conn: Option<OwnReturning>,
    },
}

impl UpstreamBody {
    /// A body with no pooled connection to give back (HTTP/2).
    pub fn new(body: Incoming) -> UpstreamBody {
        UpstreamBody(Inner::Hyper { body, conn: None })
    }

    pub(super) fn release(&mut self) {
        match &mut self.0 {
            Inner::Hyper { conn, .. } => {
                if let Some(r) = conn.take() {
                    if let Some(pool) = r.pool.upgrade() {
                        let conn = Conn {
                            kind: Kind::Hyper { tx: r.tx, io: r.io },
                            uses: r.uses,
                        };
                        pool.release(r.key, conn);
                    }
                }
            }
            Inner::Own { conn, .. } => {
                if let Some(r) = conn.take() {
                    if let Some(pool) = r.pool.upgrade() {
                        let conn = Conn {
                            kind: Kind::Own(r.conn),
                            uses: r.uses,
                        };
                        pool.release(r.key, conn);
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Hyper { body, .. } => f.debug_tuple("UpstreamBody").field(body).finish(),
            Inner::Own { decoder, .. } => f.debug_tuple("UpstreamBody").field(decoder).finish(),
        }
    }
}

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let end = match &mut self.0 {
            Inner::Hyper { body, conn } => {
                let r = match conn.as_mut() {
                    None => Pin::new(&mut *body).poll_frame(cx),
                    // The body is fed by the connection, driven here while the body waits.
                    Some(r) => {
                        let r =
                            r.io.drive(cx, true, |cx| Pin::new(&mut *body).poll_frame(cx));
                        if conn.as_ref().is_some_and(|c| c.io.ended()) {
                            *conn = None;
                        }
                        r
                    }
                };
                let end = match &r {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    // An errored body's connection is closed.
                    Poll::Ready(Some(Err(_))) => {
                        *conn = None;
                        false
                    }
                    Poll::Pending => false,
                };
                (end, r.map_err(|e| -> BoxError { Box::new(e) }))
            }
            Inner::Own { decoder, conn } => {
                let Some(r) = conn.as_mut() else {
                    return Poll::Ready(None);
                };
                let r = r.conn.poll_body(cx, decoder);
                let end = match &r {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => decoder.is_end(),
                    // An errored body's connection is closed.
                    Poll::Ready(Some(Err(_))) => {
                        *conn = None;
                        false
                    }
                    Poll::Pending => false,
                };
                (end, r.map_err(|e| -> BoxError { Box::new(e) }))
            }
        };
        let (end, r) = end;
        if end {
            self.release();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Own { decoder, .. } => decoder.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Own { decoder, .. } => decoder
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.release();
        }
    }
}
