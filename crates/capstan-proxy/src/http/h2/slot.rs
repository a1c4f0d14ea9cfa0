//! A reusable, pinned home for one future at a time: built in place, polled there, dropped
//! there. The HTTP/2 server serves a connection's only stream from it (the usual case: one
//! request at a time, as over HTTP/1.1), so a request's future, some kilobytes, costs neither
//! an allocation nor a copy, and is polled with the connection task's own waker.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(super) struct FutureSlot<F> {
    /// Allocated on first use; its heap slot never moves while it holds a future.
    home: Option<Box<MaybeUninit<F>>>,
    full: bool,
}

impl<F: Future> FutureSlot<F> {
    pub(super) fn new() -> Self {
        FutureSlot {
            home: None,
            full: false,
        }
    }

    /// Builds the future `make` returns in the slot (which must be empty).
    pub(super) fn put(&mut self, make: impl FnOnce() -> F) {
        assert!(!self.full, "the slot holds a future already");
        let home = self.home.get_or_insert_with(Box::new_uninit);
        home.write(make());
        self.full = true;
    }

    /// Polls the future (the slot must hold one); once it is ready, the slot is empty again.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        assert!(self.full, "polled an empty slot");
        let home = self.home.as_mut().expect("a full slot has its home");
        // SAFETY: the slot is full, so initialized; the future stays at this heap address
        // until it is dropped in place (`clear`), so it may be pinned there.
        let fut = unsafe { Pin::new_unchecked(home.assume_init_mut()) };
        let out = fut.poll(cx);
        if out.is_ready() {
            self.clear();
        }
        out
    }

    /// Drops the future in place, if there is one.
    pub(super) fn clear(&mut self) {
        if std::mem::take(&mut self.full) {
            if let Some(home) = self.home.as_mut() {
                // SAFETY: it was full, so initialized, and is marked empty first so that a
                // panicking drop is not dropped twice.
                unsafe { home.assume_init_drop() };
            }
        }
    }
}

impl<F> Drop for FutureSlot<F> {
    fn drop(&mut self) {
        if std::mem::take(&mut self.full) {
            if let Some(home) = self.home.as_mut() {
                // SAFETY: as in `clear`.
                unsafe { home.assume_init_drop() };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Waker;

    /// Ready after `polls` polls; counts its drops.
    struct Countdown {
        polls: usize,
        dropped: Arc<AtomicUsize>,
        _pin: std::marker::PhantomPinned,
    }

    impl Future for Countdown {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            // SAFETY: no field is moved.
            let me = unsafe { self.get_unchecked_mut() };
            if me.polls == 0 {
                return Poll::Ready(7);
            }
            me.polls -= 1;
            Poll::Pending
        }
    }

    impl Drop for Countdown {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn futures_are_polled_in_place_dropped_once_and_the_home_reused() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let make = |polls| Countdown {
            polls,
            dropped: dropped.clone(),
            _pin: std::marker::PhantomPinned,
        };
        let mut cx = Context::from_waker(Waker::noop());
        let mut slot = FutureSlot::new();
        assert!(!slot.full);
        slot.put(|| make(1));
        let home = slot.home.as_ref().map(|h| h.as_ptr());
        assert!(slot.poll(&mut cx).is_pending());
        assert_eq!(slot.poll(&mut cx), Poll::Ready(7));
        assert!(!slot.full);
        assert_eq!(dropped.load(Ordering::Relaxed), 1, "dropped once done");
        // The same home for the next one; cleared before it is done, it is dropped then.
        slot.put(|| make(5));
        assert_eq!(slot.home.as_ref().map(|h| h.as_ptr()), home);
        assert!(slot.poll(&mut cx).is_pending());
        slot.clear();
        assert!(!slot.full);
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
        slot.clear();
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            2,
            "an empty slot drops nothing"
        );
        // Dropped with a future inside: the future is dropped.
        slot.put(|| make(5));
        drop(slot);
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
    }
}
