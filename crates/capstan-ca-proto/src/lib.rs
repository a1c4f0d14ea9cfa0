//! Istio's certificate-signing API (`istio.v1.auth.IstioCertificateService`, defined in
//! `istio.io/api/security/v1alpha1/ca.proto`), written by hand with `prost` derives so that
//! neither protoc nor copied `.proto` files are needed.
//!
//! Both sides use it: the control plane's CA serves [`CREATE_CERTIFICATE_PATH`], and the proxy
//! (which depends on no control-plane crate) calls it through [`CertificateClient`].

#![deny(missing_docs)]

use tonic::client::{Grpc, GrpcService};
use tonic::codegen::{Body, Bytes, StdError};

/// Protobuf package of the messages.
pub const PACKAGE: &str = "istio.v1.auth";
/// Fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
/// The only method of the service.
pub const CREATE_CERTIFICATE_METHOD: &str = "CreateCertificate";
/// HTTP/2 path of `CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
/// Key of [`IstioCertificateRequest::metadata`] with which a node agent asks for a certificate
/// on behalf of another identity (Istio's `security.ImpersonatedIdentity`).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// A certificate signing request. The caller is authenticated out of band (bearer token in
/// the `authorization` header, or the TLS client certificate); the CA decides every field of
/// the issued certificate except the public key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded PKCS#10 certificate request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested validity in seconds; 0 means the CA's default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Opaque node metadata (Istio reads `ImpersonatedIdentity`, `ClusterID` from it).
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// The issued certificate: leaf first, then intermediates, the root last.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates, one chain element per entry.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

impl IstioCertificateRequest {
    /// The string value of a metadata field, if present and a string.
    pub fn metadata_string(&self, key: &str) -> Option<&str> {
        match self.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
            prost_types::value::Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }
}

/// A client of `IstioCertificateService` over any tonic transport (a `Channel`, or a
/// TLS-wrapped service of the caller's choice).
#[derive(Debug, Clone)]
pub struct CertificateClient<T> {
    inner: Grpc<T>,
}

impl<T> CertificateClient<T>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// Wraps a transport.
    pub fn new(transport: T) -> Self {
        Self {
            inner: Grpc::new(transport),
        }
    }

    /// Calls `CreateCertificate`. Add `authorization: Bearer <token>` to the request metadata
    /// when authenticating with a Kubernetes service-account token.
    pub async fn create_certificate(
        &mut self,
        request: impl tonic::IntoRequest<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        self.inner.ready().await.map_err(|e| {
            tonic::Status::unavailable(format!("CA transport not ready: {}", e.into()))
        })?;
        let mut request = request.into_request();
        request.extensions_mut().insert(tonic::GrpcMethod::new(
            SERVICE_NAME,
            CREATE_CERTIFICATE_METHOD,
        ));
        let codec =
            tonic_prost::ProstCodec::<IstioCertificateRequest, IstioCertificateResponse>::default();
        self.inner
            .unary(
                request,
                http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
                codec,
            )
            .await
    }
}

/// Builds a request for `csr_pem` valid for `validity_seconds` (0: the CA's default), with a
/// bearer token if one is given.
pub fn certificate_request(
    csr_pem: impl Into<String>,
    validity_seconds: i64,
    bearer_token: Option<&str>,
) -> Result<tonic::Request<IstioCertificateRequest>, tonic::Status> {
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr_pem.into(),
        validity_duration: validity_seconds,
        metadata: None,
    });
    if let Some(token) = bearer_token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            tonic::Status::invalid_argument("bearer token is not a valid header value")
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Field numbers match ca.proto: csr = 1, validity_duration = 3, metadata = 4;
    /// cert_chain = 1. Bytes written by hand from the protobuf encoding rules.
    #[test]
    fn field_numbers_match_istio() {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "k".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("v".into())),
            },
        );
        let request = IstioCertificateRequest {
            csr: "a".into(),
            validity_duration: 5,
            metadata: Some(prost_types::Struct { fields }),
        };
        let bytes = request.encode_to_vec();
        // tag 1 (len): "a"; tag 3 (varint): 5; tag 4 (len): Struct{ fields: {"k": "v"} }.
        assert_eq!(&bytes[..5], &[0x0a, 1, b'a', 0x18, 5]);
        assert_eq!(bytes[5], 0x22);
        assert_eq!(
            IstioCertificateRequest::decode(bytes.as_slice()).unwrap(),
            request
        );
        assert_eq!(request.metadata_string("k"), Some("v"));
        assert_eq!(request.metadata_string("missing"), None);

        let response = IstioCertificateResponse {
            cert_chain: vec!["x".into(), "y".into()],
        };
        assert_eq!(response.encode_to_vec(), vec![0x0a, 1, b'x', 0x0a, 1, b'y']);
    }

    #[test]
    fn path_is_service_and_method() {
        assert_eq!(
            CREATE_CERTIFICATE_PATH,
            format!("/{SERVICE_NAME}/{CREATE_CERTIFICATE_METHOD}")
        );
        assert!(SERVICE_NAME.starts_with(PACKAGE));
    }

    #[test]
    fn request_carries_bearer_token() {
        let request = certificate_request("csr", 60, Some("tok")).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer tok"
        );
        assert!(certificate_request("csr", 60, Some("bad\ntoken")).is_err());
    }
}
