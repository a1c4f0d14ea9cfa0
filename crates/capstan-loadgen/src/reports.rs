//! Reports from the simulated proxies to the orchestrator. The proxies append to a shared list
//! and never wake the orchestrator, which collects every millisecond: each report carries the
//! time it was made, so collecting later changes no measurement, and the proxies' threads
//! spend nothing on waking another thread for every response (with a channel, futex wake-ups
//! were a sixth of the load generator's CPU).

use crate::client::Report;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Shared = Arc<Mutex<Vec<Report>>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Vec<Report>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxies' side.
#[derive(Clone)]
pub struct Sender(Shared);

impl Sender {
    /// Adds a report.
    pub fn send(&self, report: Report) {
        lock(&self.0).push(report);
    }
}

/// The orchestrator's side.
pub struct Receiver {
    shared: Shared,
    taken: VecDeque<Report>,
}

/// A connected pair.
pub fn channel() -> (Sender, Receiver) {
    let shared = Shared::default();
    (
        Sender(shared.clone()),
        Receiver {
            shared,
            taken: VecDeque::new(),
        },
    )
}

impl Receiver {
    fn take(&mut self) {
        if self.taken.is_empty() {
            let mut reports = lock(&self.shared);
            self.taken.extend(reports.drain(..));
        }
    }

    /// The next report, waiting for one (callers bound the wait with a timeout).
    pub async fn recv(&mut self) -> Option<Report> {
        loop {
            self.take();
            if let Some(r) = self.taken.pop_front() {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The next report if there is one.
    pub fn try_recv(&mut self) -> Option<Report> {
        self.take();
        self.taken.pop_front()
    }
}
