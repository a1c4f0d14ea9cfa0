//! RequestAuthentication end to end: `capstan discovery` fetches the issuer's JWKS from its
//! `jwksUri` (a local HTTP server), inlines it into the gateway's `jwt_authn` filter, and
//! `capstan proxy` verifies tokens with it: valid ones pass without their header, missing
//! ones pass (Istio's `allow_missing`), expired, foreign-signed and unknown-issuer ones get
//! Envoy's 401s; when the issuer rotates its key the new JWKS is pushed and old tokens fail.
//! Then AuthorizationPolicies on the gateway: ALLOW only `requestPrincipals` alice (a missing
//! token or bob's is refused with 403) and DENY `/admin`, which wins over the ALLOW.

mod proxy;

use anyhow::{ensure, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use proxy::{discovery_with, free_port};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://issuer.capstan.test";

/// An ES256 signing key and its JWK.
struct Key {
    pair: EcdsaKeyPair,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Result<Key> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("key generation"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow::anyhow!("key: {e}"))?;
        Ok(Key {
            pair,
            kid: kid.to_string(),
        })
    }

    fn jwk(&self) -> serde_json::Value {
        // An uncompressed point: 0x04 || x || y.
        let point = self.pair.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        })
    }

    fn token(&self, claims: serde_json::Value) -> Result<String> {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing"))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn claims(iss: &str, exp_in: i64) -> serde_json::Value {
    claims_for(iss, "alice", exp_in)
}

fn claims_for(iss: &str, sub: &str, exp_in: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": iss, "sub": sub, "aud": "bookinfo",
        "iat": now(), "exp": (now() as i64 + exp_in),
    })
}

const POLICIES: &str = "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-alice, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ['https://issuer.capstan.test/alice']}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin]}}]
";

/// A JWKS endpoint: answers every request with the current document; counts requests.
struct JwksServer {
    port: u16,
    doc: Arc<Mutex<String>>,
    hits: Arc<Mutex<u64>>,
}

impl JwksServer {
    fn start(doc: String) -> Result<JwksServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(Mutex::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                *h.lock().unwrap() += 1;
                let body = d.lock().unwrap().clone();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Ok(JwksServer { port, doc, hits })
    }

    fn set(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }
}

fn jwks(keys: &[&Key]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

fn write_mesh(dir: &Path, gw_port: u16, backend_port: u16, jwks_port: u16) -> Result<()> {
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:\n- hostname: backend.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 80}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {backend_port}}}}}\n"
        ),
    )?;
    std::fs::write(
        dir.join("config/mesh.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: istio-system}}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route:
    - destination: {{host: backend.default.svc.cluster.local}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: http://127.0.0.1:{jwks_port}/jwks.json
"
        ),
    )?;
    Ok(())
}

async fn call(url: &str, token: Option<&str>) -> Result<proxy::Reply> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("host", "bookinfo.example.com")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    proxy::get(url, &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_verifies_tokens_with_the_fetched_jwks_and_follows_its_rotation() -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("capstan-jwt").tempdir()?;
    let dir = tmp.path();
    let (k1, k2, stranger) = (Key::new("k1")?, Key::new("k2")?, Key::new("k1")?);
    let server = JwksServer::start(jwks(&[&k1]))?;
    let backend = proxy::backend("backend").await?;
    let gw_port = free_port();
    write_mesh(dir, gw_port, backend.port, server.port)?;
    let d = discovery_with(dir, None, &["--jwks-refresh-interval", "1s"])?;
    let boot = proxy::bootstrap_json(
        "router~127.0.0.1~gw-0.istio-system~istio-system.svc.cluster.local",
        &[("istio", "ingressgateway")],
        d.xds_port,
        free_port(),
        true,
    );
    let gw = proxy::proxy(dir, "gw", &boot)?;
    gw.ready(Duration::from_secs(30)).await?;
    let logs = || {
        format!(
            "--- gw:\n{}\n--- discovery:\n{}",
            gw.proc.tail(),
            d.proc.tail()
        )
    };
    let url = format!("http://127.0.0.1:{gw_port}/productpage");

    // Until the first fetch lands, providers carry a key set no token matches: wait for it.
    let good = k1.token(claims(ISSUER, 3600))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(&url, Some(&good)).await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a valid token never passed: {r:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        *server.hits.lock().unwrap() >= 1,
        "the JWKS was never fetched"
    );
    let r = call(&url, Some(&good)).await?;
    let seen = r.json()?;
    ensure!(
        seen["headers"].get("authorization").is_none(),
        "the token went upstream (forwardOriginalToken is false): {seen}"
    );

    let none = call(&url, None).await?;
    ensure!(
        none.status == 200,
        "no token (allow_missing): {}",
        none.status
    );

    let expired = call(&url, Some(&k1.token(claims(ISSUER, -3600))?)).await?;
    ensure!(
        expired.status == 401 && expired.body.contains("Jwt is expired"),
        "expired: {} {}",
        expired.status,
        expired.body
    );
    ensure!(
        expired
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer")),
        "no www-authenticate on a 401"
    );
    let forged = call(&url, Some(&stranger.token(claims(ISSUER, 3600))?)).await?;
    ensure!(
        forged.status == 401 && forged.body.contains("Jwt verification fails"),
        "a token signed by another key: {} {}",
        forged.status,
        forged.body
    );
    let other = call(&url, Some(&k1.token(claims("https://elsewhere", 3600))?)).await?;
    ensure!(other.status == 401, "unknown issuer: {}", other.status);
    let garbage = call(&url, Some("not.a.token")).await?;
    ensure!(garbage.status == 401, "malformed token: {}", garbage.status);

    // The issuer rotates to k2: the refreshed JWKS is pushed, k1's tokens stop working.
    server.set(jwks(&[&k2]));
    let new = k2.token(claims(ISSUER, 3600))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (a, b) = (
            call(&url, Some(&new)).await?,
            call(&url, Some(&good)).await?,
        );
        if a.status == 200 && b.status == 401 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "rotation not applied: new key {} old key {}\n{}",
            a.status,
            b.status,
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // AuthorizationPolicy on the gateway, reading the verified token's claims.
    let mesh = std::fs::read_to_string(dir.join("config/mesh.yaml"))?;
    proxy::write_atomic(&dir.join("config/mesh.yaml"), &format!("{mesh}{POLICIES}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(&url, None).await?;
        if r.status == 403 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a missing token still answered {}\n{}",
            r.status,
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        call(&url, None).await?.body.contains("RBAC: access denied"),
        "the 403 is not RBAC's"
    );
    let alice = call(&url, Some(&new)).await?;
    ensure!(alice.status == 200, "alice's token: {}", alice.status);
    let bob = call(&url, Some(&k2.token(claims_for(ISSUER, "bob", 3600))?)).await?;
    ensure!(bob.status == 403, "bob's token: {}", bob.status);
    let admin_url = format!("http://127.0.0.1:{gw_port}/admin");
    let admin = call(&admin_url, Some(&new)).await?;
    ensure!(
        admin.status == 403,
        "DENY /admin must win over ALLOW alice: {}",
        admin.status
    );

    let stats = gw.admin("/stats").await?;
    let denied: u64 = stats
        .lines()
        .filter(|l| l.starts_with("http.") && l.contains(".jwt_authn.denied: "))
        .filter_map(|l| l.rsplit(": ").next()?.parse::<u64>().ok())
        .sum();
    ensure!(denied >= 5, "jwt_authn.denied counted {denied}:\n{stats}");
    Ok(())
}
