//! Two `capstan discovery` replicas against one private kube-apiserver: both serve, one holds
//! the `coordination.k8s.io` Lease and alone does the cluster-wide writes (the
//! `istio-ca-root-cert` ConfigMaps); killing it moves the Lease to the other within the lease
//! duration, and the new leader takes over the writes.

mod ca_support;

use anyhow::{ensure, Result};
use ca_support::*;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, poll_until};
use std::time::{Duration, Instant};

const LEASE: &str = "capstan-discovery-leader";

fn holder(kube: &PrivateKube) -> Result<Option<String>> {
    kube.lease_holder("istio-system", LEASE)
}

fn has_root_configmap(kube: &PrivateKube, namespace: &str) -> Result<bool> {
    let out = kube.kubectl(&[
        "-n",
        namespace,
        "get",
        "configmap",
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    Ok(out
        .lines()
        .any(|l| l.trim() == "configmap/istio-ca-root-cert"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_moves_when_the_leader_dies_and_so_does_the_leader_only_work() -> Result<()> {
    let Some(ctx) = context("discovery-leader")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("discovery-leader", &[])?;
    kube.kubectl(&["create", "namespace", "istio-system"])?;
    kube.kubectl(&["create", "namespace", "apps"])?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let args = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--leader-lease-duration",
        "3s",
        "--leader-renew-period",
        "500ms",
    ];
    let a = Discovery::start(&ctx.scratch, "replica-a", &args)?;
    let b = Discovery::start(&ctx.scratch, "replica-b", &args)?;
    let (pid_a, pid_b) = (a.pid(), b.pid());
    let first = poll_until(
        "a Lease holder",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || holder(&kube),
    )?;
    let a_leads = first.ends_with(&format!("_{pid_a}"));
    ensure!(
        a_leads || first.ends_with(&format!("_{pid_b}")),
        "holder {first:?} is neither replica ({pid_a}, {pid_b})"
    );
    // The leader publishes; the other replica never started its publisher.
    poll_until(
        "the root ConfigMap in apps",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || Ok(has_root_configmap(&kube, "apps")?.then_some(())),
    )?;
    let (leader, follower, follower_pid) = if a_leads {
        (a, b, pid_b)
    } else {
        (b, a, pid_a)
    };
    ensure!(
        !follower.tail().contains("leading: started"),
        "the follower ran leader-only work:\n{}",
        follower.tail()
    );
    // Both serve: each answers xDS readiness (checked by `start`) and keeps doing so.

    // Kill the leader: within the lease duration (3 s) plus a renew period the follower holds
    // the Lease and publishes in a namespace created afterwards.
    let killed_at = Instant::now();
    drop(leader);
    let next = poll_until(
        "the Lease to move",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || Ok(holder(&kube)?.filter(|h| h.ends_with(&format!("_{follower_pid}")))),
    )?;
    let moved_after = killed_at.elapsed();
    ensure!(
        moved_after < Duration::from_secs(8),
        "the Lease moved to {next} only after {moved_after:?}"
    );
    kube.kubectl(&["create", "namespace", "later"])?;
    poll_until(
        "the new leader publishing",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || Ok(has_root_configmap(&kube, "later")?.then_some(())),
    )
    .map_err(|e| e.context(follower.tail()))?;
    ensure!(
        follower.tail().contains("leading: started"),
        "{}",
        follower.tail()
    );
    Ok(())
}
