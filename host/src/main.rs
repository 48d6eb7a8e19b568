use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    nanoclaw::footprint::configure_allocator();
    let cli = nanoclaw::cli::Cli::parse();
    if !matches!(
        cli.command,
        nanoclaw::cli::Command::Run(_) | nanoclaw::cli::Command::Chat(_)
    ) {
        // Operator commands end quietly when their output is piped into `head` or `grep -q`,
        // like other Unix tools. The daemon and the chat client keep Rust's default (they
        // write to sockets and must see the error instead of dying).
        // SAFETY: resetting a signal disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // The daemon reports what it does; operator commands only warn.
    let default = if matches!(cli.command, nanoclaw::cli::Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("NANOCLAW_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match nanoclaw::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
