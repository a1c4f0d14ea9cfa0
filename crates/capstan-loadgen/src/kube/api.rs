//! The load generator's side of the API server: Istio's CRDs, istiod's `istio-system`
//! prerequisites, the mesh's objects, and the changes, all by server-side apply (idempotent, so
//! a second run on the same API server finds its mesh in place).

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Requests in flight while creating the mesh.
const CONCURRENCY: usize = 32;
const FIELD_MANAGER: &str = "capstan-loadgen";

/// A client of the API server holding the mesh.
#[derive(Clone)]
pub struct MeshApi {
    client: Client,
}

/// Where an object of `apiVersion`/`kind` is served: its resource and whether it is namespaced.
fn resource(api_version: &str, kind: &str) -> Result<(ApiResource, bool)> {
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "ConfigMap" => ("configmaps", true),
        "Service" => ("services", true),
        "EndpointSlice" => ("endpointslices", true),
        "VirtualService" => ("virtualservices", true),
        "DestinationRule" => ("destinationrules", true),
        "ServiceEntry" => ("serviceentries", true),
        "Gateway" => ("gateways", true),
        "Sidecar" => ("sidecars", true),
        "AuthorizationPolicy" => ("authorizationpolicies", true),
        "PeerAuthentication" => ("peerauthentications", true),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        other => bail!("no resource known for kind {other}"),
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Ok((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

impl MeshApi {
    /// A client from `kubeconfig`.
    pub async fn connect(kubeconfig: &Path) -> Result<MeshApi> {
        let kc = Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("loading the kubeconfig")?;
        Ok(MeshApi {
            client: Client::try_from(config).context("building the Kubernetes client")?,
        })
    }

    /// Server-side applies `object` (force: the load generator owns the mesh).
    pub async fn apply(&self, object: &Value) -> Result<()> {
        let str_field = |f: &str| object[f].as_str().unwrap_or_default();
        let (ar, namespaced) = resource(str_field("apiVersion"), str_field("kind"))?;
        let meta = &object["metadata"];
        let name = meta["name"].as_str().context("an object without a name")?;
        let api: Api<DynamicObject> = if namespaced {
            let ns = meta["namespace"]
                .as_str()
                .context("a namespaced object without a namespace")?;
            Api::namespaced_with(self.client.clone(), ns, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .with_context(|| format!("applying {} {name}", ar.kind))?;
        Ok(())
    }

    /// Applies `objects`, `CONCURRENCY` at a time.
    pub async fn apply_all(&self, objects: &[Value]) -> Result<()> {
        futures::stream::iter(objects.iter().map(|o| self.apply(o)))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Applies every CRD in `dir` (`deploy/crds`: Istio's, generated from Capstan's types) and
    /// waits until every kind they define is served.
    pub async fn install_crds(&self, dir: &Path) -> Result<()> {
        let mut crds = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path)?;
                let crd: Value = serde_yaml_ng::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                crds.push(crd);
            }
        }
        if crds.is_empty() {
            bail!("no CRDs in {}", dir.display());
        }
        self.apply_all(&crds).await?;
        // Every kind the CRDs define is served before anything of it is applied.
        for crd in &crds {
            let spec = &crd["spec"];
            let (group, kind, plural) = (
                spec["group"].as_str().unwrap_or_default(),
                spec["names"]["kind"].as_str().unwrap_or_default(),
                spec["names"]["plural"].as_str().unwrap_or_default(),
            );
            let version = spec["versions"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
                .and_then(|v| v["name"].as_str())
                .with_context(|| format!("the CRD of {kind} has no storage version"))?;
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let api: Api<DynamicObject> = Api::all_with(
                self.client.clone(),
                &ApiResource::from_gvk_with_plural(&gvk, plural),
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Err(e) = api.list(&ListParams::default().limit(1)).await {
                if Instant::now() > deadline {
                    bail!("{plural} not served 60 s after their CRD was applied: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mesh_object_has_a_resource() {
        let spec = capstan_loadgen::mesh::MeshSpec {
            services: 3,
            endpoints: 2,
            virtual_services: 1,
            destination_rules: 1,
        };
        let mut objects = capstan_loadgen::kube_mesh::objects(&spec);
        objects.push(capstan_loadgen::kube_mesh::istio_config_map());
        let counts = capstan_loadgen::startup_mesh::IstioCounts::split(100, 50);
        let (_, kube, istio) = capstan_loadgen::startup_mesh::objects(50, 1, &counts);
        objects.extend(kube);
        objects.extend(istio);
        for o in &objects {
            let (ar, namespaced) = resource(
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
            )
            .expect("known kind");
            assert_eq!(namespaced, o["metadata"].get("namespace").is_some(), "{o}");
            assert_eq!(ar.api_version, o["apiVersion"].as_str().unwrap());
        }
        let (ar, _) = resource("discovery.k8s.io/v1", "EndpointSlice").unwrap();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str()),
            ("discovery.k8s.io", "v1")
        );
    }
}
