//! The Kubernetes config source against a real kube-apiserver: `kubectl apply` of Istio YAML
//! reaches the store; an update is an update; an object the CRD schema admits but Istio's rules
//! reject is skipped and its last good version kept; a delete deletes.

use anyhow::{ensure, Context, Result};
use capstan_api::{CheckOptions, Kind};
use capstan_config::{ConfigKey, ConfigStore, KubernetesSource};
use capstan_e2e::{context, repo_root};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VS: &str = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: WEIGHT_A\n    - destination: {host: reviews, subset: v2}\n      weight: WEIGHT_B\n";

async fn wait_for(
    store: &ConfigStore,
    what: &str,
    mut check: impl FnMut(&capstan_config::Snapshot) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check(&store.snapshot()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{what} did not happen within 20s")
}

fn weights(store: &ConfigStore, key: &ConfigKey) -> Option<Vec<i64>> {
    let snapshot = store.snapshot();
    let object = snapshot.objects.get(key)?.object.to_value();
    Some(
        object["spec"]["http"][0]["route"]
            .as_array()?
            .iter()
            .filter_map(|r| r["weight"].as_i64())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_reaches_the_store_and_invalid_edits_keep_the_last_good_version() -> Result<()>
{
    let Some(ctx) = context("k8s-config-source")? else {
        return Ok(());
    };
    let crds = repo_root().join("deploy/crds");
    ctx.infra.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crds.to_str().context("utf-8 path")?,
    ])?;
    ctx.infra.kubectl(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        "crd/virtualservices.networking.istio.io",
    ])?;

    let kc = Kubeconfig::read_from(ctx.infra.var("KUBECONFIG")?)?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?,
    )?;
    let store = Arc::new(ConfigStore::new());
    let source =
        KubernetesSource::new(CheckOptions::default()).with_namespace(ctx.namespace.clone());
    let mut ready = source.ready();
    let task = tokio::spawn(source.run(client, store.clone()));
    // Every kind listed once (a kind whose CRD is not installed counts as listed: it has
    // nothing to wait for), so `capstan discovery` may open its xDS port.
    tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r))
        .await
        .context("the source never reported its first sync")??;
    let key = ConfigKey {
        kind: Kind::VirtualService,
        namespace: ctx.namespace.clone(),
        name: "reviews".into(),
    };

    let apply = |a: &str, b: &str| ctx.apply(&VS.replace("WEIGHT_A", a).replace("WEIGHT_B", b));
    // Discovery of a just-installed CRD can lag; retry the first apply briefly.
    let mut applied = apply("80", "20");
    for _ in 0..40 {
        if applied.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        applied = apply("80", "20");
    }
    applied?;
    wait_for(&store, "the VirtualService reaching the store", |s| {
        s.objects.contains_key(&key)
    })
    .await?;
    ensure!(weights(&store, &key) == Some(vec![80, 20]));
    ensure!(store.snapshot().objects[&key].source.as_ref() == "kubernetes/VirtualService");

    apply("50", "50")?;
    wait_for(&store, "the update", |_| {
        weights(&store, &key) == Some(vec![50, 50])
    })
    .await?;

    // The CRD schema admits a negative weight; Istio's rules do not.
    let revision = store.snapshot().revision;
    apply("-10", "110")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        weights(&store, &key) == Some(vec![50, 50]),
        "the invalid edit must not replace the last good version"
    );
    ensure!(
        store.snapshot().revision == revision,
        "the store must not change on an invalid edit"
    );

    ctx.kubectl(&["delete", "virtualservice", "reviews"])?;
    wait_for(&store, "the delete", |s| !s.objects.contains_key(&key)).await?;
    task.abort();
    Ok(())
}
