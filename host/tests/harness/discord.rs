//! A user's side of Discord for end-to-end tests: the fake Discord, the plugin's settings for
//! it, and what a Discord user does (write, click) through the fake's control API.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use nanoclaw_fake_discord::{FakeDiscord, Posted};
use serde_json::{Value, json};

use super::built;

#[allow(unused_imports)] // each test binary uses a different part
pub use nanoclaw_fake_discord::{ANN, BOB, GUILD, GUILD_CHANNEL, TOKEN};

/// The `.env` line for the bot token.
pub fn env_line() -> String {
    format!("DISCORD_BOT_TOKEN={TOKEN}\n")
}

/// The `[plugins.discord]` table for the real plugin against `fake`.
pub fn plugins_toml(fake: &FakeDiscord) -> String {
    format!(
        "[plugins.discord]\nlibrary = {:?}\nrequired = true\n\
         [plugins.discord.settings]\nbot_token = {{ env = \"DISCORD_BOT_TOKEN\" }}\n\
         api_base_url = {:?}\ngateway_url = {:?}\n",
        built().join("libnanoclaw_plugin_channels.so"),
        fake.api_base_url(),
        fake.gateway_url(),
    )
}

/// Calls the fake's control API and returns its JSON answer.
fn control(fake: &FakeDiscord, path: &str, body: Value) -> Value {
    let base = fake.api_base_url();
    let port: u16 = base
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the fake's port");
    let body = body.to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// `from` writes `text` in a server channel (mentioning the bot or not); returns the
/// message id.
pub fn say_in_channel(
    fake: &FakeDiscord,
    from: &str,
    name: &str,
    text: &str,
    mention: bool,
) -> String {
    let sent = control(
        fake,
        "/control/send",
        json!({"from": from, "name": name, "text": text, "mention": mention,
               "channel": GUILD_CHANNEL, "guild": GUILD}),
    );
    sent["id"].as_str().unwrap_or_default().to_owned()
}

/// `from` writes `text` in their DM with the bot; returns the DM channel id.
pub fn say_in_dm(fake: &FakeDiscord, from: &str, name: &str, text: &str) -> String {
    let sent = control(
        fake,
        "/control/send",
        json!({"from": from, "name": name, "text": text}),
    );
    sent["channel_id"].as_str().unwrap_or_default().to_owned()
}

/// `from` clicks the button with `custom_id` on the bot's message `message` in `channel`.
pub fn click(
    fake: &FakeDiscord,
    from: &str,
    name: &str,
    channel: &str,
    message: &str,
    custom_id: &str,
) {
    control(
        fake,
        "/control/click",
        json!({"from": from, "name": name, "channel": channel, "message": message,
               "custom_id": custom_id}),
    );
}

/// The bot's messages in `channel`, in order.
pub fn posts(fake: &FakeDiscord, channel: &str) -> Vec<Posted> {
    fake.messages()
        .into_iter()
        .filter(|m| m.channel_id == channel)
        .collect()
}

/// The `custom_id` of the button labelled `label` on a message.
pub fn button(card: &Posted, label: &str) -> String {
    card.components
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .find(|b| b["label"] == label)
        .and_then(|b| b["custom_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {label:?} button on {:?}", card.components))
}
