//! `fake-discord`: a fake Discord (REST API and gateway) for trying NanoClaw without a
//! Discord account.
//!
//! ```text
//! fake-discord serve --port 8083
//! fake-discord send  --port 8083 --from 80351110224678912 --name "Ann Lee" --text "hello"
//! fake-discord send  --port 8083 --channel 1400000000000000010 --guild 1400000000000000001 --mention --from 42 --name Ann --text "hi"
//! fake-discord sent  --port 8083
//! fake-discord click --port 8083 --channel <id> --message <id> --custom-id ncq:q1:0 --from 42 --name Ann
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nanoclaw_fake_discord::{BOT_ID, BOT_NAME, FakeDiscord, TOKEN};
use serde_json::{Value, json};

const DEFAULT_PORT: u16 = 8083;

#[derive(Parser)]
#[command(name = "fake-discord", version, about = "A fake Discord on 127.0.0.1")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the fake REST API and gateway until Ctrl-C.
    Serve {
        /// Port on 127.0.0.1; 0 picks a free one (the first line printed shows which).
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
    },
    /// Write to the bot as a user (in a DM unless --channel is given).
    Send {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        /// The user's id (a number).
        #[arg(long)]
        from: String,
        /// The user's display name.
        #[arg(long, default_value = "User")]
        name: String,
        /// Message text.
        #[arg(long)]
        text: String,
        /// A server channel or thread id (default: the user's DM with the bot).
        #[arg(long)]
        channel: Option<String>,
        /// The server (guild) id, for a server channel.
        #[arg(long)]
        guild: Option<String>,
        /// Mention the bot (prepends <@bot id>).
        #[arg(long)]
        mention: bool,
        /// Reply to this message id (one the bot sent).
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// List what the bot posted.
    Sent {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
    },
    /// Click a button of a message the bot posted.
    Click {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        #[arg(long)]
        channel: String,
        #[arg(long)]
        message: String,
        #[arg(long)]
        custom_id: String,
        #[arg(long)]
        from: String,
        #[arg(long, default_value = "User")]
        name: String,
        #[arg(long)]
        guild: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-discord: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { port } => serve(port),
        Command::Send {
            port,
            from,
            name,
            text,
            channel,
            guild,
            mention,
            reply_to,
        } => {
            let answer = control(
                port,
                "/control/send",
                Some(
                    json!({"from": from, "name": name, "text": text, "channel": channel,
                            "guild": guild, "mention": mention, "reply_to": reply_to}),
                ),
            )?;
            println!(
                "sent message {} in channel {}",
                answer["id"].as_str().unwrap_or("?"),
                answer["channel_id"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Sent { port } => {
            let sent = control(port, "/control/sent", None)?;
            for m in sent.as_array().into_iter().flatten() {
                println!(
                    "[{}] message {}{}:",
                    m["channel_id"].as_str().unwrap_or("?"),
                    m["id"].as_str().unwrap_or("?"),
                    m["reply_to"]
                        .as_str()
                        .map_or_else(String::new, |r| format!(" (reply to {r})"))
                );
                println!("{}", m["content"].as_str().unwrap_or_default());
                for row in m["components"].as_array().into_iter().flatten() {
                    for button in row["components"].as_array().into_iter().flatten() {
                        println!(
                            "  [button {:?} custom_id={}]",
                            button["label"].as_str().unwrap_or_default(),
                            button["custom_id"].as_str().unwrap_or_default()
                        );
                    }
                }
                for file in m["files"].as_array().into_iter().flatten() {
                    println!("  [file {}]", file.as_str().unwrap_or_default());
                }
                println!();
            }
            Ok(())
        }
        Command::Click {
            port,
            channel,
            message,
            custom_id,
            from,
            name,
            guild,
        } => {
            let answer = control(
                port,
                "/control/click",
                Some(
                    json!({"channel": channel, "message": message, "custom_id": custom_id,
                            "from": from, "name": name, "guild": guild}),
                ),
            )?;
            println!(
                "clicked (interaction {})",
                answer["id"].as_str().unwrap_or("?")
            );
            Ok(())
        }
    }
}

fn serve(port: u16) -> Result<(), String> {
    let fake = FakeDiscord::start_on(port).map_err(|e| format!("port {port}: {e}"))?;
    println!("fake Discord on {}", fake.server.base_url());
    println!("api_base_url = \"{}\"", fake.api_base_url());
    println!("gateway_url = \"{}\"", fake.gateway_url());
    println!("bot: {BOT_NAME} (id {BOT_ID})");
    println!("token: {TOKEN}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(tokio::signal::ctrl_c())
        .map_err(|e| format!("waiting for Ctrl-C: {e}"))?;
    fake.server.stop();
    Ok(())
}

/// One control API request to a fake on 127.0.0.1:`port` (POST with a body, else GET).
fn control(port: u16, path: &str, body: Option<Value>) -> Result<Value, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("http://127.0.0.1:{port}{path}");
        let request = match body {
            Some(body) => client.post(&url).json(&body),
            None => client.get(&url),
        };
        let response = request.send().await.map_err(|e| {
            format!(
                "no fake-discord on port {port} (start it with `fake-discord serve --port {port}`): {}",
                e.without_url()
            )
        })?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| format!("unexpected answer: {}", e.without_url()))?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(answer["message"]
                .as_str()
                .map_or_else(|| answer.to_string(), str::to_owned))
        }
    })
}
