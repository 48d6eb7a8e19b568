//! `nanoclaw chat`: talk to an agent from this terminal, through the `cli` channel plugin's
//! socket (protocol: `docs/plugins.md`, "The local chat channel").
//!
//! * `nanoclaw chat`: interactive. Replies are printed above the prompt as they arrive, also
//!   while you type, and the prompt shows `(typing…)` while the agent works. `/quit`, Ctrl-D
//!   on an empty line or Ctrl-C on an empty line leaves. Without a terminal on stdin it reads
//!   plain lines and exits at end of input.
//! * `nanoclaw chat -m TEXT`: one-shot. Sends TEXT, prints the reply (and any further reply
//!   until the agent has been quiet for 2 s), exits 0; exits 3 if no reply comes within
//!   `--timeout` seconds, 1 if the message was refused.
//!
//! Exit status 2 when the socket is missing or refuses connections: the daemon isn't running
//! or its cli plugin isn't enabled.

use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::style::Stylize as _;
use crossterm::{cursor, event, queue, style, terminal};
use futures::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::time::Instant;
use unicode_width::UnicodeWidthChar as _;

/// Exit status: the message was refused or the connection failed after connecting.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: nothing to connect to (daemon not running, or cli plugin not enabled).
pub const EXIT_UNAVAILABLE: u8 = 2;
/// Exit status of `--message`: no reply within `--timeout`.
pub const EXIT_NO_REPLY: u8 = 3;

/// In one-shot mode, how long the agent must stay quiet after a reply before we exit.
pub const QUIET_PERIOD: Duration = Duration::from_secs(2);

/// How long `(typing…)` stays up after the last `typing` line (the host repeats it every 4 s).
const TYPING_SHOWN_FOR: Duration = Duration::from_secs(6);

/// `nanoclaw chat`.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The chat socket [default: <data dir>/plugins/cli/chat.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Send one message, print the reply and exit (0: replied, 3: no reply in time).
    #[arg(short = 'm', long, value_name = "TEXT")]
    pub message: Option<String>,

    /// With --message: seconds to wait for a reply.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub timeout: Duration,
}

fn parse_secs(value: &str) -> Result<Duration, String> {
    let secs: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{value}`: the timeout must be a positive number of seconds"))
}

/// Where the cli plugin listens by default: `<data dir>/plugins/cli/chat.sock`.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    crate::config::Paths::new(data_dir).chat_socket()
}

/// Runs `nanoclaw chat` with the data directory `data_dir`; returns the exit status.
pub fn run(args: ChatArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let status = runtime.block_on(async {
        let stdout = io::stdout();
        let stderr = io::stderr();
        session(
            args,
            data_dir,
            QUIET_PERIOD,
            &mut stdout.lock(),
            &mut stderr.lock(),
        )
        .await
    });
    // Reading stdin may still be parked on a blocking thread: don't wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    status.map(ExitCode::from)
}

async fn session(
    args: ChatArgs,
    data_dir: &Path,
    quiet: Duration,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<u8> {
    let socket = args.socket.unwrap_or_else(|| default_socket(data_dir));
    let stream = match UnixStream::connect(&socket).await {
        Ok(stream) => stream,
        Err(e) => {
            writeln!(err, "{}", unavailable(&socket, &e))?;
            return Ok(EXIT_UNAVAILABLE);
        }
    };
    let clean = io::stdout().is_terminal();
    match args.message {
        Some(text) => one_shot(stream, &text, args.timeout, quiet, clean, out, err).await,
        None if io::stdin().is_terminal() && io::stdout().is_terminal() => {
            tty_session(stream).await
        }
        None => {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            plain_session(stdin, stream, clean, out, err).await
        }
    }
}

/// The message for a failed connect, with what to do about it.
fn unavailable(socket: &Path, error: &io::Error) -> String {
    let what = match error.kind() {
        io::ErrorKind::NotFound => "there is no chat socket there".to_owned(),
        io::ErrorKind::ConnectionRefused => "nothing is listening on it".to_owned(),
        io::ErrorKind::PermissionDenied => {
            "permission denied: only the user the daemon runs as can connect".to_owned()
        }
        _ => error.to_string(),
    };
    format!(
        "error: cannot connect to the local chat at {}: {what}\n\
         hint: start the daemon with `nanoclaw run`, and make sure the cli plugin is enabled \
         in plugins.toml ([plugins.cli]); use --socket if it listens \
         elsewhere",
        socket.display()
    )
}

/// A line from the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Incoming {
    Message {
        text: String,
        backlog: bool,
    },
    Typing,
    Error(String),
    Notice(String),
    /// Anything else (a newer plugin's line type): ignored.
    Other,
}

fn parse_incoming(line: &str) -> Incoming {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
        return Incoming::Other;
    };
    let text = || {
        object
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match object.get("type").and_then(Value::as_str) {
        Some("message") => Incoming::Message {
            text: text(),
            backlog: object.get("backlog").and_then(Value::as_bool) == Some(true),
        },
        Some("typing") => Incoming::Typing,
        Some("error") => Incoming::Error(text()),
        Some("notice") => Incoming::Notice(text()),
        _ => Incoming::Other,
    }
}

/// `{"type":"message","text":…}` and a newline.
fn message_line(text: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        r#type: &'static str,
        text: &'a str,
    }
    let message = Message {
        r#type: "message",
        text,
    };
    // A struct of two strings always serialises.
    let mut line = serde_json::to_vec(&message).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Drops control characters (escape sequences from a reply must not drive the terminal),
/// keeping newlines and tabs.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

fn shown(text: &str, clean: bool) -> String {
    if clean {
        sanitize(text)
    } else {
        text.to_owned()
    }
}

/// `--message`: send `text`, print replies until `quiet` passes after one, or give up after
/// `reply_timeout` without any. Replies that were waiting from before (`backlog`) are
/// printed too but don't count as the answer.
async fn one_shot(
    stream: impl AsyncRead + AsyncWrite,
    text: &str,
    reply_timeout: Duration,
    quiet: Duration,
    clean: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<u8> {
    if text.trim().is_empty() {
        writeln!(err, "error: the message is empty")?;
        return Ok(EXIT_FAILED);
    }
    let (reader, mut writer) = tokio::io::split(stream);
    if let Err(e) = writer.write_all(&message_line(text)).await {
        writeln!(err, "error: cannot send the message: {e}")?;
        return Ok(EXIT_FAILED);
    }
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let give_up = Instant::now() + reply_timeout;
    let mut done_after: Option<Instant> = None;
    loop {
        let line =
            match tokio::time::timeout_at(done_after.unwrap_or(give_up), lines.next_line()).await {
                Err(_elapsed) if done_after.is_some() => return Ok(0),
                Err(_elapsed) => {
                    writeln!(
                        err,
                        "error: no reply within {} s (the agent may still answer: run `nanoclaw \
                     chat` to see it)",
                        reply_timeout.as_secs_f64()
                    )?;
                    return Ok(EXIT_NO_REPLY);
                }
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) if done_after.is_some() => return Ok(0),
                Ok(Ok(None)) => {
                    writeln!(err, "error: nanoclaw closed the connection before replying")?;
                    return Ok(EXIT_FAILED);
                }
                Ok(Err(e)) => {
                    writeln!(err, "error: reading from nanoclaw failed: {e}")?;
                    return Ok(if done_after.is_some() { 0 } else { EXIT_FAILED });
                }
            };
        match parse_incoming(&line) {
            Incoming::Message { text, backlog } => {
                writeln!(out, "{}", shown(&text, clean))?;
                out.flush()?;
                if !backlog {
                    done_after = Some(Instant::now() + quiet);
                }
            }
            Incoming::Error(text) => {
                writeln!(err, "error: {}", shown(&text, clean))?;
                return Ok(EXIT_FAILED);
            }
            Incoming::Notice(text) => writeln!(err, "{}", shown(&text, clean))?,
            Incoming::Typing | Incoming::Other => {}
        }
    }
}

/// Interactive mode without a terminal: lines from `input` are sent, replies printed as
/// they come. Ends at end of input or `/quit`.
async fn plain_session(
    input: impl AsyncBufRead + Unpin,
    stream: impl AsyncRead + AsyncWrite,
    clean: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<u8> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut server = tokio::io::BufReader::new(reader).lines();
    let mut input = input.lines();
    let mut noticed = false;
    loop {
        tokio::select! {
            line = server.next_line() => match line {
                Ok(Some(line)) => match parse_incoming(&line) {
                    Incoming::Message { text, .. } => {
                        writeln!(out, "{}", shown(&text, clean))?;
                        out.flush()?;
                    }
                    Incoming::Error(text) => writeln!(err, "error: {}", shown(&text, clean))?,
                    Incoming::Notice(text) => {
                        noticed = true;
                        writeln!(err, "{}", shown(&text, clean))?;
                    }
                    Incoming::Typing | Incoming::Other => {}
                },
                Ok(None) | Err(_) => {
                    if noticed {
                        return Ok(0);
                    }
                    writeln!(err, "error: the connection to nanoclaw was lost")?;
                    return Ok(EXIT_FAILED);
                }
            },
            line = input.next_line() => match line.context("reading stdin")? {
                None => return Ok(0),
                Some(line) if line.trim() == "/quit" => return Ok(0),
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    if let Err(e) = writer.write_all(&message_line(&line)).await {
                        writeln!(err, "error: cannot send: {e}")?;
                        return Ok(EXIT_FAILED);
                    }
                }
            },
        }
    }
}

/// Interactive mode on a terminal.
async fn tty_session(stream: UnixStream) -> anyhow::Result<u8> {
    let (reader, mut writer) = stream.into_split();
    let mut server = tokio::io::BufReader::new(reader).lines();
    let mut screen = Screen::enter().context("cannot set up the terminal")?;
    let mut keys = EventStream::new();
    let mut editor = Editor::default();
    let mut typing_until: Option<Instant> = None;
    let mut noticed = false;
    screen.print_above(
        &editor,
        false,
        Label::Notice,
        "connected; type a message and press Enter (/quit or Ctrl-D to leave)",
    )?;
    loop {
        let typing = typing_until.is_some();
        tokio::select! {
            line = server.next_line() => match line {
                Ok(Some(line)) => match parse_incoming(&line) {
                    Incoming::Message { text, backlog } => {
                        typing_until = None;
                        let label = if backlog { Label::Earlier } else { Label::Agent };
                        screen.print_above(&editor, false, label, &text)?;
                    }
                    Incoming::Typing => {
                        typing_until = Some(Instant::now() + TYPING_SHOWN_FOR);
                        screen.render(&editor, true)?;
                    }
                    Incoming::Error(text) => screen.print_above(&editor, typing, Label::Error, &text)?,
                    Incoming::Notice(text) => {
                        noticed = true;
                        screen.print_above(&editor, typing, Label::Notice, &text)?;
                    }
                    Incoming::Other => {}
                },
                Ok(None) | Err(_) => {
                    if !noticed {
                        screen.print_above(&editor, false, Label::Error, "the connection to nanoclaw was lost")?;
                    }
                    screen.leave()?;
                    return Ok(if noticed { 0 } else { EXIT_FAILED });
                }
            },
            event = keys.next() => {
                let event = match event {
                    Some(event) => event.context("reading the terminal")?,
                    None => {
                        screen.leave()?;
                        return Ok(0);
                    }
                };
                match editor.handle(&event) {
                    Action::Nothing => {}
                    Action::Redraw => screen.render(&editor, typing)?,
                    Action::Quit => {
                        screen.leave()?;
                        return Ok(0);
                    }
                    Action::Submit(line) if line.trim() == "/quit" => {
                        screen.leave()?;
                        return Ok(0);
                    }
                    Action::Submit(line) if line.trim().is_empty() => screen.render(&editor, typing)?,
                    Action::Submit(line) => {
                        screen.print_above(&editor, typing, Label::You, &line)?;
                        if let Err(e) = writer.write_all(&message_line(&line)).await {
                            screen.print_above(&editor, false, Label::Error, &format!("cannot send: {e}"))?;
                            screen.leave()?;
                            return Ok(EXIT_FAILED);
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(typing_until.unwrap_or_else(Instant::now)), if typing => {
                typing_until = None;
                screen.render(&editor, false)?;
            }
        }
    }
}

/// Who a printed line is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    You,
    Agent,
    /// A reply that waited for you from before this session.
    Earlier,
    Error,
    Notice,
}

const PROMPT: &str = "you> ";
const TYPING_PROMPT: &str = "(typing…) you> ";

/// The terminal in raw mode: one prompt line at the bottom, everything else printed above it.
/// Dropping it restores the terminal (also on error paths and panics).
struct Screen {
    out: io::Stdout,
    active: bool,
}

impl Screen {
    fn enter() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        let mut screen = Self {
            out: io::stdout(),
            active: true,
        };
        crossterm::execute!(screen.out, event::EnableBracketedPaste)?;
        Ok(screen)
    }

    fn width() -> usize {
        terminal::size().map_or(80, |(w, _)| usize::from(w))
    }

    /// Redraws the prompt line.
    fn render(&mut self, editor: &Editor, typing: bool) -> io::Result<()> {
        let prompt = if typing { TYPING_PROMPT } else { PROMPT };
        let prompt_width = text_width(prompt);
        let room = Self::width().saturating_sub(prompt_width + 1);
        let (visible, cursor_at) = editor.view(room);
        queue!(
            self.out,
            cursor::MoveToColumn(0),
            terminal::Clear(terminal::ClearType::CurrentLine),
        )?;
        if typing {
            queue!(
                self.out,
                style::Print("(typing…) ".dim()),
                style::Print(PROMPT.bold())
            )?;
        } else {
            queue!(self.out, style::Print(PROMPT.bold()))?;
        }
        let column = u16::try_from(prompt_width + cursor_at).unwrap_or(u16::MAX);
        queue!(
            self.out,
            style::Print(visible),
            cursor::MoveToColumn(column)
        )?;
        self.out.flush()
    }

    /// Prints `text` above the prompt, then redraws the prompt with what was being typed.
    fn print_above(
        &mut self,
        editor: &Editor,
        typing: bool,
        label: Label,
        text: &str,
    ) -> io::Result<()> {
        queue!(
            self.out,
            cursor::MoveToColumn(0),
            terminal::Clear(terminal::ClearType::CurrentLine),
        )?;
        let (head, styled) = match label {
            Label::You => (PROMPT, PROMPT.bold()),
            Label::Agent => ("agent> ", "agent> ".cyan().bold()),
            Label::Earlier => ("agent (earlier)> ", "agent (earlier)> ".cyan()),
            Label::Error => ("error: ", "error: ".red().bold()),
            Label::Notice => ("* ", "* ".yellow()),
        };
        let indent = " ".repeat(text_width(head));
        for (i, line) in sanitize(text).split('\n').enumerate() {
            if i == 0 {
                queue!(self.out, style::Print(styled))?;
            } else {
                queue!(self.out, style::Print(&indent))?;
            }
            // Raw mode: a newline needs its carriage return.
            queue!(
                self.out,
                style::Print(line.replace('\t', "    ")),
                style::Print("\r\n")
            )?;
        }
        self.render(editor, typing)
    }

    /// Clears the prompt line and restores the terminal.
    fn leave(&mut self) -> io::Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        queue!(
            self.out,
            cursor::MoveToColumn(0),
            terminal::Clear(terminal::ClearType::CurrentLine),
            event::DisableBracketedPaste,
        )?;
        self.out.flush()?;
        terminal::disable_raw_mode()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}

fn text_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// What a key press means for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Nothing,
    Redraw,
    Submit(String),
    Quit,
}

/// A one-line editor: the text being typed and the cursor (an index into `chars`).
#[derive(Debug, Default)]
struct Editor {
    chars: Vec<char>,
    cursor: usize,
}

impl Editor {
    fn handle(&mut self, event: &Event) -> Action {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.key(key),
            Event::Paste(text) => {
                for c in text.chars() {
                    match c {
                        '\n' | '\r' | '\t' => self.insert(' '),
                        c if c.is_control() => {}
                        c => self.insert(c),
                    }
                }
                Action::Redraw
            }
            Event::Resize(..) => Action::Redraw,
            _ => Action::Nothing,
        }
    }

    fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    fn key(&mut self, key: &KeyEvent) -> Action {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Enter => {
                self.cursor = 0;
                Action::Submit(std::mem::take(&mut self.chars).into_iter().collect())
            }
            KeyCode::Char('c') if ctrl => {
                if self.chars.is_empty() {
                    return Action::Quit;
                }
                self.chars.clear();
                self.cursor = 0;
                Action::Redraw
            }
            KeyCode::Char('d') if ctrl => {
                if self.chars.is_empty() {
                    return Action::Quit;
                }
                if self.cursor < self.chars.len() {
                    self.chars.remove(self.cursor);
                }
                Action::Redraw
            }
            KeyCode::Char('a') if ctrl => self.move_to(0),
            KeyCode::Home => self.move_to(0),
            KeyCode::Char('e') if ctrl => self.move_to(self.chars.len()),
            KeyCode::End => self.move_to(self.chars.len()),
            KeyCode::Char('b') if ctrl => self.move_to(self.cursor.saturating_sub(1)),
            KeyCode::Left => self.move_to(self.cursor.saturating_sub(1)),
            KeyCode::Char('f') if ctrl => self.move_to(self.cursor + 1),
            KeyCode::Right => self.move_to(self.cursor + 1),
            KeyCode::Char('u') if ctrl => {
                self.chars.drain(..self.cursor);
                self.cursor = 0;
                Action::Redraw
            }
            KeyCode::Char('k') if ctrl => {
                self.chars.truncate(self.cursor);
                Action::Redraw
            }
            KeyCode::Char('w') if ctrl => {
                let mut start = self.cursor;
                while start > 0 && self.chars[start - 1].is_whitespace() {
                    start -= 1;
                }
                while start > 0 && !self.chars[start - 1].is_whitespace() {
                    start -= 1;
                }
                self.chars.drain(start..self.cursor);
                self.cursor = start;
                Action::Redraw
            }
            KeyCode::Char('l') if ctrl => Action::Redraw,
            KeyCode::Char(c) if !ctrl && !c.is_control() => {
                self.insert(c);
                Action::Redraw
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                self.chars.remove(self.cursor);
                Action::Redraw
            }
            KeyCode::Delete if self.cursor < self.chars.len() => {
                self.chars.remove(self.cursor);
                Action::Redraw
            }
            _ => Action::Nothing,
        }
    }

    fn move_to(&mut self, at: usize) -> Action {
        self.cursor = at.min(self.chars.len());
        Action::Redraw
    }

    /// The part of the text that fits in `room` columns with the cursor visible, and the
    /// cursor's column within it.
    fn view(&self, room: usize) -> (String, usize) {
        let mut start = 0;
        let mut before: usize = self.chars[..self.cursor]
            .iter()
            .copied()
            .map(char_width)
            .sum();
        while before > room && start < self.cursor {
            before -= char_width(self.chars[start]);
            start += 1;
        }
        let mut visible = String::new();
        let mut used = 0;
        for &c in &self.chars[start..] {
            let w = char_width(c);
            if used + w > room {
                break;
            }
            used += w;
            visible.push(c);
        }
        (visible, before)
    }
}

#[cfg(test)]
mod tests;
