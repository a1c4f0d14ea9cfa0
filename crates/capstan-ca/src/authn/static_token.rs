//! Authentication by a fixed list of bearer tokens, for local development and loopback tests
//! without Kubernetes (like kube-apiserver's `--token-auth-file`). Each line of the file is
//! `<token> <namespace> <service-account>`; blank lines and `#` comments are skipped. Anyone
//! who reads the file can be any of its identities: never use it in production.

use std::path::Path;

use futures::future::BoxFuture;

use super::{bearer_token, AuthError, Authenticator, Caller};
use crate::identity::Identity;

/// Accepts callers whose bearer token is one of a fixed list, as that token's identity.
#[derive(Clone)]
pub struct StaticTokenAuthenticator {
    tokens: Vec<(String, Identity)>,
}

impl std::fmt::Debug for StaticTokenAuthenticator {
    // The tokens are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<_> = self.tokens.iter().map(|(_, id)| id.to_uri()).collect();
        f.debug_struct("StaticTokenAuthenticator")
            .field("identities", &ids)
            .finish()
    }
}

/// Why a token file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("reading token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `<token> <namespace> <service-account>` or names an invalid identity.
    #[error("token file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Whether two byte strings are equal, in time that depends only on their lengths (a
/// comparison that stops at the first difference would tell an attacker how much of a guess
/// is right).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl StaticTokenAuthenticator {
    /// Parses a token file's text; `path` names it in errors. Identities are in `trust_domain`.
    pub fn parse(text: &str, path: &str, trust_domain: &str) -> Result<Self, TokenFileError> {
        let mut tokens: Vec<(String, Identity)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_error = |reason: String| TokenFileError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, namespace, service_account] = fields.as_slice() else {
                return Err(line_error(format!(
                    "expected `<token> <namespace> <service-account>`, found {} field(s)",
                    fields.len()
                )));
            };
            let id = Identity::new(trust_domain, *namespace, *service_account)
                .map_err(|e| line_error(e.to_string()))?;
            if tokens.iter().any(|(t, _)| t == token) {
                return Err(line_error("the token is listed twice".into()));
            }
            tokens.push(((*token).to_owned(), id));
        }
        Ok(Self { tokens })
    }

    /// Reads a token file.
    pub fn from_file(path: &Path, trust_domain: &str) -> Result<Self, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown, trust_domain)
    }

    /// How many tokens are listed.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is listed.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The identity of `token`, if listed. Every entry is compared, so the time taken does
    /// not tell which one matched.
    pub fn identity_of(&self, token: &str) -> Option<&Identity> {
        let mut found = None;
        for (listed, id) in &self.tokens {
            if constant_time_eq(listed.as_bytes(), token.as_bytes()) {
                found = Some(id);
            }
        }
        found
    }
}

impl Authenticator for StaticTokenAuthenticator {
    fn name(&self) -> &'static str {
        "static token"
    }

    fn authenticate<'a>(
        &'a self,
        caller: &'a Caller<'a>,
    ) -> BoxFuture<'a, Result<Vec<Identity>, AuthError>> {
        let result = bearer_token(caller.metadata).and_then(|token| {
            let token = token.ok_or_else(|| AuthError::Absent("no bearer token".into()))?;
            self.identity_of(token)
                .map(|id| vec![id.clone()])
                .ok_or_else(|| AuthError::Rejected("token is not in the token file".into()))
        });
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    const FILE: &str = "\
# development tokens
alpha default reviews

  beta   bookinfo   ratings.v1  # trailing text is not allowed, see the table below
";

    #[test]
    fn file_errors_table() {
        let cases = [
            (
                "a b",
                "line 1: expected `<token> <namespace> <service-account>`, found 2",
            ),
            ("a b c d", "line 1: expected"),
            ("\n\nt Bad sa", "line 3: invalid namespace \"Bad\""),
            ("t ns -sa-", "invalid service account"),
            ("t ns a\nt ns b", "line 2: the token is listed twice"),
            (FILE, "line 4: expected"),
        ];
        for (text, expected) in cases {
            let err =
                StaticTokenAuthenticator::parse(text, "tokens", "cluster.local").expect_err(text);
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
            assert!(err.to_string().starts_with("token file tokens"), "{err}");
        }
        assert!(StaticTokenAuthenticator::parse("", "t", "cluster.local")
            .unwrap()
            .is_empty());
        assert!(StaticTokenAuthenticator::parse("a ns sa", "t", "Bad Domain").is_err());
    }

    #[tokio::test]
    async fn callers_table() {
        let text =
            "# development tokens\nalpha default reviews\n\n  beta   bookinfo   ratings.v1\n";
        let auth = StaticTokenAuthenticator::parse(text, "t", "cluster.local").unwrap();
        assert_eq!(auth.len(), 2);
        let with = |header: Option<&str>| {
            let mut m = MetadataMap::new();
            if let Some(h) = header {
                m.insert("authorization", h.parse().unwrap());
            }
            m
        };
        let cases: [(Option<&str>, Result<&str, &str>); 6] = [
            (
                Some("Bearer alpha"),
                Ok("spiffe://cluster.local/ns/default/sa/reviews"),
            ),
            (
                Some("bearer beta"),
                Ok("spiffe://cluster.local/ns/bookinfo/sa/ratings.v1"),
            ),
            (Some("Bearer alph"), Err("not in the token file")),
            (Some("Bearer alphaa"), Err("not in the token file")),
            (Some("Basic alpha"), Err("not 'Bearer <token>'")),
            (None, Err("no bearer token")),
        ];
        for (header, want) in cases {
            let metadata = with(header);
            let caller = Caller {
                metadata: &metadata,
                peer_certificates: None,
            };
            match (auth.authenticate(&caller).await, want) {
                (Ok(ids), Ok(uri)) => {
                    let uris: Vec<String> = ids.iter().map(Identity::to_uri).collect();
                    assert_eq!(uris, [uri], "{header:?}");
                }
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{header:?}: {e}"),
                (got, want) => panic!("{header:?}: got {got:?}, want {want:?}"),
            }
        }
        // No token in the debug output.
        assert!(!format!("{auth:?}").contains("alpha"));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
