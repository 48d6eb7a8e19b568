//! The app's token for the Chat API: a service account's OAuth 2 JWT-bearer grant (an
//! RS256 assertion signed with its private key, scope `chat.bot`), cached until five
//! minutes before it expires and dropped when the API refuses it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use nanoclaw_plugin_api::kit::http::{self, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::tokio::sync::Mutex;
use serde::Deserialize;
use serde_json::json;

use crate::CHAT_SCOPE;

const EARLY: Duration = Duration::from_secs(5 * 60);
const MAX_ANSWER: u64 = 64 * 1024;

/// The fields of a service account key used here.
pub(crate) struct ServiceAccount {
    client_email: String,
    private_key_id: Option<String>,
    key: ring::signature::RsaKeyPair,
    pub(crate) token_uri: Option<String>,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses the JSON key; errors never quote it.
    pub(crate) fn parse(credentials: &Secret) -> Result<Self, PluginError> {
        let file: KeyFile = serde_json::from_str(credentials.expose()).map_err(|_| {
            PluginError::config(
                "credentials is not a service account JSON key (client_email, private_key); \
                 put the whole key file on one line in GCHAT_CREDENTIALS",
            )
        })?;
        if !file.kind.is_empty() && file.kind != "service_account" {
            return Err(PluginError::config(
                "credentials must be a service account key (\"type\": \"service_account\")",
            ));
        }
        let body: String = file
            .private_key
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|_| PluginError::config("credentials: private_key is not a PEM key"))?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|_| {
            PluginError::config("credentials: private_key is not an RSA PKCS#8 key")
        })?;
        if !file.client_email.contains('@') {
            return Err(PluginError::config(
                "credentials: client_email is not an address",
            ));
        }
        Ok(Self {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            key,
            token_uri: file.token_uri,
        })
    }

    /// The signed assertion for `audience` (the token URL), valid for an hour from `now`.
    fn assertion(&self, audience: &str, now: u64) -> Result<String, PluginError> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": CHAT_SCOPE,
            "aud": audience,
            "iat": now,
            "exp": now + 3600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| PluginError::other("could not sign the token assertion"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub(crate) struct TokenSource {
    client: reqwest::Client,
    url: String,
    account: ServiceAccount,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl TokenSource {
    pub(crate) fn new(client: reqwest::Client, url: String, account: ServiceAccount) -> Self {
        Self {
            client,
            url,
            account,
            cached: Mutex::new(None),
        }
    }

    pub(crate) fn client_email(&self) -> &str {
        &self.account.client_email
    }

    /// A valid token: the cached one, or a new one.
    pub(crate) async fn token(&self) -> Result<Secret, PluginError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = Secret::new(self.account.assertion(&self.url, now)?);
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.expose()),
        ];
        let secrets = [&assertion];
        let request = self.client.post(&self.url).form(&form);
        let response = http::send(request, &secrets).await.map_err(|e| {
            let error = e.to_plugin_error("token");
            // Google answers a bad key or an unknown account 400 `invalid_grant`.
            match &e {
                http::HttpError::Status {
                    status: 400, body, ..
                } if body.contains("invalid_grant") || body.contains("invalid_client") => {
                    PluginError::auth(error.message.to_string())
                }
                _ => error,
            }
        })?;
        let body = http::read_capped(response, MAX_ANSWER, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("token"))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| PluginError::other("token: the answer is not a token"))?;
        if answer.access_token.is_empty() {
            return Err(PluginError::other("token: empty access_token"));
        }
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let token = Secret::new(answer.access_token);
        let until = Instant::now() + lifetime.saturating_sub(EARLY).max(Duration::from_secs(30));
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    /// Forgets the cached token (the API refused it).
    pub(crate) async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}
