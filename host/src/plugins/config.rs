//! `plugins.toml`: which channel plugins to load, from where, with which settings.
//!
//! ```toml
//! search_paths = ["plugins"]            # optional, relative to this file's directory
//!
//! [plugins.telegram]                    # the instance name: the channel's name in ids
//! library = "telegram"                  # bare name, or a path (has `/`, or ends in .so/.dylib)
//! enabled = true                        # default true
//! required = false                      # default false: the daemon fails only for required ones
//! call_timeout_secs = 30                # default 30 (fractions allowed)
//! start_timeout_secs = 120              # default 120
//!
//! [plugins.telegram.settings]           # any TOML, passed to the plugin as JSON
//! bot_token = { env = "TELEGRAM_BOT_TOKEN" }
//! ```
//!
//! Structural mistakes (unknown keys, wrong types, bad instance names, bad timeouts) fail the
//! whole file with the TOML line and column. Per-plugin problems (library not found, a
//! literal secret, a missing environment variable) are load errors of that plugin only; see
//! [`super::settings`] and [`LibraryLocator`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::ids::ChannelName;

/// Default `call_timeout_secs`.
pub const DEFAULT_CALL_TIMEOUT_SECS: f64 = 30.0;
/// Default `start_timeout_secs`.
pub const DEFAULT_START_TIMEOUT_SECS: f64 = 120.0;
/// Longest timeout accepted (one day).
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// Environment variable with extra plugin directories (colon-separated), searched first.
pub const PLUGIN_PATH_ENV: &str = "NANOCLAW_PLUGIN_PATH";

/// A failure to read or parse `plugins.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the format. The message names the line
    /// and column.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and the offending snippet.
        message: String,
    },
}

/// A plugin instance name: the `[plugins.<name>]` key. It is the channel's name in ids and
/// routes (`telegram:123`, `/webhook/telegram`), so it follows [`ChannelName`]'s rules:
/// lower-case letters, digits, `-` and `_`, starting with a letter, at most 32. It also
/// names the instance's data directory and state namespace. Two instances of one plugin
/// (two Telegram bots) differ by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceName(ChannelName);

impl InstanceName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, String> {
        ChannelName::parse(name).map(Self).map_err(|_| {
            format!(
                "invalid plugin instance name `{name}`: it names the channel in ids, so use 1-32 \
                 lower-case letters, digits, `-` or `_`, starting with a letter (not `agent`)"
            )
        })
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    /// The channel this instance connects, as ids name it.
    pub fn channel(&self) -> &ChannelName {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InstanceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::new(&name).map_err(serde::de::Error::custom)
    }
}

fn default_true() -> bool {
    true
}

fn default_call_timeout() -> f64 {
    DEFAULT_CALL_TIMEOUT_SECS
}

fn default_start_timeout() -> f64 {
    DEFAULT_START_TIMEOUT_SECS
}

fn timeout_secs<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let secs = f64::deserialize(d)?;
    if secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT_SECS {
        Ok(secs)
    } else {
        Err(serde::de::Error::custom(format!(
            "timeout must be a number of seconds in (0, {MAX_TIMEOUT_SECS}], got {secs}"
        )))
    }
}

fn library_spec<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let spec = String::deserialize(d)?;
    if spec.trim().is_empty() {
        Err(serde::de::Error::custom("`library` must not be empty"))
    } else {
        Ok(spec)
    }
}

fn channel_spec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    crate::ids::ChannelName::parse(&name)
        .map(|_| Some(name))
        .map_err(|e| serde::de::Error::custom(format!("`channel`: {e}")))
}

/// The library of NanoClaw's own channels (plugins/channels), loaded once for all of them.
pub const CHANNELS_LIBRARY: &str = "channels";

fn default_library() -> String {
    CHANNELS_LIBRARY.to_owned()
}

/// One `[plugins.<instance>]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// Load this plugin (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A path (contains `/`, or ends in `.so`/`.dylib`; relative to plugins.toml's
    /// directory) or a bare name searched by [`LibraryLocator`]. Default: the first-party
    /// channels bundle, [`CHANNELS_LIBRARY`].
    #[serde(default = "default_library", deserialize_with = "library_spec")]
    pub library: String,
    /// The channel of a bundle this instance runs; default: the instance name. For a
    /// library of one channel, when given, it must be that channel.
    #[serde(default, deserialize_with = "channel_spec")]
    pub channel: Option<String>,
    /// A load or start failure of this plugin makes the daemon exit non-zero.
    #[serde(default)]
    pub required: bool,
    /// Timeout of each call into the plugin, in seconds.
    #[serde(default = "default_call_timeout", deserialize_with = "timeout_secs")]
    pub call_timeout_secs: f64,
    /// Timeout of `create` and `start`, in seconds.
    #[serde(default = "default_start_timeout", deserialize_with = "timeout_secs")]
    pub start_timeout_secs: f64,
    /// Settings passed to the plugin (as JSON, after secrets are resolved).
    #[serde(default)]
    pub settings: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    search_paths: Vec<PathBuf>,
    #[serde(default)]
    plugins: BTreeMap<InstanceName, PluginEntry>,
}

/// A parsed `plugins.toml`.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// The file it came from (`None` when parsed from a string).
    pub path: Option<PathBuf>,
    /// Directory that relative paths are resolved against.
    pub base_dir: PathBuf,
    /// `search_paths`, resolved against `base_dir`.
    pub search_paths: Vec<PathBuf>,
    /// Instances by name (loaded in name order).
    pub plugins: BTreeMap<InstanceName, PluginEntry>,
}

impl PluginsConfig {
    /// Reads and parses a file. Relative paths in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut config =
            Self::parse_str(&text, &base_dir).map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        config.path = Some(path.to_owned());
        Ok(config)
    }

    /// Parses TOML text; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        Self::parse_str(text, base_dir).map_err(|message| ConfigError::Parse {
            path: PathBuf::from("plugins.toml"),
            message,
        })
    }

    fn parse_str(text: &str, base_dir: &Path) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        Ok(Self {
            path: None,
            base_dir: base_dir.to_owned(),
            search_paths: raw
                .search_paths
                .into_iter()
                .map(|p| base_dir.join(p))
                .collect(),
            plugins: raw.plugins,
        })
    }

    /// Where to look for libraries named by a bare name: `$NANOCLAW_PLUGIN_PATH`, then
    /// `search_paths`, then the running executable's directory.
    pub fn locator(&self) -> LibraryLocator {
        LibraryLocator::from_env(self.search_paths.clone())
    }
}

/// Finds plugin libraries.
#[derive(Debug, Clone, Default)]
pub struct LibraryLocator {
    /// Directories searched, in order.
    pub dirs: Vec<PathBuf>,
}

/// A library that could not be found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin library `{name}` not found: looked for {} in {}{}", candidates.join(", "), fmt_dirs(dirs), hint(name))]
pub struct LibraryNotFound {
    /// The bare name from `library`.
    pub name: String,
    /// File names tried.
    pub candidates: Vec<String>,
    /// Directories searched.
    pub dirs: Vec<PathBuf>,
}

/// The channels of the [`CHANNELS_LIBRARY`] bundle.
pub const FIRST_PARTY_CHANNELS: [&str; 11] = [
    "cli", "discord", "gchat", "imessage", "matrix", "resend", "slack", "teams", "telegram",
    "webex", "whatsapp",
];

/// Where to look when a library is missing: NanoClaw's own channels are not libraries of
/// their own.
fn hint(name: &str) -> String {
    if name == CHANNELS_LIBRARY {
        " (build it with `cargo build --release -p nanoclaw-plugin-channels`)".to_owned()
    } else if !FIRST_PARTY_CHANNELS.contains(&name) {
        String::new()
    } else {
        format!(
            " (NanoClaw's own channels are in the `{CHANNELS_LIBRARY}` library: leave out \
             `library` for the {name:?} channel, or write library = \"{CHANNELS_LIBRARY}\")"
        )
    }
}

fn fmt_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directories (set NANOCLAW_PLUGIN_PATH or search_paths)".to_owned();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl LibraryLocator {
    /// `$NANOCLAW_PLUGIN_PATH` (colon-separated), then `search_paths`, then the directory of
    /// the running executable (so `target/debug/nanoclaw` finds `target/debug/lib*.so`).
    pub fn from_env(search_paths: Vec<PathBuf>) -> Self {
        let env_dirs = std::env::var_os(PLUGIN_PATH_ENV)
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned));
        Self::new(env_dirs, search_paths, exe_dir)
    }

    /// An explicit search order.
    pub fn new(
        env_dirs: Vec<PathBuf>,
        search_paths: Vec<PathBuf>,
        exe_dir: Option<PathBuf>,
    ) -> Self {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for dir in env_dirs.into_iter().chain(search_paths).chain(exe_dir) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        Self { dirs }
    }

    /// True when `library` is a path rather than a bare name.
    pub fn is_path(library: &str) -> bool {
        library.contains('/')
            || library.contains(std::path::MAIN_SEPARATOR)
            || library.ends_with(".so")
            || library.ends_with(".dylib")
            || library.ends_with(".dll")
    }

    /// File names tried for a bare name: `lib<name>.so`, then `libnanoclaw_plugin_<name>.so`
    /// (with `-` as `_`, as cargo names libraries).
    pub fn candidates(name: &str) -> Vec<String> {
        use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
        let underscored = name.replace('-', "_");
        let mut out = vec![format!("{DLL_PREFIX}{name}{DLL_SUFFIX}")];
        if underscored != name {
            out.push(format!("{DLL_PREFIX}{underscored}{DLL_SUFFIX}"));
        }
        out.push(format!(
            "{DLL_PREFIX}nanoclaw_plugin_{underscored}{DLL_SUFFIX}"
        ));
        out
    }

    /// Resolves a `library` value. Paths are returned as given (relative ones joined to
    /// `base_dir`) whether or not they exist; the loader reports a missing file. Bare names
    /// must be found in one of the directories.
    pub fn resolve(&self, library: &str, base_dir: &Path) -> Result<PathBuf, LibraryNotFound> {
        if Self::is_path(library) {
            return Ok(base_dir.join(library));
        }
        let candidates = Self::candidates(library);
        for dir in &self.dirs {
            for file in &candidates {
                let path = dir.join(file);
                if path.is_file() {
                    return Ok(path);
                }
            }
        }
        Err(LibraryNotFound {
            name: library.to_owned(),
            candidates,
            dirs: self.dirs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PluginsConfig, String> {
        PluginsConfig::parse(text, Path::new("/etc/nanoclaw")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_example_parses_with_defaults() {
        let cfg = parse(
            r#"
            search_paths = ["lib", "/opt/plugins"]
            [plugins.tg]
            library = "telegram"
            [plugins.tg.settings]
            bot_token = { env = "TELEGRAM_BOT_TOKEN" }
            api_base_url = "http://127.0.0.1:9"
            [plugins.cli]
            library = "./libcli.so"
            enabled = false
            required = true
            call_timeout_secs = 2.5
            start_timeout_secs = 10
            "#,
        )
        .expect("parses");
        assert_eq!(
            cfg.search_paths,
            [
                PathBuf::from("/etc/nanoclaw/lib"),
                PathBuf::from("/opt/plugins")
            ]
        );
        let names: Vec<_> = cfg.plugins.keys().map(InstanceName::as_str).collect();
        assert_eq!(names, ["cli", "tg"]);
        let tg = &cfg.plugins[&InstanceName::new("tg").expect("name")];
        assert!(tg.enabled && !tg.required);
        assert_eq!(tg.call_timeout_secs, DEFAULT_CALL_TIMEOUT_SECS);
        assert_eq!(tg.start_timeout_secs, DEFAULT_START_TIMEOUT_SECS);
        assert_eq!(tg.settings.len(), 2);
        let cli = &cfg.plugins[&InstanceName::new("cli").expect("name")];
        assert!(!cli.enabled && cli.required);
        assert_eq!(cli.call_timeout_secs, 2.5);
        assert_eq!(cli.start_timeout_secs, 10.0);
    }

    #[test]
    fn empty_file_is_no_plugins() {
        assert!(parse("").expect("parses").plugins.is_empty());
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = parse("[plugins.tg]\nlibrary = \"x\"\nenabeld = true\n").expect_err("typo");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("enabeld"), "{err}");

        let err =
            parse("[plugins.tg]\nlibrary = \"x\"\ncall_timeout_secs = -1\n").expect_err("neg");
        assert!(err.contains("line 3") && err.contains("timeout"), "{err}");

        let err = parse("[plugins.\"../evil\"]\nlibrary = \"x\"\n").expect_err("name");
        assert!(err.contains("invalid plugin instance name"), "{err}");
        // Instance names are channel names: ids and webhook paths are built from them.
        for bad in [
            "Telegram",
            "agent",
            "1tg",
            "an-instance-name-longer-than-32-chars",
        ] {
            let err = parse(&format!("[plugins.{bad}]\nlibrary = \"x\"\n")).expect_err(bad);
            assert!(err.contains("invalid plugin instance name"), "{bad}: {err}");
        }
        assert!(parse("[plugins.tg-work_2]\nlibrary = \"x\"\n").is_ok());

        // No library: NanoClaw's own channels; no channel: the instance name.
        let config = parse("[plugins.tg]\nenabled = true\n").expect("no library");
        let entry = &config.plugins[&InstanceName::new("tg").expect("name")];
        assert_eq!(entry.library, CHANNELS_LIBRARY);
        assert_eq!(entry.channel, None);
        let err = parse("[plugins.tg]\nchannel = \"Tele gram\"\n").expect_err("bad channel");
        assert!(err.contains("`channel`"), "{err}");

        let err = parse("[plugins.tg]\nlibrary = \"\"\n").expect_err("empty library");
        assert!(err.contains("must not be empty"), "{err}");

        let err = parse("serach_paths = []\n").expect_err("top-level typo");
        assert!(err.contains("serach_paths"), "{err}");
    }

    #[test]
    fn load_reports_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plugins.toml");
        let err = PluginsConfig::load(&path).expect_err("missing");
        assert!(matches!(err, ConfigError::Read { .. }));
        std::fs::write(&path, "[plugins.a]\nlibrary = \"libs/liba.so\"\n").expect("write");
        let cfg = PluginsConfig::load(&path).expect("loads");
        assert_eq!(cfg.base_dir, dir.path());
        assert_eq!(cfg.path.as_deref(), Some(path.as_path()));
        std::fs::write(&path, "[plugins.a\n").expect("write");
        let err = PluginsConfig::load(&path)
            .expect_err("bad toml")
            .to_string();
        assert!(
            err.starts_with(&path.display().to_string()) && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn library_resolution_order() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let exe = tempfile::tempdir().expect("tempdir");
        std::fs::write(b.path().join("libnanoclaw_plugin_tg.so"), b"x").expect("write");
        std::fs::write(exe.path().join("libtg.so"), b"x").expect("write");
        std::fs::write(exe.path().join("libnanoclaw_plugin_only_exe.so"), b"x").expect("write");
        let loc = LibraryLocator::new(
            vec![a.path().to_owned()],
            vec![b.path().to_owned()],
            Some(exe.path().to_owned()),
        );
        // Directory order wins over candidate order.
        assert_eq!(
            loc.resolve("tg", Path::new("/base")).expect("found"),
            b.path().join("libnanoclaw_plugin_tg.so")
        );
        assert_eq!(
            loc.resolve("only-exe", Path::new("/base")).expect("found"),
            exe.path().join("libnanoclaw_plugin_only_exe.so")
        );
        let err = loc
            .resolve("nope", Path::new("/base"))
            .expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("libnope.so, libnanoclaw_plugin_nope.so"),
            "{msg}"
        );
        assert!(msg.contains(&a.path().display().to_string()), "{msg}");
        // Paths are not searched.
        assert_eq!(
            loc.resolve("x/liby.so", Path::new("/base")).expect("path"),
            PathBuf::from("/base/x/liby.so")
        );
        assert_eq!(
            loc.resolve("/abs/libz.so", Path::new("/base"))
                .expect("path"),
            PathBuf::from("/abs/libz.so")
        );
        assert!(LibraryLocator::is_path("libq.so") && !LibraryLocator::is_path("telegram"));
    }
}
