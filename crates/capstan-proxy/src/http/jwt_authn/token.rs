//! JWTs and JWKS as Envoy's `jwt_verify_lib` reads them: parsing a compact JWS, the key set of
//! a provider, key selection (`kid`, then `alg`, keys without either tried in turn) and the
//! signature check (ring: RS*, PS*, ES256/ES384, EdDSA, HS*). Errors are Envoy's status strings,
//! which the filter sends back as the body of its 401.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Base64url with or without padding, as `jwt_verify_lib` accepts.
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token is refused (`google::jwt_verify::Status`); the message is Envoy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No token in any location the requirement reads.
    Missed,
    /// `exp` is in the past (beyond the clock skew).
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// Not three base64url sections.
    BadFormat,
    /// The header is not base64url.
    HeaderBadBase64,
    /// The header is not a JSON object.
    HeaderBadJson,
    /// No string `alg`.
    HeaderBadAlg,
    /// `alg` is not one we verify.
    HeaderNotImplementedAlg,
    /// `kid` is not a string.
    HeaderBadKid,
    /// The payload is not base64url.
    PayloadBadBase64,
    /// The payload is not a JSON object.
    PayloadBadJson,
    /// `iss` is not a string.
    IssNotString,
    /// `sub` is not a string.
    SubNotString,
    /// `iat` is not a number.
    IatNotInteger,
    /// `nbf` is not a number.
    NbfNotInteger,
    /// `exp` is not a number.
    ExpNotInteger,
    /// `jti` is not a string.
    JtiNotString,
    /// `aud` is neither a string nor a list of strings.
    AudNotString,
    /// The signature is not base64url.
    SignatureBadBase64,
    /// `iss` names no provider that reads the token's location.
    UnknownIssuer,
    /// No audience of the token is allowed.
    AudienceNotAllowed,
    /// No key of the set has the token's `kid` and `alg`.
    KidAlgMismatch,
    /// The signature does not verify.
    VerificationFail,
}

impl Status {
    /// Envoy's message for the status (`getStatusString`).
    pub fn message(self) -> &'static str {
        match self {
            Status::Missed => "Jwt is missing",
            Status::Expired => "Jwt is expired",
            Status::NotYetValid => "Jwt not yet valid",
            Status::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Status::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Status::HeaderBadJson => "Jwt header is an invalid JSON",
            Status::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Status::HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Status::HeaderBadKid => "Jwt header [kid] field is not a string",
            Status::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Status::PayloadBadJson => "Jwt payload is an invalid JSON",
            Status::IssNotString => "Jwt payload [iss] field is not a string",
            Status::SubNotString => "Jwt payload [sub] field is not a string",
            Status::IatNotInteger => "Jwt payload [iat] field is not an integer",
            Status::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            Status::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            Status::JtiNotString => "Jwt payload [jti] field is not a string",
            Status::AudNotString => "Jwt payload [aud] field is not a string or string list",
            Status::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Status::UnknownIssuer => "Jwt issuer is not configured",
            Status::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Status::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Status::VerificationFail => "Jwt verification fails",
        }
    }
}

const ALGS: [&str; 13] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256",
    "HS384", "HS512", "EdDSA",
];

/// A parsed (not yet verified) JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// `alg`.
    pub alg: String,
    /// `kid` (empty when absent).
    pub kid: String,
    /// The header object.
    pub header: Map<String, Value>,
    /// The payload object.
    pub payload: Map<String, Value>,
    /// The payload as it was sent (base64url, for `forward_payload_header`).
    pub payload_b64: String,
    /// `iss` (empty when absent).
    pub iss: String,
    /// `aud` as a list.
    pub audiences: Vec<String>,
    /// `nbf` (0 when absent).
    pub nbf: u64,
    /// `exp` (0 when absent).
    pub exp: u64,
    signed: String,
    signature: Vec<u8>,
}

fn seconds(v: Option<&Value>, bad: Status) -> Result<u64, Status> {
    match v {
        None => Ok(0),
        // jwt_verify_lib reads numbers as doubles and truncates them.
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or(bad),
        Some(_) => Err(bad),
    }
}

impl Jwt {
    /// Parses a compact JWS, checking the claims' types as `Jwt::parseFromString` does.
    pub fn parse(token: &str) -> Result<Jwt, Status> {
        let parts: Vec<&str> = token.split('.').collect();
        let [h, p, s] = parts.as_slice() else {
            return Err(Status::BadFormat);
        };
        let header_raw = B64URL.decode(h).map_err(|_| Status::HeaderBadBase64)?;
        let header: Map<String, Value> =
            serde_json::from_slice(&header_raw).map_err(|_| Status::HeaderBadJson)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Status::HeaderBadAlg)?
            .to_string();
        if !ALGS.contains(&alg.as_str()) {
            return Err(Status::HeaderNotImplementedAlg);
        }
        let kid = match header.get("kid") {
            None => String::new(),
            Some(Value::String(k)) => k.clone(),
            Some(_) => return Err(Status::HeaderBadKid),
        };
        let payload_raw = B64URL.decode(p).map_err(|_| Status::PayloadBadBase64)?;
        let payload: Map<String, Value> =
            serde_json::from_slice(&payload_raw).map_err(|_| Status::PayloadBadJson)?;
        let string_claim = |name: &str, bad: Status| match payload.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad),
        };
        let iss = string_claim("iss", Status::IssNotString)?;
        string_claim("sub", Status::SubNotString)?;
        string_claim("jti", Status::JtiNotString)?;
        seconds(payload.get("iat"), Status::IatNotInteger)?;
        let nbf = seconds(payload.get("nbf"), Status::NbfNotInteger)?;
        let exp = seconds(payload.get("exp"), Status::ExpNotInteger)?;
        let audiences = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(l)) => l
                .iter()
                .map(|a| a.as_str().map(str::to_string).ok_or(Status::AudNotString))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Status::AudNotString),
        };
        let signature = B64URL.decode(s).map_err(|_| Status::SignatureBadBase64)?;
        Ok(Jwt {
            alg,
            kid,
            header,
            payload,
            payload_b64: p.to_string(),
            iss,
            audiences,
            nbf,
            exp,
            signed: format!("{h}.{p}"),
            signature,
        })
    }

    /// `verifyTimeConstraint`: `nbf` and `exp` against `now` with `skew` seconds of slack.
    pub fn check_time(&self, now: u64, skew: u64) -> Result<(), Status> {
        if self.nbf > 0 && now.saturating_add(skew) < self.nbf {
            return Err(Status::NotYetValid);
        }
        if self.exp > 0 && now > self.exp.saturating_add(skew) {
            return Err(Status::Expired);
        }
        Ok(())
    }

    /// Verifies the signature with the first key of `jwks` that fits (`verifyJwtWithoutTimeChecking`).
    pub fn verify(&self, jwks: &Jwks) -> Result<(), Status> {
        let mut kid_alg_matched = false;
        for key in &jwks.keys {
            if !self.kid.is_empty() && key.kid.as_deref().is_some_and(|k| k != self.kid) {
                continue;
            }
            if key.alg.as_deref().is_some_and(|a| a != self.alg) {
                continue;
            }
            let Some(ok) = key
                .material
                .verify(&self.alg, self.signed.as_bytes(), &self.signature)
            else {
                continue;
            };
            kid_alg_matched = true;
            if ok {
                return Ok(());
            }
        }
        Err(if kid_alg_matched {
            Status::VerificationFail
        } else {
            Status::KidAlgMismatch
        })
    }
}

/// Elliptic curves we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// P-256 (ES256).
    P256,
    /// P-384 (ES384).
    P384,
}

/// A public (or, for `oct`, shared) key.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// `kty: RSA`: modulus and exponent, big-endian.
    Rsa {
        /// `n`.
        n: Vec<u8>,
        /// `e`.
        e: Vec<u8>,
    },
    /// `kty: EC`: the uncompressed point.
    Ec(Curve, Vec<u8>),
    /// `kty: OKP`, `crv: Ed25519`.
    Ed25519(Vec<u8>),
    /// `kty: oct`.
    Hmac(Vec<u8>),
}

impl KeyMaterial {
    /// None when the key cannot verify `alg`; else whether the signature verifies.
    fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> Option<bool> {
        use signature as s;
        let rsa = |params: &'static s::RsaParameters, n: &[u8], e: &[u8]| {
            s::RsaPublicKeyComponents { n, e }
                .verify(params, msg, sig)
                .is_ok()
        };
        let unparsed = |a: &'static dyn s::VerificationAlgorithm, k: &[u8]| {
            UnparsedPublicKey::new(a, k).verify(msg, sig).is_ok()
        };
        Some(match (self, alg) {
            (KeyMaterial::Rsa { n, e }, "RS256") => rsa(&s::RSA_PKCS1_2048_8192_SHA256, n, e),
            (KeyMaterial::Rsa { n, e }, "RS384") => rsa(&s::RSA_PKCS1_2048_8192_SHA384, n, e),
            (KeyMaterial::Rsa { n, e }, "RS512") => rsa(&s::RSA_PKCS1_2048_8192_SHA512, n, e),
            (KeyMaterial::Rsa { n, e }, "PS256") => rsa(&s::RSA_PSS_2048_8192_SHA256, n, e),
            (KeyMaterial::Rsa { n, e }, "PS384") => rsa(&s::RSA_PSS_2048_8192_SHA384, n, e),
            (KeyMaterial::Rsa { n, e }, "PS512") => rsa(&s::RSA_PSS_2048_8192_SHA512, n, e),
            (KeyMaterial::Ec(Curve::P256, k), "ES256") => unparsed(&s::ECDSA_P256_SHA256_FIXED, k),
            (KeyMaterial::Ec(Curve::P384, k), "ES384") => unparsed(&s::ECDSA_P384_SHA384_FIXED, k),
            (KeyMaterial::Ed25519(k), "EdDSA") => unparsed(&s::ED25519, k),
            (KeyMaterial::Hmac(k), "HS256" | "HS384" | "HS512") => {
                let a = match alg {
                    "HS256" => ring::hmac::HMAC_SHA256,
                    "HS384" => ring::hmac::HMAC_SHA384,
                    _ => ring::hmac::HMAC_SHA512,
                };
                ring::hmac::verify(&ring::hmac::Key::new(a, k), msg, sig).is_ok()
            }
            _ => return None,
        })
    }
}

/// One key of a set.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// `kid`.
    pub kid: Option<String>,
    /// `alg`.
    pub alg: Option<String>,
    /// The key.
    pub material: KeyMaterial,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    /// Its usable keys, in order.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS JSON document. Keys of unsupported types are skipped, as `jwt_verify_lib`
    /// does; a document that is not a key set, or holds no usable key, is an error.
    pub fn parse(json: &str) -> Result<Jwks, String> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| format!("is not valid JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("has no \"keys\" array (only JWKS JSON is supported, not PEM)")?;
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match Jwk::parse(k) {
                Ok(jwk) => out.push(jwk),
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if out.is_empty() {
            return Err(format!("has no usable key ({})", skipped.join("; ")));
        }
        Ok(Jwks { keys: out })
    }
}

impl Jwk {
    fn parse(k: &Value) -> Result<Jwk, String> {
        let field = |name: &str| -> Result<Vec<u8>, String> {
            let s = k
                .get(name)
                .and_then(Value::as_str)
                .ok_or(format!("[{name}] is missing or not a string"))?;
            B64URL
                .decode(s)
                .map_err(|_| format!("[{name}] is not base64url"))
        };
        let text = |name: &str| k.get(name).and_then(Value::as_str).map(str::to_string);
        let material = match text("kty").as_deref() {
            Some("RSA") => KeyMaterial::Rsa {
                n: field("n")?,
                e: field("e")?,
            },
            Some("EC") => {
                let (curve, len) = match text("crv").as_deref() {
                    Some("P-256") => (Curve::P256, 32),
                    Some("P-384") => (Curve::P384, 48),
                    c => return Err(format!("EC curve {c:?} is not supported")),
                };
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != len || y.len() != len {
                    return Err("EC coordinates have the wrong length".into());
                }
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                KeyMaterial::Ec(curve, point)
            }
            Some("OKP") => match text("crv").as_deref() {
                Some("Ed25519") => KeyMaterial::Ed25519(field("x")?),
                c => return Err(format!("OKP curve {c:?} is not supported")),
            },
            Some("oct") => KeyMaterial::Hmac(field("k")?),
            t => return Err(format!("kty {t:?} is not supported")),
        };
        Ok(Jwk {
            kid: text("kid"),
            alg: text("alg"),
            material,
        })
    }
}
