//! Simulated proxies that behave like Envoy towards a control plane that refuses or drops them:
//! each reconnects after Envoy's jittered exponential backoff (istiod admits ~25 new streams a
//! second on two cores and refuses the rest with `RESOURCE_EXHAUSTED`), and all of them can be
//! told to drop their connections at once (a reconnect storm).
//!
//! The proxies run on one single-threaded runtime per thread, as in the file mode: no work
//! stealing or cross-thread wake-ups between a proxy's connection and its handling. A
//! reconnecting proxy starts afresh (as a restarted Envoy: no `initial_resource_versions`), so
//! its resync is a full sync.

use crate::client::{self, Report, SessionOptions};
use crate::reports;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Envoy's retry backoff for its xDS stream (`JitteredExponentialBackOffStrategy` with
/// `RETRY_INITIAL_DELAY_MS` 500 and `RETRY_MAX_DELAY_MS` 30,000 in `grpc_mux_impl`): the n-th
/// retry waits a uniformly random time below min(500 ms × 2ⁿ, 30 s); reset once a response
/// arrives.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Envoy's xDS values.
    pub fn envoy() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// A backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            next: base,
        }
    }

    /// The next delay: `random(n)` must return a value in `0..n` (milliseconds).
    pub fn next_delay(&mut self, random: impl FnOnce(u64) -> u64) -> Duration {
        let ceiling = self.next;
        self.next = if self.next < self.max / 2 {
            self.next * 2
        } else {
            self.max
        };
        let ms = (ceiling.as_millis() as u64).max(1);
        Duration::from_millis(random(ms)).min(self.max)
    }

    /// Back to the first delay (after a successful stream).
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

/// What every proxy is told.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Command {
    /// Bumped to make every proxy drop its connection (and reconnect).
    epoch: u64,
    /// Every proxy ends.
    stop: bool,
}

/// How the fleet's proxies behave.
#[derive(Clone)]
pub struct FleetOptions {
    /// The xDS server.
    pub addr: SocketAddr,
    /// Threads, each one single-threaded runtime.
    pub threads: usize,
    /// Each session's behaviour.
    pub session: SessionOptions,
    /// The retry backoff.
    pub backoff: Backoff,
}

/// Running proxies.
pub struct Fleet {
    starters: Vec<mpsc::UnboundedSender<usize>>,
    command: watch::Sender<Command>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Fleet {
    /// Starts the threads; proxies start with [`Fleet::connect`].
    pub fn start(opts: FleetOptions, reports: reports::Sender) -> std::io::Result<Fleet> {
        let (command, _) = watch::channel(Command::default());
        let opts = Arc::new(opts);
        let mut starters = Vec::new();
        let mut threads = Vec::new();
        for t in 0..opts.threads.max(1) {
            let (start, mut started) = mpsc::unbounded_channel::<usize>();
            let (opts, reports, command) = (opts.clone(), reports.clone(), command.subscribe());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("proxies-{t}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            let mut proxies = tokio::task::JoinSet::new();
                            while let Some(i) = started.recv().await {
                                proxies.spawn(proxy(
                                    i,
                                    opts.clone(),
                                    reports.clone(),
                                    command.clone(),
                                ));
                            }
                            // No more proxies to start: run those started until they stop.
                            while proxies.join_next().await.is_some() {}
                        })
                    })?,
            );
            starters.push(start);
        }
        Ok(Fleet {
            starters,
            command,
            threads,
        })
    }

    /// Starts proxy `client` (on thread `client % threads`).
    pub fn connect(&self, client: usize) {
        // A closed starter means its thread is gone; the proxy then never reports, which the
        // orchestrator's bounded waits turn into an error.
        let _ = self.starters[client % self.starters.len()].send(client);
    }

    /// Makes every proxy drop its connection now; each reconnects after its first backoff.
    pub fn disconnect_all(&self) {
        self.command.send_modify(|c| c.epoch += 1);
    }

    /// Stops every proxy and waits for the threads.
    pub fn stop(self) {
        self.command.send_modify(|c| c.stop = true);
        drop(self.starters);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One proxy: sessions until told to stop, with Envoy's backoff between them.
async fn proxy(
    client: usize,
    opts: Arc<FleetOptions>,
    reports: reports::Sender,
    mut command: watch::Receiver<Command>,
) {
    let mut backoff = opts.backoff.clone();
    loop {
        let current = *command.borrow_and_update();
        if current.stop {
            return;
        }
        let told = {
            let command = &mut command;
            async move {
                let _ = command
                    .wait_for(|c| c.stop || c.epoch != current.epoch)
                    .await;
            }
        };
        match client::session(client, opts.addr, &opts.session, &reports, told).await {
            Ok(end) => {
                if end.received {
                    backoff.reset();
                }
                if !end.told {
                    reports.send(Report::Retrying {
                        client,
                        error: end.error.unwrap_or_else(|| "stream ended".into()),
                    });
                }
            }
            Err(e) => reports.send(Report::Retrying {
                client,
                error: format!("{e:#}"),
            }),
        }
        let delay = backoff.next_delay(|n| fastrand::u64(..n));
        let stopped = async {
            let _ = command.wait_for(|c| c.stop).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_as_envoys_and_resets() {
        let mut b = Backoff::envoy();
        // With the largest random value, the ceilings show: 500 ms doubling up to 30 s.
        let ceilings: Vec<u64> = (0..9)
            .map(|_| b.next_delay(|n| n - 1).as_millis() as u64 + 1)
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.next_delay(|_| 0), Duration::ZERO);
        b.reset();
        assert_eq!(b.next_delay(|n| n - 1), Duration::from_millis(499));
    }
}
