//! What the proxy forwards where, with which credential: read once from the process
//! environment and `data/.env`.

use std::fmt;

use crate::config::secrets::SecretSource;
use crate::store::agent_groups::AgentProvider;

/// The model API family a session's provider speaks. A session may reach only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Anthropic's Messages API (the Claude provider).
    Anthropic,
    /// OpenAI-compatible chat completions.
    OpenAi,
}

impl Api {
    /// The API a provider needs, or `None` for providers that call no model (mock).
    pub fn for_provider(p: AgentProvider) -> Option<Api> {
        match p {
            AgentProvider::Mock => None,
            AgentProvider::Claude => Some(Api::Anthropic),
            AgentProvider::OpenAi => Some(Api::OpenAi),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Anthropic => "anthropic",
            Api::OpenAi => "openai",
        }
    }

    /// The upstream path for a request path the container sent, when it is one of this API's
    /// model endpoints. Everything else is refused.
    pub fn upstream_path(self, method: &http::Method, path: &str) -> Option<&'static str> {
        use http::Method;
        match (self, method, path) {
            (Api::Anthropic, &Method::POST, "/v1/messages") => Some("/v1/messages"),
            (Api::Anthropic, &Method::POST, "/v1/messages/count_tokens") => {
                Some("/v1/messages/count_tokens")
            }
            // OpenAI-style base URLs end in `/v1` already (`OPENAI_BASE_URL`).
            (Api::OpenAi, &Method::POST, "/v1/chat/completions") => Some("/chat/completions"),
            (Api::OpenAi, &Method::GET, "/v1/models") => Some("/models"),
            _ => None,
        }
    }

    /// What the refusal says is allowed.
    pub fn allowed(self) -> &'static str {
        match self {
            Api::Anthropic => "POST /v1/messages and POST /v1/messages/count_tokens",
            Api::OpenAi => "POST /v1/chat/completions and GET /v1/models",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the host authenticates to an upstream.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `x-api-key` (`ANTHROPIC_API_KEY`).
    ApiKey(String),
    /// A Claude subscription token (`CLAUDE_CODE_OAUTH_TOKEN`): `Authorization: Bearer` plus
    /// the OAuth beta flag.
    ClaudeOAuth(String),
    /// `Authorization: Bearer` (`ANTHROPIC_AUTH_TOKEN`, `OPENAI_API_KEY`).
    Bearer(String),
    /// Nothing (a local Ollama or vLLM).
    None,
}

impl Credential {
    /// Which variable it came from, for messages (never the value).
    pub fn describe(&self, api: Api) -> &'static str {
        match (self, api) {
            (Credential::ApiKey(_), _) => "ANTHROPIC_API_KEY",
            (Credential::ClaudeOAuth(_), _) => "CLAUDE_CODE_OAUTH_TOKEN",
            (Credential::Bearer(_), Api::Anthropic) => "ANTHROPIC_AUTH_TOKEN",
            (Credential::Bearer(_), Api::OpenAi) => "OPENAI_API_KEY",
            (Credential::None, _) => "no credential",
        }
    }
}

// Never print a secret, not even in debug logs.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Credential::ApiKey(_) => "ApiKey",
            Credential::ClaudeOAuth(_) => "ClaudeOAuth",
            Credential::Bearer(_) => "Bearer",
            Credential::None => "None",
        };
        write!(f, "{kind}(…)")
    }
}

/// One upstream API.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL without a trailing slash (`https://api.anthropic.com`,
    /// `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`).
    pub base: String,
    pub credential: Credential,
}

/// The proxy's configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `None`: no Anthropic credential is configured; Claude sessions are told so.
    pub anthropic: Option<Upstream>,
    pub openai: Upstream,
    /// `OPENAI_MODEL`: the model for OpenAI-compatible agents that name none.
    pub openai_model: Option<String>,
}

pub const ANTHROPIC_DEFAULT_BASE: &str = "https://api.anthropic.com";
pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";

#[derive(Debug, thiserror::Error)]
#[error("{var}: {why}")]
pub struct SettingsError {
    pub var: &'static str,
    pub why: String,
}

impl ProxySettings {
    /// Reads `ANTHROPIC_API_KEY` | `CLAUDE_CODE_OAUTH_TOKEN` | `ANTHROPIC_AUTH_TOKEN`,
    /// `ANTHROPIC_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `OPENAI_MODEL` from the
    /// process environment, then `data/.env`.
    pub fn load(secrets: &SecretSource) -> Result<ProxySettings, SettingsError> {
        let get = |var: &str| secrets.get(var).map(|v| v.trim().to_string());
        let anthropic_credential = if let Some(key) = get("ANTHROPIC_API_KEY") {
            Some(Credential::ApiKey(key))
        } else if let Some(token) = get("CLAUDE_CODE_OAUTH_TOKEN") {
            Some(Credential::ClaudeOAuth(token))
        } else {
            get("ANTHROPIC_AUTH_TOKEN").map(Credential::Bearer)
        };
        let anthropic_base = base_url(
            "ANTHROPIC_BASE_URL",
            get("ANTHROPIC_BASE_URL"),
            ANTHROPIC_DEFAULT_BASE,
        )?;
        let openai_base = base_url(
            "OPENAI_BASE_URL",
            get("OPENAI_BASE_URL"),
            OPENAI_DEFAULT_BASE,
        )?;
        match &anthropic_credential {
            Some(Credential::ApiKey(v)) => check_header_safe("ANTHROPIC_API_KEY", v)?,
            Some(Credential::ClaudeOAuth(v)) => check_header_safe("CLAUDE_CODE_OAUTH_TOKEN", v)?,
            Some(Credential::Bearer(v)) => check_header_safe("ANTHROPIC_AUTH_TOKEN", v)?,
            Some(Credential::None) | None => {}
        }
        let openai_key = get("OPENAI_API_KEY");
        if let Some(k) = &openai_key {
            check_header_safe("OPENAI_API_KEY", k)?;
        }
        Ok(ProxySettings {
            anthropic: anthropic_credential.map(|credential| Upstream {
                base: anthropic_base,
                credential,
            }),
            openai: Upstream {
                base: openai_base,
                credential: openai_key.map_or(Credential::None, Credential::Bearer),
            },
            openai_model: get("OPENAI_MODEL").filter(|m| !m.is_empty()),
        })
    }

    pub fn upstream(&self, api: Api) -> Option<&Upstream> {
        match api {
            Api::Anthropic => self.anthropic.as_ref(),
            Api::OpenAi => Some(&self.openai),
        }
    }
}

fn base_url(
    var: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<String, SettingsError> {
    let url = value.unwrap_or_else(|| default.to_string());
    let url = url.trim_end_matches('/').to_string();
    let parsed = reqwest::Url::parse(&url).map_err(|e| SettingsError {
        var,
        why: format!("{url:?} is not a URL: {e}"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(SettingsError {
            var,
            why: format!("{url:?} must be an http:// or https:// URL with a host"),
        });
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(SettingsError {
            var,
            why: format!("{url:?} must not have a query or fragment"),
        });
    }
    Ok(url)
}

fn check_header_safe(var: &'static str, value: &str) -> Result<(), SettingsError> {
    if value.is_empty() || http::HeaderValue::from_str(value).is_err() {
        return Err(SettingsError {
            var,
            why: "the value is empty or has characters a header cannot carry".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<ProxySettings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxySettings::load(&SecretSource::with_vars(dir.path(), map))
    }

    #[test]
    fn picks_the_credential_and_bases() {
        let s = load(&[]).unwrap();
        assert!(s.anthropic.is_none());
        assert_eq!(s.openai.base, OPENAI_DEFAULT_BASE);
        assert_eq!(s.openai.credential, Credential::None);

        let s = load(&[
            ("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat-1"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1"),
            ("OPENAI_API_KEY", "sk-x"),
            ("OPENAI_MODEL", "llama3.2"),
        ])
        .unwrap();
        let a = s.anthropic.unwrap();
        assert_eq!(a.credential, Credential::ClaudeOAuth("sk-ant-oat-1".into()));
        assert_eq!(a.base, "http://127.0.0.1:9");
        assert_eq!(s.openai.credential, Credential::Bearer("sk-x".into()));
        assert_eq!(s.openai_model.as_deref(), Some("llama3.2"));
        // The API key wins over a token.
        let s = load(&[("ANTHROPIC_API_KEY", "k"), ("CLAUDE_CODE_OAUTH_TOKEN", "t")]).unwrap();
        assert_eq!(
            s.anthropic.unwrap().credential,
            Credential::ApiKey("k".into())
        );
        assert!(!format!("{:?}", Credential::ApiKey("secret".into())).contains("secret"));
    }

    #[test]
    fn refuses_bad_values_naming_the_variable() {
        for (var, value) in [
            ("ANTHROPIC_BASE_URL", "ftp://x"),
            ("OPENAI_BASE_URL", "not a url"),
            ("ANTHROPIC_BASE_URL", "http://x/?a=b"),
            ("OPENAI_API_KEY", "bad\nkey"),
        ] {
            let e = load(&[(var, value), ("ANTHROPIC_API_KEY", "k")]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
        }
    }

    #[test]
    fn only_model_endpoints_of_the_sessions_api() {
        use http::Method;
        assert_eq!(
            Api::Anthropic.upstream_path(&Method::POST, "/v1/messages"),
            Some("/v1/messages")
        );
        assert_eq!(
            Api::Anthropic.upstream_path(&Method::GET, "/v1/messages"),
            None
        );
        assert_eq!(
            Api::Anthropic.upstream_path(&Method::POST, "/v1/chat/completions"),
            None
        );
        assert_eq!(
            Api::Anthropic.upstream_path(&Method::POST, "/v1/files"),
            None
        );
        assert_eq!(
            Api::Anthropic.upstream_path(&Method::POST, "/v1/messages/../x"),
            None
        );
        assert_eq!(
            Api::OpenAi.upstream_path(&Method::POST, "/v1/chat/completions"),
            Some("/chat/completions")
        );
        assert_eq!(
            Api::OpenAi.upstream_path(&Method::POST, "/v1/messages"),
            None
        );
    }
}
