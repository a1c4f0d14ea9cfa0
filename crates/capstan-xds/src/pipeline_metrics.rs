//! Counters of the push pipeline under istiod's names: what came in (`pilot_inbound_updates`,
//! `pilot_k8s_cfg_events`, `pilot_k8s_reg_events`), why pushes happened
//! (`pilot_push_triggers`), and how long a burst took to become a push (`pilot_debounce_time`,
//! `pilot_pushcontext_init_seconds`). [`crate::debounce::run`] records them.

use crate::debounce::Change;
use crate::histogram::{AtomicHistogram, HistogramSnapshot};
use capstan_config::EventKind;
use capstan_registry::RegistryEvent;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// `pilot_inbound_updates`' `type` values, as istiod's `inbound*Updates`: `config` counts every
/// update that asks for a push (istiod's `ConfigUpdate` calls), the others the registry's
/// service updates, service deletions and endpoint updates.
pub const INBOUND_TYPES: [&str; 4] = ["config", "eds", "svc", "svcdelete"];
const CONFIG: usize = 0;
const EDS: usize = 1;
const SVC: usize = 2;
const SVC_DELETE: usize = 3;

/// Why a push was triggered: the `pilot_push_triggers` `type` values (istiod's
/// `model.TriggerReason`) that Capstan's changes map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Istio config objects changed (`config`).
    Config,
    /// A service was added, changed or removed (`service`).
    Service,
    /// A service's endpoints changed (`endpoint`).
    Endpoint,
    /// A workload's own state changed, e.g. its labels (`proxy`).
    Proxy,
    /// Something changed but what is unknown, or every source has just synced (`global`).
    Global,
    /// A credential Secret changed (`secret`).
    Secret,
}

impl Trigger {
    /// Every trigger, in label order.
    pub const ALL: [Trigger; 6] = [
        Trigger::Config,
        Trigger::Service,
        Trigger::Endpoint,
        Trigger::Proxy,
        Trigger::Global,
        Trigger::Secret,
    ];

    /// The `type` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Trigger::Config => "config",
            Trigger::Service => "service",
            Trigger::Endpoint => "endpoint",
            Trigger::Proxy => "proxy",
            Trigger::Global => "global",
            Trigger::Secret => "secret",
        }
    }
}

/// Triggers of one burst, counted per reason (istiod's `ReasonStats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TriggerCounts([u64; Trigger::ALL.len()]);

impl TriggerCounts {
    fn add(&mut self, t: Trigger, n: u64) {
        self.0[t as usize] += n;
    }

    /// Adds another burst's counts.
    pub fn merge(&mut self, other: TriggerCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// The count of one trigger.
    pub fn get(&self, t: Trigger) -> u64 {
        self.0[t as usize]
    }
}

/// `pilot_k8s_reg_events`' `type` values: what the merged registry's events stand for in
/// istiod's Kubernetes registry (ServiceAdded/Changed/Removed → `Services` add/update/delete,
/// EndpointsChanged → `EndpointSlice` update, WorkloadChanged → `Pods` update).
pub const REGISTRY_TYPES: [&str; 3] = ["Services", "EndpointSlice", "Pods"];
/// The `event` label values, as istiod's `model.Event`.
pub const EVENTS: [&str; 3] = ["add", "update", "delete"];

fn event_index(e: EventKind) -> usize {
    match e {
        EventKind::Added => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    }
}

/// The live pipeline counters; shared between the debounce task and the scrape.
#[derive(Debug)]
pub struct PipelineMetrics {
    inbound: [AtomicU64; INBOUND_TYPES.len()],
    triggers: [AtomicU64; Trigger::ALL.len()],
    /// (kind, event index) → count. Config events come in batches, one lock per batch.
    config_events: Mutex<BTreeMap<(&'static str, usize), u64>>,
    /// `[REGISTRY_TYPES index][EVENTS index]`; registry events can come by the thousand.
    registry_events: [[AtomicU64; EVENTS.len()]; REGISTRY_TYPES.len()],
    debounce_time: AtomicHistogram,
    pushcontext_init: AtomicHistogram,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics {
            inbound: Default::default(),
            triggers: Default::default(),
            config_events: Mutex::new(BTreeMap::new()),
            registry_events: Default::default(),
            debounce_time: AtomicHistogram::seconds(),
            pushcontext_init: AtomicHistogram::seconds(),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl PipelineMetrics {
    /// Counts one change entering the pipeline and returns the triggers it brings to its burst.
    pub fn record_change(&self, change: &Change) -> TriggerCounts {
        let mut triggers = TriggerCounts::default();
        match change {
            Change::Config(c) => {
                let n = c.events.len() as u64;
                add(&self.inbound[CONFIG], n);
                triggers.add(Trigger::Config, n);
                let mut events = self.config_events.lock().unwrap_or_else(|e| e.into_inner());
                for e in &c.events {
                    *events
                        .entry((e.key.kind.name(), event_index(e.event)))
                        .or_default() += 1;
                }
            }
            Change::Registry(events) => {
                add(&self.inbound[CONFIG], events.len() as u64);
                for e in events.iter() {
                    let (inbound, (kind, event), trigger) = match e {
                        RegistryEvent::ServiceAdded(_) => (Some(SVC), (0, 0), Trigger::Service),
                        RegistryEvent::ServiceChanged(_) => (Some(SVC), (0, 1), Trigger::Service),
                        RegistryEvent::ServiceRemoved(_) => {
                            (Some(SVC_DELETE), (0, 2), Trigger::Service)
                        }
                        RegistryEvent::EndpointsChanged(..) => {
                            (Some(EDS), (1, 1), Trigger::Endpoint)
                        }
                        RegistryEvent::WorkloadChanged(_) => (None, (2, 1), Trigger::Proxy),
                    };
                    if let Some(i) = inbound {
                        add(&self.inbound[i], 1);
                    }
                    add(&self.registry_events[kind][event], 1);
                    triggers.add(trigger, 1);
                }
            }
            Change::Everything => {
                add(&self.inbound[CONFIG], 1);
                triggers.add(Trigger::Global, 1);
            }
            Change::Keys(keys) => {
                add(&self.inbound[CONFIG], keys.len() as u64);
                triggers.add(Trigger::Secret, keys.len() as u64);
            }
        }
        triggers
    }

    /// Counts one debounced push: its burst's triggers, and the time from the burst's first
    /// change to the push (istiod's `pilot_debounce_time`, which includes building the push).
    pub fn record_push(&self, triggers: &TriggerCounts, debounce: Duration) {
        for t in Trigger::ALL {
            add(&self.triggers[t as usize], triggers.get(t));
        }
        self.debounce_time.observe_duration(debounce);
    }

    /// Records the time one push's PushContext took to build.
    pub fn record_pushcontext_init(&self, d: Duration) {
        self.pushcontext_init.observe_duration(d);
    }

    /// A copy of every counter; label values that never counted are left out, as istiod's
    /// OpenTelemetry metrics appear with their first event.
    pub fn snapshot(&self) -> PipelineSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let nonzero = |(_, n): &(&'static str, u64)| *n > 0;
        let mut registry_events = Vec::new();
        for (kind, row) in REGISTRY_TYPES.iter().zip(&self.registry_events) {
            for (event, c) in EVENTS.iter().zip(row) {
                let n = get(c);
                if n > 0 {
                    registry_events.push(EventCount {
                        kind: kind.to_string(),
                        event,
                        count: n,
                    });
                }
            }
        }
        let config_events = self
            .config_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&(kind, event), &count)| EventCount {
                kind: kind.to_string(),
                event: EVENTS[event],
                count,
            })
            .collect();
        PipelineSnapshot {
            inbound_updates: INBOUND_TYPES
                .iter()
                .zip(&self.inbound)
                .map(|(t, c)| (*t, get(c)))
                .filter(nonzero)
                .collect(),
            push_triggers: Trigger::ALL
                .iter()
                .map(|t| (t.label(), get(&self.triggers[*t as usize])))
                .filter(nonzero)
                .collect(),
            config_events,
            registry_events,
            debounce_time: self.debounce_time.snapshot(),
            pushcontext_init: self.pushcontext_init.snapshot(),
        }
    }
}

/// Events of one kind and event type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventCount {
    /// The object kind (`VirtualService`) or registry type (`Services`).
    pub kind: String,
    /// `add`, `update` or `delete`.
    pub event: &'static str,
    /// How many.
    pub count: u64,
}

/// A point-in-time copy of [`PipelineMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PipelineSnapshot {
    /// `pilot_inbound_updates` by type.
    pub inbound_updates: Vec<(&'static str, u64)>,
    /// `pilot_push_triggers` by type.
    pub push_triggers: Vec<(&'static str, u64)>,
    /// `pilot_k8s_cfg_events`.
    pub config_events: Vec<EventCount>,
    /// `pilot_k8s_reg_events`.
    pub registry_events: Vec<EventCount>,
    /// `pilot_debounce_time`, seconds.
    pub debounce_time: HistogramSnapshot,
    /// `pilot_pushcontext_init_seconds`.
    pub pushcontext_init: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::Kind;
    use capstan_config::{ConfigChange, ConfigEvent, ConfigKey};
    use std::sync::Arc;

    fn config(events: &[(Kind, EventKind)]) -> Change {
        Change::Config(ConfigChange {
            revision: 1,
            events: events
                .iter()
                .enumerate()
                .map(|(i, (kind, event))| ConfigEvent {
                    event: *event,
                    key: ConfigKey {
                        kind: *kind,
                        namespace: "default".into(),
                        name: format!("o{i}"),
                    },
                })
                .collect(),
        })
    }

    /// `pilot_inbound_updates`, `pilot_push_triggers` and `pilot_k8s_reg_events` series.
    type Expected = (
        &'static [(&'static str, u64)],
        &'static [(&'static str, u64)],
        &'static [(&'static str, &'static str, u64)],
    );

    /// Each kind of change lands in istiod's families with istiod's label values.
    #[test]
    fn changes_map_to_istiods_labels() {
        let cases: Vec<(Change, Expected)> = vec![
            (
                config(&[
                    (Kind::VirtualService, EventKind::Added),
                    (Kind::VirtualService, EventKind::Updated),
                    (Kind::DestinationRule, EventKind::Deleted),
                ]),
                (&[("config", 3)], &[("config", 3)], &[]),
            ),
            (
                Change::Registry(Arc::new(vec![
                    RegistryEvent::ServiceAdded("a".into()),
                    RegistryEvent::ServiceChanged("a".into()),
                    RegistryEvent::ServiceRemoved("b".into()),
                    RegistryEvent::EndpointsChanged("a".into(), 80),
                    RegistryEvent::WorkloadChanged("10.0.0.1".into()),
                ])),
                (
                    &[("config", 5), ("eds", 1), ("svc", 2), ("svcdelete", 1)],
                    &[("service", 3), ("endpoint", 1), ("proxy", 1)],
                    &[
                        ("Services", "add", 1),
                        ("Services", "update", 1),
                        ("Services", "delete", 1),
                        ("EndpointSlice", "update", 1),
                        ("Pods", "update", 1),
                    ],
                ),
            ),
            (
                Change::Everything,
                (&[("config", 1)], &[("global", 1)], &[]),
            ),
            (
                Change::Keys(["Secret/a/b".to_string()].into()),
                (&[("config", 1)], &[("secret", 1)], &[]),
            ),
        ];
        for (change, (inbound, triggers, registry)) in cases {
            let m = PipelineMetrics::default();
            let burst = m.record_change(&change);
            m.record_push(&burst, Duration::from_millis(20));
            let s = m.snapshot();
            assert_eq!(s.inbound_updates, inbound, "{change:?}");
            assert_eq!(s.push_triggers, triggers, "{change:?}");
            let reg: Vec<(&str, &str, u64)> = s
                .registry_events
                .iter()
                .map(|e| (e.kind.as_str(), e.event, e.count))
                .collect();
            assert_eq!(reg, registry, "{change:?}");
            assert_eq!(s.debounce_time.count, 1);
        }
        let m = PipelineMetrics::default();
        m.record_change(&config(&[
            (Kind::VirtualService, EventKind::Added),
            (Kind::VirtualService, EventKind::Added),
            (Kind::Gateway, EventKind::Updated),
        ]));
        let events: Vec<(String, &str, u64)> = m
            .snapshot()
            .config_events
            .into_iter()
            .map(|e| (e.kind, e.event, e.count))
            .collect();
        assert_eq!(
            events,
            vec![
                ("Gateway".to_string(), "update", 1),
                ("VirtualService".to_string(), "add", 2)
            ]
        );
    }
}
