//! Per-agent image layers: an agent's approved packages installed on top of its base image.
//!
//! The build context is one generated Dockerfile. Package names come only from lists that
//! passed `selfmod::check_packages` (no shell characters can occur in them); the operator's
//! package sources reach the build as build arguments, never as Dockerfile text. The build
//! uses the host's network (to reach those sources); agent containers still run without one.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use nanoclaw_schema::session::selfmod;
use sha2::{Digest, Sha256};

/// The longest a build may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Lines of the build's output kept for the failure note.
const LOG_TAIL_LINES: usize = 15;
/// Bytes of one kept output line.
const LOG_LINE_BYTES: usize = 300;

/// Where builds fetch packages from (host settings: the environment, then `data/.env`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageSources {
    /// `NANOCLAW_APT_SOURCES`: replaces the image's apt sources during the build (one-line
    /// format, lines separated by newlines or `;`).
    pub apt_sources: Option<String>,
    /// `NANOCLAW_NPM_REGISTRY`: the npm registry URL.
    pub npm_registry: Option<String>,
}

pub const APT_SOURCES_VAR: &str = "NANOCLAW_APT_SOURCES";
pub const NPM_REGISTRY_VAR: &str = "NANOCLAW_NPM_REGISTRY";

impl PackageSources {
    pub fn load(secrets: &crate::config::secrets::SecretSource) -> PackageSources {
        let get = |v: &str| {
            secrets
                .get(v)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        PackageSources {
            apt_sources: get(APT_SOURCES_VAR).map(|s| s.replace(';', "\n")),
            npm_registry: get(NPM_REGISTRY_VAR),
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// The agent's folder (names the image).
    pub folder: String,
    /// The image the layer goes on (the agent's image before any packages).
    pub base: String,
    pub apt: Vec<String>,
    pub npm: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("package names must be valid: {0}")]
    Invalid(String),
    #[error("the Docker engine is not reachable: {0}")]
    Engine(String),
    #[error("the base image {base} is not available: {why}")]
    Base { base: String, why: String },
    #[error("the base image's user {0:?} cannot be restored safely")]
    User(String),
    #[error("the build failed: {message}")]
    Failed {
        message: String,
        /// The build's last output lines.
        log_tail: Vec<String>,
    },
    #[error("the build took longer than {0:?}")]
    Timeout(Duration),
}

impl BuildError {
    /// The last output lines, if the build ran.
    pub fn log_tail(&self) -> &[String] {
        match self {
            BuildError::Failed { log_tail, .. } => log_tail,
            _ => &[],
        }
    }
}

/// The Dockerfile of a layer. `user` is the base image's user, restored at the end.
///
/// npm packages need npm: a base without it (the Claude image ships no Node.js) gets Debian's
/// `nodejs` and `npm` in the same apt step, from the same sources.
pub fn dockerfile(base: &str, user: Option<&str>, apt: &[String], npm: &[String]) -> String {
    let mut f = format!("FROM {base}\nUSER root\n");
    if !apt.is_empty() || !npm.is_empty() {
        f.push_str("ARG NANOCLAW_APT_SOURCES\nRUN set -e; \\\n");
        f.push_str(&format!("  pkgs=\"{}\"; \\\n", apt.join(" ")));
        if !npm.is_empty() {
            f.push_str(
                "  if ! command -v npm >/dev/null 2>&1; then \\\n\
                 \x20   command -v apt-get >/dev/null 2>&1 || { echo \"nanoclaw: the base image has neither npm nor apt-get, so npm packages cannot be installed in it\" >&2; exit 1; }; \\\n\
                 \x20   pkgs=\"$pkgs nodejs npm\"; \\\n\
                 \x20 fi; \\\n",
            );
        }
        // The operator's sources replace the image's for the build only, then are put back.
        f.push_str(
            "  if [ -n \"$pkgs\" ]; then \\\n\
             \x20   if [ -n \"$NANOCLAW_APT_SOURCES\" ]; then \\\n\
             \x20     mkdir /tmp/nanoclaw-apt; mv /etc/apt/sources.list.d /tmp/nanoclaw-apt/; \\\n\
             \x20     if [ -e /etc/apt/sources.list ]; then mv /etc/apt/sources.list /tmp/nanoclaw-apt/; fi; \\\n\
             \x20     mkdir /etc/apt/sources.list.d; \\\n\
             \x20     printf '%s\\n' \"$NANOCLAW_APT_SOURCES\" > /etc/apt/sources.list.d/nanoclaw.list; \\\n\
             \x20   fi; \\\n\
             \x20   apt-get update; \\\n\
             \x20   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \\\n\
             \x20   rm -rf /var/lib/apt/lists/*; \\\n\
             \x20   if [ -d /tmp/nanoclaw-apt ]; then \\\n\
             \x20     rm -rf /etc/apt/sources.list.d; mv /tmp/nanoclaw-apt/* /etc/apt/; rm -rf /tmp/nanoclaw-apt; \\\n\
             \x20   fi; \\\n\
             \x20 fi\n",
        );
    }
    if !npm.is_empty() {
        f.push_str(&format!(
            "ARG npm_config_registry\n\
             RUN npm install -g --no-fund --no-audit {} && npm cache clean --force\n",
            npm.join(" ")
        ));
    }
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        f.push_str(&format!("USER {user}\n"));
    }
    f
}

/// The layer's tag: `nanoclaw-agent-<folder>:<hash of the base image id and the packages>`.
pub fn tag(folder: &str, base_id: &str, apt: &[String], npm: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(base_id.as_bytes());
    for (list, name) in [(apt, "apt"), (npm, "npm")] {
        h.update([0]);
        h.update(name.as_bytes());
        for p in list {
            h.update([0]);
            h.update(p.as_bytes());
        }
    }
    let hash: String = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let repo: String = folder
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    format!(
        "nanoclaw-agent-{}:{hash}",
        repo.trim_matches(['-', '.', '_'])
    )
}

/// A user name or id that may follow `USER` as it is.
fn plain_user(user: &str) -> bool {
    user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

async fn connect() -> Result<Docker, BuildError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| BuildError::Engine(e.to_string()))?
        .with_timeout(BUILD_TIMEOUT + Duration::from_secs(60));
    docker
        .negotiate_version()
        .await
        .map_err(|e| BuildError::Engine(e.to_string()))
}

/// Builds the layer (unless an image with its tag exists already) and returns its tag.
pub async fn build(spec: &LayerSpec, sources: &PackageSources) -> Result<String, BuildError> {
    selfmod::check_packages(&spec.apt, &spec.npm).map_err(BuildError::Invalid)?;
    let docker = connect().await?;
    let base = docker
        .inspect_image(&spec.base)
        .await
        .map_err(|e| BuildError::Base {
            base: spec.base.clone(),
            why: e.to_string(),
        })?;
    let base_id = base.id.clone().unwrap_or_else(|| spec.base.clone());
    let user = base.config.as_ref().and_then(|c| c.user.clone());
    if let Some(u) = user.as_deref().filter(|u| !plain_user(u)) {
        return Err(BuildError::User(u.to_string()));
    }
    let tag = tag(&spec.folder, &base_id, &spec.apt, &spec.npm);
    if docker.inspect_image(&tag).await.is_ok() {
        tracing::info!(image = tag, "agent image layer exists already");
        return Ok(tag);
    }
    // FROM the base's id: what was inspected is what is built on.
    let text = dockerfile(&base_id, user.as_deref(), &spec.apt, &spec.npm);
    let context = context_tar(&text).map_err(|e| BuildError::Failed {
        message: format!("build context: {e}"),
        log_tail: Vec::new(),
    })?;
    let mut args = std::collections::HashMap::new();
    if let Some(s) = &sources.apt_sources {
        args.insert(APT_SOURCES_VAR.to_string(), s.clone());
    }
    if let Some(r) = &sources.npm_registry {
        args.insert("npm_config_registry".to_string(), r.clone());
    }
    let mut labels = std::collections::HashMap::new();
    labels.insert("nanoclaw.base".to_string(), spec.base.clone());
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .networkmode("host")
        .buildargs(&args)
        .labels(&labels)
        .build();
    tracing::info!(
        image = tag,
        base = spec.base,
        apt = spec.apt.len(),
        npm = spec.npm.len(),
        "building an agent image layer"
    );
    let run = async {
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut keep = |s: &str| {
            for line in s
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty())
            {
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(truncate(line, LOG_LINE_BYTES));
            }
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = &info.stream {
                        keep(s);
                    }
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        keep(&message);
                        return Err(BuildError::Failed {
                            message: truncate(&message, LOG_LINE_BYTES),
                            log_tail: tail.into_iter().collect(),
                        });
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    keep(&message);
                    return Err(BuildError::Failed {
                        message: truncate(&message, LOG_LINE_BYTES),
                        log_tail: tail.into_iter().collect(),
                    });
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BUILD_TIMEOUT, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(BuildError::Timeout(BUILD_TIMEOUT)),
    }
    // The stream can end without an error and without an image (an engine cut short).
    docker
        .inspect_image(&tag)
        .await
        .map_err(|e| BuildError::Failed {
            message: format!("no image after the build: {e}"),
            log_tail: Vec::new(),
        })?;
    tracing::info!(image = tag, "agent image layer built");
    Ok(tag)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A tar holding only the Dockerfile.
fn context_tar(dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_dockerfile_installs_the_names_and_restores_the_user() {
        let f = dockerfile("sha256:abc", Some("1000:1000"), &s(&["jq", "g++"]), &[]);
        assert!(f.starts_with("FROM sha256:abc\nUSER root\n"), "{f}");
        assert!(f.contains("pkgs=\"jq g++\";"), "{f}");
        assert!(
            f.contains("apt-get install -y --no-install-recommends $pkgs;"),
            "{f}"
        );
        assert!(f.contains("rm -rf /var/lib/apt/lists/*"), "{f}");
        assert!(
            f.contains("\"$NANOCLAW_APT_SOURCES\""),
            "sources only as a quoted argument"
        );
        assert!(f.ends_with("USER 1000:1000\n"), "{f}");
        assert!(!f.contains("npm"), "no npm step without npm packages");
    }

    #[test]
    fn npm_comes_from_apt_when_the_base_has_none() {
        let f = dockerfile("b", None, &[], &s(&["@scope/pkg", "left-pad"]));
        assert!(f.contains("if ! command -v npm"), "{f}");
        assert!(f.contains("pkgs=\"$pkgs nodejs npm\""), "{f}");
        assert!(f.contains("neither npm nor apt-get"), "{f}");
        let apt = f.find("apt-get install").unwrap();
        let npm = f
            .find("npm install -g --no-fund --no-audit @scope/pkg left-pad")
            .unwrap();
        assert!(apt < npm, "npm is there before it is used: {f}");
        assert!(!f.contains("\nUSER \n"), "no empty USER line: {f}");
    }

    #[test]
    fn tags_follow_the_base_and_the_packages() {
        let a = tag("Main", "sha256:1", &s(&["jq"]), &[]);
        assert!(a.starts_with("nanoclaw-agent-main:"), "{a}");
        assert_eq!(a.split(':').nth(1).unwrap().len(), 12);
        assert_eq!(a, tag("Main", "sha256:1", &s(&["jq"]), &[]));
        assert_ne!(a, tag("Main", "sha256:2", &s(&["jq"]), &[]));
        assert_ne!(a, tag("Main", "sha256:1", &[], &s(&["jq"])));
        assert_ne!(a, tag("Main", "sha256:1", &s(&["jq", "git"]), &[]));
    }

    #[test]
    fn users_are_restored_only_when_plain() {
        assert!(plain_user("node") && plain_user("1000:1000"));
        assert!(!plain_user("root\nRUN evil") && !plain_user("a b"));
    }

    #[tokio::test]
    async fn invalid_names_build_nothing() {
        let spec = LayerSpec {
            folder: "x".into(),
            base: "b".into(),
            apt: s(&["jq; rm -rf /"]),
            npm: vec![],
        };
        let err = build(&spec, &PackageSources::default()).await.unwrap_err();
        assert!(matches!(err, BuildError::Invalid(_)), "{err}");
    }

    #[test]
    fn the_context_holds_only_the_dockerfile() {
        let tar_bytes = context_tar("FROM x\n").unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile"]);
    }
}
