//! `fake-resend`: a fake Resend account on 127.0.0.1 to try NanoClaw's Resend channel with
//! no account. `serve` runs it; `email` plays someone emailing the bot (the fake stores the
//! email and this command POSTs the Svix-signed `email.received` webhook to the daemon);
//! `sent` lists what the bot sent.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nanoclaw_fake_resend::{
    ANN, API_KEY, BOT_ADDRESS, FakeResend, WEBHOOK_SECRET, now_secs, post_webhook, svix_headers,
};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "A fake Resend account on 127.0.0.1 (sending, receiving, webhooks)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fake until Ctrl-C.
    Serve {
        #[arg(long, default_value_t = 8083)]
        port: u16,
    },
    /// Someone emails the bot: stored by the fake, the webhook POSTed to the daemon.
    Email {
        #[arg(long, default_value_t = 8083)]
        port: u16,
        /// The daemon's webhook server port (`--webhook-listen`).
        #[arg(long, default_value_t = 3000)]
        webhook_port: u16,
        /// The plugin instance (`/webhook/<instance>`).
        #[arg(long, default_value = "resend")]
        instance: String,
        #[arg(long, default_value = ANN)]
        from: String,
        #[arg(long, default_value = "Hello")]
        subject: String,
        #[arg(long)]
        text: String,
        /// Reply to this Message-ID (and reference it).
        #[arg(long)]
        in_reply_to: Option<String>,
    },
    /// What the bot sent, oldest first.
    Sent {
        #[arg(long, default_value_t = 8083)]
        port: u16,
    },
}

fn control(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("cannot reach fake-resend on port {port}: {e}"))?;
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
    let start = rest.find(['{', '[']).unwrap_or(0);
    let end = rest.rfind(['}', ']']).map_or(rest.len(), |e| e + 1);
    serde_json::from_str(&rest[start..end]).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve { port } => {
            let fake = match FakeResend::start_on(port) {
                Ok(fake) => fake,
                Err(e) => {
                    eprintln!("fake-resend: cannot listen on port {port}: {e}");
                    return ExitCode::from(2);
                }
            };
            println!("fake Resend on {}", fake.base_url());
            println!("  api_base_url = \"{}\"", fake.base_url());
            println!("  attachment_hosts = [\"{}\"]", fake.cdn_origin());
            println!("  from_address = \"{BOT_ADDRESS}\"");
            println!("  RESEND_API_KEY={API_KEY}");
            println!("  RESEND_WEBHOOK_SECRET={WEBHOOK_SECRET}");
            loop {
                std::thread::park();
            }
        }
        Command::Email {
            port,
            webhook_port,
            instance,
            from,
            subject,
            text,
            in_reply_to,
        } => control(
            port,
            "POST",
            "/control/receive",
            Some(&json!({"from": from, "subject": subject, "text": text,
                         "in_reply_to": in_reply_to, "references": in_reply_to})),
        )
        .and_then(|webhook| {
            let body = webhook.to_string();
            let id = format!(
                "msg_{}",
                webhook["data"]["email_id"].as_str().unwrap_or("x")
            );
            let headers = svix_headers(&id, now_secs(), body.as_bytes());
            let (status, answer) = post_webhook(
                webhook_port,
                &format!("/webhook/{instance}"),
                body.as_bytes(),
                &headers,
            );
            println!("webhook answered {status} {answer}");
            if status == 200 {
                Ok(())
            } else {
                Err(format!("the daemon answered {status}"))
            }
        }),
        Command::Sent { port } => control(port, "GET", "/control/sent", None).map(|v| {
            for s in v["sent"].as_array().into_iter().flatten() {
                println!(
                    "{} to {} — {}\n{}\n",
                    s["id"].as_str().unwrap_or_default(),
                    s["to"],
                    s["subject"].as_str().unwrap_or_default(),
                    s["text"].as_str().unwrap_or_default()
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-resend: {e}");
            ExitCode::FAILURE
        }
    }
}
