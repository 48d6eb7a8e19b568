//! `fake-anthropic`: a fake Anthropic Messages API on 127.0.0.1, for trying the Claude
//! provider (or the host's model proxy) without an account.
//!
//! ```text
//! fake-anthropic --port 8090 --key sk-ant-fake [--rules rules.json]
//! curl -X POST 127.0.0.1:8090/control/rules -d '[{"match":{"user_text":"hi"},"reply":{"text":"hello"}}]'
//! curl 127.0.0.1:8090/control/requests
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nanoclaw_fake_anthropic::{FakeAnthropic, Rule};

#[derive(Parser)]
#[command(
    name = "fake-anthropic",
    version,
    about = "A fake Anthropic Messages API on 127.0.0.1"
)]
struct Cli {
    /// Port on 127.0.0.1; 0 picks a free one (the line printed shows which).
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// The only credential accepted (as `x-api-key` or `Authorization: Bearer`).
    #[arg(long, env = "FAKE_ANTHROPIC_KEY", default_value = "sk-ant-fake-key")]
    key: String,
    /// A JSON file with an array of rules to start with.
    #[arg(long)]
    rules: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rules: Vec<Rule> = match &cli.rules {
        None => Vec::new(),
        Some(path) => {
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(rules) => rules,
                Err(e) => {
                    eprintln!(
                        "fake-anthropic: cannot read rules from {}: {e}",
                        path.display()
                    );
                    return ExitCode::from(2);
                }
            }
        }
    };
    let fake = match FakeAnthropic::start_on(cli.port, &cli.key) {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!(
                "fake-anthropic: cannot listen on 127.0.0.1:{}: {e}",
                cli.port
            );
            return ExitCode::FAILURE;
        }
    };
    for rule in rules {
        fake.push_rule(rule);
    }
    println!("fake-anthropic listening on {}", fake.base_url());
    // Serves on its own thread until the process is interrupted.
    loop {
        std::thread::park();
    }
}
