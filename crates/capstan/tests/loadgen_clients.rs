//! The load generator's simulated proxies against a real `capstan discovery`: they subscribe
//! like Envoy, sync the whole mesh, ACK, and see an endpoint change as an EDS update naming the
//! changed clusters, with no NACKs. (The load generator's numbers in docs/benchmarks.md are only
//! as good as these clients.)

use anyhow::{bail, Context, Result};
use capstan_e2e::ChildGuard;
use capstan_loadgen::client::{self, Report, ENDPOINT};
use capstan_loadgen::{mesh, reports};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> Result<u16> {
    Ok(capstan_e2e::free_port())
}

/// Waits (bounded) for the next report matching `want`; fails on a NACK or a closed stream.
async fn until(
    rx: &mut reports::Receiver,
    deadline: tokio::time::Instant,
    mut want: impl FnMut(&Report) -> bool,
) -> Result<()> {
    loop {
        let report = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("timed out waiting for the simulated proxies")?
            .context("reports ended")?;
        match &report {
            Report::Rejected { error, .. } => bail!("a proxy NACKed: {error}"),
            Report::Closed { client, error } => bail!("proxy {client} closed: {error:?}"),
            r if want(r) => return Ok(()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_proxies_sync_ack_and_see_endpoint_changes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let spec = mesh::MeshSpec {
        services: 20,
        endpoints: 3,
        virtual_services: 10,
        destination_rules: 10,
    };
    mesh::write(dir.path(), &spec)?;
    let xds_port = free_port()?;
    let monitoring_port = free_port()?;
    let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["discovery", "--config-dir"])
        .arg(dir.path().join("config"))
        .arg("--registry-file")
        .arg(dir.path().join("registry.json"))
        .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--debug-addr", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--monitoring-addr", &format!("127.0.0.1:{monitoring_port}")])
        .args(["--file-debounce-ms", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting capstan discovery")?;
    let _guard = ChildGuard::new("capstan-discovery", child);
    tokio::task::spawn_blocking(move || {
        capstan_e2e::wait_http_ok(monitoring_port, "/ready", Duration::from_secs(30))
    })
    .await??;

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], xds_port));
    let (tx, mut rx) = reports::channel();
    let proxies = 3;
    for i in 0..proxies {
        tokio::spawn(client::run_reporting(i, addr, tx.clone()));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Every proxy syncs and has every service's default cluster and the two subsets of those
    // with a DestinationRule (a proxy may connect before the server has loaded the whole mesh:
    // it then syncs on part of it and subscribes to the rest as it arrives).
    let mut eds_seen = vec![BTreeSet::new(); proxies];
    let mut synced = 0;
    until(&mut rx, deadline, |r| {
        match r {
            Report::Synced => synced += 1,
            Report::Received {
                client,
                type_url,
                names,
                ..
            } if *type_url == ENDPOINT => eds_seen[*client].extend(names.iter().cloned()),
            _ => {}
        }
        synced == proxies && eds_seen.iter().all(|s| s.len() == 20 + 2 * 10)
    })
    .await?;

    // Move service 3's endpoints: every proxy gets its clusters' new assignments.
    std::fs::write(
        dir.path().join("registry.json"),
        mesh::registry_json(&spec, Some((3, 1))),
    )?;
    let changed = format!("outbound|9080||{}", mesh::hostname(3));
    let mut updated = BTreeSet::new();
    until(&mut rx, deadline, |r| {
        if let Report::Received {
            client,
            type_url,
            names,
            ..
        } = r
        {
            if *type_url == ENDPOINT && names.contains(&changed) {
                assert!(
                    names.iter().all(|n| n.ends_with(&mesh::hostname(3))),
                    "only the changed host's clusters: {names:?}"
                );
                updated.insert(*client);
            }
        }
        updated.len() == proxies
    })
    .await?;
    Ok(())
}
