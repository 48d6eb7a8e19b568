//! Opening plugin libraries.
//!
//! Order of checks, each with one clear error:
//! 1. [`inspect`]: read the file with the `object` crate (no `dlopen`, no plugin code runs):
//!    is it a shared library for this architecture with a NanoClaw ABI marker?
//! 2. [`check_abi`]: is the marker's version `^MAJOR.MINOR` of the host's plugin-api? (A host
//!    built on a newer minor rejects older plugins: abi_stable's layout check refuses prefix
//!    types that gained fields. Such plugins must be rebuilt.)
//! 3. `lib_header_from_path` + `init_root_module::<PluginModRef>()`: abi_stable's own
//!    version and layout checks. From here on the library is mapped for good: it is never
//!    unloaded, even when a check fails (its static constructors have run and abi_stable
//!    leaks the handle), which is why 1 and 2 come first.
//! 4. The manifest is read and validated. A bundle (ABI 1.2: one library, several channels,
//!    see `export_channels!`) lists one manifest per channel; the instance gets the one of
//!    the channel it names (`channel = "…"`, by default its instance name).
//!
//! `create` is a separate step ([`PluginLibrary::create`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use abi_stable::library::{LibraryError, RootModuleError, lib_header_from_path};
use nanoclaw_plugin_api::abi::{
    Capabilities, ChannelAdapterBox, ErrorKind, HostServicesBox, Manifest, PluginConfig,
    PluginError, PluginModRef,
};
use nanoclaw_plugin_api::{
    ABI_SECTION_ELF, ABI_SECTION_MACHO, ABI_SECTION_PE, ABI_VERSION, parse_abi_marker,
};
use object::{Object as _, ObjectSection as _};
use semver::Version;

/// Why a plugin could not be loaded. One line each (`Display`); [`LoadError::detail`] has
/// more where there is more.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad settings (literal secret, missing environment variable, …).
    #[error(transparent)]
    Settings(#[from] super::settings::SettingsError),
    /// A bare library name found in no search directory.
    #[error(transparent)]
    NotFound(#[from] super::config::LibraryNotFound),
    /// The library path does not exist.
    #[error("plugin library {} does not exist", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read plugin library {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a NanoClaw plugin (not a shared library, or no ABI marker).
    #[error("{} is not a NanoClaw plugin: {reason}", path.display())]
    NotAPlugin {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plugin's ABI version is not compatible with the host's.
    #[error(transparent)]
    AbiIncompatible(Box<AbiMismatch>),
    /// abi_stable refused the library (header, version or type layout). `summary` holds the
    /// last lines of abi_stable's (very long) report; `detail` all of it.
    #[error("abi_stable rejected {}: {summary}", path.display())]
    Abi {
        /// The path.
        path: PathBuf,
        /// Last lines of the report.
        summary: String,
        /// The whole report.
        detail: String,
    },
    /// A bundle that does not carry the channel the instance names.
    #[error(
        "{} carries no channel {wanted:?} (it carries {available}); name one with \
         channel = \"…\" in this instance's table",
        path.display()
    )]
    NoSuchChannel {
        /// The path.
        path: PathBuf,
        /// The channel asked for.
        wanted: String,
        /// The channels it has, comma-separated.
        available: String,
    },
    /// A library of one channel, which is not the one the instance names.
    #[error("{} is the {actual:?} channel, not {wanted:?}", path.display())]
    WrongChannel {
        /// The path.
        path: PathBuf,
        /// The channel asked for.
        wanted: String,
        /// The one it is.
        actual: String,
    },
    /// The manifest is unusable.
    #[error("{} has an invalid manifest: {reason}", path.display())]
    InvalidManifest {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `create` returned an error.
    #[error("create() failed: {0}")]
    Create(PluginError),
    /// The plugin panicked (caught at the boundary).
    #[error("plugin panicked in {entry}: {message}")]
    Panicked {
        /// Which entry point.
        entry: &'static str,
        /// The panic message.
        message: String,
    },
    /// `create` did not return in time. Its thread cannot be stopped and stays blocked.
    #[error(
        "create() did not return within {0:?}; the plugin is skipped (its thread stays blocked)"
    )]
    Timeout(std::time::Duration),
    /// Could not create the instance's data directory.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An internal failure of the host while loading (a worker thread died).
    #[error("internal error while loading: {0}")]
    Internal(String),
}

/// Details of [`LoadError::AbiIncompatible`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` ({}) was built against nanoclaw-plugin-api {plugin_abi}, but this nanoclaw speaks {host_abi}: {remedy}", path.display())]
pub struct AbiMismatch {
    /// Instance name.
    pub plugin: String,
    /// The path.
    pub path: PathBuf,
    /// The plugin's ABI version (from its marker).
    pub plugin_abi: Version,
    /// The host's ABI version.
    pub host_abi: Version,
    /// What to do.
    pub remedy: String,
}

impl LoadError {
    /// The long form, where there is one (abi_stable's full report).
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Abi { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// The host's plugin ABI version (the `nanoclaw-plugin-api` it was built with).
pub fn host_abi_version() -> &'static Version {
    static VERSION: OnceLock<Version> = OnceLock::new();
    VERSION.get_or_init(|| {
        // A compile-time constant from our own Cargo.toml; tested below.
        Version::parse(ABI_VERSION).unwrap_or_else(|e| panic!("ABI_VERSION {ABI_VERSION}: {e}"))
    })
}

/// Reads a library's ABI version from its marker section, without loading it.
pub fn inspect(path: &Path) -> Result<Version, LoadError> {
    // Read only the headers and the marker section, not the whole (often tens of MB) file.
    let handle = std::fs::File::open(path).map_err(|source| io_error(path, source))?;
    let not_a_plugin = |reason: String| LoadError::NotAPlugin {
        path: path.to_owned(),
        reason,
    };
    let data = object::read::ReadCache::new(handle);
    let file = object::File::parse(&data)
        .map_err(|e| not_a_plugin(format!("not a shared library ({e})")))?;
    if file.kind() != object::ObjectKind::Dynamic {
        return Err(not_a_plugin(format!(
            "a {:?} object file, not a shared library",
            file.kind()
        )));
    }
    if let Some(host_arch) = host_architecture()
        && file.architecture() != host_arch
    {
        return Err(not_a_plugin(format!(
            "built for {:?}, this host is {host_arch:?}",
            file.architecture()
        )));
    }
    let section_name = match file.format() {
        object::BinaryFormat::Elf => ABI_SECTION_ELF,
        object::BinaryFormat::MachO => ABI_SECTION_MACHO,
        object::BinaryFormat::Pe => ABI_SECTION_PE,
        other => return Err(not_a_plugin(format!("unsupported format {other:?}"))),
    };
    let section = file.section_by_name(section_name).ok_or_else(|| {
        not_a_plugin(format!(
            "no ABI marker section `{section_name}` (plugins are built with nanoclaw_plugin_api::export_plugin!)"
        ))
    })?;
    let bytes = section
        .data()
        .map_err(|e| not_a_plugin(format!("unreadable ABI marker section: {e}")))?;
    let marker =
        parse_abi_marker(bytes).ok_or_else(|| not_a_plugin("malformed ABI marker".to_owned()))?;
    Version::parse(marker)
        .map_err(|e| not_a_plugin(format!("ABI marker has an invalid version `{marker}`: {e}")))
}

fn host_architecture() -> Option<object::Architecture> {
    use object::Architecture as A;
    Some(match std::env::consts::ARCH {
        "x86_64" => A::X86_64,
        "aarch64" => A::Aarch64,
        "x86" => A::I386,
        "arm" => A::Arm,
        "riscv64" => A::Riscv64,
        "powerpc64" => A::PowerPc64,
        "s390x" => A::S390x,
        "loongarch64" => A::LoongArch64,
        _ => return None,
    })
}

/// Checks a plugin's ABI version against the host's: compatible when it matches
/// `^host.major.host.minor` (same major, same or newer minor; patch ignored, as patch
/// releases of plugin-api never change the layout).
pub fn check_abi(
    plugin: &str,
    path: &Path,
    plugin_abi: &Version,
    host_abi: &Version,
) -> Result<(), LoadError> {
    let compatible = plugin_abi.pre.is_empty()
        && plugin_abi.major == host_abi.major
        && (plugin_abi.major > 0 && plugin_abi.minor >= host_abi.minor
            || plugin_abi.major == 0 && plugin_abi.minor == host_abi.minor);
    if compatible {
        return Ok(());
    }
    let rebuild = format!(
        "rebuild plugin `{plugin}` against nanoclaw-plugin-api {}.{}",
        host_abi.major, host_abi.minor
    );
    let remedy = if plugin_abi.major > host_abi.major
        || plugin_abi.major == host_abi.major && plugin_abi.minor > host_abi.minor
    {
        format!(
            "upgrade nanoclaw to a release built on nanoclaw-plugin-api {plugin_abi}, or {rebuild}"
        )
    } else {
        rebuild
    };
    Err(LoadError::AbiIncompatible(Box::new(AbiMismatch {
        plugin: plugin.to_owned(),
        path: path.to_owned(),
        plugin_abi: plugin_abi.clone(),
        host_abi: host_abi.clone(),
        remedy,
    })))
}

/// A plugin's manifest as owned Rust values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginManifest {
    /// Human label.
    pub name: String,
    /// The kind of platform the plugin speaks (`telegram`); instances of one plugin share it.
    pub channel_type: String,
    /// Plugin version.
    pub version: String,
    /// ABI version the plugin declares.
    pub abi_version: String,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// Maximum text length per message, if limited, in the unit the manifest's
    /// `extra_json` names (`text_unit`: `chars`, `utf16`, `bytes`; `chars` when absent).
    pub max_text_length: Option<u32>,
    /// One-line description.
    pub description: String,
    /// Extra JSON (`""` = none).
    pub extra_json: String,
}

impl PluginManifest {
    fn from_abi(m: Manifest, path: &Path) -> Result<Self, LoadError> {
        let invalid = |reason: String| LoadError::InvalidManifest {
            path: path.to_owned(),
            reason,
        };
        let channel_type = m.channel_type.into_string();
        // The same rule as everywhere else in the host (lower-case, `agent` reserved).
        if let Err(e) = crate::ids::ChannelName::parse(&channel_type) {
            return Err(invalid(e.to_string()));
        }
        let name = m.name.into_string();
        if name.trim().is_empty() {
            return Err(invalid("empty name".to_owned()));
        }
        Ok(Self {
            name,
            channel_type,
            version: m.version.into_string(),
            abi_version: m.abi_version.into_string(),
            capabilities: m.capabilities,
            max_text_length: (m.max_text_length > 0).then_some(m.max_text_length),
            description: m.description.into_string(),
            extra_json: m.extra_json.into_string(),
        })
    }
}

/// A loaded (and never unloaded) plugin library.
#[derive(Clone)]
pub struct PluginLibrary {
    /// Canonical path.
    pub path: PathBuf,
    /// ABI version from the marker.
    pub abi: Version,
    /// The manifest of the instance's channel.
    pub manifest: PluginManifest,
    /// Every channel of a bundle (empty for a library of one channel).
    pub bundled: Vec<PluginManifest>,
    module: PluginModRef,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("abi", &self.abi)
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// Inspects, checks and loads a library for instance `plugin` (also used in messages).
/// `channel` names the channel the instance wants: required to match a library of one
/// channel when given; picks the channel of a bundle, by default the instance name.
pub fn open(plugin: &str, path: &Path, channel: Option<&str>) -> Result<PluginLibrary, LoadError> {
    let path = std::fs::canonicalize(path).map_err(|source| io_error(path, source))?;
    let abi = inspect(&path)?;
    check_abi(plugin, &path, &abi, host_abi_version())?;

    let module = lib_header_from_path(&path)
        .and_then(|header| header.init_root_module::<PluginModRef>())
        .map_err(|e| library_error(&path, e))?;
    let bundled = module
        .channels()
        .map(|list| list().into_iter())
        .into_iter()
        .flatten()
        .map(|m| PluginManifest::from_abi(m, &path))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = if bundled.is_empty() {
        let manifest = PluginManifest::from_abi((module.manifest())(), &path)?;
        match channel {
            Some(wanted) if wanted != manifest.channel_type => {
                return Err(LoadError::WrongChannel {
                    path,
                    wanted: wanted.to_owned(),
                    actual: manifest.channel_type,
                });
            }
            _ => manifest,
        }
    } else {
        let wanted = channel.unwrap_or(plugin);
        match bundled.iter().find(|m| m.channel_type == wanted) {
            Some(m) => m.clone(),
            None => {
                let available = bundled
                    .iter()
                    .map(|m| m.channel_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(LoadError::NoSuchChannel {
                    path,
                    wanted: wanted.to_owned(),
                    available,
                });
            }
        }
    };
    if manifest.abi_version != abi.to_string() {
        return Err(LoadError::InvalidManifest {
            path,
            reason: format!(
                "manifest says ABI {} but the marker says {abi}",
                manifest.abi_version
            ),
        });
    }
    Ok(PluginLibrary {
        path,
        abi,
        manifest,
        bundled,
        module,
    })
}

/// How many trailing lines of an abi_stable report go into the one-line summary.
const SUMMARY_LINES: usize = 3;

/// A missing file is its own error (the fix differs: build or install the plugin).
fn io_error(path: &Path, source: std::io::Error) -> LoadError {
    match source.kind() {
        std::io::ErrorKind::NotFound => LoadError::Missing {
            path: path.to_owned(),
        },
        _ => LoadError::Io {
            path: path.to_owned(),
            source,
        },
    }
}

fn library_error(path: &Path, error: LibraryError) -> LoadError {
    match error {
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => LoadError::Panicked {
            entry: "the root module constructor",
            message: "panic while building the root module".to_owned(),
        },
        other => {
            let detail = other.to_string();
            LoadError::Abi {
                path: path.to_owned(),
                summary: summarize(&detail),
                detail,
            }
        }
    }
}

/// The last few non-empty lines of a long report, joined with ` / `.
pub fn summarize(report: &str) -> String {
    let lines: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(SUMMARY_LINES);
    let summary = lines[start..].join(" / ");
    if summary.is_empty() {
        "(no details)".to_owned()
    } else {
        summary
    }
}

impl PluginLibrary {
    /// Calls the plugin's `create`. Blocking: run it off async workers.
    pub fn create(
        &self,
        config: PluginConfig,
        services: HostServicesBox,
    ) -> Result<ChannelAdapterBox, LoadError> {
        let created = if self.bundled.is_empty() {
            (self.module.create())(config, services)
        } else {
            // A bundle has `create_channel`: its `channels` list (ABI 1.2) made it a bundle.
            let Some(create) = self.module.create_channel() else {
                return Err(LoadError::Internal(
                    "a bundle without create_channel".to_owned(),
                ));
            };
            create(self.manifest.channel_type.as_str().into(), config, services)
        };
        match created.into_result() {
            Ok(adapter) => Ok(adapter),
            Err(e) if e.kind == ErrorKind::PANICKED => Err(LoadError::Panicked {
                entry: "create()",
                message: e.message.into_string(),
            }),
            Err(e) => Err(LoadError::Create(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    fn check(plugin: &str, host: &str) -> Result<(), String> {
        check_abi("tg", Path::new("/p/libtg.so"), &v(plugin), &v(host)).map_err(|e| e.to_string())
    }

    #[test]
    fn host_version_is_this_api() {
        assert_eq!(host_abi_version().to_string(), ABI_VERSION);
    }

    #[test]
    fn abi_rule_is_caret_major_minor() {
        assert!(check("1.0.0", "1.0.0").is_ok());
        assert!(check("1.0.0", "1.0.7").is_ok(), "patch is ignored");
        assert!(check("1.3.0", "1.1.0").is_ok(), "newer minor plugin loads");
        assert!(check("0.4.1", "0.4.0").is_ok());

        let older = check("1.0.0", "1.1.0").expect_err("older minor");
        assert!(
            older.contains("rebuild plugin `tg` against nanoclaw-plugin-api 1.1"),
            "{older}"
        );
        assert!(!older.contains("upgrade"), "{older}");
        let old_major = check("0.9.0", "1.0.0").expect_err("older major");
        assert!(
            old_major.contains("built against nanoclaw-plugin-api 0.9.0"),
            "{old_major}"
        );
        assert!(old_major.contains("rebuild plugin `tg` against nanoclaw-plugin-api 1.0"));
        let newer = check("2.0.0", "1.0.0").expect_err("newer major");
        assert!(newer.contains("upgrade nanoclaw"), "{newer}");
        assert!(
            check("0.5.0", "0.4.0")
                .expect_err("0.x minor")
                .contains("upgrade nanoclaw")
        );
        assert!(
            check("1.1.0-rc.1", "1.0.0").is_err(),
            "pre-releases never match"
        );
    }

    #[test]
    fn summary_keeps_the_last_lines() {
        assert_eq!(summarize("a\n\n b \nc\nd\n"), "b / c / d");
        assert_eq!(summarize("\n \n"), "(no details)");
    }

    #[test]
    fn inspect_rejects_files_that_are_not_plugins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("notes.so");
        std::fs::write(&text, "just text").expect("write");
        assert!(matches!(inspect(&text), Err(LoadError::NotAPlugin { .. })));
        assert!(matches!(
            inspect(&dir.path().join("absent.so")),
            Err(LoadError::Missing { .. })
        ));
        // The running test executable is an object file but not a shared library (or a
        // PIE without our marker): either way, not a plugin.
        let exe = std::env::current_exe().expect("exe");
        assert!(matches!(inspect(&exe), Err(LoadError::NotAPlugin { .. })));
    }
}
