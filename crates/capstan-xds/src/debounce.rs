//! The push pipeline's front: config and registry changes are debounced and merged into
//! [`PushRequest`]s, as istiod does (`PILOT_DEBOUNCE_AFTER` 100 ms quiet period,
//! `PILOT_DEBOUNCE_MAX` 10 s maximum delay). Endpoint-only changes stay EDS-only pushes
//! (`PILOT_ENABLE_EDS_DEBOUNCE`); anything else makes the merged push full.
//!
//! Unlike istiod, the quiet period adapts: after an idle spell (no push for at least the full
//! quiet period) a change waits only `min_quiet`, so an isolated endpoint change reaches the
//! proxies in milliseconds instead of istiod's fixed 100 ms. Every change that arrives while a
//! burst is open, and every burst that starts soon after the previous push, doubles the quiet
//! period up to `quiet`: under churn the pipeline merges exactly as istiod's does.

use crate::generate::PushRequest;
use crate::pipeline_metrics::PipelineMetrics;
use capstan_config::ConfigChange;
use capstan_registry::RegistryEvent;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One input to the pipeline.
#[derive(Clone, Debug)]
pub enum Change {
    /// Config objects changed.
    Config(ConfigChange),
    /// The merged service view changed.
    Registry(Arc<Vec<RegistryEvent>>),
    /// Something changed but what is unknown (a lagging subscriber): push everything.
    Everything,
    /// These changed keys (e.g. `Secret/<namespace>/<name>`): a full push narrowed to them.
    Keys(BTreeSet<String>),
}

/// Debounce timing.
#[derive(Clone, Copy, Debug)]
pub struct DebounceOptions {
    /// The longest quiet period: under churn, push once no change arrived for this long.
    pub quiet: Duration,
    /// The quiet period after an idle spell (`min_quiet == quiet`: istiod's fixed debounce).
    pub min_quiet: Duration,
    /// Maximum delay from the first change of a burst to its push.
    pub max_delay: Duration,
}

impl Default for DebounceOptions {
    fn default() -> Self {
        DebounceOptions {
            quiet: Duration::from_millis(100),
            min_quiet: Duration::from_millis(5),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl DebounceOptions {
    /// istiod's fixed 100 ms quiet period and 10 s maximum delay.
    pub fn istiod() -> Self {
        DebounceOptions {
            min_quiet: Duration::from_millis(100),
            ..DebounceOptions::default()
        }
    }
}

/// The adaptive quiet period.
struct Quiet {
    opts: DebounceOptions,
    current: Duration,
    last_push: Option<Instant>,
}

impl Quiet {
    fn new(opts: DebounceOptions) -> Quiet {
        let min = opts.min_quiet.min(opts.quiet);
        Quiet {
            opts: DebounceOptions {
                min_quiet: min,
                ..opts
            },
            current: min,
            last_push: None,
        }
    }

    /// A burst starts at `now`: short after an idle spell, longer when pushes follow closely.
    fn burst_starts(&mut self, now: Instant) {
        let idle = self
            .last_push
            .is_none_or(|at| now.saturating_duration_since(at) >= self.opts.quiet);
        if idle {
            self.current = self.opts.min_quiet;
        } else {
            self.grow();
        }
    }

    /// Another change joined the open burst.
    fn grow(&mut self) {
        self.current = (self.current * 2).clamp(self.opts.min_quiet, self.opts.quiet);
    }

    fn pushed(&mut self, at: Instant) {
        self.last_push = Some(at);
    }
}

/// Turns one change into the push it needs.
pub fn push_for(change: &Change) -> PushRequest {
    match change {
        Change::Config(c) => PushRequest {
            full: true,
            changed: c
                .events
                .iter()
                .map(|e| format!("{}/{}/{}", e.key.kind, e.key.namespace, e.key.name))
                .collect(),
            ..PushRequest::default()
        },
        Change::Registry(events) => {
            let mut push = PushRequest::default();
            let mut changed = BTreeSet::new();
            for e in events.iter() {
                match e {
                    RegistryEvent::EndpointsChanged(host, _) => {
                        push.eds_hosts.insert(host.clone());
                    }
                    RegistryEvent::ServiceAdded(h)
                    | RegistryEvent::ServiceChanged(h)
                    | RegistryEvent::ServiceRemoved(h) => {
                        push.full = true;
                        changed.insert(h.clone());
                    }
                    RegistryEvent::WorkloadChanged(address) => {
                        push.full = true;
                        changed.insert(format!("workload:{address}"));
                    }
                }
            }
            if push.full {
                changed.extend(std::mem::take(&mut push.eds_hosts));
                push.changed = changed;
            }
            push
        }
        Change::Everything => PushRequest {
            full: true,
            ..PushRequest::default()
        },
        Change::Keys(keys) => PushRequest {
            full: true,
            changed: keys.clone(),
            ..PushRequest::default()
        },
    }
}

/// True when a change carries nothing to push.
fn is_empty(change: &Change) -> bool {
    match change {
        Change::Config(c) => c.events.is_empty(),
        Change::Registry(events) => events.is_empty(),
        Change::Everything => false,
        Change::Keys(keys) => keys.is_empty(),
    }
}

/// Runs until the input closes: merges changes, and calls `push` once per debounced burst with
/// a version one higher than the previous push's. Counts every change and push in `metrics`.
pub async fn run(
    mut input: mpsc::Receiver<Change>,
    opts: DebounceOptions,
    metrics: Arc<PipelineMetrics>,
    mut push: impl FnMut(PushRequest),
) {
    let mut version = 0u64;
    let mut quiet = Quiet::new(opts);
    loop {
        let Some(first) = input.recv().await else {
            return;
        };
        if is_empty(&first) {
            continue;
        }
        let started = Instant::now();
        quiet.burst_starts(started);
        let mut triggers = metrics.record_change(&first);
        let mut pending = push_for(&first);
        let mut closed = false;
        loop {
            let deadline = (Instant::now() + quiet.current).min(started + opts.max_delay);
            match tokio::time::timeout_at(deadline, input.recv()).await {
                Ok(Some(change)) => {
                    quiet.grow();
                    triggers.merge(metrics.record_change(&change));
                    pending = pending.merge(push_for(&change));
                }
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
            if Instant::now() >= started + opts.max_delay {
                break;
            }
        }
        version += 1;
        pending.version = version;
        push(pending);
        metrics.record_push(&triggers, started.elapsed());
        quiet.pushed(Instant::now());
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::Kind;
    use capstan_config::{ConfigEvent, ConfigKey, EventKind};

    fn endpoints(host: &str) -> Change {
        Change::Registry(Arc::new(vec![RegistryEvent::EndpointsChanged(
            host.into(),
            80,
        )]))
    }

    /// An empty change: skipped, but it keeps the input open until it is sent (closing the
    /// input flushes the open burst at once).
    fn nothing() -> Change {
        Change::Registry(Arc::new(Vec::new()))
    }

    fn config(name: &str) -> Change {
        Change::Config(ConfigChange {
            revision: 1,
            events: vec![ConfigEvent {
                event: EventKind::Updated,
                key: ConfigKey {
                    kind: Kind::VirtualService,
                    namespace: "default".into(),
                    name: name.into(),
                },
            }],
        })
    }

    async fn collect(
        changes: Vec<(u64, Change)>,
        opts: DebounceOptions,
    ) -> Vec<(u64, PushRequest)> {
        let (tx, rx) = mpsc::channel(100);
        let pushes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = pushes.clone();
        let start = Instant::now();
        let task = tokio::spawn(run(rx, opts, Arc::default(), move |p| {
            sink.lock()
                .unwrap()
                .push(((Instant::now() - start).as_millis() as u64, p))
        }));
        for (at_ms, change) in changes {
            tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
            tx.send(change).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let out = pushes.lock().unwrap().clone();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_endpoint_changes_is_one_eds_push_after_the_quiet_period() {
        let pushes = collect(
            vec![
                (0, endpoints("a")),
                (50, endpoints("b")),
                (120, endpoints("a")),
                (400, endpoints("c")),
            ],
            DebounceOptions::istiod(),
        )
        .await;
        assert_eq!(pushes.len(), 2);
        let (at, first) = &pushes[0];
        assert_eq!(*at, 220, "100 ms after the last change of the burst");
        assert!(!first.full);
        assert_eq!(
            first.eds_hosts,
            ["a", "b"].iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(first.version, 1);
        assert_eq!(pushes[1].1.version, 2);
    }

    /// istiod's pipeline families: every change is an inbound update, a push counts its
    /// burst's triggers, and the debounce time runs from the burst's first change to its push.
    #[tokio::test(start_paused = true)]
    async fn pushes_are_counted_with_their_triggers_and_debounce_time() {
        let metrics = Arc::new(PipelineMetrics::default());
        let (tx, rx) = mpsc::channel(10);
        let task = tokio::spawn(run(rx, DebounceOptions::istiod(), metrics.clone(), |_| {}));
        tx.send(endpoints("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(config("reviews")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(tx);
        task.await.unwrap();
        let s = metrics.snapshot();
        assert_eq!(s.inbound_updates, vec![("config", 2), ("eds", 1)]);
        assert_eq!(s.push_triggers, vec![("config", 1), ("endpoint", 1)]);
        assert_eq!(s.debounce_time.count, 1, "one burst, one push");
        assert!(
            (s.debounce_time.sum - 0.150).abs() < 1e-6,
            "first change at 0, last at 50 ms, pushed 100 ms later: {}",
            s.debounce_time.sum
        );
        assert_eq!(s.config_events.len(), 1);
        assert_eq!(
            (s.config_events[0].kind.as_str(), s.config_events[0].event),
            ("VirtualService", "update")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_config_change_makes_the_merged_push_full() {
        let pushes = collect(
            vec![(0, endpoints("a")), (5, config("reviews"))],
            DebounceOptions::default(),
        )
        .await;
        assert_eq!(pushes.len(), 1);
        let p = &pushes[0].1;
        assert!(p.full && p.eds_hosts.is_empty());
        assert!(p.changed.contains("VirtualService/default/reviews") && p.changed.contains("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn constant_changes_still_push_by_the_maximum_delay() {
        let changes: Vec<(u64, Change)> = (0..100).map(|i| (i * 50, endpoints("a"))).collect();
        let opts = DebounceOptions {
            quiet: Duration::from_millis(100),
            min_quiet: Duration::from_millis(10),
            max_delay: Duration::from_millis(1000),
        };
        let pushes = collect(changes, opts).await;
        assert!(
            pushes.len() >= 4,
            "pushes every max delay while changes keep coming: {pushes:?}"
        );
        assert!(pushes[0].0 <= 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn an_isolated_change_waits_only_the_minimum_quiet_period() {
        let pushes = collect(
            vec![
                (0, endpoints("a")),
                (1000, endpoints("b")),
                (2000, nothing()),
            ],
            DebounceOptions::default(),
        )
        .await;
        let at: Vec<u64> = pushes.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, vec![5, 1005], "each after 5 ms, not istiod's 100");
    }

    #[tokio::test(start_paused = true)]
    async fn under_churn_the_quiet_period_grows_to_istiods_and_merges() {
        // A change every 30 ms for 600 ms: longer than the minimum quiet period, so a fixed
        // 10 ms debounce would push 20 times; the adaptive one grows and merges the rest.
        let mut changes: Vec<(u64, Change)> = (0..20)
            .map(|i| (i * 30, endpoints(&format!("h{i}"))))
            .collect();
        changes.push((2000, nothing()));
        let pushes = collect(changes, DebounceOptions::default()).await;
        assert!(
            pushes.len() <= 4,
            "churn merges into a few pushes: {:?}",
            pushes
                .iter()
                .map(|(t, p)| (*t, p.eds_hosts.len()))
                .collect::<Vec<_>>()
        );
        let hosts: usize = pushes.iter().map(|(_, p)| p.eds_hosts.len()).sum();
        assert_eq!(hosts, 20, "no change is lost");
        let (last_at, _) = pushes.last().unwrap();
        assert_eq!(
            *last_at,
            570 + 100,
            "the last burst waits the full quiet period"
        );
        // Quiet again: the next isolated change is fast once more.
        let pushes = collect(
            vec![
                (0, endpoints("a")),
                (15, endpoints("b")),
                (500, endpoints("c")),
                (2000, nothing()),
            ],
            DebounceOptions::default(),
        )
        .await;
        let at: Vec<u64> = pushes.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            at,
            vec![5, 25, 505],
            "a alone after 5 ms; b follows a push closely, so it waits 10 ms; c is isolated"
        );
    }
}
