//! The drain of one listener version, on a listener update or removal and on shutdown, as
//! Envoy's listener drain: its connections are told the drain has begun and finish what they
//! are doing (HTTP: in-flight requests, then a graceful close); what still runs when the drain
//! window (`--drain-time-s`) ends — an upgraded stream, a TCP proxy session — is closed then,
//! as Envoy closes the draining listener's remaining connections.

use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Begins the drain of the connections holding its [`Drain`]s.
#[derive(Debug)]
pub struct Drainer(watch::Sender<Option<Instant>>);

/// A connection's view of its listener's drain: when it begins, and when its window ends.
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<Option<Instant>>);

/// A drain not begun yet, and the view connections get of it.
pub fn channel() -> (Drainer, Drain) {
    let (tx, rx) = watch::channel(None);
    (Drainer(tx), Drain(rx))
}

impl Drainer {
    /// Begins the drain; its window ends `window` from now. A drain already begun keeps the end
    /// it was given.
    pub fn start(&self, window: Duration) {
        self.0.send_if_modified(|end| {
            if end.is_some() {
                return false;
            }
            *end = Some(Instant::now() + window);
            true
        });
    }
}

impl Drain {
    /// Resolves when the drain begins, with the end of its window; never when the drainer is
    /// dropped without draining.
    pub async fn started(&mut self) -> Instant {
        let end = match self.0.wait_for(Option::is_some).await {
            Ok(end) => *end,
            Err(_) => None,
        };
        match end {
            Some(end) => end,
            None => std::future::pending().await,
        }
    }

    /// Resolves when the drain window ends (never without a drain).
    pub async fn ended(&mut self) {
        let end = self.started().await;
        tokio::time::sleep_until(end).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_runs_from_the_first_start() {
        let (drainer, mut drain) = channel();
        let mut waiting = drain.clone();
        let ended = tokio::spawn(async move {
            waiting.ended().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!ended.is_finished(), "no drain, no end");
        let begun = Instant::now();
        drainer.start(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Started again (a second signal): the first window stands.
        drainer.start(Duration::from_secs(60));
        assert_eq!(drain.started().await, begun + Duration::from_secs(10));
        assert_eq!(ended.await.unwrap(), begun + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drainer_dropped_without_draining_never_ends_the_window() {
        let (drainer, mut drain) = channel();
        drop(drainer);
        let r = tokio::time::timeout(Duration::from_secs(3600), drain.ended()).await;
        assert!(r.is_err());
        // Dropped after starting, the window still ends.
        let (drainer, mut drain) = channel();
        drainer.start(Duration::from_secs(1));
        drop(drainer);
        tokio::time::timeout(Duration::from_secs(2), drain.ended())
            .await
            .expect("the window ends");
    }
}
