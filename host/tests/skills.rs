//! The operator skills (`skills/*/SKILL.md`) suggest only `nanoclaw` commands that exist.
//!
//! Every `nanoclaw …` line of a code block must parse with the real command line, with its
//! placeholders filled in. Inline mentions (`` `nanoclaw pair telegram --no-wait` ``) must
//! parse too, except that they may leave out required arguments or end in `…`: they name a
//! command rather than spell out a run of it.

use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser as _};
use nanoclaw::cli::Cli;

fn skills_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .join("skills")
}

/// Values for the placeholders the skills use; an unknown one fails the test.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("<channel>:<handle>", "telegram:42"),
    ("<channel>:<platform id>", "telegram:-1001"),
    ("<channel>", "telegram"),
    ("<id>", "6037840640"),
    ("<chat>", "telegram:-1001"),
    ("<folder>", "helper"),
    ("<user>", "telegram:42"),
    ("<name>", "Ann"),
    ("<display name>", "Ann"),
    ("<your name>", "Ann"),
    ("<agent name>", "Helper"),
    ("<session>", "sess-1"),
    ("<task id>", "task-1"),
    ("<approval id>", "appr-1"),
    ("<dm id>", "42"),
    ("<instruction>", "Say hello"),
    ("<tag>", "nanoclaw-agent:latest"),
];

/// Where a command was found, for messages.
struct Found {
    file: String,
    line: usize,
    text: String,
    inline: bool,
}

fn commands_in(file: &Path) -> Vec<Found> {
    let name = file
        .strip_prefix(skills_dir())
        .unwrap_or(file)
        .display()
        .to_string();
    let text = std::fs::read_to_string(file).expect("read skill");
    let mut found = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            pending.push_str(trimmed.trim_end_matches('\\'));
            if trimmed.ends_with('\\') {
                pending.push(' ');
                continue;
            }
            let command = std::mem::take(&mut pending);
            if command.starts_with("nanoclaw ") || command == "nanoclaw" {
                found.push(Found {
                    file: name.clone(),
                    line: n + 1,
                    text: command,
                    inline: false,
                });
            }
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && (span.starts_with("nanoclaw ") || span == "nanoclaw") {
                found.push(Found {
                    file: name.clone(),
                    line: n + 1,
                    text: span.to_string(),
                    inline: true,
                });
            }
        }
    }
    // Inline spans may wrap across lines in Markdown; those are rare enough to not matter.
    found
}

/// Splits like a shell would for the simple commands skills contain: quotes, no
/// expansion. Stops at a redirection, a pipe, `&&`, `;`, `&` or a comment.
fn words(command: &str) -> Vec<String> {
    let command = command.replace("$(id -un)", "root");
    let mut words = Vec::new();
    let mut word = String::new();
    let mut has_word = false;
    let mut quote: Option<char> = None;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                has_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if has_word || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            (None, '>' | ';' | '#') if word.is_empty() && !has_word => break,
            (None, '&' | '|') if word.is_empty() && !has_word => break,
            (None, '2') if word.is_empty() && chars.peek() == Some(&'>') => break,
            (None, c) => word.push(c),
        }
    }
    if has_word || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Fills the placeholders of a command line.
fn fill(command: &str) -> Result<String, String> {
    let mut filled = command.to_string();
    for (placeholder, value) in PLACEHOLDERS {
        filled = filled.replace(placeholder, value);
    }
    match filled.find('<') {
        Some(at) => {
            let end = filled[at..].find('>').map_or(filled.len(), |e| at + e + 1);
            Err(format!(
                "unknown placeholder `{}`: add it to PLACEHOLDERS",
                &filled[at..end]
            ))
        }
        None => Ok(filled),
    }
}

/// `a|b|c` alternatives become `a`; `[options]` goes.
fn choose(words: Vec<String>) -> Vec<String> {
    words
        .into_iter()
        .filter(|w| w != "[options]")
        .map(|w| match w.split_once('|') {
            Some((first, _)) => first.to_string(),
            None => w,
        })
        .collect()
}

/// Checks one command; `Err` says what is wrong.
fn check(found: &Found) -> Result<(), String> {
    let mut words = choose(words(&fill(&found.text)?));
    let elided = words.last().is_some_and(|w| w == "…");
    if elided {
        words.pop();
    }
    let args = words;
    if elided {
        // `nanoclaw chats …`: the subcommand path must exist.
        let mut command = Cli::command();
        for word in args.iter().skip(1) {
            command = command
                .find_subcommand(word)
                .cloned()
                .ok_or_else(|| format!("no subcommand `{word}`"))?;
        }
        return Ok(());
    }
    match Cli::try_parse_from(&args) {
        Ok(_) => Ok(()),
        Err(e)
            if found.inline
                && matches!(
                    e.kind(),
                    ErrorKind::MissingRequiredArgument
                        | ErrorKind::MissingSubcommand
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
        {
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::DisplayVersion => Ok(()),
        Err(e) => Err(format!("{args:?}: {e}")),
    }
}

#[test]
fn every_nanoclaw_command_in_the_skills_exists() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(skills_dir())
        .expect("skills/")
        .map(|e| e.expect("entry").path().join("SKILL.md"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for skill in [
        "add-telegram",
        "init-first-agent",
        "manage-channels",
        "setup",
    ] {
        assert!(
            names.iter().any(|n| n == skill),
            "no skills/{skill}/SKILL.md"
        );
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let found = commands_in(file);
        assert!(
            found.len() >= 5,
            "{}: only {} nanoclaw commands found; is the parser still right?",
            file.display(),
            found.len()
        );
        for f in found {
            checked += 1;
            if let Err(why) = check(&f) {
                failures.push(format!("{}:{}: `{}`: {why}", f.file, f.line, f.text));
            }
        }
    }
    assert!(checked > 100, "only {checked} commands checked");
    eprintln!("{checked} commands checked in {} skills", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_checker_refuses_what_does_not_exist() {
    let bad = |text: &str, inline: bool| {
        check(&Found {
            file: "test".into(),
            line: 1,
            text: text.into(),
            inline,
        })
    };
    // Real commands pass, in both forms.
    assert_eq!(
        bad("nanoclaw wire add <chat> <folder> --engage mention", false),
        Ok(())
    );
    assert_eq!(bad("nanoclaw pair <channel>", true), Ok(()));
    assert_eq!(bad("nanoclaw chats …", true), Ok(()));
    assert_eq!(
        bad(
            "nanoclaw init-first-agent --user \"cli:$(id -un)\" --name \"<your name>\"",
            false
        ),
        Ok(())
    );
    assert_eq!(
        bad("nanoclaw run > data/nanoclaw.log 2>&1 &", false),
        Ok(())
    );
    // Made-up ones do not.
    assert!(bad("nanoclaw wire <chat> <folder>", false).is_err());
    assert!(
        bad(
            "nanoclaw init-first-agent --channel telegram --user <user> --name x",
            false
        )
        .is_err()
    );
    assert!(bad("nanoclaw chats policy <chat> open", false).is_err());
    assert!(
        bad("nanoclaw pair", false).is_err(),
        "a code block must be complete"
    );
    assert!(bad("nanoclaw routes …", true).is_err());
    assert!(
        bad("nanoclaw groups show <agent folder>", false).is_err(),
        "unknown placeholder"
    );
}
