//! `fake-webex`: a fake Webex on 127.0.0.1 to try NanoClaw's Webex channel with no account.
//! `serve` runs it (the plugin registers its webhooks there at start); `say`, `click` and
//! `sent` play a user through its control API.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nanoclaw_fake_webex::{ANN, BOT_ID, BOT_TOKEN, DM_ANN, FakeWebex, TEAM, WEBHOOK_SECRET};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "A fake Webex on 127.0.0.1 (REST API, signed webhooks, cards)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fake until Ctrl-C.
    Serve {
        /// Port on 127.0.0.1 (0: any free one; the first line says which).
        #[arg(long, default_value_t = 8083)]
        port: u16,
    },
    /// A user writes in a space (POSTed to the bot's webhook: always in 1:1 spaces, in the
    /// group space only with --mention).
    Say {
        #[arg(long, default_value_t = 8083)]
        port: u16,
        /// Space id: Ann's 1:1 space (default) or the group space.
        #[arg(long, default_value = DM_ANN)]
        room: String,
        /// Who writes (person id; default Ann).
        #[arg(long, default_value = ANN)]
        person: String,
        #[arg(long)]
        text: String,
        /// Reply in the thread of this message id.
        #[arg(long)]
        parent: Option<String>,
        /// Mention the bot (needed in the group space).
        #[arg(long)]
        mention: bool,
    },
    /// A user clicks a card button of one of the bot's messages (`sent` lists them).
    Click {
        #[arg(long, default_value_t = 8083)]
        port: u16,
        /// The bot's message id.
        #[arg(long)]
        message: String,
        #[arg(long, default_value = ANN)]
        person: String,
        /// The button's data, as `sent` shows it (JSON).
        #[arg(long)]
        data: String,
    },
    /// What the bot posted, oldest first.
    Sent {
        #[arg(long, default_value_t = 8083)]
        port: u16,
    },
}

fn control(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("cannot reach fake-webex on port {port}: {e}"))?;
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
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).map_err(|e| format!("unexpected answer ({e}): {answer}"))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve { port } => match FakeWebex::start_on(port) {
            Ok(fake) => {
                println!("fake-webex on {}", fake.base_url());
                println!("api_base_url = \"{}\"", fake.api_url());
                println!("WEBEX_BOT_TOKEN={BOT_TOKEN}");
                println!("WEBEX_WEBHOOK_SECRET={WEBHOOK_SECRET}");
                println!(
                    "bot person id {BOT_ID}; Ann {ANN} in 1:1 space {DM_ANN}; group space {TEAM}"
                );
                loop {
                    std::thread::park();
                }
            }
            Err(e) => Err(format!("cannot serve on port {port}: {e}")),
        },
        Command::Say {
            port,
            room,
            person,
            text,
            parent,
            mention,
        } => control(
            port,
            "POST",
            "/control/say",
            Some(
                &json!({"room": room, "person": person, "text": text, "parent": parent,
                         "mention_bot": mention}),
            ),
        )
        .map(|v| println!("{v}")),
        Command::Click {
            port,
            message,
            person,
            data,
        } => serde_json::from_str::<Value>(&data)
            .map_err(|e| format!("--data is not JSON: {e}"))
            .and_then(|data| {
                control(
                    port,
                    "POST",
                    "/control/click",
                    Some(&json!({"message": message, "person": person, "data": data})),
                )
            })
            .map(|v| println!("{v}")),
        Command::Sent { port } => control(port, "GET", "/control/sent", None).map(|v| {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-webex: {e}");
            ExitCode::FAILURE
        }
    }
}
