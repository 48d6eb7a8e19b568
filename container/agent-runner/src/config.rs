//! Configuration, read from the environment the host sets when it starts the container.
//!
//! Every value is validated up front; a bad one is a [`ConfigError`] naming the variable, and
//! the binary exits with code 2.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use jiff::tz::TimeZone;
use nanoclaw_schema::session::env;
use nanoclaw_schema::session::layout::{
    CONTAINER_AGENT_DIR, CONTAINER_CONFIG_DIR, CONTAINER_GLOBAL_DIR, CONTAINER_INBOUND_DIR,
    CONTAINER_WORKSPACE,
};

/// Which model provider drives the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Mock,
    Claude,
    /// An OpenAI-compatible chat completions API (OpenAI, Ollama, vLLM, ...).
    OpenAi,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Mock => "mock",
            ProviderKind::Claude => "claude",
            ProviderKind::OpenAi => "openai",
        }
    }
}

#[derive(Debug)]
pub struct Config {
    /// The session workspace (read-write): `outbound.db`, `outbox/`, `.heartbeat`.
    pub session_dir: PathBuf,
    /// The host's directory (read-only): `inbound.db`, `inbox/`.
    pub inbound_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub global_dir: PathBuf,
    /// The operator's config of the agent group (read-only): approved MCP servers.
    pub config_dir: PathBuf,
    pub agent_group_id: Option<String>,
    pub session_id: Option<String>,
    pub provider: ProviderKind,
    pub assistant_name: Option<String>,
    pub admin_user_ids: HashSet<String>,
    pub max_batch: usize,
    pub fallback_poll: Duration,
    pub model: Option<String>,
    pub claude_bin: PathBuf,
    /// The host's model-API proxy socket (`NANOCLAW_MODEL_SOCKET`); the runner relays a
    /// loopback port to it and points the provider there.
    pub model_socket: Option<PathBuf>,
    /// A model API base URL used as is when there is no proxy socket (`NANOCLAW_MODEL_BASE_URL`).
    pub model_base_url: Option<String>,
    /// The zone message times are shown in, and its name for the prompt.
    pub tz: TimeZone,
    pub tz_name: String,
    /// `NANOCLAW_MOCK_SCRIPT`, else `<agent dir>/mock.toml` when that file exists.
    pub mock_script: Option<PathBuf>,
    pub mock_record: Option<PathBuf>,
    /// openai provider: bytes of conversation text sent with each request, at most
    /// (`NANOCLAW_HISTORY_BYTES`; the oldest turns are left out first).
    pub history_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // Unset and empty mean the same thing for every variable.
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let path = |k: &'static str, default: &str| -> PathBuf {
            get(k).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };

        let provider = match get(env::PROVIDER).as_deref().map(str::trim) {
            None | Some("claude") => ProviderKind::Claude,
            Some("mock") => ProviderKind::Mock,
            Some("openai") => ProviderKind::OpenAi,
            Some(other) => {
                return Err(bad(
                    env::PROVIDER,
                    other,
                    "expected `mock`, `claude` or `openai`",
                ));
            }
        };

        let mut admin_user_ids = HashSet::new();
        if let Some(list) = get(env::ADMIN_USER_IDS) {
            for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let well_formed = id
                    .split_once(':')
                    .is_some_and(|(ns, handle)| !ns.is_empty() && !handle.is_empty());
                if !well_formed || id.contains(char::is_whitespace) {
                    return Err(bad(
                        env::ADMIN_USER_IDS,
                        &list,
                        &format!("{id:?} is not a namespaced user id like `telegram:123`"),
                    ));
                }
                admin_user_ids.insert(id.to_string());
            }
        }

        let max_batch = parse_int(
            "NANOCLAW_MAX_BATCH",
            get("NANOCLAW_MAX_BATCH"),
            10,
            1,
            1_000,
        )?;
        let fallback_ms = parse_int(
            "NANOCLAW_FALLBACK_POLL_MS",
            get("NANOCLAW_FALLBACK_POLL_MS"),
            2_000,
            10,
            3_600_000,
        )?;

        let history_bytes = parse_int(
            "NANOCLAW_HISTORY_BYTES",
            get("NANOCLAW_HISTORY_BYTES"),
            crate::provider::openai::DEFAULT_HISTORY_BUDGET,
            1_000,
            crate::provider::openai::MAX_HISTORY_BUDGET,
        )?;

        let (tz, tz_name) = match get("TZ") {
            None => (TimeZone::UTC, "UTC".to_string()),
            Some(raw) => parse_tz(&raw)?,
        };

        let agent_dir = path(env::AGENT_DIR, CONTAINER_AGENT_DIR);
        let mock_script = match get(env::MOCK_SCRIPT) {
            Some(p) => {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    return Err(bad(env::MOCK_SCRIPT, &p.to_string_lossy(), "no such file"));
                }
                Some(p)
            }
            None => Some(agent_dir.join("mock.toml")).filter(|p| p.is_file()),
        };

        let model_base_url = match get(env::MODEL_BASE_URL) {
            Some(url) => {
                let url = url.trim().trim_end_matches('/').to_string();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad(env::MODEL_BASE_URL, &url, "expected an http(s):// URL"));
                }
                Some(url)
            }
            None => None,
        };

        let model = get(env::MODEL).map(|s| s.trim().to_string());
        let model_socket = get(env::MODEL_SOCKET).map(PathBuf::from);
        if provider == ProviderKind::OpenAi {
            // Chat completions APIs have no default model.
            if model.is_none() {
                return Err(bad(
                    env::MODEL,
                    "",
                    "required with NANOCLAW_PROVIDER=openai (the model name the API knows, \
                     like `gpt-4o-mini` or `llama3.2`)",
                ));
            }
            // The runner has no TLS: https is the host proxy's business.
            if model_socket.is_none()
                && let Some(url) = model_base_url
                    .as_deref()
                    .filter(|u| u.starts_with("https://"))
            {
                return Err(bad(
                    env::MODEL_BASE_URL,
                    url,
                    "the openai provider speaks plain HTTP only; point it at the host's model \
                     proxy (which adds TLS and the key) or a plain http:// endpoint",
                ));
            }
        }

        Ok(Config {
            session_dir: path(env::SESSION_DIR, CONTAINER_WORKSPACE),
            inbound_dir: path(env::INBOUND_DIR, CONTAINER_INBOUND_DIR),
            agent_dir,
            global_dir: path(env::GLOBAL_DIR, CONTAINER_GLOBAL_DIR),
            config_dir: path(env::CONFIG_DIR, CONTAINER_CONFIG_DIR),
            agent_group_id: get(env::AGENT_GROUP_ID),
            session_id: get(env::SESSION_ID),
            provider,
            assistant_name: get(env::ASSISTANT_NAME).map(|s| s.trim().to_string()),
            admin_user_ids,
            max_batch,
            fallback_poll: Duration::from_millis(fallback_ms),
            model,
            claude_bin: path("NANOCLAW_CLAUDE_BIN", "claude"),
            model_socket,
            model_base_url,
            tz,
            tz_name,
            mock_script,
            mock_record: get("NANOCLAW_MOCK_RECORD").map(PathBuf::from),
            history_bytes,
        })
    }
}

fn bad(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        var,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_int<T>(
    var: &'static str,
    raw: Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = raw else { return Ok(default) };
    match raw.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(bad(
            var,
            &raw,
            &format!("expected an integer from {min} to {max}"),
        )),
    }
}

/// `TZ` as an IANA name (`Europe/Berlin`, optionally with the glibc `:` prefix) or a POSIX
/// rule (`CET-1CEST,M3.5.0,M10.5.0/3`).
fn parse_tz(raw: &str) -> Result<(TimeZone, String), ConfigError> {
    let name = raw.trim().trim_start_matches(':');
    if let Ok(tz) = TimeZone::get(name) {
        return Ok((tz, name.to_string()));
    }
    if let Ok(tz) = TimeZone::posix(name) {
        return Ok((tz, name.to_string()));
    }
    Err(bad(
        "TZ",
        raw,
        "not an IANA time zone name (like `Europe/Berlin`) or a POSIX TZ rule",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.session_dir, PathBuf::from("/workspace"));
        assert_eq!(c.inbound_dir, PathBuf::from("/workspace/inbound"));
        assert_eq!(c.agent_dir, PathBuf::from("/workspace/agent"));
        assert_eq!(c.global_dir, PathBuf::from("/workspace/global"));
        assert_eq!(c.config_dir, PathBuf::from("/workspace/config"));
        assert_eq!(c.provider, ProviderKind::Claude);
        assert_eq!(c.max_batch, 10);
        assert_eq!(c.fallback_poll, Duration::from_millis(2_000));
        assert_eq!(c.claude_bin, PathBuf::from("claude"));
        assert_eq!(c.tz_name, "UTC");
        assert!(c.admin_user_ids.is_empty());
        assert!(c.model.is_none() && c.assistant_name.is_none());
    }

    #[test]
    fn reads_values() {
        let c = load(&[
            ("NANOCLAW_PROVIDER", "mock"),
            ("NANOCLAW_ADMIN_USER_IDS", " telegram:1, discord:abc ,,"),
            ("NANOCLAW_MAX_BATCH", "3"),
            ("NANOCLAW_FALLBACK_POLL_MS", "500"),
            ("TZ", ":Europe/Berlin"),
            ("NANOCLAW_ASSISTANT_NAME", " Andy "),
        ])
        .unwrap();
        assert_eq!(c.provider, ProviderKind::Mock);
        assert!(
            c.admin_user_ids.contains("telegram:1") && c.admin_user_ids.contains("discord:abc")
        );
        assert_eq!(c.admin_user_ids.len(), 2);
        assert_eq!(c.max_batch, 3);
        assert_eq!(c.fallback_poll, Duration::from_millis(500));
        assert_eq!(c.tz_name, "Europe/Berlin");
        assert_eq!(c.assistant_name.as_deref(), Some("Andy"));
        assert!(load(&[("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")]).is_ok());
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        for (var, value) in [
            ("NANOCLAW_PROVIDER", "gpt"),
            ("NANOCLAW_MAX_BATCH", "0"),
            ("NANOCLAW_MAX_BATCH", "ten"),
            ("NANOCLAW_FALLBACK_POLL_MS", "-5"),
            ("NANOCLAW_HISTORY_BYTES", "10"),
            ("TZ", "Mars/Olympus_Mons"),
            ("NANOCLAW_ADMIN_USER_IDS", "alice"),
            ("NANOCLAW_ADMIN_USER_IDS", "telegram:"),
            ("NANOCLAW_MOCK_SCRIPT", "/nonexistent/mock.toml"),
            ("NANOCLAW_MODEL_BASE_URL", "127.0.0.1:9"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
        let err = load(&[("NANOCLAW_PROVIDER", "gpt")]).unwrap_err();
        assert!(err.reason.contains("`openai`"), "{err}");
    }

    #[test]
    fn openai_needs_a_model_and_plain_http() {
        let c = load(&[
            ("NANOCLAW_PROVIDER", "openai"),
            ("NANOCLAW_MODEL", "llama3.2"),
            ("NANOCLAW_MODEL_BASE_URL", "http://127.0.0.1:11434/"),
        ])
        .unwrap();
        assert_eq!(c.provider, ProviderKind::OpenAi);
        assert_eq!(c.model_base_url.as_deref(), Some("http://127.0.0.1:11434"));
        assert_eq!(c.history_bytes, 200_000);
        let err = load(&[("NANOCLAW_PROVIDER", "openai")]).unwrap_err();
        assert_eq!(err.var, "NANOCLAW_MODEL");
        let err = load(&[
            ("NANOCLAW_PROVIDER", "openai"),
            ("NANOCLAW_MODEL", "gpt-4o-mini"),
            ("NANOCLAW_MODEL_BASE_URL", "https://api.openai.com"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "NANOCLAW_MODEL_BASE_URL");
        // Through the proxy socket the base URL is not used.
        assert!(
            load(&[
                ("NANOCLAW_PROVIDER", "openai"),
                ("NANOCLAW_MODEL", "gpt-4o-mini"),
                ("NANOCLAW_MODEL_BASE_URL", "https://api.openai.com"),
                ("NANOCLAW_MODEL_SOCKET", "/run/model.sock"),
            ])
            .is_ok()
        );
    }
}
