//! `fake-telegram`: a fake Telegram Bot API for trying NanoClaw without Telegram.
//!
//! ```text
//! fake-telegram serve --port 8081
//! fake-telegram send  --port 8081 --from 42 --name "Ann Lee" --text "hello"
//! fake-telegram send  --port 8081 --chat -100123 --group "Team" --mention --from 42 --name Ann --text "hi"
//! fake-telegram sent  --port 8081
//! fake-telegram hold  --port 8081 --method sendMessage --commit before
//! fake-telegram holds --port 8081
//! fake-telegram release --port 8081 --id 1 [--discard]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use nanoclaw_fake_telegram::{
    Commit, DEFAULT_BOT_USERNAME, Delivered, Failure, FakeTelegram, HoldInfo, Person, Sent,
};
use serde_json::{Value, json};

/// A token in BotFather's format, accepted by the NanoClaw plugin's settings check.
const DEFAULT_TOKEN: &str = "1234567890:FAKE-token-for-local-tests-only-0000";
const DEFAULT_PORT: u16 = 8081;

#[derive(Parser)]
#[command(
    name = "fake-telegram",
    version,
    about = "A fake Telegram Bot API on 127.0.0.1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the fake Bot API until Ctrl-C.
    Serve {
        /// Port on 127.0.0.1; 0 picks a free one (the first line printed shows which).
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        /// The bot token the fake accepts (the number before the colon is the bot id).
        #[arg(long, default_value = DEFAULT_TOKEN)]
        token: String,
        /// The bot's @username.
        #[arg(long, default_value = DEFAULT_BOT_USERNAME)]
        bot_username: String,
    },
    /// Send a message to the bot as a user.
    Send {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        /// Chat id: for a private chat the user's id (the default), for a group a negative id.
        #[arg(long, allow_hyphen_values = true)]
        chat: Option<i64>,
        /// The user's id.
        #[arg(long)]
        from: i64,
        /// The user's name ("First Last").
        #[arg(long)]
        name: String,
        /// The user's @username (without @).
        #[arg(long)]
        username: Option<String>,
        /// Message text.
        #[arg(long)]
        text: String,
        /// Send in a group with this title (needs --chat).
        #[arg(long)]
        group: Option<String>,
        /// Mention the bot (prepends @<bot username>).
        #[arg(long)]
        mention: bool,
        /// Reply to this message id.
        #[arg(long)]
        reply_to: Option<i64>,
    },
    /// Click a button the bot sent.
    Click {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        #[arg(long, allow_hyphen_values = true)]
        chat: i64,
        /// The message carrying the button.
        #[arg(long)]
        message: i64,
        #[arg(long)]
        from: i64,
        #[arg(long)]
        name: String,
        /// The button's callback data.
        #[arg(long)]
        data: String,
    },
    /// Show what the bot sent.
    Sent {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        /// Raw JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make the next calls fail.
    Fail {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        #[arg(long, value_enum)]
        kind: FailKind,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Only calls of this method (default: any).
        #[arg(long)]
        method: Option<String>,
        /// For rate-limit: seconds in retry_after.
        #[arg(long, default_value_t = 5)]
        retry_after: u64,
        /// For slow: how long each call waits before it is answered.
        #[arg(long, default_value_t = 3000)]
        delay_ms: u64,
    },
    /// Hold the next call (to stop the bot mid-call); release it with `release`.
    Hold {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        /// Only a call of this method (default: any).
        #[arg(long)]
        method: Option<String>,
        /// before: Telegram handles the call now and only its answer waits (the message
        /// exists even if the bot never hears back); after: nothing happens until release.
        #[arg(long, value_enum)]
        commit: CommitArg,
    },
    /// List the holds.
    Holds {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
    },
    /// Let a held call go on, or with --discard drop its connection unanswered.
    Release {
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        /// The hold id `hold` printed.
        #[arg(long)]
        id: u64,
        /// Drop the connection instead (with --commit after, Telegram never gets the call).
        #[arg(long)]
        discard: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CommitArg {
    Before,
    After,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailKind {
    Conflict,
    RateLimit,
    ServerError,
    Unauthorized,
    Drop,
    Slow,
}

fn person(id: i64, name: &str, username: Option<&str>) -> Person {
    let mut words = name.trim().splitn(2, ' ');
    let first = words.next().unwrap_or_default();
    let mut person = Person::new(id, if first.is_empty() { "User" } else { first });
    if let Some(last) = words.next().map(str::trim).filter(|l| !l.is_empty()) {
        person = person.last_name(last);
    }
    if let Some(username) = username {
        person = person.username(username.trim_start_matches('@'));
    }
    person
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-telegram: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve {
            port,
            token,
            bot_username,
        } => serve(port, &token, &bot_username),
        Command::Send {
            port,
            chat,
            from,
            name,
            username,
            text,
            group,
            mention,
            reply_to,
        } => {
            let body = json!({
                "from": person(from, &name, username.as_deref()),
                "chat_id": chat,
                "group_title": group,
                "text": text,
                "mention": mention,
                "reply_to": reply_to,
            });
            let answer = control(port, "POST", "/control/messages", Some(body))?;
            let delivered: Delivered =
                serde_json::from_value(answer).map_err(|e| format!("unexpected answer: {e}"))?;
            println!(
                "sent message {} in chat {} (update {}); the bot receives it on its next getUpdates",
                delivered.message_id, delivered.chat_id, delivered.update_id
            );
            Ok(())
        }
        Command::Click {
            port,
            chat,
            message,
            from,
            name,
            data,
        } => {
            let body = json!({
                "chat_id": chat, "message_id": message,
                "from": person(from, &name, None), "data": data,
            });
            let answer = control(port, "POST", "/control/clicks", Some(body))?;
            println!(
                "clicked `{data}` on message {message} in chat {chat} (callback query {})",
                answer["callback_query_id"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Sent { port, json } => {
            let answer = control(port, "GET", "/control/sent", None)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            let sent: Vec<Sent> =
                serde_json::from_value(answer).map_err(|e| format!("unexpected answer: {e}"))?;
            if sent.is_empty() {
                println!("the bot has sent nothing yet");
            }
            for s in &sent {
                print!("{}", describe(s));
            }
            Ok(())
        }
        Command::Fail {
            port,
            kind,
            count,
            method,
            retry_after,
            delay_ms,
        } => {
            let failure = match kind {
                FailKind::Conflict => Failure::Conflict,
                FailKind::RateLimit => Failure::RateLimited {
                    retry_after_secs: retry_after,
                },
                FailKind::ServerError => Failure::ServerError,
                FailKind::Unauthorized => Failure::Unauthorized,
                FailKind::Drop => Failure::DropConnection,
                FailKind::Slow => Failure::Slow { delay_ms },
            };
            let body = json!({"method": method, "count": count, "failure": failure});
            control(port, "POST", "/control/failures", Some(body))?;
            println!(
                "the next {count} call(s){} will fail",
                method.map(|m| format!(" of {m}")).unwrap_or_default()
            );
            Ok(())
        }
        Command::Hold {
            port,
            method,
            commit,
        } => {
            let commit = match commit {
                CommitArg::Before => Commit::BeforeResponding,
                CommitArg::After => Commit::AfterRelease,
            };
            let body = json!({"method": method, "commit": commit});
            let answer = control(port, "POST", "/control/holds", Some(body))?;
            let id = answer["hold_id"]
                .as_u64()
                .ok_or_else(|| format!("unexpected answer: {answer}"))?;
            println!(
                "hold {id}: the next call{} will wait for `fake-telegram release --port {port} --id {id}`",
                method.map(|m| format!(" of {m}")).unwrap_or_default()
            );
            Ok(())
        }
        Command::Holds { port } => {
            let answer = control(port, "GET", "/control/holds", None)?;
            let holds: Vec<HoldInfo> =
                serde_json::from_value(answer).map_err(|e| format!("unexpected answer: {e}"))?;
            if holds.is_empty() {
                println!("no holds");
            }
            for hold in holds {
                println!(
                    "hold {}: {:?}, commit {:?}, {:?}{}",
                    hold.id.0,
                    hold.route,
                    hold.commit,
                    hold.state,
                    hold.call
                        .map(|c| format!(" (call #{c})"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Release { port, id, discard } => {
            let action = if discard { "discard" } else { "release" };
            control(
                port,
                "POST",
                &format!("/control/holds/{id}/{action}"),
                Some(json!({})),
            )?;
            println!(
                "hold {id}: {}",
                if discard { "discarded" } else { "released" }
            );
            Ok(())
        }
    }
}

fn serve(port: u16, token: &str, bot_username: &str) -> Result<(), String> {
    let fake = FakeTelegram::start_on(port, token, bot_username)
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let bot = fake.bot();
    // With --port 0 the system picked the port: the hints below must name that one.
    let port = fake.addr().port();
    println!("fake Telegram Bot API listening on {}", fake.base_url());
    println!(
        "  bot:   @{} (id {})",
        bot.username.unwrap_or_default(),
        bot.id
    );
    println!("  token: {token}");
    println!();
    println!("Point NanoClaw at it (plugins.toml):");
    println!("  [plugins.telegram.settings]");
    println!("  bot_token = {{ env = \"TELEGRAM_BOT_TOKEN\" }}");
    println!("  api_base_url = \"{}\"", fake.base_url());
    println!("and put TELEGRAM_BOT_TOKEN={token} in data/.env.");
    println!();
    println!("Then: fake-telegram send --port {port} --from 42 --name \"Ann Lee\" --text hello");
    println!("      fake-telegram sent --port {port}");
    println!("Ctrl-C stops.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(tokio::signal::ctrl_c())
        .map_err(|e| format!("waiting for Ctrl-C: {e}"))?;
    fake.stop();
    Ok(())
}

/// One control API request to a fake on 127.0.0.1:`port`.
fn control(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
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
        let request = match (method, body) {
            ("POST", Some(body)) => client.post(&url).json(&body),
            _ => client.get(&url),
        };
        let response = request.send().await.map_err(|e| {
            format!("no fake-telegram on port {port} (start it with `fake-telegram serve --port {port}`): {}", e.without_url())
        })?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| format!("unexpected answer: {}", e.without_url()))?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(answer["error"]
                .as_str()
                .map_or_else(|| answer.to_string(), str::to_owned))
        }
    })
}

/// A readable block for one sent item.
fn describe(s: &Sent) -> String {
    let mut head = format!("#{:<3} {:<19}", s.seq, s.method);
    if let Some(chat) = s.chat_id {
        head.push_str(&format!(" chat {chat}"));
    }
    if let Some(id) = s.message_id {
        head.push_str(&format!("  message {id}"));
    }
    if let Some(reply) = s.reply_to_message_id {
        head.push_str(&format!("  (reply to {reply})"));
    }
    if let Some(mode) = &s.parse_mode {
        head.push_str(&format!("  [{mode}]"));
    }
    let mut out = head;
    out.push('\n');
    let body = s.plain_text.as_deref().or(s.text.as_deref());
    if let Some(text) = body {
        for line in text.lines() {
            out.push_str("     | ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(doc) = &s.document {
        out.push_str(&format!(
            "     file: {} ({}, {} bytes)\n",
            doc.file_name, doc.mime_type, doc.size
        ));
    }
    for row in &s.buttons {
        let labels: Vec<String> = row
            .iter()
            .map(|b| format!("[{}] -> {}", b.text, b.callback_data))
            .collect();
        out.push_str(&format!("     buttons: {}\n", labels.join("   ")));
    }
    if !s.reaction.is_empty() {
        out.push_str(&format!("     reaction: {}\n", s.reaction.join(" ")));
    } else if s.method == "setMessageReaction" {
        out.push_str("     reaction: (removed)\n");
    }
    if let Some(action) = &s.action {
        out.push_str(&format!("     action: {action}\n"));
    }
    if let Some(id) = &s.callback_query_id {
        out.push_str(&format!("     answered callback query {id}\n"));
    }
    out
}
