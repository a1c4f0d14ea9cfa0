//! The HTTPS client side: keep-alive HTTP/1.1 connections (hyper's connection API over
//! tokio-rustls, as the API server keeps its connections to a webhook open), each one worker
//! sending reviews one after the other (closed loop) and timing each from the request's
//! first byte handed to the connection to the response's last byte read.

use super::reviews::{self, Review};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Where and how to connect.
pub struct Connector {
    host: String,
    port: u16,
    path: String,
    authority: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

/// A TLS client trusting only the CA certificates in `ca` (PEM), offering HTTP/1.1.
fn tls_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading CA certificates from {}", ca.display()))?
    {
        roots
            .add(cert.context("a CA certificate's PEM")?)
            .context("a CA certificate rustls accepts")?;
    }
    if roots.is_empty() {
        bail!("no CA certificate in {}", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Connector {
    /// A connector for `target`, verifying the server's certificate against `ca` for
    /// `server_name`.
    pub fn new(
        target: &super::Target,
        ca: &Path,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Connector> {
        let server_name = ServerName::try_from(server_name.to_string())
            .with_context(|| format!("{server_name:?} is not a DNS name or IP address"))?;
        Ok(Connector {
            host: target.host.clone(),
            port: target.port,
            path: target.path.clone(),
            authority: format!("{}:{}", target.host, target.port),
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca)?)),
            timeout,
        })
    }

    /// A new connection, TLS handshaken; its driver runs on the current runtime.
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((host, self.port))
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        tcp.set_nodelay(true)?;
        let tls = tokio::time::timeout(
            self.timeout,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake")?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// POSTs one review; returns the status and the body.
    pub async fn post(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<(u16, Bytes)> {
        let exchange = async {
            sender.ready().await.context("connection closed")?;
            let request = http::Request::post(self.path.as_str())
                .header(http::header::HOST, self.authority.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .context("building the request")?;
            let response = sender
                .send_request(request)
                .await
                .context("sending the review")?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .context("reading the answer")?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .with_context(|| format!("no answer within {:?}", self.timeout))?
    }
}

/// Why an answer does not count as a correct one, or `None` when it does.
pub fn check(review: &Review, status: u16, body: &[u8]) -> Option<String> {
    if status != 200 {
        return Some(format!(
            "{}: HTTP {status}: {}",
            review.name,
            String::from_utf8_lossy(body)
        ));
    }
    match reviews::verdict(body) {
        Some(allowed) if allowed == review.allowed => None,
        _ => Some(format!(
            "{}: expected allowed={}, got: {}",
            review.name,
            review.allowed,
            String::from_utf8_lossy(body)
        )),
    }
}

/// What every worker shares.
pub struct Plan {
    pub connector: Connector,
    pub bodies: Vec<Bytes>,
    pub reviews: Vec<Review>,
    /// Indices into `reviews`: the i-th request of a phase sends `schedule[i % len]`.
    pub schedule: Vec<usize>,
    pub warmup: usize,
    pub requests: usize,
    /// Every worker and the orchestrator meet here: connected, warmed up, started.
    pub barrier: Barrier,
    pub warm_tickets: AtomicUsize,
    pub tickets: AtomicUsize,
}

/// One worker's measurements.
#[derive(Default)]
pub struct Outcome {
    /// Latency of every correct answer in the measured phase.
    pub samples: Vec<Duration>,
    /// Requests that failed (connection, timeout, non-200) in the measured phase.
    pub errors: usize,
    /// 200 answers with the wrong verdict in the measured phase.
    pub wrong: usize,
    /// The first problem, for the report.
    pub first_problem: Option<String>,
    /// When its last measured answer arrived.
    pub finished: Option<Instant>,
}

impl Outcome {
    fn note(&mut self, problem: String) {
        self.first_problem.get_or_insert(problem);
    }
}

/// Sends the phase's requests while tickets last; `measure` records them in `outcome`.
/// Returns the connection (reconnected after a failure) or `None` once it cannot be.
async fn phase(
    plan: &Plan,
    tickets: &AtomicUsize,
    limit: usize,
    mut sender: Option<SendRequest<Full<Bytes>>>,
    outcome: &mut Outcome,
    measure: bool,
) -> Option<SendRequest<Full<Bytes>>> {
    loop {
        // No ticket is taken without a connection to send it on.
        let conn = sender.as_mut()?;
        let i = tickets.fetch_add(1, Ordering::Relaxed);
        if i >= limit {
            return sender;
        }
        let which = plan.schedule[i % plan.schedule.len()];
        let started = Instant::now();
        let result = plan.connector.post(conn, plan.bodies[which].clone()).await;
        let took = started.elapsed();
        match result {
            Ok((status, body)) => match check(&plan.reviews[which], status, &body) {
                None if measure => outcome.samples.push(took),
                None => {}
                Some(problem) => {
                    if measure {
                        if status == 200 {
                            outcome.wrong += 1;
                        } else {
                            outcome.errors += 1;
                        }
                    }
                    outcome.note(problem);
                }
            },
            Err(e) => {
                if measure {
                    outcome.errors += 1;
                }
                outcome.note(format!("{e:#}"));
                sender = plan.connector.connect().await.ok();
            }
        }
        if measure {
            outcome.finished = Some(Instant::now());
        }
    }
}

/// One connection: connect, warm up, run the measured phase. Always meets the barrier three
/// times, whatever fails, so the others are never left waiting.
pub async fn worker(plan: Arc<Plan>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sender = match plan.connector.connect().await {
        Ok(s) => Some(s),
        Err(e) => {
            outcome.note(format!("{e:#}"));
            None
        }
    };
    plan.barrier.wait().await;
    sender = phase(
        &plan,
        &plan.warm_tickets,
        plan.warmup,
        sender,
        &mut outcome,
        false,
    )
    .await;
    plan.barrier.wait().await;
    plan.barrier.wait().await;
    if sender.is_none() {
        // Counted once: this connection sends nothing in the measured phase.
        outcome.errors += 1;
    }
    phase(
        &plan,
        &plan.tickets,
        plan.requests,
        sender,
        &mut outcome,
        true,
    )
    .await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_for_status_and_verdict() {
        let mix = reviews::mix();
        let valid = mix.iter().find(|r| r.allowed).expect("a valid one");
        let allowed = br#"{"response":{"uid":"u","allowed":true}}"#;
        let denied = br#"{"response":{"uid":"u","allowed":false}}"#;
        assert_eq!(check(valid, 200, allowed), None);
        assert!(check(valid, 200, denied)
            .expect("wrong")
            .contains("expected allowed=true"));
        assert!(check(valid, 415, b"invalid Content-Type")
            .expect("an error")
            .contains("HTTP 415"));
        let invalid = mix.iter().find(|r| !r.allowed).expect("an invalid one");
        assert_eq!(check(invalid, 200, denied), None);
    }
}
