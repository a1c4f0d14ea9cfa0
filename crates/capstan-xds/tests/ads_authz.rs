//! The authorization hook over real gRPC on 127.0.0.1: a transport stand-in (an interceptor
//! turning a test header into an [`AuthenticatedPeer`]) and [`NamespaceAuthorizer`] on the
//! service. A node in the caller's namespace is served; a node elsewhere is refused with
//! `PERMISSION_DENIED`; a caller without identities with `UNAUTHENTICATED`. The same server's
//! service without an authorizer serves everyone.

mod ads_support;

use ads_support::*;
use capstan_xds::resource::CLUSTER;
use capstan_xds::{AdsOptions, AuthenticatedPeer, NamespaceAuthorizer, PeerIdentity};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const HEADER: &str = "x-test-namespace";

/// Serves `h`'s ADS with the authorizer, identities taken from [`HEADER`].
async fn authorizing_server(h: &Harness) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = h
        .ads
        .service()
        .with_authorizer(Arc::new(NamespaceAuthorizer));
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        |mut req: tonic::Request<()>| {
            let namespace = req
                .metadata()
                .get(HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(namespace) = namespace {
                req.extensions_mut()
                    .insert(AuthenticatedPeer::new(vec![PeerIdentity {
                        id: format!("spiffe://cluster.local/ns/{namespace}/sa/app"),
                        namespace,
                    }]));
            }
            Ok(req)
        },
    );
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

/// Opens a Delta stream as `namespace` (or nobody) for node `id`, asks for clusters and returns
/// the first answer.
async fn first_answer(
    addr: SocketAddr,
    namespace: Option<&str>,
    id: &str,
) -> Result<usize, tonic::Status> {
    let mut client = within(AggregatedDiscoveryServiceClient::connect(format!(
        "http://{addr}"
    )))
    .await
    .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node(id)),
        type_url: CLUSTER.into(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(ns) = namespace {
        request.metadata_mut().insert(HEADER, ns.parse().unwrap());
    }
    let mut stream = within(client.delta_aggregated_resources(request))
        .await?
        .into_inner();
    let response = within(stream.message())
        .await?
        .expect("a response before the end");
    drop(tx);
    Ok(response.resources.len())
}

#[tokio::test]
async fn streams_are_authorized_by_the_namespace_of_the_node() {
    let h = Harness::start(AdsOptions::default()).await;
    let addr = authorizing_server(&h).await;
    const OTHER: &str = "sidecar~10.1.1.2~reviews-v1.other~other.svc.cluster.local";

    assert_eq!(
        first_answer(addr, Some("default"), NODE_ID).await.unwrap(),
        2
    );

    let denied = first_answer(addr, Some("default"), OTHER)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains(OTHER) && denied.message().contains("/ns/default/"),
        "the message names the node and the identity: {denied:?}"
    );

    let anonymous = first_answer(addr, None, NODE_ID).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");

    // The plain service of the same server does not authorize.
    assert_eq!(first_answer(h.addr, None, OTHER).await.unwrap(), 2);
    eventually(|| h.ads.metrics().rejected_streams >= 2).await;
}
