//! The stable plugin boundary between the NanoClaw host and its channel adapters.
//!
//! A channel adapter is a `cdylib` built against this crate. The crate's version is the
//! plugin ABI version ([`ABI_VERSION`]); the host accepts a plugin whose ABI version is
//! semver-compatible with its own (`^host`: same major, same or newer minor).
//!
//! * [`abi`]: the FFI types (all `#[repr(C)]` + [`StableAbi`](abi_stable::StableAbi)), the
//!   root module [`abi::PluginModRef`] and the two `#[sabi_trait]`s: [`abi::ChannelAdapter`]
//!   (implemented by plugins) and [`abi::HostServices`] (implemented by the host).
//! * [`kit`] (feature `kit`, on by default): what a plugin author uses. Implement
//!   [`kit::Channel`] and call [`export_plugin!`]; the kit generates the root module, the ABI
//!   marker and panic guards around every entry point, and implements `prepare` (render and
//!   split outbound text) from [`kit::Channel::render`]. Feature `kit-render` adds the
//!   Markdown renderer (`kit::render`, pulldown-cmark), which the host does not need.
//! * The ABI marker ([`ABI_MARKER`], [`ABI_SECTION_ELF`]): a 64-byte string placed in its own
//!   link section so the host can read a library's ABI version from the file, before any of
//!   its code runs.
#![allow(non_local_definitions)] // #[sabi_trait] expansions on rustc >= 1.80
#![warn(missing_docs)]

pub mod abi;
#[cfg(feature = "kit")]
pub mod kit;

/// Re-exported so plugin crates need no direct dependency on `abi_stable`
/// (the [`export_plugin!`] expansion refers to it as `$crate::abi_stable`).
pub use abi_stable;

/// The plugin ABI version: the version of this crate.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Prefix of the ABI marker string: `nanoclaw-plugin-abi=<version>`.
pub const ABI_MARKER_PREFIX: &str = "nanoclaw-plugin-abi=";

/// Size in bytes of the ABI marker (the string, NUL-padded).
pub const ABI_MARKER_LEN: usize = 64;

/// The ABI marker that [`export_plugin!`] places in the plugin's ABI section:
/// `nanoclaw-plugin-abi=<ABI_VERSION>`, NUL-padded to [`ABI_MARKER_LEN`] bytes.
pub const ABI_MARKER: [u8; ABI_MARKER_LEN] = build_marker(ABI_VERSION);

/// Name of the ABI marker's section in an ELF shared object.
pub const ABI_SECTION_ELF: &str = ".nanoclaw_abi";
/// Segment of the ABI marker's section in a Mach-O dylib.
pub const ABI_SEGMENT_MACHO: &str = "__DATA";
/// Name of the ABI marker's section in a Mach-O dylib (segment [`ABI_SEGMENT_MACHO`]).
pub const ABI_SECTION_MACHO: &str = "__nanoclaw_abi";
/// Name of the ABI marker's section in a PE DLL (at most 8 bytes).
pub const ABI_SECTION_PE: &str = ".ncabi";

/// Builds a marker for `version` at compile time (the version must fit in the 64 bytes with
/// at least one trailing NUL).
pub const fn build_marker(version: &str) -> [u8; ABI_MARKER_LEN] {
    let prefix = ABI_MARKER_PREFIX.as_bytes();
    let version = version.as_bytes();
    assert!(
        prefix.len() + version.len() < ABI_MARKER_LEN,
        "ABI version string too long for the marker"
    );
    let mut out = [0u8; ABI_MARKER_LEN];
    let mut i = 0;
    while i < prefix.len() {
        out[i] = prefix[i];
        i += 1;
    }
    let mut j = 0;
    while j < version.len() {
        out[i + j] = version[j];
        j += 1;
    }
    out
}

/// Finds the ABI marker in the raw bytes of an ABI section and returns the version string.
///
/// The section may hold padding before the marker; the version ends at the first NUL (or at
/// the end of the 64-byte marker). Returns `None` when there is no well-formed marker.
pub fn parse_abi_marker(section: &[u8]) -> Option<&str> {
    let prefix = ABI_MARKER_PREFIX.as_bytes();
    let start = section.windows(prefix.len()).position(|w| w == prefix)?;
    let marker = &section[start..section.len().min(start + ABI_MARKER_LEN)];
    let value = &marker[prefix.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    let version = std::str::from_utf8(&value[..end]).ok()?;
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
    {
        return None;
    }
    Some(version)
}

/// The exported name of abi_stable's `LibHeader` static, which [`export_plugin!`] writes out
/// by hand (abi_stable's own `#[export_root_module]` refers to `::abi_stable`, which plugin
/// crates need not depend on). Checked against abi_stable at compile time below.
#[doc(hidden)]
pub const ROOT_MODULE_LOADER_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = assert!(
    str_eq(
        ROOT_MODULE_LOADER_SYMBOL,
        abi_stable::library::ROOT_MODULE_LOADER_NAME
    ),
    "abi_stable changed the root module loader symbol: update export_plugin!"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips() {
        assert_eq!(parse_abi_marker(&ABI_MARKER), Some(ABI_VERSION));
        assert!(ABI_MARKER.starts_with(b"nanoclaw-plugin-abi=1."));
        assert_eq!(ABI_MARKER[ABI_MARKER_LEN - 1], 0);
    }

    #[test]
    fn marker_is_found_after_padding_and_rejects_garbage() {
        let mut section = vec![0u8; 16];
        section.extend_from_slice(&build_marker("1.4.2"));
        assert_eq!(parse_abi_marker(&section), Some("1.4.2"));
        assert_eq!(parse_abi_marker(b"nothing here"), None);
        assert_eq!(parse_abi_marker(b"nanoclaw-plugin-abi=\0\0"), None);
        assert_eq!(parse_abi_marker(b"nanoclaw-plugin-abi=1.0 0\0"), None);
        // Truncated section: version runs to the end.
        assert_eq!(
            parse_abi_marker(b"nanoclaw-plugin-abi=2.1.0"),
            Some("2.1.0")
        );
    }

    #[test]
    fn marker_version_is_this_crate() {
        assert_eq!(ABI_VERSION, env!("CARGO_PKG_VERSION"));
    }
}
