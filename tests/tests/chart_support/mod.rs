//! Running the pinned helm and kubectl against a private API server (the chart's webhook
//! configurations are cluster-wide and must not reach the shared test cluster).

#![allow(dead_code)] // each test binary uses a part

use anyhow::Result;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{run_ok, run_with_timeout, CmdOutput, Infra};
use std::process::Command;
use std::time::Duration;

/// Limit of one helm or kubectl call.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A command with the infra environment (tools on PATH, helm's dirs under target/) whose
/// `KUBECONFIG` is the private API server's.
pub fn command(infra: &Infra, kube: &PrivateKube, program: &str) -> Result<Command> {
    let tool = infra.tool(program)?;
    let program = if tool.exists() {
        tool.into_os_string()
    } else {
        program.into()
    };
    let mut cmd = infra.command(program);
    cmd.env("KUBECONFIG", kube.kubeconfig());
    Ok(cmd)
}

/// `kubectl ARGS` against the private API server, whatever its exit status.
pub fn kubectl_raw(
    infra: &Infra,
    kube: &PrivateKube,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<CmdOutput> {
    let mut cmd = command(infra, kube, "kubectl")?;
    cmd.args(args);
    run_with_timeout(&mut cmd, stdin, TIMEOUT)
}

/// `kubectl ARGS` against the private API server, requiring success.
pub fn kubectl(
    infra: &Infra,
    kube: &PrivateKube,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    let mut cmd = command(infra, kube, "kubectl")?;
    cmd.args(args);
    run_ok(&mut cmd, stdin, TIMEOUT)
}

/// `helm ARGS` against the private API server, requiring success.
pub fn helm(infra: &Infra, kube: &PrivateKube, args: &[&str]) -> Result<String> {
    let mut cmd = command(infra, kube, "helm")?;
    cmd.args(args);
    run_ok(&mut cmd, None, TIMEOUT)
}
