//! The bot's own token for the Bot Connector: OAuth 2 client credentials against Entra ID
//! (`grant_type=client_credentials`, scope `https://api.botframework.com/.default`), cached
//! until five minutes before it expires and dropped when the connector refuses it.

use std::time::{Duration, Instant};

use nanoclaw_plugin_api::kit::http::{self, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;

use crate::BOT_SCOPE;

/// A token is renewed this long before it expires.
const EARLY: Duration = Duration::from_secs(5 * 60);
/// Token answers are small.
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub(crate) struct TokenSource {
    client: reqwest::Client,
    url: String,
    app_id: String,
    password: Secret,
    cached: nanoclaw_plugin_api::kit::tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl TokenSource {
    pub(crate) fn new(
        client: reqwest::Client,
        url: String,
        app_id: String,
        password: Secret,
    ) -> Self {
        Self {
            client,
            url,
            app_id,
            password,
            cached: nanoclaw_plugin_api::kit::tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a new one.
    pub(crate) async fn token(&self) -> Result<Secret, PluginError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", self.password.expose()),
            ("scope", BOT_SCOPE),
        ];
        let secrets = [&self.password];
        let request = self.client.post(&self.url).form(&form);
        let response = http::send(request, &secrets)
            .await
            .map_err(|e| token_error(&e))?;
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

    /// Forgets the cached token (the connector refused it).
    pub(crate) async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}

/// Entra answers a wrong secret or app id with 400/401 `invalid_client`: the operator must
/// fix the credentials.
fn token_error(e: &http::HttpError) -> PluginError {
    let error = e.to_plugin_error("token");
    match e {
        http::HttpError::Status { status, body, .. }
            if *status == 400
                && (body.contains("invalid_client")
                    || body.contains("unauthorized_client")
                    || body.contains("invalid_request")) =>
        {
            PluginError::auth(error.message.to_string())
        }
        _ => error,
    }
}
