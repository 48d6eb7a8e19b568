//! What an agent may ask to change about itself: packages in its image and MCP servers in
//! its config. Both sides check the same rules (the runner before it writes the request, the
//! host before an approver sees it), since on approval the names reach a package manager.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Packages one request may name, apt and npm together.
pub const MAX_PACKAGES: usize = 20;
/// MCP servers one agent group may have.
pub const MAX_MCP_SERVERS: usize = 16;
/// Arguments plus environment entries of one MCP server.
pub const MAX_MCP_SERVER_ITEMS: usize = 64;

/// The file in the agent's config directory (`/workspace/config`, read-only in the container,
/// written only by the host) that lists the MCP servers approved for the agent group, as a
/// JSON object of name to [`McpServer`].
pub const MCP_SERVERS_FILE: &str = "mcp-servers.json";

/// The name of the runner's own MCP server; tools appear to Claude as `mcp__nanoclaw__<tool>`.
pub const RUNNER_MCP_SERVER: &str = "nanoclaw";

/// How an approved MCP server is started inside the container (stdio).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServer {
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A Debian package name: `^[a-z0-9][a-z0-9.+-]*$` (no versions, options or shell), at most
/// 128 bytes.
pub fn is_valid_apt_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'+' | b'-')
        })
}

/// An npm package name, optionally scoped: `^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*$`
/// (no versions, tags, URLs or paths), at most 214 bytes as npm allows.
pub fn is_valid_npm_name(name: &str) -> bool {
    fn part(p: &str) -> bool {
        let b = p.as_bytes();
        !b.is_empty()
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            })
    }
    if name.is_empty() || name.len() > 214 {
        return false;
    }
    match name.strip_prefix('@') {
        Some(scoped) => {
            matches!(scoped.split_once('/'), Some((scope, pkg)) if part(scope) && part(pkg))
        }
        None => part(name),
    }
}

/// Checks one install request; the error says what is wrong, for the agent.
pub fn check_packages(apt: &[String], npm: &[String]) -> Result<(), String> {
    let total = apt.len() + npm.len();
    if total == 0 {
        return Err("name at least one apt or npm package".into());
    }
    if total > MAX_PACKAGES {
        return Err(format!(
            "at most {MAX_PACKAGES} packages per request ({total} named)"
        ));
    }
    if let Some(bad) = apt.iter().find(|n| !is_valid_apt_name(n)) {
        return Err(format!(
            "{bad:?} is not an apt package name (lower-case letters, digits, . + -; no versions)"
        ));
    }
    if let Some(bad) = npm.iter().find(|n| !is_valid_npm_name(n)) {
        return Err(format!(
            "{bad:?} is not an npm package name (optionally @scope/, lower-case letters, \
             digits, . _ -; no versions)"
        ));
    }
    Ok(())
}

/// An MCP server name: 1 to 32 ASCII letters, digits, `-` or `_`, not the runner's own.
pub fn is_valid_mcp_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name != RUNNER_MCP_SERVER
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Checks one MCP server request; the error says what is wrong, for the agent.
pub fn check_mcp_server(name: &str, server: &McpServer) -> Result<(), String> {
    if !is_valid_mcp_server_name(name) {
        return Err(format!(
            "{name:?} is not a usable server name (1-32 letters, digits, - or _; not \
             {RUNNER_MCP_SERVER:?})"
        ));
    }
    if server.command.trim().is_empty() {
        return Err("the command is empty".into());
    }
    if server.args.len() + server.env.len() > MAX_MCP_SERVER_ITEMS {
        return Err(format!(
            "at most {MAX_MCP_SERVER_ITEMS} arguments and environment entries"
        ));
    }
    let too_long = |s: &String| s.len() > super::limits::MAX_SHORT_FIELD_BYTES;
    if too_long(&server.command)
        || server.args.iter().any(too_long)
        || server.env.iter().any(|(k, v)| too_long(k) || too_long(v))
    {
        return Err(format!(
            "the command, each argument and each environment entry may have at most {} bytes",
            super::limits::MAX_SHORT_FIELD_BYTES
        ));
    }
    if server
        .env
        .keys()
        .any(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err("environment names are letters, digits and _".into());
    }
    let has_nul = |s: &String| s.contains('\0');
    if has_nul(&server.command)
        || server.args.iter().any(has_nul)
        || server.env.values().any(has_nul)
    {
        return Err("NUL bytes are not allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_names() {
        for ok in ["jq", "libssl3", "g++", "python3.11", "0ad"] {
            assert!(is_valid_apt_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Jq",
            "-y",
            "jq=1.6",
            "jq;rm",
            "a b",
            "jq/bookworm",
            "_x",
            "jq*",
        ] {
            assert!(!is_valid_apt_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn npm_names() {
        for ok in ["left-pad", "@scope/pkg", "lodash.merge", "a_b", "0x"] {
            assert!(is_valid_npm_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Left",
            "@scope",
            "@/pkg",
            "@scope/",
            "pkg@1.0",
            "../x",
            "git+https://x",
            "-g",
            "a b",
            "@a/b/c",
        ] {
            assert!(!is_valid_npm_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn package_requests() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_packages(&s(&["jq"]), &s(&["left-pad"])).is_ok());
        assert!(
            check_packages(&[], &[])
                .unwrap_err()
                .contains("at least one")
        );
        let many: Vec<String> = (0..21).map(|i| format!("p{i}")).collect();
        assert!(
            check_packages(&many, &[])
                .unwrap_err()
                .contains("at most 20")
        );
        assert!(
            check_packages(&s(&["jq; rm -rf /"]), &[])
                .unwrap_err()
                .contains("apt")
        );
    }

    #[test]
    fn mcp_servers() {
        let server = McpServer {
            command: "node".into(),
            args: vec!["server.js".into()],
            env: BTreeMap::from([("TOKEN".into(), "x".into())]),
        };
        assert!(check_mcp_server("weather", &server).is_ok());
        assert!(check_mcp_server("nanoclaw", &server).is_err());
        assert!(check_mcp_server("a/b", &server).is_err());
        let empty = McpServer::default();
        assert!(
            check_mcp_server("x", &empty)
                .unwrap_err()
                .contains("command")
        );
        let bad_env = McpServer {
            env: BTreeMap::from([("A=B".into(), "x".into())]),
            ..server.clone()
        };
        assert!(check_mcp_server("x", &bad_env).is_err());
    }
}
