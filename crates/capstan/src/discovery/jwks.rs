//! The JWKS resolver: fetches the key sets the RequestAuthentications' `jwksUri`s (or their
//! issuers' OpenID discovery documents) name, as istiod's `JwksResolver` does in its default
//! `JwksFetchMode=Istiod`, so that the generated JWT filters carry the keys inline and proxies
//! never fetch them.
//!
//! - A source is fetched when a policy first references it, refreshed every
//!   `--jwks-refresh-interval` (istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20 minutes),
//!   retried every minute while it fails (istiod's `JwtPubKeyRefreshIntervalOnFailure`).
//! - A fetch has the rule's `timeout` (5 s by default), a size cap, and must answer 2xx with a
//!   JSON key set (an object with a `keys` array of keys with a `kty`): anything else is a
//!   failure, logged with its reason.
//! - A failed refresh keeps the keys fetched before (istiod does too); a source never fetched
//!   successfully is absent, and its providers inline the fake key set, so tokens are refused
//!   rather than accepted ([`capstan_xds::context::FAKE_JWKS`]).
//! - A source no policy references any more is dropped. When the fetched keys change, the
//!   generator gets them and a full push is asked for.

use anyhow::{Context as _, Result};
use capstan_config::ConfigStore;
use capstan_xds::context::{jwks_sources, JwksKeys, JwksSource};
use capstan_xds::debounce::Change;
use capstan_xds::generate::istio::IstioGenerator;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

/// The sources to keep fetched, with the fetch timeout of each.
pub type Wanted = BTreeMap<JwksSource, Duration>;

/// The largest key set (or discovery document) accepted: real ones are a few KiB.
const MAX_BODY_BYTES: usize = 512 * 1024;
/// How long a failing source waits before its next attempt (istiod: one minute).
const RETRY_ON_FAILURE: Duration = Duration::from_secs(60);

/// Flags of the JWKS resolver.
#[derive(clap::Args, Debug)]
pub struct JwksArgs {
    /// How often the key sets of RequestAuthentication `jwksUri`s are fetched again
    /// (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL), e.g. 20m, 1h.
    #[arg(long = "jwks-refresh-interval", default_value = "20m", value_parser = super::ca::parse_duration)]
    pub refresh_interval: Duration,
    /// PEM file of extra root certificates trusted when fetching key sets over HTTPS (besides
    /// the system's), like istiod's `/cacerts/extra.pem`.
    #[arg(long = "jwks-resolver-extra-root-ca")]
    pub extra_root_ca: Option<PathBuf>,
}

/// Timing of the resolver loop.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Refresh of a source fetched successfully.
    pub refresh: Duration,
    /// Next attempt after a failure.
    pub retry: Duration,
}

/// Fetches one key set over HTTP(S).
#[derive(Clone)]
pub struct Fetcher {
    /// The client, or why there is none (no root certificate on the system and none given:
    /// every fetch then fails, as istiod's https fetches do without a CA bundle).
    client: Result<reqwest::Client, String>,
    max_bytes: usize,
}

/// Whether `body` is a JSON Web Key Set: an object whose `keys` is a list of keys with a `kty`.
fn check_jwks(body: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = value
        .get("keys")
        .ok_or("not a key set: no \"keys\"")?
        .as_array()
        .ok_or("not a key set: \"keys\" is not a list")?;
    if let Some(i) = keys.iter().position(|k| {
        k.get("kty")
            .and_then(|t| t.as_str())
            .is_none_or(str::is_empty)
    }) {
        return Err(format!("not a key set: keys[{i}] has no \"kty\""));
    }
    Ok(())
}

impl Fetcher {
    /// A fetcher trusting the system's roots, plus those of `extra_root_ca` if given. An
    /// unreadable `extra_root_ca` is an error; a system without roots only makes fetches fail
    /// (logged), so that discovery still serves everything else.
    pub fn new(extra_root_ca: Option<&Path>) -> Result<Fetcher> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err only if another thread installed one meanwhile: fine either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(path) = extra_root_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the JWKS extra roots {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing the JWKS extra roots {}", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "{}: no certificate", path.display());
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| {
            let reason = format!("no JWKS HTTP client: {e}");
            tracing::error!("{reason}; RequestAuthentication jwksUris cannot be fetched");
            reason
        });
        Ok(Fetcher {
            client,
            max_bytes: MAX_BODY_BYTES,
        })
    }

    /// GET `uri` within `timeout`: the body of a 2xx answer, at most `max_bytes`.
    async fn get(&self, uri: &str, timeout: Duration) -> Result<String, String> {
        let read = async {
            let client = self.client.as_ref().map_err(Clone::clone)?;
            let mut resp = client
                .get(uri)
                .send()
                .await
                .map_err(|e| format!("GET {uri}: {e}"))?;
            let status = resp.status();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("GET {uri}: reading the body: {e}"))?
            {
                if body.len() + chunk.len() > self.max_bytes {
                    return Err(format!(
                        "GET {uri}: the body exceeds {} bytes",
                        self.max_bytes
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                let shown: String = text.chars().take(100).collect();
                return Err(format!("GET {uri}: status {status}, body {shown:?}"));
            }
            String::from_utf8(body).map_err(|_| format!("GET {uri}: the body is not UTF-8"))
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("GET {uri}: no complete answer within {timeout:?}"))?
    }

    /// The key set of `source`: fetched from its URI, or from the `jwks_uri` of its issuer's
    /// OpenID discovery document; checked to be a key set.
    pub async fn fetch(&self, source: &JwksSource, timeout: Duration) -> Result<String, String> {
        let uri = match source {
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::Discovery(issuer) => {
                let doc_uri = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc = self.get(&doc_uri, timeout).await?;
                let doc: serde_json::Value =
                    serde_json::from_str(&doc).map_err(|e| format!("{doc_uri}: not JSON: {e}"))?;
                doc.get("jwks_uri")
                    .and_then(|u| u.as_str())
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| format!("{doc_uri}: no jwks_uri"))?
                    .to_string()
            }
        };
        let body = self.get(&uri, timeout).await?;
        check_jwks(&body).map_err(|e| format!("{uri}: {e}"))?;
        Ok(body)
    }
}

/// Keeps the wanted sources fetched: fetches new ones, refreshes, retries failures, drops what
/// is no longer wanted, and calls `publish` with the key sets whenever they change. Returns
/// when `wanted`'s sender is dropped.
pub async fn run(
    fetcher: Fetcher,
    mut wanted: watch::Receiver<Wanted>,
    timing: Timing,
    publish: impl Fn(Arc<JwksKeys>) + Send,
) {
    let mut keys = JwksKeys::new();
    // When each source is next due for a fetch.
    let mut due: BTreeMap<JwksSource, Instant> = BTreeMap::new();
    loop {
        let current = wanted.borrow_and_update().clone();
        let before = keys.clone();
        keys.retain(|s, _| current.contains_key(s));
        due.retain(|s, _| current.contains_key(s));
        let now = Instant::now();
        let fetches = current
            .iter()
            .filter(|(s, _)| due.get(*s).is_none_or(|at| *at <= now))
            .map(|(s, timeout)| {
                let fetcher = fetcher.clone();
                async move { (s.clone(), fetcher.fetch(s, *timeout).await) }
            });
        for (source, result) in futures::future::join_all(fetches).await {
            match result {
                Ok(body) => {
                    if keys.get(&source) != Some(&body) {
                        tracing::info!(%source, "fetched new JWKS");
                    }
                    keys.insert(source.clone(), body);
                    due.insert(source, Instant::now() + timing.refresh);
                }
                Err(reason) => {
                    let kept = if keys.contains_key(&source) {
                        "keeping the keys fetched before"
                    } else {
                        "its providers refuse every token until a fetch succeeds"
                    };
                    tracing::warn!(%source, "fetching the JWKS failed ({reason}); {kept}");
                    due.insert(source, Instant::now() + timing.retry.min(timing.refresh));
                }
            }
        }
        if keys != before {
            publish(Arc::new(keys.clone()));
        }
        let next = due.values().min().copied();
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Keeps `tx` set to the sources the store's RequestAuthentications reference.
async fn track_sources(store: Arc<ConfigStore>, tx: watch::Sender<Wanted>) {
    let mut changes = store.subscribe();
    loop {
        let sources = jwks_sources(&store.snapshot());
        tx.send_if_modified(|w| {
            let changed = *w != sources;
            *w = sources;
            changed
        });
        match changes.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Starts the resolver: the generator inlines what it fetches, and every change of the keys
/// asks `push` for a full push.
pub fn spawn(
    args: &JwksArgs,
    store: Arc<ConfigStore>,
    generator: Arc<IstioGenerator>,
    push: mpsc::Sender<Change>,
) -> Result<()> {
    let fetcher = Fetcher::new(args.extra_root_ca.as_deref())?;
    let (tx, rx) = watch::channel(Wanted::new());
    tokio::spawn(track_sources(store, tx));
    let timing = Timing {
        refresh: args.refresh_interval,
        retry: RETRY_ON_FAILURE,
    };
    tokio::spawn(run(fetcher, rx, timing, move |keys| {
        generator.set_jwks(keys);
        let push = push.clone();
        tokio::spawn(async move {
            let _ = push.send(Change::Everything).await;
        });
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the test server answers for a path: status, body, delay.
    type Routes = Arc<Mutex<HashMap<String, (u16, String, Duration)>>>;

    /// A minimal HTTP/1.1 server on 127.0.0.1 answering from `routes` (404 otherwise), one
    /// request per connection. Returns its base URL.
    async fn server(routes: Routes) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&req)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    let answer = routes.lock().unwrap().get(&path).cloned();
                    let (status, body, delay) =
                        answer.unwrap_or((404, "no such key set".into(), Duration::ZERO));
                    tokio::time::sleep(delay).await;
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    const KEYS_A: &str = r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}"#;
    const KEYS_B: &str = r#"{"keys":[{"kty":"EC","kid":"b","crv":"P-256","x":"AA","y":"AA"}]}"#;

    fn routes(list: &[(&str, u16, &str)]) -> Routes {
        Arc::new(Mutex::new(
            list.iter()
                .map(|(p, s, b)| (p.to_string(), (*s, b.to_string(), Duration::ZERO)))
                .collect(),
        ))
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(None).expect("a client")
    }

    /// Fetch outcomes, one case a row: what the server answers → Ok or the error's gist.
    #[tokio::test]
    async fn fetch_accepts_key_sets_only() {
        let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let r = routes(&[
            ("/ok", 200, KEYS_A),
            ("/empty-set", 200, r#"{"keys":[]}"#),
            ("/html", 200, "<html>"),
            ("/one-key", 200, r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#),
            ("/no-kty", 200, r#"{"keys":[{"n":"x"}]}"#),
            ("/error", 500, "boom"),
            ("/big", 200, &big),
            (
                "/.well-known/openid-configuration",
                200,
                "", // filled below with the server's address
            ),
        ]);
        let base = server(r.clone()).await;
        r.lock().unwrap().insert(
            "/.well-known/openid-configuration".into(),
            (
                200,
                format!(r#"{{"jwks_uri":"{base}/ok"}}"#),
                Duration::ZERO,
            ),
        );
        let f = fetcher();
        let t = Duration::from_secs(5);
        let uri = |p: &str| JwksSource::Uri(format!("{base}{p}"));
        assert_eq!(f.fetch(&uri("/ok"), t).await.as_deref(), Ok(KEYS_A));
        assert!(f.fetch(&uri("/empty-set"), t).await.is_ok());
        let cases = [
            ("/missing", "status 404"),
            ("/error", "status 500"),
            ("/html", "not JSON"),
            ("/one-key", "no \"keys\""),
            ("/no-kty", "keys[0] has no \"kty\""),
            ("/big", "exceeds"),
        ];
        for (path, gist) in cases {
            let err = f.fetch(&uri(path), t).await.expect_err(path);
            assert!(err.contains(gist), "{path}: {err}");
        }
        let discovered = f.fetch(&JwksSource::Discovery(format!("{base}/")), t).await;
        assert_eq!(discovered.as_deref(), Ok(KEYS_A), "OpenID discovery");
        let err = f
            .fetch(&JwksSource::Discovery(format!("{base}/nowhere")), t)
            .await
            .expect_err("no discovery document");
        assert!(err.contains("404"), "{err}");
    }

    #[tokio::test]
    async fn fetch_gives_up_at_the_timeout() {
        let r = routes(&[]);
        r.lock().unwrap().insert(
            "/slow".into(),
            (200, KEYS_A.into(), Duration::from_secs(30)),
        );
        let base = server(r).await;
        let started = std::time::Instant::now();
        let err = fetcher()
            .fetch(
                &JwksSource::Uri(format!("{base}/slow")),
                Duration::from_millis(300),
            )
            .await
            .expect_err("too slow");
        assert!(err.contains("within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// The loop: a working source is published, a failing one stays absent (fake keys); a
    /// change of the served keys is published at the next refresh; an unreferenced source is
    /// dropped; a source failing at first is published once it answers.
    #[tokio::test]
    async fn resolver_publishes_changes_and_drops_unused_sources() {
        let r = routes(&[("/a", 200, KEYS_A)]);
        let base = server(r.clone()).await;
        let (a, broken) = (
            JwksSource::Uri(format!("{base}/a")),
            JwksSource::Uri(format!("{base}/broken")),
        );
        let t = Duration::from_secs(2);
        let (wanted_tx, wanted_rx) =
            watch::channel(Wanted::from([(a.clone(), t), (broken.clone(), t)]));
        let (pub_tx, mut published) = mpsc::unbounded_channel::<Arc<JwksKeys>>();
        let timing = Timing {
            refresh: Duration::from_millis(300),
            retry: Duration::from_millis(100),
        };
        let task = tokio::spawn(run(fetcher(), wanted_rx, timing, move |k| {
            let _ = pub_tx.send(k);
        }));
        async fn next(published: &mut mpsc::UnboundedReceiver<Arc<JwksKeys>>) -> Arc<JwksKeys> {
            tokio::time::timeout(Duration::from_secs(10), published.recv())
                .await
                .expect("published in time")
                .expect("the resolver runs")
        }
        let first = next(&mut published).await;
        assert_eq!(first.get(&a).map(String::as_str), Some(KEYS_A));
        assert!(!first.contains_key(&broken), "a failing source is absent");

        // Rotation on the server: the next refresh publishes the new keys.
        r.lock()
            .unwrap()
            .insert("/a".into(), (200, KEYS_B.into(), Duration::ZERO));
        let rotated = next(&mut published).await;
        assert_eq!(rotated.get(&a).map(String::as_str), Some(KEYS_B));

        // The failing source recovers: retried and published.
        r.lock()
            .unwrap()
            .insert("/broken".into(), (200, KEYS_A.into(), Duration::ZERO));
        let recovered = next(&mut published).await;
        assert_eq!(recovered.get(&broken).map(String::as_str), Some(KEYS_A));

        // A failed refresh keeps the keys; no publish for it.
        r.lock()
            .unwrap()
            .insert("/a".into(), (503, "down".into(), Duration::ZERO));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(published.try_recv().is_err(), "nothing changed");

        // No policy references `a` any more: dropped.
        wanted_tx.send_replace(Wanted::from([(broken.clone(), t)]));
        let dropped = next(&mut published).await;
        assert!(!dropped.contains_key(&a));
        assert!(dropped.contains_key(&broken));

        drop(wanted_tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the resolver stops when its input closes")
            .expect("no panic");
    }

    /// HTTPS: a key set served with a certificate the system does not trust is fetched once
    /// `--jwks-resolver-extra-root-ca` names its root; a root file without a certificate or
    /// missing is a start-up error.
    #[tokio::test]
    async fn https_trusts_the_extra_roots() {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a test certificate");
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(issued.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der())),
            )
            .expect("a server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(conn).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        KEYS_A.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(KEYS_A.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let source = JwksSource::Uri(format!("https://localhost:{port}/keys"));
        let t = Duration::from_secs(5);
        let untrusted = fetcher().fetch(&source, t).await;
        assert!(untrusted.is_err(), "{untrusted:?}");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let roots = dir.path().join("extra.pem");
        std::fs::write(&roots, issued.cert.pem()).expect("writable");
        let trusted = Fetcher::new(Some(&roots)).expect("a client");
        assert_eq!(trusted.fetch(&source, t).await.as_deref(), Ok(KEYS_A));

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here").expect("writable");
        assert!(Fetcher::new(Some(&empty)).is_err());
        assert!(Fetcher::new(Some(&dir.path().join("missing.pem"))).is_err());
    }

    fn store_with(config: &str) -> Arc<ConfigStore> {
        let store = Arc::new(ConfigStore::new());
        let mut objects = Vec::new();
        for r in capstan_api::check_text(config, &capstan_api::CheckOptions::default()) {
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            objects.extend(r.object.map(|o| *o));
        }
        store.replace_source("test", objects);
        store
    }

    /// The hook into discovery: a RequestAuthentication in the store gets its jwksUri fetched,
    /// the generator's next context inlines the keys, and a full push is asked for; removing
    /// the policy drops the keys and pushes again.
    #[tokio::test]
    async fn spawn_feeds_the_generator_and_asks_for_a_push() {
        use capstan_xds::context::{MeshConfig, PushContext};
        let base = server(routes(&[("/keys", 200, KEYS_A)])).await;
        let config = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
             metadata: {{name: jwt, namespace: default}}\n\
             spec:\n  jwtRules:\n  - issuer: https://idp\n    jwksUri: {base}/keys\n"
        );
        let store = store_with(&config);
        let services = Arc::new(capstan_registry::ServiceIndex::new());
        let generator = Arc::new(IstioGenerator::new(PushContext::new(
            store.snapshot(),
            services.snapshot(),
            MeshConfig::default(),
            0,
        )));
        let (tx, mut rx) = mpsc::channel(16);
        let args = JwksArgs {
            refresh_interval: Duration::from_secs(1200),
            extra_root_ca: None,
        };
        spawn(&args, store.clone(), generator.clone(), tx).expect("started");
        let change = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a push is asked for")
            .expect("the channel is open");
        assert!(matches!(change, Change::Everything));
        let push = capstan_xds::PushRequest {
            version: 1,
            full: true,
            ..capstan_xds::PushRequest::default()
        };
        generator.advance(store.snapshot(), services.snapshot(), &push);
        let source = JwksSource::Uri(format!("{base}/keys"));
        assert_eq!(
            generator.context().jwks().get(&source).map(String::as_str),
            Some(KEYS_A)
        );

        store.replace_source("test", Vec::new());
        let change = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a push is asked for")
            .expect("the channel is open");
        assert!(matches!(change, Change::Everything));
        generator.advance(store.snapshot(), services.snapshot(), &push);
        assert!(
            generator.context().jwks().is_empty(),
            "unreferenced keys are dropped"
        );
    }
}
