//! What the registry knows about the proxy itself: its workload (the pod at its address),
//! the locality istiod derives from it, and the service ports that send traffic to it
//! (istiod's `ServiceTargets`).

use super::PushContext;
use crate::proxy::Proxy;
use capstan_registry::kubernetes::convert::{REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL};
use capstan_registry::{Locality, Service, ServicePort, Workload};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Istio's label overriding a workload's locality (`region/zone/subzone`, or with `.` for `/`
/// where Kubernetes label values forbid slashes).
const LOCALITY_LABEL: &str = "topology.istio.io/locality";
/// The older name of [`LOCALITY_LABEL`].
const LEGACY_LOCALITY_LABEL: &str = "istio-locality";

/// One service port that sends traffic to the proxy (istiod's `ServiceTarget`).
#[derive(Clone, Debug)]
pub struct ServiceTarget<'a> {
    /// The service.
    pub service: &'a Arc<Service>,
    /// Its port.
    pub port: &'a ServicePort,
    /// The port on the proxy's workload that traffic to `port` arrives at.
    pub target_port: u16,
}

/// The locality a workload's `topology.istio.io/locality` (or `istio-locality`) label sets
/// (istiod's `GetLocalityLabel` and `SanitizeLocalityLabel`).
fn locality_label(labels: &BTreeMap<String, String>) -> Option<Locality> {
    let value = labels
        .get(LOCALITY_LABEL)
        .or_else(|| labels.get(LEGACY_LOCALITY_LABEL))?;
    if value.is_empty() {
        return None;
    }
    Some(if value.contains('/') {
        Locality::parse(value)
    } else {
        Locality::parse(&value.replace('.', "/"))
    })
}

/// The locality the Kubernetes topology labels among `labels` give, if any is set (istiod's
/// `localityFromProxyLabels`).
fn topology_labels(labels: &BTreeMap<String, String>) -> Option<Locality> {
    let (region, zone, subzone) = (
        labels.get(REGION_LABEL),
        labels.get(ZONE_LABEL),
        labels.get(SUBZONE_LABEL),
    );
    if region.is_none() && zone.is_none() && subzone.is_none() {
        return None;
    }
    let get = |v: Option<&String>| v.cloned().unwrap_or_default();
    Some(Locality {
        region: get(region),
        zone: get(zone),
        subzone: get(subzone),
    })
}

impl PushContext {
    /// The registry's workload of the proxy: the one at its first address, when it is in the
    /// proxy's namespace (istiod finds the proxy's pod by name or by its first IP, and of
    /// several pods on one address — host networking — takes the one of the proxy's
    /// namespace).
    pub fn proxy_workload(&self, proxy: &Proxy) -> Option<&Arc<Workload>> {
        let address = proxy.ip_addresses.first()?;
        self.services
            .workload_by_ip(address)
            .filter(|w| w.namespace.is_empty() || w.namespace == proxy.namespace)
    }

    /// The proxy's locality as istiod sets it (`setTopologyLabels`): the registry's first —
    /// its workload's locality label, else the topology labels of the Node its pod runs on
    /// (or the workload's own locality, outside Kubernetes) — then the topology or locality
    /// labels of the workload (the proxy's own labels when the registry does not know it), and
    /// only then the locality the proxy reported in its bootstrap node.
    pub fn proxy_locality(&self, proxy: &Proxy) -> Locality {
        self.registry_locality(proxy)
            .unwrap_or_else(|| proxy.locality.clone())
    }

    /// [`Self::proxy_locality`] when it is not the one the proxy reported (`None` then: no
    /// copy of it is made, which matters as this runs for every proxy at every EDS push).
    fn registry_locality(&self, proxy: &Proxy) -> Option<Locality> {
        let workload = self.proxy_workload(proxy);
        let labels = workload.map_or(&proxy.labels, |w| &w.labels);
        workload
            .and_then(|w| {
                locality_label(&w.labels)
                    .or_else(|| (w.locality != Locality::default()).then(|| w.locality.clone()))
            })
            .or_else(|| topology_labels(labels))
            .or_else(|| locality_label(labels))
    }

    /// The proxy with its locality resolved from the registry ([`Self::proxy_locality`]);
    /// borrowed when that is the one it reported.
    pub fn located<'p>(&self, proxy: &'p Proxy) -> std::borrow::Cow<'p, Proxy> {
        match self.registry_locality(proxy) {
            Some(locality) if locality != proxy.locality => std::borrow::Cow::Owned(Proxy {
                locality,
                ..proxy.clone()
            }),
            _ => std::borrow::Cow::Borrowed(proxy),
        }
    }

    /// The service ports whose endpoints are the proxy (at any of its addresses), by
    /// hostname then port, each with the port traffic arrives at on the proxy (istiod's
    /// `ServiceTargets`).
    pub fn service_targets(&self, proxy: &Proxy) -> Vec<ServiceTarget<'_>> {
        let mut hosts: Vec<&String> = proxy
            .ip_addresses
            .iter()
            .flat_map(|ip| self.services.services_at(ip))
            .collect();
        hosts.sort();
        hosts.dedup();
        let mut out = Vec::new();
        for host in hosts {
            let Some(service) = self.services.service(host) else {
                continue;
            };
            for port in &service.ports {
                let target = self
                    .services
                    .endpoint_set(host, port.port)
                    .into_iter()
                    .flat_map(|e| e.iter())
                    .find(|e| proxy.ip_addresses.contains(&e.address));
                if let Some(e) = target {
                    out.push(ServiceTarget {
                        service,
                        port,
                        target_port: e.port,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn loc(region: &str, zone: &str, subzone: &str) -> Locality {
        Locality {
            region: region.into(),
            zone: zone.into(),
            subzone: subzone.into(),
        }
    }

    #[test]
    fn locality_labels_read_like_istio() {
        type Labels<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Labels<'_>, Option<Locality>)] = &[
            (&[], None),
            (&[(LOCALITY_LABEL, "r/z/s")], Some(loc("r", "z", "s"))),
            (&[(LEGACY_LOCALITY_LABEL, "r.z")], Some(loc("r", "z", ""))),
            (
                &[(LOCALITY_LABEL, "a/b"), (LEGACY_LOCALITY_LABEL, "c/d")],
                Some(loc("a", "b", "")),
            ),
            (&[(LOCALITY_LABEL, "")], None),
        ];
        for (given, want) in cases {
            assert_eq!(&locality_label(&labels(given)), want, "{given:?}");
        }
        assert_eq!(topology_labels(&labels(&[("app", "x")])), None);
        assert_eq!(
            topology_labels(&labels(&[(REGION_LABEL, "r"), (SUBZONE_LABEL, "s")])),
            Some(loc("r", "", "s"))
        );
    }
}
