//! Istio's locality load balancing: which clusters fail over between localities, the
//! priorities of a cluster's endpoints relative to the proxy's locality (EDS), and the
//! locality-weighted balancing Istio turns on in the cluster (CDS).

use super::cds_policy::EffectivePolicy;
use crate::context::ConfigEntry;
use capstan_api::networking::{DestinationRule, LocalityFailover, LocalityLoadBalancerSetting};
use capstan_registry::Locality;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use std::collections::BTreeSet;

/// Istio's mesh default `localityLbSetting`: on, without failover rules.
static MESH_DEFAULT: LocalityLoadBalancerSetting = LocalityLoadBalancerSetting {
    distribute: Vec::new(),
    failover: Vec::new(),
    failover_priority: Vec::new(),
    enabled: Some(true),
};

/// The locality setting for a policy: the DestinationRule's, else the mesh default; none when
/// locality load balancing is turned off (Istio's `GetEffectiveLbSetting`).
fn setting<'a>(policy: &EffectivePolicy<'a>) -> Option<&'a LocalityLoadBalancerSetting> {
    match policy.lb.and_then(|lb| lb.locality_lb_setting.as_ref()) {
        Some(s) if s.enabled == Some(false) => None,
        Some(s) => Some(s),
        None => Some(&MESH_DEFAULT),
    }
}

/// The failover settings when Istio's locality failover applies to a cluster: the
/// DestinationRule's effective policy (subset and port-level settings included) has outlier
/// detection (without it Envoy never leaves priority 0) and locality load balancing is not
/// turned off (Istio's mesh default turns it on). `distribute` and `failoverPriority` are not
/// implemented; with either set, no priorities are assigned.
pub fn failover<'a>(
    dr: &'a ConfigEntry<DestinationRule>,
    subset: &str,
    port: u16,
) -> Option<&'a [LocalityFailover]> {
    let subset_policy = dr
        .spec
        .subsets
        .iter()
        .find(|s| !subset.is_empty() && s.name == subset)
        .and_then(|s| s.traffic_policy.as_deref());
    let policy = EffectivePolicy::merge(dr.spec.traffic_policy.as_deref(), subset_policy, port);
    policy.outlier?;
    let s = setting(&policy)?;
    (s.distribute.is_empty() && s.failover_priority.is_empty()).then_some(&s.failover[..])
}

/// Istio's `LbPriority`: 0 when region, zone and subzone match the proxy's; 1 when region and
/// zone do; 2 when the region does; 3 otherwise.
fn lb_priority(proxy: &Locality, endpoints: &EnvoyLocality) -> u32 {
    if proxy.region != endpoints.region {
        3
    } else if proxy.zone != endpoints.zone {
        2
    } else if proxy.subzone != endpoints.sub_zone {
        1
    } else {
        0
    }
}

/// Orders the localities of an assignment by closeness to the proxy (Istio's
/// `applyLocalityFailover`): other regions get priority 3, or 4 when a failover rule from the
/// proxy's region names another region; then priorities are renumbered without gaps. A
/// proxy of unknown locality is treated as in the empty locality, as istiod does.
pub fn apply_failover(
    cla: &mut ClusterLoadAssignment,
    proxy: &Locality,
    failover: &[LocalityFailover],
) {
    for group in &mut cla.endpoints {
        let locality = group.locality.clone().unwrap_or_default();
        let mut priority = lb_priority(proxy, &locality);
        if priority == 3 {
            if let Some(f) = failover.iter().find(|f| f.from == proxy.region) {
                if locality.region != f.to {
                    priority = 4;
                }
            }
        }
        group.priority = priority;
    }
    let used: BTreeSet<u32> = cla.endpoints.iter().map(|g| g.priority).collect();
    for group in &mut cla.endpoints {
        group.priority = used.range(..group.priority).count() as u32;
    }
}

/// Turns on Envoy's locality-weighted balancing in an outbound cluster where istiod does
/// (`LocalityLBSettings.ApplyToCluster`): the rule distributes traffic between localities, or
/// names failover regions or failover priority labels with outlier detection on. Elsewhere it
/// stays off, as it would change what a `LEAST_REQUEST` balancer picks.
pub fn apply_to_cluster(c: &mut Cluster, policy: &EffectivePolicy<'_>) {
    let Some(s) = setting(policy) else {
        return;
    };
    let failover =
        policy.outlier.is_some() && (!s.failover.is_empty() || !s.failover_priority.is_empty());
    if failover || !s.distribute.is_empty() {
        c.common_lb_config
            .get_or_insert_with(Default::default)
            .locality_config_specifier = Some(
            cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                cluster::common_lb_config::LocalityWeightedLbConfig::default(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::networking::{LoadBalancerSettings, TrafficPolicy};
    use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;

    fn group(region: &str, zone: &str) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            locality: Some(EnvoyLocality {
                region: region.into(),
                zone: zone.into(),
                ..EnvoyLocality::default()
            }),
            ..LocalityLbEndpoints::default()
        }
    }

    fn priorities(proxy: &Locality, failover: &[LocalityFailover]) -> Vec<u32> {
        let mut cla = ClusterLoadAssignment {
            endpoints: vec![
                group("us-east", "us-east-1a"),
                group("us-west", "us-west-1b"),
                group("eu", "eu-1"),
                group("", ""),
            ],
            ..ClusterLoadAssignment::default()
        };
        apply_failover(&mut cla, proxy, failover);
        cla.endpoints.iter().map(|g| g.priority).collect()
    }

    /// Priorities of localities (us-east/1a, us-west/1b, eu/1, none) for a proxy, as istiod's
    /// `applyLocalityFailover` gives them.
    #[test]
    fn failover_priorities_are_relative_to_the_proxy() {
        let east = Locality::parse("us-east/us-east-1a");
        let to_west = [LocalityFailover {
            from: "us-east".into(),
            to: "us-west".into(),
        }];
        let cases: &[(&Locality, &[LocalityFailover], &[u32])] = &[
            (&east, &[], &[0, 1, 1, 1]),
            (&east, &to_west, &[0, 1, 2, 2]),
            (&Locality::parse("us-east/us-east-1b"), &[], &[0, 1, 1, 1]),
            // Unknown: only endpoints of unknown locality are as close.
            (&Locality::default(), &to_west, &[1, 1, 1, 0]),
        ];
        for (proxy, failover, want) in cases {
            assert_eq!(priorities(proxy, failover), *want, "{proxy:?} {failover:?}");
        }
    }

    fn policy_with(outlier: bool, setting: Option<LocalityLoadBalancerSetting>) -> TrafficPolicy {
        TrafficPolicy {
            outlier_detection: outlier.then(Box::default),
            load_balancer: Some(Box::new(LoadBalancerSettings {
                locality_lb_setting: setting,
                ..LoadBalancerSettings::default()
            })),
            ..TrafficPolicy::default()
        }
    }

    #[test]
    fn locality_weighted_balancing_where_istiod_turns_it_on() {
        let failover = LocalityLoadBalancerSetting {
            enabled: Some(true),
            failover: vec![LocalityFailover {
                from: "us-east".into(),
                to: "us-west".into(),
            }],
            ..LocalityLoadBalancerSetting::default()
        };
        let distribute = LocalityLoadBalancerSetting {
            distribute: vec![Default::default()],
            ..LocalityLoadBalancerSetting::default()
        };
        let off = LocalityLoadBalancerSetting {
            enabled: Some(false),
            ..failover.clone()
        };
        let cases = [
            (true, Some(failover.clone()), true),
            (false, Some(failover), false),
            (true, None, false),
            (false, Some(distribute), true),
            (true, Some(off), false),
        ];
        for (outlier, setting, want) in cases {
            let tp = policy_with(outlier, setting.clone());
            let mut c = Cluster::default();
            apply_to_cluster(&mut c, &EffectivePolicy::merge(Some(&tp), None, 80));
            let got = c
                .common_lb_config
                .and_then(|l| l.locality_config_specifier)
                .is_some();
            assert_eq!(got, want, "outlier {outlier}, {setting:?}");
        }
    }
}
