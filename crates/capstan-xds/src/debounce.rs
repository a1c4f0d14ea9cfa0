//! The push pipeline's front: config and registry changes are debounced and merged into
//! [`PushRequest`]s, as istiod does (`PILOT_DEBOUNCE_AFTER` 100 ms quiet period,
//! `PILOT_DEBOUNCE_MAX` 10 s maximum delay). Endpoint-only changes stay EDS-only pushes
//! (`PILOT_ENABLE_EDS_DEBOUNCE`); anything else makes the merged push full.

use crate::generate::PushRequest;
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
}

/// Debounce timing.
#[derive(Clone, Copy, Debug)]
pub struct DebounceOptions {
    /// Quiet period: push once no change arrived for this long.
    pub quiet: Duration,
    /// Maximum delay from the first change of a burst to its push.
    pub max_delay: Duration,
}

impl Default for DebounceOptions {
    fn default() -> Self {
        DebounceOptions {
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
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
    }
}

/// True when a change carries nothing to push.
fn is_empty(change: &Change) -> bool {
    match change {
        Change::Config(c) => c.events.is_empty(),
        Change::Registry(events) => events.is_empty(),
        Change::Everything => false,
    }
}

/// Runs until the input closes: merges changes, and calls `push` once per debounced burst with
/// a version one higher than the previous push's.
pub async fn run(
    mut input: mpsc::Receiver<Change>,
    opts: DebounceOptions,
    mut push: impl FnMut(PushRequest),
) {
    let mut version = 0u64;
    loop {
        let Some(first) = input.recv().await else {
            return;
        };
        if is_empty(&first) {
            continue;
        }
        let started = Instant::now();
        let mut pending = push_for(&first);
        let mut closed = false;
        loop {
            let deadline = (Instant::now() + opts.quiet).min(started + opts.max_delay);
            match tokio::time::timeout_at(deadline, input.recv()).await {
                Ok(Some(change)) => pending = pending.merge(push_for(&change)),
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
        let task = tokio::spawn(run(rx, opts, move |p| {
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
            DebounceOptions::default(),
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

    #[tokio::test(start_paused = true)]
    async fn a_config_change_makes_the_merged_push_full() {
        let pushes = collect(
            vec![(0, endpoints("a")), (10, config("reviews"))],
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
            max_delay: Duration::from_millis(1000),
        };
        let pushes = collect(changes, opts).await;
        assert!(
            pushes.len() >= 4,
            "pushes every max delay while changes keep coming: {pushes:?}"
        );
        assert!(pushes[0].0 <= 1000);
    }
}
