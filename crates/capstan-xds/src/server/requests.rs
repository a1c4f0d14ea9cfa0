//! The request side of an ADS stream: gRPC length-prefixed messages read from the HTTP/2
//! request body and decoded with prost.
//!
//! tonic's `Streaming` would do the same, but keeps a read buffer as large as the largest
//! request for the life of the stream; an Envoy subscribing to a few thousand EDS clusters
//! sends a request of ~100 KiB once, and a thousand streams would keep 100 MiB of buffers.
//! Here a large buffer is dropped as soon as it has been consumed.

use bytes::{Buf, BytesMut};
use http_body::Body;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tonic::codegen::StdError;
use tonic::Status;

/// gRPC message header: compression flag and big-endian length.
const HEADER: usize = 5;
/// Read buffers up to this capacity are kept between messages.
const KEEP: usize = 16 * 1024;

/// Decoded requests of one stream.
pub(crate) struct Requests<R> {
    body: Pin<Box<dyn Body<Data = bytes::Bytes, Error = StdError> + Send + 'static>>,
    buf: BytesMut,
    max_message: usize,
    done: bool,
    /// Raised to the length of every message decoded (istiod's `pilot_xds_recv_max`).
    largest: Option<Arc<AtomicU64>>,
    _message: PhantomData<fn() -> R>,
}

impl<R: prost::Message + Default> Requests<R> {
    /// Reads `body`, refusing messages longer than `max_message` bytes.
    pub fn new<B>(body: B, max_message: usize) -> Requests<R>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<StdError>,
    {
        use http_body_util::BodyExt;
        let body = body
            .map_frame(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
            .map_err(Into::into);
        Requests {
            body: Box::pin(body),
            buf: BytesMut::new(),
            max_message,
            done: false,
            largest: None,
            _message: PhantomData,
        }
    }

    /// Also raises `largest` to the length of each message decoded.
    pub fn recording_largest(mut self, largest: Arc<AtomicU64>) -> Requests<R> {
        self.largest = Some(largest);
        self
    }

    /// A complete message at the start of the buffer, if there is one.
    fn decode_buffered(&mut self) -> Result<Option<R>, Status> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not accepted (no grpc-encoding is announced)",
            ));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max_message {
            return Err(Status::resource_exhausted(format!(
                "request of {len} bytes; at most {} are accepted",
                self.max_message
            )));
        }
        if self.buf.len() < HEADER + len {
            self.buf.reserve(HEADER + len - self.buf.len());
            return Ok(None);
        }
        if let Some(largest) = &self.largest {
            largest.fetch_max(len as u64, Ordering::Relaxed);
        }
        self.buf.advance(HEADER);
        let message = self.buf.split_to(len);
        let decoded = R::decode(message.freeze())
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
        // Keep what follows the message, not the large allocation it came in. An emptied
        // buffer is still a view into that allocation (with no visible capacity): drop it too,
        // or the allocation lives until the next request happens to reuse it.
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        } else if self.buf.capacity() > KEEP && self.buf.len() <= KEEP {
            self.buf = BytesMut::from(&self.buf[..]);
        }
        Ok(Some(decoded))
    }

    /// The next request; `None` when the client ended the stream. Cancel-safe: what was read
    /// stays buffered for the next call.
    pub async fn message(&mut self) -> Result<Option<R>, Status> {
        loop {
            if let Some(message) = self.decode_buffered()? {
                return Ok(Some(message));
            }
            if self.done {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::internal(
                        "the request stream ended inside a message",
                    ))
                };
            }
            let frame = std::future::poll_fn(|cx| self.body.as_mut().poll_frame(cx)).await;
            match frame {
                None => self.done = true,
                Some(Err(e)) => return Err(Status::unavailable(format!("request stream: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use http_body_util::StreamBody;
    use prost::Message;

    fn framed(m: &DiscoveryRequest) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn requests(chunks: Vec<Vec<u8>>, max: usize) -> Requests<DiscoveryRequest> {
        let frames = chunks.into_iter().map(|c| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(c)))
        });
        Requests::new(StreamBody::new(tokio_stream::iter(frames)), max)
    }

    #[tokio::test]
    async fn messages_split_across_and_packed_in_frames_decode() {
        let a = DiscoveryRequest {
            type_url: "a".into(),
            resource_names: (0..5000).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..DiscoveryRequest::default()
        };
        let b = DiscoveryRequest {
            type_url: "b".into(),
            ..DiscoveryRequest::default()
        };
        let mut all = framed(&a);
        all.extend(framed(&b));
        all.extend(framed(&b));
        // Cut into uneven chunks: a header split, a message split, two messages in one.
        let chunks: Vec<Vec<u8>> = all.chunks(7919).map(<[u8]>::to_vec).collect();
        let mut r = requests(chunks, usize::MAX);
        assert_eq!(r.message().await.unwrap(), Some(a.clone()));
        assert!(r.buf.capacity() <= KEEP, "a large read buffer is not kept");
        assert_eq!(r.message().await.unwrap(), Some(b.clone()));
        assert_eq!(r.message().await.unwrap(), Some(b));
        assert_eq!(r.message().await.unwrap(), None);
        // A message alone in its buffer: nothing of its allocation is held once decoded.
        let mut alone = requests(vec![framed(&a)], usize::MAX);
        assert_eq!(alone.message().await.unwrap(), Some(a));
        assert!(
            !alone.buf.try_reclaim(KEEP + 1),
            "the large allocation is not held behind an empty view"
        );
    }

    #[tokio::test]
    async fn bad_streams_get_clear_errors() {
        let big = framed(&DiscoveryRequest {
            type_url: "x".repeat(100),
            ..DiscoveryRequest::default()
        });
        let e = requests(vec![big.clone()], 10).message().await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        let mut compressed = big.clone();
        compressed[0] = 1;
        let e = requests(vec![compressed], 1000)
            .message()
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        let e = requests(vec![big[..20].to_vec()], 1000)
            .message()
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        let mut garbage = vec![0u8, 0, 0, 0, 3];
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        let e = requests(vec![garbage], 1000).message().await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
