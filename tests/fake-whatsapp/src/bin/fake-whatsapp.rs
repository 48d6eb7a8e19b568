//! `fake-whatsapp`: a fake WhatsApp Cloud API on 127.0.0.1 to try NanoClaw's WhatsApp channel
//! with no Meta account. `serve` runs it; `callback` sets the webhook URL (with Meta's
//! verify-token handshake); `say`, `tap` and `sent` play a user through its control API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nanoclaw_fake_whatsapp::{
    ACCESS_TOKEN, ANN, APP_SECRET, FakeWhatsApp, PHONE_NUMBER_ID, VERIFY_TOKEN, http,
};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    about = "A fake WhatsApp Cloud API on 127.0.0.1 (Graph messages and media, signed webhooks)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fake until Ctrl-C.
    Serve {
        #[arg(long, default_value_t = 8084)]
        port: u16,
    },
    /// Set the callback URL (the fake checks it with the verify token, as Meta does).
    Callback {
        #[arg(long, default_value_t = 8084)]
        port: u16,
        /// e.g. http://127.0.0.1:3000/webhook/whatsapp
        #[arg(long)]
        url: String,
        #[arg(long, default_value = VERIFY_TOKEN)]
        verify_token: String,
    },
    /// A user writes (delivered to the callback URL, signed).
    Say {
        #[arg(long, default_value_t = 8084)]
        port: u16,
        /// The sender's WhatsApp id (phone number); default Ann.
        #[arg(long, default_value = ANN)]
        from: String,
        #[arg(long)]
        text: String,
    },
    /// A user taps a reply button or list row of one of the business's messages.
    Tap {
        #[arg(long, default_value_t = 8084)]
        port: u16,
        #[arg(long, default_value = ANN)]
        from: String,
        /// The business's message id (`sent` lists them).
        #[arg(long)]
        on: String,
        /// The button or row id.
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        title: String,
        /// A list row rather than a reply button.
        #[arg(long)]
        list: bool,
    },
    /// What the business sent, oldest first.
    Sent {
        #[arg(long, default_value_t = 8084)]
        port: u16,
    },
}

fn control(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let url = format!("http://127.0.0.1:{port}{path}");
    let headers = [("Content-Type", "application/json".to_owned())];
    let (_, answer) = http(&url, method, "", &headers, body.as_bytes())
        .ok_or_else(|| format!("cannot reach fake-whatsapp on port {port}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("unexpected answer ({e}): {answer}"))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve { port } => match FakeWhatsApp::start_on(port) {
            Ok(fake) => {
                println!("fake-whatsapp on {}", fake.base_url());
                println!("api_base_url = \"{}\"", fake.api_url());
                println!("media_hosts = [\"{}\"]", fake.base_url());
                println!("phone_number_id = \"{PHONE_NUMBER_ID}\"");
                println!("WHATSAPP_ACCESS_TOKEN={ACCESS_TOKEN}");
                println!("WHATSAPP_APP_SECRET={APP_SECRET}");
                println!("WHATSAPP_VERIFY_TOKEN={VERIFY_TOKEN}");
                loop {
                    std::thread::park();
                }
            }
            Err(e) => Err(format!("cannot serve on port {port}: {e}")),
        },
        Command::Callback {
            port,
            url,
            verify_token,
        } => control(
            port,
            "POST",
            "/control/callback",
            Some(&json!({"url": url, "verify_token": verify_token})),
        )
        .map(|v| println!("{v}")),
        Command::Say { port, from, text } => control(
            port,
            "POST",
            "/control/say",
            Some(&json!({"from": from, "text": text})),
        )
        .map(|v| println!("{v}")),
        Command::Tap {
            port,
            from,
            on,
            id,
            title,
            list,
        } => control(
            port,
            "POST",
            "/control/tap",
            Some(&json!({"from": from, "on": on, "id": id, "title": title, "list": list})),
        )
        .map(|v| println!("{v}")),
        Command::Sent { port } => control(port, "GET", "/control/sent", None)
            .map(|v| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-whatsapp: {e}");
            ExitCode::FAILURE
        }
    }
}
