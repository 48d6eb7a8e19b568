//! Socket Mode: a WebSocket from `apps.connections.open` (a fresh URL per connection),
//! envelopes acknowledged by `envelope_id` once the host took them (or had them already),
//! and a reconnect whenever Slack says `disconnect`.

use std::sync::Arc;

use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::ws::{Flow, Message, Session, UrlError, WsHandler};
use serde::Deserialize;
use serde_json::json;

use crate::Shared;
use crate::inbound::EventsBody;

/// A Socket Mode frame.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    retry_attempt: Option<u32>,
}

/// The gateway handler.
pub(crate) struct SocketMode {
    pub(crate) shared: Arc<Shared>,
}

impl SocketMode {
    fn ack(session: &mut Session, envelope_id: &str) {
        session.send(Message::text(
            json!({ "envelope_id": envelope_id }).to_string(),
        ));
    }
}

impl WsHandler for SocketMode {
    async fn connect_url(&mut self) -> Result<Option<Secret>, UrlError> {
        // The URL `start` got (checking the app token) serves the first connection.
        if let Some(url) = self.shared.take_first_url() {
            return Ok(Some(url));
        }
        match self.shared.api.open_connection().await {
            Ok(url) => Ok(Some(Secret::new(url))),
            Err(e) if e.kind == ErrorKind::AUTH || e.kind == ErrorKind::CONFIG => {
                Err(UrlError::Stop(format!(
                    "Slack refused the app-level token ({e}): check SLACK_APP_TOKEN \
                     (xapp-…, scope connections:write) and that Socket Mode is on"
                )))
            }
            Err(e) => Err(UrlError::Retry(e.to_string())),
        }
    }

    async fn on_connect(&mut self, session: &mut Session) -> Flow {
        if session.connects() > 1 {
            self.shared.life.info("Socket Mode reconnected");
        }
        Flow::Continue
    }

    async fn on_message(&mut self, message: Message, session: &mut Session) -> Flow {
        let Ok(text) = message.to_text() else {
            return Flow::Continue;
        };
        let frame: Frame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.shared.life.warn(format!(
                    "ignoring a Socket Mode frame that does not parse: {e}"
                ));
                return Flow::Continue;
            }
        };
        let life = &self.shared.life;
        match frame.kind.as_str() {
            "hello" => {
                life.debug("Socket Mode connected (hello)");
                Flow::Continue
            }
            // refresh_requested (the connection's time is up), warning (it will be soon),
            // link_disabled (Socket Mode was turned off): a fresh URL in all cases.
            "disconnect" => {
                life.info(format!(
                    "Slack asked to reconnect ({})",
                    frame.reason.as_deref().unwrap_or("no reason")
                ));
                Flow::Reconnect
            }
            kind => {
                let Some(envelope_id) = frame.envelope_id.filter(|id| !id.is_empty()) else {
                    life.debug(format!("ignoring Socket Mode frame `{kind}`"));
                    return Flow::Continue;
                };
                if frame.retry_attempt.unwrap_or(0) > 0 {
                    life.debug(format!(
                        "envelope {envelope_id} redelivered (attempt {})",
                        frame.retry_attempt.unwrap_or(0)
                    ));
                }
                let payload = frame.payload.unwrap_or_default();
                let handled = match kind {
                    "events_api" => match serde_json::from_value::<EventsBody>(payload) {
                        Ok(body) => self.shared.handle_events_body(body).await.map(drop),
                        Err(e) => {
                            life.warn(format!("events_api payload does not parse: {e}"));
                            Ok(())
                        }
                    },
                    "interactive" => match self.shared.offer_interaction(&payload).await {
                        Ok(offered) if offered.redeliver() => Err(()),
                        Ok(_) => Ok(()),
                        Err(()) => Err(()),
                    },
                    // slash_commands and anything newer: nothing for the host.
                    _ => Ok(()),
                };
                match handled {
                    Ok(()) => Self::ack(session, &envelope_id),
                    // Not acknowledged: Slack sends the envelope again.
                    Err(()) => life.debug(format!(
                        "envelope {envelope_id} not acknowledged: the host did not take it"
                    )),
                }
                Flow::Continue
            }
        }
    }
}
