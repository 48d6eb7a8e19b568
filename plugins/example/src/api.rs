//! The Example platform's REST API: the four calls the channel makes.
//!
//! Each call is classified by the kit (`kit::http`): the host learns whether to retry
//! (`429`, `5xx`, network), to wait (`Retry-After`), or to give up and tell the operator
//! (`401`/`403`), and no error ever carries the URL or the token.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::reqwest::{Method, RequestBuilder, Url, header::HeaderValue};
use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Below the host's 30 s call timeout, so a slow platform is our `TIMEOUT`, not a host call
/// that never returns.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The platform answers small JSON objects; a bigger body is not worth reading.
const MAX_ANSWER_BYTES: u64 = 256 * 1024;

/// `GET /v1/me`.
#[derive(Debug, Deserialize)]
pub(crate) struct Me {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// The answer to a post: the new message's id.
#[derive(Deserialize)]
struct Created {
    id: String,
}

/// A client for one bot account.
pub(crate) struct Api {
    http: reqwest::Client,
    base: ApiBase,
    token: Secret,
}

impl Api {
    pub(crate) fn new(
        info: &ChannelInfo,
        base: &ApiBase,
        token: Secret,
    ) -> Result<Self, PluginError> {
        let http = ClientConfig::for_channel(info)
            .timeout(Some(REQUEST_TIMEOUT))
            .build()?;
        Ok(Self {
            http,
            base: base.clone(),
            token,
        })
    }

    /// `<api_base_url>/v1/<segments>`. Chat and message ids come from outside: the kit
    /// escapes each as one segment and refuses `.`/`..`.
    fn url(&self, segments: &[&str]) -> Result<Url, PluginError> {
        self.base.join(["v1"].iter().chain(segments))
    }

    /// Sends `request` with the token and, when the host gave one, its idempotency key;
    /// returns the body of a success answer.
    async fn call(
        &self,
        what: &str,
        request: RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, PluginError> {
        let mut request = request.bearer_auth(self.token.expose());
        // A key that is not a valid header value is left out rather than failing the send.
        if let Some(key) = idempotency_key.and_then(|k| HeaderValue::from_str(k).ok()) {
            request = request.header("Idempotency-Key", key);
        }
        let secrets = [&self.token];
        let answer = async {
            let response = http::send(request, &secrets).await?;
            http::read_capped(response, MAX_ANSWER_BYTES, &secrets).await
        };
        answer.await.map_err(|e| e.to_plugin_error(what))
    }

    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, PluginError> {
        Ok(self.http.request(method, self.url(segments)?))
    }

    /// `GET /v1/me`: checks the token.
    pub(crate) async fn me(&self) -> Result<Me, PluginError> {
        let body = self
            .call("GET /v1/me", self.request(Method::GET, &["me"])?, None)
            .await?;
        decode("GET /v1/me", &body)
    }

    /// `POST /v1/chats/{chat}/messages`: returns the new message's id.
    pub(crate) async fn post_message(
        &self,
        chat: &str,
        part: &OutboundMessage,
        idempotency_key: Option<&str>,
    ) -> Result<String, PluginError> {
        let mut body = json!({ "text": part.text.as_str() });
        if !part.buttons.is_empty() {
            let buttons: Vec<Value> = part
                .buttons
                .iter()
                .map(|b| json!({"id": b.id.as_str(), "label": b.label.as_str()}))
                .collect();
            body["buttons"] = json!(buttons);
        }
        if let RSome(reply_to) = &part.target_message_id {
            body["reply_to"] = json!(reply_to.as_str());
        }
        let request = self
            .request(Method::POST, &["chats", chat, "messages"])?
            .json(&body);
        let answer = self.call("post message", request, idempotency_key).await?;
        decode::<Created>("post message", &answer).map(|created| created.id)
    }

    /// `PATCH /v1/chats/{chat}/messages/{id}`.
    pub(crate) async fn edit_message(
        &self,
        chat: &str,
        id: &str,
        text: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(), PluginError> {
        let request = self
            .request(Method::PATCH, &["chats", chat, "messages", id])?
            .json(&json!({ "text": text }));
        self.call("edit message", request, idempotency_key)
            .await
            .map(drop)
    }

    /// `POST /v1/chats/{chat}/messages/{id}/reactions`.
    pub(crate) async fn react(
        &self,
        chat: &str,
        id: &str,
        emoji: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(), PluginError> {
        let request = self
            .request(Method::POST, &["chats", chat, "messages", id, "reactions"])?
            .json(&json!({ "emoji": emoji }));
        self.call("react", request, idempotency_key).await.map(drop)
    }
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(body)
        .map_err(|e| PluginError::other(format!("{what}: unexpected answer: {e}")))
}
