//! The installed tools are the pinned versions (tests/infra/install-tools.sh).

use anyhow::Result;
use capstan_e2e::{context, COMMAND_TIMEOUT};

#[test]
fn tools_report_pinned_versions() -> Result<()> {
    let Some(ctx) = context("versions")? else {
        return Ok(());
    };
    let infra = ctx.infra;

    let kube = infra.var("CAPSTAN_KUBERNETES_VERSION")?;
    let v: serde_json::Value = serde_json::from_str(&infra.kubectl(&["version", "-o", "json"])?)?;
    assert_eq!(v["clientVersion"]["gitVersion"], kube, "{v}");
    assert_eq!(v["serverVersion"]["gitVersion"], kube, "{v}");

    let helm = infra.helm(&["version", "--template", "{{.Version}}"])?;
    assert_eq!(helm.trim(), infra.var("CAPSTAN_HELM_VERSION")?);

    let consul = infra.run_tool("consul", &["version"], None)?;
    let want = infra.var("CAPSTAN_CONSUL_VERSION")?;
    assert!(consul.starts_with(&format!("Consul {want}")), "{consul}");

    let mut etcd = infra.command(infra.tool("etcd")?);
    etcd.arg("--version");
    let out = capstan_e2e::run_ok(&mut etcd, None, COMMAND_TIMEOUT)?;
    let want = infra
        .var("CAPSTAN_ETCD_VERSION")?
        .trim_start_matches('v')
        .to_owned();
    assert!(out.contains(&format!("etcd Version: {want}")), "{out}");
    Ok(())
}
