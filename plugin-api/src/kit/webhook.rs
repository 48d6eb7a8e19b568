//! Webhook authenticity (feature `kit-webhook`): every platform's signature scheme, checked
//! before anything in the request is parsed or stored.
//!
//! | platform | scheme | here |
//! |---|---|---|
//! | Webex | `X-Spark-Signature`: HMAC-SHA1 hex of the body | [`verify_spark_signature`] |
//! | WhatsApp (Meta) | `X-Hub-Signature-256: sha256=<hex>` | [`verify_hub_signature_256`] |
//! | Slack | `X-Slack-Signature: v0=<hex>` over `v0:<timestamp>:<body>`, 5-minute window | [`SlackVerifier`] |
//! | Resend (Svix) | `svix-signature: v1,<base64> …` over `<id>.<timestamp>.<body>`, `whsec_` key | [`SvixVerifier`] |
//! | Discord interactions | `X-Signature-Ed25519` over `<timestamp><body>`, app public key | [`Ed25519Verifier`] |
//! | Teams (Bot Framework), Google Chat | `Authorization: Bearer <JWT>`, RS256 against a JWKS | [`JwtVerifier`] |
//!
//! All comparisons are constant-time. A failure is a [`VerifyError`]; answer it with
//! [`VerifyError::response`] (401, no detail) and log the error itself.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::Mac;
use serde::Deserialize;
use serde_json::Value;

use super::Secret;
use super::http::{self, HttpError};
use super::signature::{from_hex, hmac_sha1, hmac_sha256};
use crate::abi::{WebhookRequest, WebhookResponse};

/// The replay window Slack and Svix recommend.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Why a request was not accepted as the platform's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent.
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    /// A header, key or token is not in the expected format.
    #[error("malformed {0}")]
    Malformed(String),
    /// The signature does not match.
    #[error("signature mismatch")]
    BadSignature,
    /// The signed timestamp is outside the replay window.
    #[error("timestamp is {age_secs} s away from now, outside the {window_secs} s window")]
    OutsideWindow {
        /// Signed time minus now, in seconds (negative: in the past).
        age_secs: i64,
        /// The allowed distance.
        window_secs: u64,
    },
    /// A JWT names a key the JWKS does not have (even after a refresh).
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    /// A JWT's claims are not acceptable (issuer, audience, expiry).
    #[error("token rejected: {0}")]
    Claims(String),
    /// The keys could not be fetched.
    #[error("cannot fetch the signing keys: {0}")]
    Keys(String),
}

impl VerifyError {
    /// What to answer: `401` without detail (the detail is for the log, not for a forger).
    /// A failure to fetch keys is ours: `503`, so the platform retries.
    pub fn response(&self) -> WebhookResponse {
        match self {
            Self::Keys(_) => WebhookResponse::text(503, "temporarily unavailable"),
            _ => WebhookResponse::text(401, "invalid signature"),
        }
    }
}

fn header<'a>(request: &'a WebhookRequest, name: &'static str) -> Result<&'a str, VerifyError> {
    request
        .header(name)
        .map(str::trim)
        .ok_or(VerifyError::MissingHeader(name))
}

fn unix_now(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Checks a Unix-seconds timestamp against `window` around `now`.
fn check_window(timestamp: &str, window: Duration, now: SystemTime) -> Result<(), VerifyError> {
    let signed: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed("timestamp".into()))?;
    let age_secs = signed.saturating_sub(unix_now(now));
    if age_secs.unsigned_abs() > window.as_secs() {
        return Err(VerifyError::OutsideWindow {
            age_secs,
            window_secs: window.as_secs(),
        });
    }
    Ok(())
}

/// WhatsApp / Meta: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` under the
/// app secret.
pub fn verify_hub_signature_256(
    app_secret: &Secret,
    request: &WebhookRequest,
) -> Result<(), VerifyError> {
    let value = header(request, "x-hub-signature-256")?;
    let hex = value
        .strip_prefix("sha256=")
        .ok_or_else(|| VerifyError::Malformed("X-Hub-Signature-256 (no sha256= prefix)".into()))?;
    let expected = from_hex(hex).ok_or_else(|| VerifyError::Malformed("signature hex".into()))?;
    let mut mac = hmac_sha256(app_secret.expose().as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&expected)
        .map_err(|_| VerifyError::BadSignature)
}

/// Webex: `X-Spark-Signature: <hex HMAC-SHA1 of the body>` under the webhook secret.
pub fn verify_spark_signature(
    webhook_secret: &Secret,
    request: &WebhookRequest,
) -> Result<(), VerifyError> {
    let value = header(request, "x-spark-signature")?;
    let expected = from_hex(value).ok_or_else(|| VerifyError::Malformed("signature hex".into()))?;
    let mut mac = hmac_sha1(webhook_secret.expose().as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&expected)
        .map_err(|_| VerifyError::BadSignature)
}

/// Slack request signatures (`v0`): HMAC-SHA256 of `v0:<X-Slack-Request-Timestamp>:<body>`
/// under the signing secret, hex in `X-Slack-Signature: v0=…`; the timestamp must be within
/// the window (five minutes) of now.
#[derive(Debug, Clone)]
pub struct SlackVerifier {
    signing_secret: Secret,
    window: Duration,
}

impl SlackVerifier {
    /// A verifier for the app's signing secret, with the five-minute window.
    pub fn new(signing_secret: Secret) -> Self {
        Self {
            signing_secret,
            window: DEFAULT_WINDOW,
        }
    }

    /// Sets the replay window.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Verifies a request now.
    pub fn verify(&self, request: &WebhookRequest) -> Result<(), VerifyError> {
        self.verify_at(
            header(request, "x-slack-request-timestamp")?,
            header(request, "x-slack-signature")?,
            &request.body,
            SystemTime::now(),
        )
    }

    /// Verifies the parts, as of `now`.
    pub fn verify_at(
        &self,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        // Signature first: a forged request learns nothing about our clock.
        let hex = signature
            .strip_prefix("v0=")
            .ok_or_else(|| VerifyError::Malformed("X-Slack-Signature (no v0= prefix)".into()))?;
        let expected =
            from_hex(hex).ok_or_else(|| VerifyError::Malformed("signature hex".into()))?;
        let mut mac = hmac_sha256(self.signing_secret.expose().as_bytes());
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        mac.verify_slice(&expected)
            .map_err(|_| VerifyError::BadSignature)?;
        check_window(timestamp, self.window, now)
    }
}

/// Svix webhooks (Resend): HMAC-SHA256 of `<svix-id>.<svix-timestamp>.<body>` under the
/// base64 key after `whsec_`; `svix-signature` holds space-separated `v1,<base64>` entries
/// (several during a key rotation), any of which may match; the timestamp must be within
/// the window. The `webhook-*` header names of white-labelled Svix are accepted too.
#[derive(Clone)]
pub struct SvixVerifier {
    key: Vec<u8>,
    window: Duration,
}

impl std::fmt::Debug for SvixVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvixVerifier")
            .field("key", &super::REDACTED)
            .field("window", &self.window)
            .finish()
    }
}

impl SvixVerifier {
    /// A verifier for a `whsec_…` signing secret (the prefix is optional).
    pub fn new(secret: &Secret) -> Result<Self, VerifyError> {
        let encoded = secret.expose().trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        let key = STANDARD.decode(encoded).map_err(|_| {
            VerifyError::Malformed("signing secret (expected whsec_<base64>)".into())
        })?;
        Ok(Self {
            key,
            window: DEFAULT_WINDOW,
        })
    }

    /// Sets the replay window.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Verifies a request now.
    pub fn verify(&self, request: &WebhookRequest) -> Result<(), VerifyError> {
        let pick = |svix: &'static str, plain: &'static str| {
            header(request, svix)
                .or_else(|_| header(request, plain).map_err(|_| VerifyError::MissingHeader(svix)))
        };
        self.verify_at(
            pick("svix-id", "webhook-id")?,
            pick("svix-timestamp", "webhook-timestamp")?,
            pick("svix-signature", "webhook-signature")?,
            &request.body,
            SystemTime::now(),
        )
    }

    /// Verifies the parts, as of `now`.
    pub fn verify_at(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        check_window(timestamp, self.window, now)?;
        let mut mac = hmac_sha256(&self.key);
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let mut matched = false;
        for entry in signatures.split_ascii_whitespace() {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                continue; // another scheme (v1a…) we don't check
            };
            let Ok(candidate) = STANDARD.decode(encoded) else {
                continue;
            };
            // Check every entry (no early exit), each in constant time.
            matched |= mac.clone().verify_slice(&candidate).is_ok();
        }
        if matched {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

/// Ed25519 signatures (Discord interactions): `X-Signature-Ed25519` (hex) over
/// `X-Signature-Timestamp` followed by the body, under the application's public key (hex,
/// from the developer portal). The timestamp must be within the window of now.
#[derive(Debug, Clone)]
pub struct Ed25519Verifier {
    public_key: [u8; 32],
    window: Option<Duration>,
}

impl Ed25519Verifier {
    /// A verifier for a 32-byte public key in hex.
    pub fn from_hex(public_key_hex: &str) -> Result<Self, VerifyError> {
        let bytes = from_hex(public_key_hex.trim())
            .ok_or_else(|| VerifyError::Malformed("public key hex".into()))?;
        let public_key = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| VerifyError::Malformed("public key (expected 32 bytes)".into()))?;
        Ok(Self {
            public_key,
            window: Some(DEFAULT_WINDOW),
        })
    }

    /// Sets the replay window; `None` checks the signature only.
    pub fn window(mut self, window: Option<Duration>) -> Self {
        self.window = window;
        self
    }

    /// Verifies a Discord interaction request now.
    pub fn verify(&self, request: &WebhookRequest) -> Result<(), VerifyError> {
        self.verify_at(
            header(request, "x-signature-timestamp")?,
            &request.body,
            header(request, "x-signature-ed25519")?,
            SystemTime::now(),
        )
    }

    /// Verifies `signature_hex` over `timestamp ‖ body`, as of `now`.
    pub fn verify_at(
        &self,
        timestamp: &str,
        body: &[u8],
        signature_hex: &str,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let mut message = Vec::with_capacity(timestamp.len() + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(body);
        self.verify_message(&message, signature_hex)?;
        match self.window {
            Some(window) => check_window(timestamp, window, now),
            None => Ok(()),
        }
    }

    /// Verifies a signature over any message.
    pub fn verify_message(&self, message: &[u8], signature_hex: &str) -> Result<(), VerifyError> {
        let signature = from_hex(signature_hex.trim())
            .filter(|s| s.len() == 64)
            .ok_or_else(|| VerifyError::Malformed("signature (expected 64 bytes of hex)".into()))?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.public_key)
            .verify(message, &signature)
            .map_err(|_| VerifyError::BadSignature)
    }
}

// ---------------------------------------------------------------------------------------------
// JWT (RS256) against a JWKS
// ---------------------------------------------------------------------------------------------

/// Where the signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An OpenID configuration document whose `jwks_uri` names the key set (Bot Framework:
    /// `https://login.botframework.com/v1/.well-known/openidconfiguration`).
    OpenIdConfiguration(String),
    /// A JWKS URL directly (Google Chat:
    /// `https://www.googleapis.com/service_accounts/v1/jwk/chat@system.gserviceaccount.com`).
    Jwks(String),
}

/// Verifies bearer JWTs signed with RS256 by a key of a published JWKS: signature, issuer,
/// audience, expiry and not-before (with a small leeway).
///
/// Keys are fetched on first use and cached for `max_age`; a token naming a key the cache
/// lacks triggers one refresh (at most once per `min_refresh`, so random key ids cannot make
/// us hammer the key server).
pub struct JwtVerifier {
    client: reqwest::Client,
    source: KeySource,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    max_age: Duration,
    min_refresh: Duration,
    cache: tokio::sync::Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, RsaKey>,
    fetched: Option<Instant>,
}

#[derive(Clone)]
struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct OpenIdConfiguration {
    jwks_uri: String,
}

/// Largest key document read.
const MAX_KEY_DOCUMENT: u64 = 1024 * 1024;

impl JwtVerifier {
    /// A verifier accepting tokens from `issuer` for `audience`, with keys from `source`,
    /// a 5-minute leeway on times, keys cached for a day.
    pub fn new(
        client: reqwest::Client,
        source: KeySource,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            client,
            source,
            issuers: vec![issuer.into()],
            audiences: vec![audience.into()],
            leeway: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(24 * 3600),
            min_refresh: Duration::from_secs(60),
            cache: tokio::sync::Mutex::default(),
        }
    }

    /// Also accepts tokens from `issuer`.
    pub fn also_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Also accepts tokens for `audience`.
    pub fn also_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock leeway for `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long fetched keys are trusted before they are fetched again.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The least time between two fetches caused by unknown key ids.
    pub fn min_refresh(mut self, min_refresh: Duration) -> Self {
        self.min_refresh = min_refresh;
        self
    }

    /// Verifies the `Authorization: Bearer <token>` of a request; returns the claims.
    pub async fn verify_request(&self, request: &WebhookRequest) -> Result<Value, VerifyError> {
        let value = header(request, "authorization")?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| VerifyError::Malformed("Authorization (expected Bearer)".into()))?;
        self.verify(token.trim()).await
    }

    /// Verifies a token now; returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Value, VerifyError> {
        self.verify_at(token, SystemTime::now()).await
    }

    /// Verifies a token as of `now`; returns its claims.
    pub async fn verify_at(&self, token: &str, now: SystemTime) -> Result<Value, VerifyError> {
        let mut parts = token.split('.');
        let (Some(head), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed(
                "token (expected three parts)".into(),
            ));
        };
        let header: JwtHeader = decode_json(head, "token header")?;
        // Only RS256: accepting the token's own choice of algorithm is the classic JWT hole.
        if header.alg != "RS256" {
            return Err(VerifyError::Malformed(format!(
                "token algorithm `{}` (only RS256 is accepted)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| VerifyError::Malformed("token header (no kid)".into()))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| VerifyError::Malformed("token signature".into()))?;
        let key = self.key(&kid).await?;
        let signed = &token[..head.len() + 1 + payload.len()];
        ring::signature::RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &signature,
        )
        .map_err(|_| VerifyError::BadSignature)?;
        let claims: Value = decode_json(payload, "token claims")?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    fn check_claims(&self, claims: &Value, now: SystemTime) -> Result<(), VerifyError> {
        let now = unix_now(now);
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| VerifyError::Claims("no exp".into()))?;
        if now > exp.saturating_add(leeway) {
            return Err(VerifyError::Claims(format!("expired {} s ago", now - exp)));
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
            && now.saturating_add(leeway) < nbf
        {
            return Err(VerifyError::Claims("not valid yet".into()));
        }
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !self.issuers.iter().any(|i| i == issuer) {
            return Err(VerifyError::Claims(format!(
                "issuer `{issuer}` not accepted"
            )));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => self.audiences.contains(aud),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| self.audiences.iter().any(|a| a == aud)),
            _ => false,
        };
        if !audience_ok {
            return Err(VerifyError::Claims("audience not accepted".into()));
        }
        Ok(())
    }

    /// The key `kid`, from the cache or a fresh fetch.
    async fn key(&self, kid: &str) -> Result<RsaKey, VerifyError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.fetched.is_some_and(|at| at.elapsed() < self.max_age);
        if fresh && let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        // Stale, empty, or an unknown kid (the platform rotated its keys).
        let may_refresh = !fresh
            || cache
                .fetched
                .is_none_or(|at| at.elapsed() >= self.min_refresh);
        if may_refresh {
            cache.keys = self.fetch_keys().await?;
            cache.fetched = Some(Instant::now());
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, RsaKey>, VerifyError> {
        let jwks_url = match &self.source {
            KeySource::Jwks(url) => url.clone(),
            KeySource::OpenIdConfiguration(url) => {
                let config: OpenIdConfiguration = self.get_json(url).await?;
                config.jwks_uri
            }
        };
        let jwks: Jwks = self.get_json(&jwks_url).await?;
        let mut keys = HashMap::new();
        for jwk in jwks.keys {
            let usable = jwk.kty == "RSA"
                && jwk.usage.as_deref().is_none_or(|u| u == "sig")
                && jwk.alg.as_deref().is_none_or(|a| a == "RS256");
            let (true, Some(kid), Some(n), Some(e)) = (usable, jwk.kid, jwk.n, jwk.e) else {
                continue;
            };
            let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
                continue;
            };
            keys.insert(kid, RsaKey { n, e });
        }
        if keys.is_empty() {
            return Err(VerifyError::Keys(format!("{jwks_url} has no RS256 keys")));
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, VerifyError> {
        let failed = |e: HttpError| VerifyError::Keys(format!("{url}: {e}"));
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| failed(HttpError::from_reqwest(e, &[])))?;
        let response = http::check(response, &[]).await.map_err(failed)?;
        let body = http::read_capped(response, MAX_KEY_DOCUMENT, &[])
            .await
            .map_err(failed)?;
        serde_json::from_slice(&body).map_err(|e| VerifyError::Keys(format!("{url}: {e}")))
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed(what.to_owned()))?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed(what.to_owned()))
}

#[cfg(test)]
mod tests;
