//! Capstan's generated CRDs in a real kube-apiserver: they install, serve v1/v1beta1/v1alpha3
//! with Istio's short names and categories, accept Istio's own sample YAML unchanged through
//! `kubectl apply`, reject unknown fields server-side, and what the API server gives back
//! decodes and validates to the same objects.

use anyhow::{ensure, Context, Result};
use capstan_api::{check_text, CheckOptions, Kind, Verdict};
use capstan_e2e::{context, repo_root, TestContext};
use std::path::PathBuf;

fn install_crds(ctx: &TestContext) -> Result<()> {
    let dir = repo_root().join("deploy/crds");
    ctx.infra.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        dir.to_str().context("utf-8 path")?,
    ])?;
    for kind in Kind::ALL {
        ctx.infra.kubectl(&[
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "60s",
            &format!("crd/{}.{}", kind.plural(), kind.group()),
        ])?;
    }
    Ok(())
}

fn shared_valid_corpus() -> Result<Vec<PathBuf>> {
    let shared = std::env::var_os("CAPSTAN_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    let mut files = Vec::new();
    for sub in [
        "conformance/istio/valid/bookinfo",
        "conformance/istio/valid/galley",
    ] {
        let dir = shared.join(sub);
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("the Istio corpus is missing at {}", dir.display()))?
        {
            files.push(entry?.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Retries a command while the API server's discovery catches up with new CRDs.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut last = None;
    for _ in 0..40 {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Err(last
        .expect("at least one attempt")
        .context(format!("{what} kept failing for 10s")))
}

#[test]
fn istio_samples_apply_unchanged_and_come_back_valid() -> Result<()> {
    let Some(ctx) = context("istio-crds")? else {
        return Ok(());
    };
    install_crds(&ctx)?;
    let mut applied = 0;
    // The last version applied of each (kind, name): several samples define `reviews`.
    let mut expected = std::collections::BTreeMap::new();
    for file in shared_valid_corpus()? {
        let text = std::fs::read_to_string(&file)?;
        for r in check_text(&text, &CheckOptions::default()) {
            if let Some(o) = r.object {
                expected.insert((o.kind, o.metadata.name.clone()), o.spec.clone());
            }
        }
        // Objects that name their own namespace (istio-system) go there; the rest into the test's.
        if text.contains("namespace: istio-system") {
            let _ = ctx.infra.kubectl(&["create", "namespace", "istio-system"]);
            retry("apply", || {
                ctx.infra
                    .run_tool("kubectl", &["apply", "-f", "-"], Some(&text))
            })?;
        } else {
            retry("apply", || ctx.apply(&text))
                .with_context(|| format!("kubectl apply of {}", file.display()))?;
        }
        applied += 1;
    }
    ensure!(applied >= 14, "only {applied} corpus files applied");

    // Short names and categories as Istio declares them.
    let listed = ctx.kubectl(&["get", "vs,dr,gw,se", "-o", "name"])?;
    ensure!(
        listed.contains("virtualservice.networking.istio.io/reviews"),
        "short names: {listed}"
    );
    let category = ctx.kubectl(&["get", "istio-io", "-o", "name"])?;
    ensure!(
        category.contains("sidecar.networking.istio.io/")
            && category.contains("destinationrule.networking.istio.io/"),
        "category istio-io: {category}"
    );

    // Every served version returns the object.
    for version in Kind::VirtualService.versions() {
        ctx.kubectl(&[
            "get",
            &format!("virtualservices.{version}.networking.istio.io"),
            "reviews",
        ])?;
    }

    // What the API server stores decodes and validates, and equals what was applied.
    let listed = ctx.kubectl(&[
        "get",
        "virtualservices,destinationrules,gateways,serviceentries,sidecars",
        "-o",
        "json",
    ])?;
    let results = check_text(&listed, &CheckOptions::default());
    ensure!(
        results.len() >= 10,
        "expected the applied objects back, got {}",
        results.len()
    );
    for r in &results {
        ensure!(
            r.verdict == Verdict::Valid,
            "{:?} {} came back invalid: {:?}",
            r.kind,
            r.name,
            r.errors
        );
    }
    for back in results.iter().filter_map(|r| r.object.as_ref()) {
        let sent = expected
            .get(&(back.kind, back.metadata.name.clone()))
            .with_context(|| format!("{} {} was not applied", back.kind, back.metadata.name))?;
        ensure!(
            back.spec == *sent,
            "{} {} changed through the API server:\nsent {sent:?}\nback {:?}",
            back.kind,
            back.metadata.name,
            back.spec
        );
    }
    Ok(())
}

#[test]
fn unknown_fields_and_wrong_types_are_rejected_by_the_api_server() -> Result<()> {
    let Some(ctx) = context("istio-crds-strict")? else {
        return Ok(());
    };
    install_crds(&ctx)?;
    let unknown = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: typo\nspec:\n  hosts: [reviews]\n  http:\n  - rout:\n    - destination:\n        host: reviews\n";
    let err = retry("apply that must be refused", || match ctx.apply(unknown) {
        Ok(out) => Err(anyhow::anyhow!("accepted: {out}")),
        Err(e) if format!("{e:#}").contains("the server could not find the requested resource") => {
            Err(e)
        }
        Err(e) => Ok(format!("{e:#}")),
    })?;
    ensure!(
        err.contains("unknown field") && err.contains("rout"),
        "{err}"
    );
    let wrong_type = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: wrong\nspec:\n  host: reviews\n  subsets: {name: v1}\n";
    let err = format!(
        "{:#}",
        ctx.apply(wrong_type)
            .err()
            .context("a map where a list belongs must be refused")?
    );
    ensure!(err.contains("subsets"), "{err}");
    Ok(())
}
