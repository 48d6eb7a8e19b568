//! Turning a plugin's `settings` table into the JSON it receives, resolving secrets.
//!
//! * A value written `{ env = "NAME" }` is replaced by the variable `NAME`, looked up in the
//!   process environment, then in the `.env` file of the host's data directory
//!   (`KEY=value` lines, `#` comments, optional `export `, optional quotes).
//! * A literal, non-empty string under a key that looks like a secret (`token`, `secret`,
//!   `password`, `api_key`, `…_key`, …) is refused: secrets don't belong in plugins.toml,
//!   which is meant to be readable and committed.

use std::path::PathBuf;

use serde_json::Value as Json;

use crate::config::secrets::SecretSource;

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
                    dotenv: secrets.dotenv_path().to_path_buf(),
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
    use std::collections::HashMap;

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
