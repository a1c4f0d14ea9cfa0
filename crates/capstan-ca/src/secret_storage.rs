//! The self-signed CA kept where istiod keeps it: the Kubernetes Secret `istio-ca-secret` in
//! the control plane's namespace (type `istio.io/ca-root`, keys `ca-cert.pem`, `ca-key.pem`,
//! `cert-chain.pem`, `root-cert.pem`). Saving is a CREATE, so of two replicas starting
//! together one wins and the other loads the winner's root.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};

use crate::storage::{
    CaSecret, CaStorage, StorageError, CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT,
    SELF_SIGNED_SECRET_NAME,
};

/// Secret type istiod gives `istio-ca-secret`.
pub const CA_SECRET_TYPE: &str = "istio.io/ca-root";

/// A CA secret stored as a Kubernetes Secret.
#[derive(Clone)]
pub struct KubeSecretStorage {
    client: kube::Client,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for KubeSecretStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

impl KubeSecretStorage {
    /// Istio's `istio-ca-secret` in `namespace` (istiod's own, usually `istio-system`).
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: SELF_SIGNED_SECRET_NAME.to_owned(),
        }
    }

    fn api(&self) -> kube::Api<Secret> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn io(&self, e: kube::Error) -> StorageError {
        StorageError::Io {
            location: self.location(),
            source: Box::new(e),
        }
    }
}

/// The secret's key material; `location` names it in errors.
pub fn secret_from_object(object: &Secret, location: &str) -> Result<CaSecret, StorageError> {
    let empty = BTreeMap::new();
    let data = object.data.as_ref().unwrap_or(&empty);
    let text = |key: &str, required: bool| -> Result<String, StorageError> {
        match data.get(key) {
            Some(bytes) => String::from_utf8(bytes.0.clone()).map_err(|_| StorageError::Invalid {
                location: location.to_owned(),
                reason: format!("{key} is not UTF-8 text"),
            }),
            None if required => Err(StorageError::Invalid {
                location: location.to_owned(),
                reason: format!("key {key} is missing"),
            }),
            None => Ok(String::new()),
        }
    };
    Ok(CaSecret {
        ca_cert: text(CA_CERT, true)?,
        ca_key: text(CA_KEY, true)?,
        cert_chain: text(CERT_CHAIN, false)?,
        root_cert: text(ROOT_CERT, false)?,
    })
}

/// The Secret object holding `secret`.
pub fn object_from_secret(secret: &CaSecret, namespace: &str, name: &str) -> Secret {
    let data = [
        (CA_CERT, &secret.ca_cert),
        (CA_KEY, &secret.ca_key),
        (CERT_CHAIN, &secret.cert_chain),
        (ROOT_CERT, &secret.root_cert),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(CA_SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

impl CaStorage for KubeSecretStorage {
    fn location(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.name)
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<CaSecret>, StorageError>> {
        Box::pin(async move {
            let Some(object) = self
                .api()
                .get_opt(&self.name)
                .await
                .map_err(|e| self.io(e))?
            else {
                return Ok(None);
            };
            secret_from_object(&object, &self.location()).map(Some)
        })
    }

    fn save<'a>(&'a self, secret: &'a CaSecret) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let object = object_from_secret(secret, &self.namespace, &self.name);
            match self.api().create(&PostParams::default(), &object).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    Err(StorageError::AlreadyExists(self.location()))
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => Err(StorageError::Io {
                    location: self.location(),
                    source: format!(
                        "namespace {} does not exist (create it, or name the control plane's \
                         namespace): {}",
                        self.namespace, status.message
                    )
                    .into(),
                }),
                Err(e) => Err(self.io(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_round_trip_and_missing_keys() {
        let secret = CaSecret {
            ca_cert: "cert".into(),
            ca_key: "key".into(),
            cert_chain: String::new(),
            root_cert: "root".into(),
        };
        let object = object_from_secret(&secret, "istio-system", SELF_SIGNED_SECRET_NAME);
        assert_eq!(object.type_.as_deref(), Some(CA_SECRET_TYPE));
        assert_eq!(object.metadata.name.as_deref(), Some("istio-ca-secret"));
        assert_eq!(secret_from_object(&object, "here").unwrap(), secret);

        let mut no_key = object.clone();
        no_key.data.as_mut().unwrap().remove(CA_KEY);
        let err = secret_from_object(&no_key, "here").unwrap_err();
        assert!(
            err.to_string().contains("key ca-key.pem is missing"),
            "{err}"
        );

        // istiod's secret of a self-signed CA may lack the optional keys.
        let mut minimal = object;
        let data = minimal.data.as_mut().unwrap();
        data.remove(CERT_CHAIN);
        data.remove(ROOT_CERT);
        let loaded = secret_from_object(&minimal, "here").unwrap();
        assert_eq!(loaded.root_cert, "");
    }
}
