//! Status writing against a private kube-apiserver: a VirtualService the CRD schema accepts but
//! Istio's validation refuses (no webhook installed) is skipped by `capstan discovery` and gets
//! `status.validationMessages` (IST0106 with our field-path message); fixing it removes the
//! message; a valid object is never written to.

mod ca_support;

use anyhow::Result;
use ca_support::Discovery;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, poll_until};
use std::time::Duration;

const BROKEN: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: '(('}
    route:
    - destination: {host: reviews}
";

const FIXED: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: '/reviews/.*'}
    route:
    - destination: {host: reviews}
";

const VALID: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
";

fn status(kube: &PrivateKube, what: &str) -> Result<String> {
    kube.kubectl(&["-n", "shop", "get", what, "-o", "jsonpath={.status}"])
}

#[test]
fn invalid_objects_are_marked_in_their_status_and_cleared_when_fixed() -> Result<()> {
    let Some(ctx) = context("discovery-status")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("status", &[])?;
    kube.install_istio_crds(&[
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
    ])?;
    for ns in ["istio-system", "shop"] {
        kube.kubectl(&["create", "namespace", ns])?;
    }
    // Applied before the control plane runs, as with the webhook off.
    kube.apply(BROKEN)?;
    kube.apply(VALID)?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let d = Discovery::start(
        &ctx.scratch,
        "status",
        &[
            "--kubeconfig",
            &kubeconfig,
            "--leader-renew-period",
            "500ms",
        ],
    )?;
    let marked = poll_until(
        "the invalid VirtualService's status",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let s = status(&kube, "virtualservice/reviews")?;
            Ok(s.contains("IST0106").then_some(s))
        },
    )
    .map_err(|e| e.context(d.tail()))?;
    anyhow::ensure!(
        marked.contains("spec.http[0].match[0].uri.regex") && marked.contains("ERROR"),
        "status: {marked}"
    );
    // Fixed: the message goes.
    kube.apply(FIXED)?;
    poll_until(
        "the fixed VirtualService's status cleared",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let s = status(&kube, "virtualservice/reviews")?;
            Ok((!s.contains("IST0106")).then_some(()))
        },
    )
    .map_err(|e| e.context(d.tail()))?;
    let valid = status(&kube, "destinationrule/reviews")?;
    anyhow::ensure!(
        !valid.contains("validationMessages"),
        "a valid object was written to: {valid}"
    );
    Ok(())
}
