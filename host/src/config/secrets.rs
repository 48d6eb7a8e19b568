//! Where the host's secrets and operator settings come from: the process environment, then
//! the `.env` file of the data directory. Plugin settings (`{ env = "NAME" }`), the model
//! proxy's keys and the package sources of image builds all read through [`SecretSource`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    pub(crate) fn lookup(&self, var: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
