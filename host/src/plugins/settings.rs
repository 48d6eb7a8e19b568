//! Turning a plugin's `settings` table into the JSON it receives, resolving secrets.
//!
//! * A value written `{ env = "NAME" }` is replaced by the variable `NAME`, looked up in the
//!   process environment, then in the `.env` file of the host's data directory
//!   (`KEY=value` lines, `#` comments, optional `export `, optional quotes).
//! * A literal, non-empty string under a key that looks like a secret (`token`, `secret`,
//!   `password`, `api_key`, `…_key`, …) is refused: secrets don't belong in plugins.toml,
//!   which is meant to be readable and committed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value as Json;

/// Key words (the last word of a key) that mark a value as secret.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "key",
    "apikey",
    "credential",
    "credentials",
];

/// A settings problem of one plugin instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A secret written literally in plugins.toml.
    #[error(
        "{key} looks like a secret and must not be written in plugins.toml: write `{leaf} = {{ env = \"{suggested}\" }}` and put {suggested}=... in {}",
        dotenv.display()
    )]
    LiteralSecret {
        /// Full key path, e.g. `plugins.tg.settings.bot_token`.
        key: String,
        /// The last key.
        leaf: String,
        /// A suggested variable name.
        suggested: String,
        /// The `.env` file that would be read.
        dotenv: PathBuf,
    },
    /// `{ env = "NAME" }` whose variable is not set anywhere.
    #[error(
        "{key}: environment variable {var} is not set (looked in the process environment and in {dotenv_state})"
    )]
    MissingEnv {
        /// Full key path.
        key: String,
        /// The variable.
        var: String,
        /// Where the `.env` file is and why it didn't help.
        dotenv_state: String,
    },
    /// A malformed `{ env = … }` table or a value JSON can't hold.
    #[error("{key}: {message}")]
    Invalid {
        /// Full key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Where `{ env = "NAME" }` values come from.
#[derive(Debug)]
pub struct SecretSource {
    process_env: Option<HashMap<String, String>>,
    dotenv_path: PathBuf,
    dotenv: OnceLock<Result<Option<HashMap<String, String>>, String>>,
}

impl SecretSource {
    /// The process environment, then `<data_dir>/.env`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            process_env: None,
            dotenv_path: data_dir.join(".env"),
            dotenv: OnceLock::new(),
        }
    }

    /// A fixed map instead of the process environment (tests), then `<data_dir>/.env`.
    pub fn with_vars(data_dir: &Path, vars: HashMap<String, String>) -> Self {
        Self {
            process_env: Some(vars),
            ..Self::new(data_dir)
        }
    }

    /// The `.env` file consulted.
    pub fn dotenv_path(&self) -> &Path {
        &self.dotenv_path
    }

    fn dotenv(&self) -> &Result<Option<HashMap<String, String>>, String> {
        self.dotenv
            .get_or_init(|| match std::fs::read_to_string(&self.dotenv_path) {
                Ok(text) => parse_dotenv(&text).map(Some),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.to_string()),
            })
    }

    /// A variable's value (process environment first, then `.env`), if set and non-empty.
    pub fn get(&self, var: &str) -> Option<String> {
        self.lookup(var).ok()
    }

    /// Looks a variable up; `Err` describes the `.env` state for the error message.
    fn lookup(&self, var: &str) -> Result<String, String> {
        let from_process = match &self.process_env {
            Some(map) => map.get(var).cloned(),
            None => std::env::var(var).ok(),
        };
        if let Some(value) = from_process.filter(|v| !v.is_empty()) {
            return Ok(value);
        }
        let path = self.dotenv_path.display();
        match self.dotenv() {
            Ok(Some(map)) => match map.get(var).filter(|v| !v.is_empty()) {
                Some(value) => Ok(value.clone()),
                None => Err(path.to_string()),
            },
            Ok(None) => Err(format!("{path}, which does not exist")),
            Err(e) => Err(format!("{path}, which could not be read: {e}")),
        }
    }
}

/// Parses a `.env` file: `KEY=value` lines; blank lines and `#` comments ignored; an
/// optional `export ` prefix; values optionally in single quotes (literal) or double quotes
/// (with `\n`, `\"`, `\\` escapes); unquoted values end at ` #`.
pub fn parse_dotenv(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", n + 1));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("line {}: invalid variable name `{key}`", n + 1));
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('\'') {
            inner
                .strip_suffix('\'')
                .ok_or_else(|| format!("line {}: unterminated single quote", n + 1))?
                .to_owned()
        } else if let Some(inner) = value.strip_prefix('"') {
            let inner = inner
                .strip_suffix('"')
                .ok_or_else(|| format!("line {}: unterminated double quote", n + 1))?;
            unescape_double_quoted(inner)
        } else {
            match value.find(" #") {
                Some(at) => value[..at].trim_end().to_owned(),
                None => value.to_owned(),
            }
        };
        vars.insert(key.to_owned(), value);
    }
    Ok(vars)
}

fn unescape_double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Whether a settings key names a secret: its last word (split at `_`, `-`, `.` and
/// camelCase) is one of token, secret, password, passwd, passphrase, key, apikey,
/// credential(s).
pub fn is_secret_key(key: &str) -> bool {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if matches!(c, '_' | '-' | '.' | ' ') {
            words.push(std::mem::take(&mut current));
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    words.push(current);
    words
        .iter()
        .rev()
        .find(|w| !w.is_empty())
        .is_some_and(|last| SECRET_WORDS.contains(&last.as_str()))
}

fn suggested_var(instance: &str, leaf: &str) -> String {
    format!("{instance}_{leaf}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Resolves an instance's settings into JSON.
pub fn resolve_settings(
    instance: &str,
    settings: &toml::Table,
    secrets: &SecretSource,
) -> Result<Json, SettingsError> {
    let prefix = format!("plugins.{instance}.settings");
    let mut out = serde_json::Map::new();
    for (key, value) in settings {
        out.insert(
            key.clone(),
            resolve_value(instance, &format!("{prefix}.{key}"), key, value, secrets)?,
        );
    }
    Ok(Json::Object(out))
}

fn resolve_value(
    instance: &str,
    path: &str,
    leaf: &str,
    value: &toml::Value,
    secrets: &SecretSource,
) -> Result<Json, SettingsError> {
    use toml::Value as T;
    Ok(match value {
        T::String(s) => {
            if !s.is_empty() && is_secret_key(leaf) {
                return Err(SettingsError::LiteralSecret {
                    key: path.to_owned(),
                    leaf: leaf.to_owned(),
                    suggested: suggested_var(instance, leaf),
                    dotenv: secrets.dotenv_path.clone(),
                });
            }
            Json::String(s.clone())
        }
        T::Integer(i) => Json::from(*i),
        T::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| SettingsError::Invalid {
                key: path.to_owned(),
                message: format!("{f} cannot be represented in JSON"),
            })?,
        T::Boolean(b) => Json::Bool(*b),
        T::Datetime(d) => Json::String(d.to_string()),
        T::Array(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| resolve_value(instance, &format!("{path}[{i}]"), leaf, v, secrets))
                .collect::<Result<_, _>>()?,
        ),
        T::Table(table) if table.contains_key("env") => {
            let var = match (table.get("env"), table.len()) {
                (Some(T::String(var)), 1) if !var.is_empty() => var,
                _ => {
                    return Err(SettingsError::Invalid {
                        key: path.to_owned(),
                        message: "an environment reference must be exactly `{ env = \"NAME\" }`"
                            .to_owned(),
                    });
                }
            };
            let value = secrets
                .lookup(var)
                .map_err(|dotenv_state| SettingsError::MissingEnv {
                    key: path.to_owned(),
                    var: var.clone(),
                    dotenv_state,
                })?;
            Json::String(value)
        }
        T::Table(table) => {
            let mut out = serde_json::Map::new();
            for (key, value) in table {
                out.insert(
                    key.clone(),
                    resolve_value(instance, &format!("{path}.{key}"), key, value, secrets)?,
                );
            }
            Json::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_key_detection() {
        for key in [
            "token",
            "bot_token",
            "botToken",
            "api_key",
            "apiKey",
            "API_KEY",
            "apikey",
            "client_secret",
            "webhook-secret",
            "password",
            "signing_key",
            "credentials",
        ] {
            assert!(is_secret_key(key), "{key} should be secret");
        }
        for key in [
            "token_file",
            "keyboard",
            "monkey",
            "api_base_url",
            "max_tokens",
            "key_id_hint",
            "secret_path",
            "outbox_path",
            "",
        ] {
            assert!(!is_secret_key(key), "{key} should not be secret");
        }
    }

    #[test]
    fn resolves_env_then_dotenv_and_converts_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(".env"),
            "FROM_FILE='file value'\nBOTH=file\n",
        )
        .expect("env");
        let secrets =
            SecretSource::with_vars(dir.path(), vars(&[("BOTH", "process"), ("TOK", "t0k")]));
        let settings = table(
            r#"
            bot_token = { env = "TOK" }
            other = { env = "FROM_FILE" }
            both = { env = "BOTH" }
            n = 3
            f = 1.5
            on = true
            when = 2024-01-02T03:04:05Z
            list = [1, "two"]
            empty_token = ""
            nested = { deep = { api_key = { env = "TOK" } } }
            "#,
        );
        let json = resolve_settings("tg", &settings, &secrets).expect("resolves");
        assert_eq!(
            json,
            json!({
                "bot_token": "t0k", "other": "file value", "both": "process",
                "n": 3, "f": 1.5, "on": true, "when": "2024-01-02T03:04:05Z",
                "list": [1, "two"], "empty_token": "",
                "nested": {"deep": {"api_key": "t0k"}},
            })
        );
    }

    #[test]
    fn literal_secret_is_refused_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = SecretSource::with_vars(dir.path(), HashMap::new());
        let err = resolve_settings("tg", &table("bot_token = \"123:abc\""), &secrets)
            .expect_err("refused");
        let msg = err.to_string();
        assert!(matches!(err, SettingsError::LiteralSecret { .. }));
        assert!(msg.contains("plugins.tg.settings.bot_token"), "{msg}");
        assert!(
            msg.contains("bot_token = { env = \"TG_BOT_TOKEN\" }"),
            "{msg}"
        );
        assert!(msg.contains(".env"), "{msg}");
        // Nested, too.
        let err = resolve_settings("tg", &table("[auth]\npassword = \"x\""), &secrets)
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains("plugins.tg.settings.auth.password")
        );
    }

    #[test]
    fn missing_env_names_the_variable_and_places() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = SecretSource::with_vars(dir.path(), HashMap::new());
        let err = resolve_settings("tg", &table("t = { env = \"NOPE_TOKEN\" }"), &secrets)
            .expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("NOPE_TOKEN") && msg.contains("process environment"),
            "{msg}"
        );
        assert!(msg.contains("does not exist"), "{msg}");
        std::fs::write(dir.path().join(".env"), "OTHER=1\n").expect("env");
        let secrets = SecretSource::with_vars(dir.path(), HashMap::new());
        let msg = resolve_settings("tg", &table("t = { env = \"NOPE_TOKEN\" }"), &secrets)
            .expect_err("missing")
            .to_string();
        assert!(
            !msg.contains("does not exist") && msg.contains(".env"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_env_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = SecretSource::with_vars(dir.path(), vars(&[("A", "1")]));
        for text in [
            "t = { env = 5 }",
            "t = { env = \"A\", default = \"x\" }",
            "t = { env = \"\" }",
        ] {
            let err = resolve_settings("x", &table(text), &secrets).expect_err(text);
            assert!(
                matches!(err, SettingsError::Invalid { .. }),
                "{text}: {err}"
            );
        }
        let err = resolve_settings("x", &table("f = nan"), &secrets).expect_err("nan");
        assert!(err.to_string().contains("JSON"));
    }

    #[test]
    fn dotenv_format() {
        let vars = parse_dotenv(
            "# comment\n\nexport A=1\nB = two words # trailing\nC=\"q \\\"x\\\"\\n\"\nD='lit # \\n'\nE=\nF=a#b\n",
        )
        .expect("parses");
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "q \"x\"\n");
        assert_eq!(vars["D"], "lit # \\n");
        assert_eq!(vars["E"], "");
        assert_eq!(vars["F"], "a#b");
        assert!(
            parse_dotenv("NOEQUALS\n")
                .expect_err("bad")
                .contains("line 1")
        );
        assert!(
            parse_dotenv("A=1\nBAD-NAME=2\n")
                .expect_err("bad")
                .contains("line 2")
        );
        assert!(
            parse_dotenv("A=\"open\n")
                .expect_err("bad")
                .contains("unterminated")
        );
    }

    #[test]
    fn unreadable_dotenv_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".env"), "garbage line\n").expect("env");
        let secrets = SecretSource::with_vars(dir.path(), HashMap::new());
        let msg = resolve_settings("x", &table("t = { env = \"V\" }"), &secrets)
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("could not be read: line 1"), "{msg}");
    }
}
