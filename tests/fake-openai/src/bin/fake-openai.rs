//! `fake-openai`: a fake OpenAI-compatible API for trying NanoClaw's openai provider (or the
//! host's model proxy) without a model.
//!
//! ```text
//! fake-openai --port 8082 [--key sk-test] [--model fake-model]... [--reply TEXT] [--chunk-delay-ms 50]
//! ```
//!
//! Without `--reply` it echoes the newest message (`<message to="{from}">fake-openai heard:
//! {text}</message>`). It serves until killed.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nanoclaw_fake_openai::{DEFAULT_MODEL, FakeOpenAi, Options, Rule};

#[derive(Parser)]
#[command(
    name = "fake-openai",
    version,
    about = "A fake OpenAI-compatible chat completions API on 127.0.0.1"
)]
struct Cli {
    /// Port on 127.0.0.1; 0 picks a free one (the first line printed shows which).
    #[arg(long, default_value_t = 8082)]
    port: u16,
    /// Require `Authorization: Bearer <KEY>`.
    #[arg(long)]
    key: Option<String>,
    /// A model to serve (repeatable).
    #[arg(long = "model", default_value = DEFAULT_MODEL)]
    models: Vec<String>,
    /// Answer every request with this text (`{from}` and `{text}` are filled in).
    #[arg(long)]
    reply: Option<String>,
    /// Pause between streamed chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = Options {
        api_key: cli.key,
        models: cli.models,
        chunk_delay: Duration::from_millis(cli.chunk_delay_ms),
    };
    let fake = match FakeOpenAi::start_on(cli.port, opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-openai: cannot listen on 127.0.0.1:{}: {e}", cli.port);
            return ExitCode::FAILURE;
        }
    };
    if let Some(text) = cli.reply {
        fake.script(Rule::always().reply(&text));
    }
    println!("fake-openai listening on {}", fake.base_url());
    loop {
        std::thread::park();
    }
}
