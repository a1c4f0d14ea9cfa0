//! An upstream HTTP/1 connection's I/O driven by the task using the connection: hyper's
//! client connection future, polled with a waker of the connection's own in front of the
//! polling task's ([`Link`]). The pool ([`super::http1_pool`]) hands the connection from request
//! to request; no connection has a task of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// hyper's connection future (with upgrades): it reads and writes the socket, and ends when
/// the connection closes or is upgraded. Boxed once per connection, so that moving the
/// connection in and out of the pool moves a pointer.
pub(super) type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A connection's I/O: hyper's connection future, polled by whoever holds the connection, with
/// a waker of the connection's own in front of the polling task's.
///
/// hyper wakes the connection's waker for what the task polling it does itself: handing over
/// the response head, taking the body's data. Passed on, each would poll the task once more for
/// nothing; the connection's waker instead notes them while [`Link::drive`] runs and polls
/// again while any came. Between two polls it wakes the task that polled last, and an idle
/// connection none ([`Link::pool`]): it holds no task's waker, which would keep a
/// finished task's memory and wake a task that no longer uses it.
pub(super) struct Link {
    /// None once the connection has ended (dropped then: requests still queued in hyper get
    /// their error, with the request when it was not written).
    pub(super) driver: Option<sync_wrapper::SyncWrapper<Driver>>,
    wake: Arc<ConnWake>,
    waker: Waker,
}

/// What the connection's waker wakes.
struct ConnWake {
    /// The task that polled the connection last.
    task: futures::task::AtomicWaker,
    /// `IDLE`, `POLLING`, `POLLING_WOKEN`, `POOLED` or `STIRRED`.
    state: AtomicU8,
    /// The pool's idle watcher, for a pooled connection woken.
    stirred: Arc<tokio::sync::Notify>,
}

/// Held by a request, not being polled: a wake-up goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake-up is noted, and the poll goes round again.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile.
const POLLING_WOKEN: u8 = 2;
/// Idle in the pool: a wake-up (the peer closed it, or sent something unasked) is for the
/// pool's idle watcher.
const POOLED: u8 = 3;
/// Idle in the pool, and woken: the idle watcher polls it.
const STIRRED: u8 = 4;

impl std::task::Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut now = self.state.load(Ordering::Acquire);
        loop {
            let next = match now {
                POLLING => POLLING_WOKEN,
                POOLED => STIRRED,
                IDLE => {
                    self.task.wake();
                    return;
                }
                _ => return,
            };
            match self
                .state
                .compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == STIRRED => return self.stirred.notify_one(),
                Ok(_) => return,
                Err(actual) => now = actual,
            }
        }
    }
}

/// How many times [`Link::drive`] polls round while woken by its own polling, before it leaves
/// the rest to a fresh poll of the task (as when tokio's cooperative budget is spent: every
/// resource then wakes at once).
const MAX_PASSES: usize = 4;

impl Link {
    pub(super) fn new(driver: Driver, stirred: Arc<tokio::sync::Notify>) -> Link {
        let wake = Arc::new(ConnWake {
            task: futures::task::AtomicWaker::new(),
            state: AtomicU8::new(IDLE),
            stirred,
        });
        Link {
            driver: Some(sync_wrapper::SyncWrapper::new(driver)),
            waker: Waker::from(wake.clone()),
            wake,
        }
    }

    /// Whether the connection has ended.
    pub(super) fn ended(&self) -> bool {
        self.driver.is_none()
    }

    /// Polls `what` (which only the connection feeds: the response to a request sent on it,
    /// its body, its readiness for another) when `first` (it may have something already), then
    /// the connection and `what` again as long as `what` is pending and the connection's waker
    /// was woken meanwhile. Once the connection has ended, `what` is polled with the task's
    /// own context.
    pub(super) fn drive<T>(
        &mut self,
        cx: &mut Context<'_>,
        first: bool,
        mut what: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let Some(driver) = self.driver.as_mut() else {
            return what(cx);
        };
        self.wake.task.register(cx.waker());
        self.wake.state.store(POLLING, Ordering::Release);
        let mut own = Context::from_waker(&self.waker);
        let mut out = if first { what(&mut own) } else { Poll::Pending };
        let mut passes = 0;
        while out.is_pending() {
            if let Poll::Ready(r) = driver.get_mut().as_mut().poll(&mut own) {
                if let Err(e) = r {
                    tracing::debug!("upstream connection: {e}");
                }
                self.wake.state.store(IDLE, Ordering::Release);
                self.driver = None;
                return what(cx);
            }
            out = what(&mut own);
            if out.is_ready()
                || self
                    .wake
                    .state
                    .compare_exchange(POLLING_WOKEN, POLLING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                break;
            }
            passes += 1;
            if passes == MAX_PASSES {
                // The wake-up just taken back is the task's.
                cx.waker().wake_by_ref();
                break;
            }
        }
        // A wake-up noted after the last pass (another thread's, or the last pass's own) is
        // the task's: unless `what` is ready, which the task's next poll follows anyway.
        if self.wake.state.swap(IDLE, Ordering::AcqRel) == POLLING_WOKEN && out.is_pending() {
            cx.waker().wake_by_ref();
        }
        out
    }

    /// The connection goes idle in the pool: the task that polled it last is forgotten, and
    /// a wake-up now is the idle watcher's.
    pub(super) fn pool(&self) {
        drop(self.wake.task.take());
        self.wake.state.store(POOLED, Ordering::Release);
    }

    /// The connection leaves the pool for a request.
    pub(super) fn unpool(&self) {
        self.wake.state.store(IDLE, Ordering::Release);
    }

    /// For the idle watcher: polls a pooled connection that was woken (with its own waker, so
    /// that it is woken again); true when it has ended.
    pub(super) fn reap(&mut self) -> bool {
        let stirred = self
            .wake
            .state
            .compare_exchange(STIRRED, POOLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let Some(driver) = self.driver.as_mut().filter(|_| stirred) else {
            return self.ended();
        };
        let mut own = Context::from_waker(&self.waker);
        match driver.get_mut().as_mut().poll(&mut own) {
            Poll::Pending => false,
            Poll::Ready(r) => {
                if let Err(e) = r {
                    tracing::debug!("upstream connection (idle): {e}");
                }
                self.driver = None;
                true
            }
        }
    }
}
