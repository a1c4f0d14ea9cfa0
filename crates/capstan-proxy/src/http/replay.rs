//! The request body of a retriable or mirrored request whose length is unknown or over the
//! buffer limit (every gRPC call, chunked uploads). Envoy's router buffers such a body while it
//! streams it upstream, up to the connection's buffer limit, so that a retry can replay it and a
//! shadow can be sent once it is complete; past the limit it gives up both and counts
//! `retry_or_shadow_abandoned` (`Router::Filter::decodeData`).
//!
//! [`Replay::new`] gives the first attempt's body: it reads the downstream body only as the
//! upstream asks for it (a stream that never ends still flows) and records each frame.
//! [`Replay::retry`] supersedes the attempt in flight — its next read fails, so it stops
//! consuming the downstream body and its upstream stream is reset — and gives a body that
//! replays the record, then reads on from where the superseded attempt left off.
//! [`Replay::complete`] gives a mirror the whole body once the downstream body has ended.

use super::{BoxBody, BoxError};
use crate::stats::ClusterStats;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::sync::oneshot;

const LOCK: &str = "replay lock is never poisoned: no panics under it";

/// One frame of the downstream body, as recorded.
#[derive(Clone)]
enum Recorded {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Recorded {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Recorded::Data(d) => Frame::data(d.clone()),
            Recorded::Trailers(t) => Frame::trailers(t.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Frames are recorded: retries and mirrors are possible.
    Recording,
    /// The body outgrew the limit: the record is gone and the attempt in flight streams the
    /// rest; no retry, no mirror.
    Overflowed,
    /// Nobody needs the record any more (the router is done retrying, mirrors have theirs).
    Released,
}

/// What the attempts of one request share.
struct Shared {
    /// The downstream body; None once it has ended or failed.
    source: Option<BoxBody>,
    /// The downstream body failed: nothing is left to replay.
    failed: bool,
    mode: Mode,
    /// The frames read so far (while recording).
    recorded: Vec<Recorded>,
    recorded_bytes: usize,
    limit: usize,
    /// The attempt allowed to read; an older one fails on its next read.
    current: u64,
    /// How many recorded frames the current attempt has been given.
    position: usize,
    /// The current attempt's waker while it waits for the downstream body, woken when it is
    /// superseded so that it fails (and its upstream stream is reset) at once.
    waiting: Option<Waker>,
    /// The router may still ask for another attempt.
    retrying: bool,
    /// Mirrors waiting for the complete body.
    mirrors: Vec<oneshot::Sender<Vec<Recorded>>>,
    /// Where `retry_or_shadow_abandoned` is counted.
    stats: Arc<ClusterStats>,
}

impl Shared {
    /// The next frame of the downstream body, recorded while recording.
    fn poll_source(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(source) = self.source.as_mut() else {
            return Poll::Ready(
                self.failed
                    .then(|| Err(BoxError::from("downstream request body failed"))),
            );
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => {
                self.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(None) => {
                self.source = None;
                self.ended();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.source = None;
                self.failed = true;
                self.mirrors.clear();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.record(&frame);
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn record(&mut self, frame: &Frame<Bytes>) {
        if self.mode != Mode::Recording {
            return;
        }
        let r = if let Some(d) = frame.data_ref() {
            if self.recorded_bytes + d.len() > self.limit {
                self.overflow();
                return;
            }
            self.recorded_bytes += d.len();
            Recorded::Data(d.clone())
        } else if let Some(t) = frame.trailers_ref() {
            Recorded::Trailers(t.clone())
        } else {
            return;
        };
        self.recorded.push(r);
        self.position = self.recorded.len();
    }

    fn overflow(&mut self) {
        self.stats.retry_or_shadow_abandoned.inc();
        self.mode = Mode::Overflowed;
        self.recorded = Vec::new();
        self.mirrors.clear();
    }

    /// The downstream body has ended: mirrors get it.
    fn ended(&mut self) {
        if self.mode == Mode::Recording {
            for m in self.mirrors.drain(..) {
                let _ = m.send(self.recorded.clone());
            }
        }
        self.release_if_unneeded();
    }

    /// Drops the record once neither a retry nor a mirror can use it and the current attempt
    /// has replayed all of it.
    fn release_if_unneeded(&mut self) {
        if self.mode == Mode::Recording
            && !self.retrying
            && self.mirrors.is_empty()
            && self.position == self.recorded.len()
        {
            self.mode = Mode::Released;
            self.recorded = Vec::new();
        }
    }
}

/// The router's handle on a replayable request body; dropping it ends retries.
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
}

impl Replay {
    /// Wraps the downstream body `source`, recording up to `limit` bytes (counted in `stats`
    /// when exceeded); returns the handle and the first attempt's body.
    pub fn new(source: BoxBody, limit: usize, stats: Arc<ClusterStats>) -> (Replay, BoxBody) {
        let shared = Arc::new(Mutex::new(Shared {
            source: Some(source),
            failed: false,
            mode: Mode::Recording,
            recorded: Vec::new(),
            recorded_bytes: 0,
            limit,
            current: 0,
            position: 0,
            waiting: None,
            retrying: true,
            mirrors: Vec::new(),
            stats,
        }));
        let first = Attempt {
            shared: shared.clone(),
            id: 0,
        };
        (Replay { shared }, first.boxed())
    }

    /// Whether another attempt could still get the whole body.
    pub fn replayable(&self) -> bool {
        let s = self.shared.lock().expect(LOCK);
        s.mode == Mode::Recording && !s.failed
    }

    /// The body of the next attempt, superseding the one in flight; None when the body can no
    /// longer be replayed (it outgrew the limit, or the downstream body failed).
    pub fn retry(&self) -> Option<BoxBody> {
        let mut s = self.shared.lock().expect(LOCK);
        if s.mode != Mode::Recording || s.failed {
            return None;
        }
        s.current += 1;
        s.position = 0;
        let id = s.current;
        let superseded = s.waiting.take();
        drop(s);
        if let Some(w) = superseded {
            w.wake();
        }
        Some(
            Attempt {
                shared: self.shared.clone(),
                id,
            }
            .boxed(),
        )
    }

    /// The whole body once the downstream body has ended, for a mirror; None when it outgrew
    /// the limit, failed, or was abandoned before its end.
    pub fn complete(&self) -> impl Future<Output = Option<BoxBody>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.shared.lock().expect(LOCK);
            if s.mode == Mode::Recording && !s.failed {
                if s.source.is_none() {
                    let _ = tx.send(s.recorded.clone());
                } else {
                    s.mirrors.push(tx);
                }
            }
        }
        async move {
            let frames = rx.await.ok()?;
            let frames = frames.into_iter().map(|r| Ok::<_, BoxError>(r.frame()));
            Some(http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed())
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.lock() {
            s.retrying = false;
            s.release_if_unneeded();
        }
    }
}

/// One attempt's view of the body: the record from the start, then the downstream body.
struct Attempt {
    shared: Arc<Mutex<Shared>>,
    id: u64,
}

impl Body for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut s = self.shared.lock().expect(LOCK);
        if s.current != self.id {
            return Poll::Ready(Some(Err("request body superseded by a retry".into())));
        }
        if s.mode == Mode::Recording {
            if let Some(r) = s.recorded.get(s.position) {
                let frame = r.frame();
                s.position += 1;
                s.release_if_unneeded();
                return Poll::Ready(Some(Ok(frame)));
            }
        }
        s.poll_source(cx)
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().expect(LOCK);
        let replayed = s.mode != Mode::Recording || s.position == s.recorded.len();
        s.current == self.id && replayed && s.source.is_none() && !s.failed
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock().expect(LOCK);
        if s.current != self.id {
            return SizeHint::default();
        }
        let replay: u64 = if s.mode == Mode::Recording {
            s.recorded[s.position..]
                .iter()
                .map(|r| match r {
                    Recorded::Data(d) => d.len() as u64,
                    Recorded::Trailers(_) => 0,
                })
                .sum()
        } else {
            0
        };
        let rest = match &s.source {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(replay + rest.lower());
        if let Some(upper) = rest.upper() {
            hint.set_upper(replay + upper);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    type Sender = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

    /// A downstream body fed through a channel.
    fn source() -> (Sender, BoxBody) {
        let (tx, rx) = mpsc::channel(16);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        (tx, body.boxed())
    }

    async fn send(tx: &Sender, data: &'static str) {
        tx.send(Ok(Frame::data(Bytes::from_static(data.as_bytes()))))
            .await
            .unwrap();
    }

    /// The next data frame's text, or "trailers", or "end".
    async fn next(body: &mut BoxBody) -> Result<String, BoxError> {
        match body.frame().await {
            None => Ok("end".into()),
            Some(Err(e)) => Err(e),
            Some(Ok(f)) => Ok(match f.into_data() {
                Ok(d) => String::from_utf8_lossy(&d).into_owned(),
                Err(_) => "trailers".into(),
            }),
        }
    }

    #[tokio::test]
    async fn a_retry_replays_the_record_then_reads_on() {
        let stats = Arc::new(ClusterStats::default());
        let (tx, src) = source();
        let (replay, mut first) = Replay::new(src, 100, stats.clone());
        send(&tx, "a").await;
        send(&tx, "b").await;
        assert_eq!(next(&mut first).await.unwrap(), "a");
        assert_eq!(next(&mut first).await.unwrap(), "b");
        let mut second = replay.retry().expect("under the limit");
        assert!(
            next(&mut first).await.is_err(),
            "a superseded attempt reads no more"
        );
        assert_eq!(second.size_hint().lower(), 2);
        send(&tx, "c").await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
        drop(tx);
        for want in ["a", "b", "c", "trailers", "end"] {
            assert_eq!(next(&mut second).await.unwrap(), want);
        }
        assert!(second.is_end_stream());
        // The whole body was read: a third attempt gets it all from the record.
        let mut third = replay.retry().expect("under the limit");
        for want in ["a", "b", "c", "trailers", "end"] {
            assert_eq!(next(&mut third).await.unwrap(), want);
        }
        assert_eq!(stats.retry_or_shadow_abandoned.get(), 0);
    }

    #[tokio::test]
    async fn a_superseded_attempt_waiting_for_the_downstream_is_woken_to_fail() {
        let (_tx, src) = source();
        let (replay, mut first) = Replay::new(src, 100, Arc::default());
        let waiting = tokio::spawn(async move { next(&mut first).await.is_err() });
        while replay.shared.lock().unwrap().waiting.is_none() {
            tokio::task::yield_now().await;
        }
        let _second = replay.retry().expect("under the limit");
        let failed = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken when superseded")
            .unwrap();
        assert!(failed);
    }

    #[tokio::test]
    async fn past_the_limit_there_is_no_retry_nor_mirror() {
        let stats = Arc::new(ClusterStats::default());
        let (tx, src) = source();
        let (replay, mut first) = Replay::new(src, 3, stats.clone());
        let mirror = replay.complete();
        send(&tx, "ab").await;
        send(&tx, "cd").await;
        drop(tx);
        for want in ["ab", "cd", "end"] {
            assert_eq!(
                next(&mut first).await.unwrap(),
                want,
                "the attempt streams on"
            );
        }
        assert!(!replay.replayable());
        assert!(replay.retry().is_none());
        assert!(mirror.await.is_none());
        assert_eq!(stats.retry_or_shadow_abandoned.get(), 1);
    }

    #[tokio::test]
    async fn a_mirror_gets_the_body_once_it_has_ended() {
        let (tx, src) = source();
        let (replay, first) = Replay::new(src, 100, Arc::default());
        let mirror = tokio::spawn(replay.complete());
        send(&tx, "x").await;
        send(&tx, "y").await;
        tokio::task::yield_now().await;
        assert!(!mirror.is_finished(), "not before the body has ended");
        drop(tx);
        // The router is done (the response came) while the attempt still streams.
        drop(replay);
        let sent = first.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "xy");
        let copy = mirror.await.unwrap().expect("under the limit");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "xy");
    }

    #[tokio::test]
    async fn the_record_is_released_once_the_router_is_done() {
        let (tx, src) = source();
        let (replay, mut first) = Replay::new(src, 100, Arc::default());
        send(&tx, "a").await;
        assert_eq!(next(&mut first).await.unwrap(), "a");
        let shared = replay.shared.clone();
        drop(replay);
        send(&tx, "b").await;
        assert_eq!(next(&mut first).await.unwrap(), "b");
        let s = shared.lock().unwrap();
        assert_eq!((s.mode, s.recorded.len()), (Mode::Released, 0));
    }
}
