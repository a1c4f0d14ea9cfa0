//! A real gRPC call (a tonic client and a tonic server, unary `CreateCertificate` of Istio's
//! certificate service) through `capstan proxy` as an ingress gateway, with a VirtualService
//! `retries: {attempts: 2, retryOn: unavailable}`: the server answers the call's first attempt
//! `UNAVAILABLE`, and the gateway retries it as Envoy does — the request body, which a gRPC
//! client sends without a length, is replayed.

mod proxy;

use anyhow::{ensure, Context, Result};
use capstan_ca_proto::{
    CertificateClient, IstioCertificateRequest, IstioCertificateResponse, SERVICE_NAME,
};
use proxy::{discovery, free_port, write_atomic};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

const CLUSTER: &str = "cluster.outbound|9080||reviews.default.svc.cluster.local";

/// Protobuf messages in gRPC frames (tonic leaves the codec to generated code).
struct Prost<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Codec for Prost<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = Prost<E, ()>;
    type Decoder = Prost<(), D>;
    fn encoder(&mut self) -> Self::Encoder {
        Prost(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        Prost(PhantomData)
    }
}

impl<E: prost::Message> Encoder for Prost<E, ()> {
    type Item = E;
    type Error = Status;
    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<D: prost::Message + Default> Decoder for Prost<(), D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A certificate service that signs nothing: it answers `signed:<csr>`, except that the first
/// attempt of each `flaky-*` request is `UNAVAILABLE`. It remembers every CSR it was sent.
#[derive(Clone, Default)]
struct Flaky {
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Flaky {
    fn calls(&self, csr: &str) -> usize {
        self.calls
            .lock()
            .expect("not poisoned")
            .get(csr)
            .copied()
            .unwrap_or(0)
    }
}

impl tonic::server::UnaryService<IstioCertificateRequest> for Flaky {
    type Response = IstioCertificateResponse;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Self::Response>, Status>> + Send>,
    >;

    fn call(&mut self, request: Request<IstioCertificateRequest>) -> Self::Future {
        let csr = request.into_inner().csr;
        let n = {
            let mut calls = self.calls.lock().expect("not poisoned");
            let n = calls.entry(csr.clone()).or_default();
            *n += 1;
            *n
        };
        Box::pin(async move {
            if csr.starts_with("flaky-") && n == 1 {
                return Err(Status::unavailable("warming up"));
            }
            Ok(Response::new(IstioCertificateResponse {
                cert_chain: vec![format!("signed:{csr}")],
            }))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for Flaky
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.clone();
        Box::pin(async move {
            let codec = Prost::<IstioCertificateResponse, IstioCertificateRequest>(PhantomData);
            Ok(tonic::server::Grpc::new(codec).unary(method, request).await)
        })
    }
}

impl tonic::server::NamedService for Flaky {
    const NAME: &'static str = SERVICE_NAME;
}

/// Serves [`Flaky`] with tonic's server on a loopback port.
async fn grpc_backend(service: Flaky) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let incoming = futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    Ok(port)
}

/// The gateway's Istio config: a gateway on `port`, and the VirtualService routing
/// `reviews.example.com` to the `grpc` port of `reviews` with Istio-style retries.
fn config(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews.example.com]\n  gateways: [web]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local}}\n    retries: {{attempts: 2, retryOn: unavailable}}\n"
    )
}

fn registry(backend_port: u16) -> String {
    format!(
        "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: grpc, port: 9080}}]\n  addresses: [10.96.10.3]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{grpc: {backend_port}}}, labels: {{app: reviews}}, workload: reviews-0}}\n"
    )
}

async fn create(
    client: &mut CertificateClient<tonic::transport::Channel>,
    csr: &str,
) -> Result<Vec<String>, Status> {
    let request = IstioCertificateRequest {
        csr: csr.into(),
        validity_duration: 0,
        metadata: None,
    };
    match tokio::time::timeout(Duration::from_secs(10), client.create_certificate(request)).await {
        Ok(r) => r.map(|r| r.into_inner().cert_chain),
        Err(_) => Err(Status::deadline_exceeded("no answer within 10 s")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_answered_unavailable_is_retried() -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("capstan-grpc-retry")
        .tempdir()?;
    let dir = tmp.path();
    let service = Flaky::default();
    let backend_port = grpc_backend(service.clone()).await?;
    let port = free_port();
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("registry.yaml"), registry(backend_port))?;
    write_atomic(&dir.join("config/gateway.yaml"), &config(port))?;
    let discovery = discovery(dir, None)?;
    let gateway = proxy::gateway(dir, discovery.xds_port).await?;
    let logs = || {
        format!(
            "--- gateway:\n{}\n--- discovery:\n{}",
            gateway.proc.tail(),
            discovery.proc.tail()
        )
    };
    // HTTP/2 to the gateway, with the service's host as `:authority`.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .origin("http://reviews.example.com".parse()?)
        .connect_lazy();
    let mut client = CertificateClient::new(channel);

    // Until the route is in place, calls fail (404 from the gateway, or refused).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut probe = 0;
    loop {
        probe += 1;
        match create(&mut client, &format!("probe-{probe}")).await {
            Ok(_) => break,
            Err(e) => ensure!(
                Instant::now() < deadline,
                "no route to the gRPC backend within 15 s: {e}\n{}",
                logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let retries = format!("{CLUSTER}.upstream_rq_retry");
    let before = gateway.stat(&retries).await?;
    let chain = create(&mut client, "flaky-1")
        .await
        .with_context(|| format!("the retried call failed\n{}", logs()))?;
    ensure!(chain == ["signed:flaky-1"], "answered {chain:?}");
    ensure!(
        service.calls("flaky-1") == 2,
        "the backend saw the call {} times, want 2 (the UNAVAILABLE attempt and the retry)",
        service.calls("flaky-1")
    );
    let after = gateway.stat(&retries).await?;
    ensure!(after == before + 1, "upstream_rq_retry {before} → {after}");
    let abandoned = gateway
        .stat(&format!("{CLUSTER}.retry_or_shadow_abandoned"))
        .await?;
    ensure!(abandoned == 0, "retry_or_shadow_abandoned = {abandoned}");
    Ok(())
}
