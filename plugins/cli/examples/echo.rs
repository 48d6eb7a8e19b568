//! Runs the cli channel with an in-memory host and an "agent" that echoes each message back
//! (after showing `typing` for a moment): try `nanoclaw chat` without the daemon or Docker.
//!
//! ```text
//! cargo run -p nanoclaw-plugin-cli --example echo -- /tmp/nc-echo
//! nanoclaw chat --socket /tmp/nc-echo/chat.sock
//! ```

use std::path::PathBuf;
use std::time::Duration;

use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use nanoclaw_plugin_cli::CliChannel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("nanoclaw-echo"), PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    let mem = MemoryHost::new();
    let channel = CliChannel::create(Context {
        instance_name: "cli".into(),
        settings_json: String::new(),
        data_dir: dir.clone(),
        extra_json: String::new(),
        host: mem.host(),
    })?;
    channel.start()?;
    println!("listening on {}", channel.socket_path().display());
    let mut seen = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let inbound = mem.inbound();
        for event in &inbound[seen..] {
            channel.set_typing(event.chat_id.as_str(), None);
            std::thread::sleep(Duration::from_secs(1));
            let sender = event
                .sender
                .as_ref()
                .into_option()
                .and_then(|s| s.display_name.as_ref().into_option())
                .map_or("you", RString::as_str);
            let reply = format!("{sender} said:\n{}", event.text);
            channel.deliver(OutboundMessage {
                chat_id: event.chat_id.clone(),
                text: reply.into(),
                ..OutboundMessage::default()
            })?;
        }
        seen = inbound.len();
    }
}
