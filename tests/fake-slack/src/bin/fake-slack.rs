//! `fake-slack`: a fake Slack workspace on 127.0.0.1 to try NanoClaw's Slack channel with no
//! account. `serve` runs it; `say`, `click` and `sent` play a user through its control API.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nanoclaw_fake_slack::{ANN, APP_TOKEN, BOB, BOT_TOKEN, BOT_USER, DM_ANN, FakeSlack, GENERAL};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "A fake Slack workspace on 127.0.0.1 (Web API, files, Socket Mode)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fake until Ctrl-C.
    Serve {
        /// Port on 127.0.0.1 (0: any free one; the first line says which).
        #[arg(long, default_value_t = 8082)]
        port: u16,
    },
    /// A user writes a message (delivered to the bot over Socket Mode).
    Say {
        #[arg(long, default_value_t = 8082)]
        port: u16,
        /// Conversation id: D0ANN (Ann's DM with the bot), C0GENERAL, G0PRIVATE, G0MPIM.
        #[arg(long, default_value = DM_ANN)]
        channel: String,
        /// Who writes: U0ANN or U0BOB.
        #[arg(long, default_value = ANN)]
        user: String,
        /// The text (`<@U0BOT>` mentions the bot).
        #[arg(long)]
        text: String,
        /// Reply in the thread of this message ts.
        #[arg(long)]
        thread: Option<String>,
    },
    /// A user clicks a button of one of the bot's messages (`sent` lists them).
    Click {
        #[arg(long, default_value_t = 8082)]
        port: u16,
        #[arg(long)]
        channel: String,
        /// The ts of the bot's message.
        #[arg(long)]
        ts: String,
        #[arg(long, default_value = ANN)]
        user: String,
        /// The button's action_id.
        #[arg(long)]
        action: String,
    },
    /// What the bot posted, oldest first.
    Sent {
        #[arg(long, default_value_t = 8082)]
        port: u16,
    },
}

fn channel_type(channel: &str) -> &'static str {
    match channel {
        c if c.starts_with('D') => "im",
        "G0MPIM" => "mpim",
        c if c.starts_with('G') => "group",
        _ => "channel",
    }
}

/// One HTTP/1.1 request to the fake's control API; the JSON answer.
fn control(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("cannot reach fake-slack on port {port}: {e}"))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    // The control API answers small bodies; tolerate chunked encoding.
    let json_start = rest.find(['{', '[']).unwrap_or(0);
    let json_end = rest.rfind(['}', ']']).map_or(rest.len(), |e| e + 1);
    serde_json::from_str(&rest[json_start..json_end]).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { port } => {
            let fake = match FakeSlack::start_on(port) {
                Ok(fake) => fake,
                Err(e) => {
                    eprintln!("fake-slack: cannot listen on port {port}: {e}");
                    return ExitCode::from(2);
                }
            };
            println!("fake Slack on {}", fake.base_url());
            println!("  api_base_url = \"{}\"", fake.api_url());
            println!("  file_hosts = [\"{}\"]", fake.base_url());
            println!("  SLACK_BOT_TOKEN={BOT_TOKEN}");
            println!("  SLACK_APP_TOKEN={APP_TOKEN}");
            println!(
                "  bot <@{BOT_USER}>; users {ANN} (Ann, DM {DM_ANN}) and {BOB} (Bob); channel {GENERAL}"
            );
            loop {
                std::thread::park();
            }
        }
        Command::Say {
            port,
            channel,
            user,
            text,
            thread,
        } => control(
            port,
            "POST",
            "/control/say",
            Some(
                &json!({"channel": channel, "channel_type": channel_type(&channel),
                         "user": user, "text": text, "thread_ts": thread}),
            ),
        )
        .map(|v| println!("{}", v["ts"].as_str().unwrap_or_default())),
        Command::Click {
            port,
            channel,
            ts,
            user,
            action,
        } => control(
            port,
            "POST",
            "/control/click",
            Some(&json!({"channel": channel, "ts": ts, "user": user, "action_id": action})),
        )
        .map(drop),
        Command::Sent { port } => control(port, "GET", "/control/sent", None).map(|v| {
            for m in v["messages"].as_array().into_iter().flatten() {
                let thread = m["thread_ts"]
                    .as_str()
                    .map(|t| format!(" (thread {t})"))
                    .unwrap_or_default();
                println!(
                    "{} {}{thread}: {}",
                    m["channel"].as_str().unwrap_or_default(),
                    m["ts"].as_str().unwrap_or_default(),
                    m["text"].as_str().unwrap_or_default()
                );
                for b in m["buttons"].as_array().into_iter().flatten() {
                    println!(
                        "    [{}] --action {}",
                        b["label"].as_str().unwrap_or_default(),
                        b["action_id"].as_str().unwrap_or_default()
                    );
                }
            }
            for f in v["files"].as_array().into_iter().flatten() {
                println!(
                    "{} file {} ({} bytes)",
                    f["channel"].as_str().unwrap_or_default(),
                    f["name"].as_str().unwrap_or_default(),
                    f["bytes"]
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-slack: {e}");
            ExitCode::FAILURE
        }
    }
}
