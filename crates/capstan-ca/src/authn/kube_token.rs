//! Authentication by Kubernetes service-account token (istiod's `KubeJWTAuthenticator`): the
//! first certificate of a workload is requested with its projected token (audience
//! `istio-ca`), which the API server checks through a TokenReview.

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;

use super::{bearer_token, AuthError, Authenticator, Caller};
use crate::identity::Identity;

/// Audience Istio's agents request their tokens for.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

const SA_USER_PREFIX: &str = "system:serviceaccount:";
const SA_GROUP: &str = "system:serviceaccounts";

/// How long a token the API server accepted is accepted again without asking (the API
/// server's own token-authentication cache keeps successes 10 s).
pub const DEFAULT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// At most this many tokens are remembered; a full cache drops its expired entries, then all.
const CACHE_CAPACITY: usize = 10_000;

/// Accepted tokens, by SHA-256 of the token (the token itself is not kept), with the time
/// they were accepted. Rejections are not cached: a refused caller asks again.
#[derive(Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], (Identity, std::time::Instant)>>,
}

impl TokenCache {
    fn key(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        k
    }

    /// The identity of `token` if it was accepted less than `ttl` before `now`.
    pub fn get(
        &self,
        token: &str,
        ttl: std::time::Duration,
        now: std::time::Instant,
    ) -> Option<Identity> {
        let entries = self
            .entries
            .lock()
            .expect("the token cache lock is never poisoned");
        entries
            .get(&Self::key(token))
            .filter(|(_, at)| now.saturating_duration_since(*at) < ttl)
            .map(|(id, _)| id.clone())
    }

    /// Remembers that `token` was accepted as `identity` at `now`.
    pub fn insert(
        &self,
        token: &str,
        identity: Identity,
        ttl: std::time::Duration,
        now: std::time::Instant,
    ) {
        let mut entries = self
            .entries
            .lock()
            .expect("the token cache lock is never poisoned");
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(Self::key(token), (identity, now));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .expect("the token cache lock is never poisoned")
            .len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Accepts callers with a service-account token the API server vouches for, for one of the
/// configured audiences. Accepted tokens are remembered for [`DEFAULT_CACHE_TTL`], so a proxy's
/// CSR and xDS stream opened together cost one TokenReview.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    client: kube::Client,
    trust_domain: String,
    audiences: Vec<String>,
    cache: std::sync::Arc<TokenCache>,
    cache_ttl: std::time::Duration,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("trust_domain", &self.trust_domain)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    /// An authenticator issuing identities in `trust_domain`, accepting tokens for
    /// [`DEFAULT_AUDIENCE`].
    pub fn new(client: kube::Client, trust_domain: impl Into<String>) -> Self {
        Self {
            client,
            trust_domain: trust_domain.into(),
            audiences: vec![DEFAULT_AUDIENCE.to_owned()],
            cache: std::sync::Arc::default(),
            cache_ttl: DEFAULT_CACHE_TTL,
        }
    }

    /// Remember accepted tokens this long instead (zero: ask the API server every time).
    pub fn with_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Accept tokens for these audiences instead (Istio's `TOKEN_AUDIENCES`).
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// The identity a token stands for, according to the API server (or to its answer of
    /// less than the cache TTL ago).
    pub async fn review(&self, token: &str) -> Result<Identity, AuthError> {
        let now = std::time::Instant::now();
        if let Some(id) = self.cache.get(token, self.cache_ttl, now) {
            return Ok(id);
        }
        let id = self.review_uncached(token).await?;
        if !self.cache_ttl.is_zero() {
            self.cache.insert(token, id.clone(), self.cache_ttl, now);
        }
        Ok(id)
    }

    async fn review_uncached(&self, token: &str) -> Result<Identity, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = answer.status.unwrap_or_default();
        identity_from_review(&status, &self.audiences, &self.trust_domain)
    }
}

/// The identity of a TokenReview answer, with istiod's checks: no error, authenticated, for
/// one of `audiences`, a service account (`system:serviceaccounts` group and username
/// `system:serviceaccount:<namespace>:<name>`).
pub fn identity_from_review(
    status: &TokenReviewStatus,
    audiences: &[String],
    trust_domain: &str,
) -> Result<Identity, AuthError> {
    if let Some(error) = status.error.as_deref().filter(|e| !e.is_empty()) {
        return Err(AuthError::Rejected(format!("token rejected: {error}")));
    }
    if status.authenticated != Some(true) {
        return Err(AuthError::Rejected("token is not authenticated".into()));
    }
    // An audience-aware API server answers with the audiences the token is valid for; an
    // empty answer would mean "valid for the API server itself", which is not us.
    let granted = status.audiences.as_deref().unwrap_or_default();
    if !granted.iter().any(|a| audiences.contains(a)) {
        return Err(AuthError::Rejected(format!(
            "token is not for audience {}",
            audiences.join(" or ")
        )));
    }
    let user = status
        .user
        .as_ref()
        .ok_or_else(|| AuthError::Rejected("TokenReview answer has no user".into()))?;
    let in_sa_group = user
        .groups
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|g| g == SA_GROUP);
    let username = user.username.as_deref().unwrap_or_default();
    let parts = username
        .strip_prefix(SA_USER_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|_| in_sa_group);
    let Some((namespace, service_account)) = parts else {
        return Err(AuthError::Rejected(format!(
            "token of {username:?} is not a service-account token"
        )));
    };
    Identity::new(trust_domain, namespace, service_account)
        .map_err(|e| AuthError::Rejected(format!("token user {username:?}: {e}")))
}

impl Authenticator for TokenReviewAuthenticator {
    fn name(&self) -> &'static str {
        "kubernetes token"
    }

    fn authenticate<'a>(
        &'a self,
        caller: &'a Caller<'a>,
    ) -> BoxFuture<'a, Result<Vec<Identity>, AuthError>> {
        Box::pin(async move {
            let token = bearer_token(caller.metadata)?
                .ok_or_else(|| AuthError::Absent("no bearer token".into()))?;
            Ok(vec![self.review(token).await?])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    #[test]
    fn accepted_tokens_are_remembered_for_the_ttl_only() {
        use std::time::{Duration, Instant};
        let cache = TokenCache::default();
        let ttl = Duration::from_secs(10);
        let t0 = Instant::now();
        let id = Identity::new("cluster.local", "ns", "sa").unwrap();
        assert_eq!(cache.get("tok", ttl, t0), None);
        cache.insert("tok", id.clone(), ttl, t0);
        assert_eq!(
            cache.get("tok", ttl, t0 + Duration::from_secs(9)),
            Some(id.clone())
        );
        assert_eq!(
            cache.get("tok", ttl, t0 + Duration::from_secs(10)),
            None,
            "expired"
        );
        assert_eq!(cache.get("other", ttl, t0), None);
        // Bounded: a full cache drops expired entries first, then everything.
        // "tok" and these fill it exactly.
        for i in 0..CACHE_CAPACITY - 1 {
            cache.insert(&format!("t{i}"), id.clone(), ttl, t0);
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
        cache.insert("late", id.clone(), ttl, t0 + Duration::from_secs(20));
        assert_eq!(cache.len(), 1, "every old entry had expired");
        assert_eq!(
            cache.get("late", ttl, t0 + Duration::from_secs(21)),
            Some(id)
        );
    }

    fn status(user: &str, groups: &[&str], audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                groups: Some(groups.iter().map(|s| s.to_string()).collect()),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        }
    }

    #[test]
    fn review_answers_table() {
        let aud = vec![DEFAULT_AUDIENCE.to_owned()];
        let sa = "system:serviceaccount:bookinfo:reviews";
        let groups = &["system:serviceaccounts", "system:authenticated"];
        let ok = identity_from_review(&status(sa, groups, &["istio-ca"]), &aud, "cluster.local")
            .unwrap();
        assert_eq!(ok.to_uri(), "spiffe://cluster.local/ns/bookinfo/sa/reviews");

        let cases: Vec<(&str, TokenReviewStatus, &str)> = vec![
            (
                "error",
                TokenReviewStatus {
                    error: Some("invalid bearer token".into()),
                    ..status(sa, groups, &["istio-ca"])
                },
                "invalid bearer token",
            ),
            (
                "unauthenticated",
                TokenReviewStatus {
                    authenticated: Some(false),
                    ..status(sa, groups, &["istio-ca"])
                },
                "not authenticated",
            ),
            (
                "other audience",
                status(sa, groups, &["api"]),
                "not for audience istio-ca",
            ),
            ("no audience", status(sa, groups, &[]), "not for audience"),
            (
                "not a service account",
                status("alice", &["system:authenticated"], &["istio-ca"]),
                "not a service-account token",
            ),
            (
                "sa name without group",
                status(sa, &["system:authenticated"], &["istio-ca"]),
                "not a service-account token",
            ),
            (
                "malformed username",
                status("system:serviceaccount:only-ns", groups, &["istio-ca"]),
                "not a service-account token",
            ),
            (
                "extra colon",
                status("system:serviceaccount:ns:a:b", groups, &["istio-ca"]),
                "invalid service account",
            ),
        ];
        for (name, st, expected) in cases {
            let err = identity_from_review(&st, &aud, "cluster.local").expect_err(name);
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
    }
}
