//! Builds the real plugin cdylibs (`nanoclaw-test-plugin`, `nanoclaw-plugin-example`) once
//! per process and finds them under the target directory (honouring `CARGO_TARGET_DIR`).
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Profile {
    Debug,
    Release,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Builds `packages` of this workspace with the test process's cargo, into the shared target
/// dir, and returns the profile's output directory.
pub fn cargo_build(packages: &[&str], profile: Profile) -> PathBuf {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir());
    for p in packages {
        cmd.args(["-p", p]);
    }
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run cargo build for {packages:?}: {e}"));
    assert!(
        out.status.success(),
        "building {packages:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir().join(match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    })
}

fn build(profile: Profile) -> PathBuf {
    let dir = cargo_build(
        &[
            "nanoclaw-test-plugin",
            "nanoclaw-plugin-example",
            "nanoclaw-plugin-channels",
        ],
        profile,
    );
    for lib in [
        "libnanoclaw_test_plugin.so",
        "libnanoclaw_plugin_example.so",
        "libnanoclaw_plugin_channels.so",
    ] {
        assert!(
            dir.join(lib).is_file(),
            "{lib} missing in {}",
            dir.display()
        );
    }
    dir
}

/// The directory holding freshly built plugin libraries.
pub fn plugin_dir(profile: Profile) -> &'static Path {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    match profile {
        Profile::Debug => DEBUG.get_or_init(|| build(profile)),
        Profile::Release => RELEASE.get_or_init(|| build(profile)),
    }
}

pub fn test_plugin(profile: Profile) -> PathBuf {
    plugin_dir(profile).join("libnanoclaw_test_plugin.so")
}

pub fn example_plugin(profile: Profile) -> PathBuf {
    plugin_dir(profile).join("libnanoclaw_plugin_example.so")
}

/// Copies `lib` into `dir` under `name` with its ABI marker rewritten to `version`.
/// Returns the copy's path.
pub fn copy_with_marker(lib: &Path, dir: &Path, name: &str, version: &str) -> PathBuf {
    let mut bytes = std::fs::read(lib).expect("read plugin");
    let from = nanoclaw_plugin_api::ABI_MARKER;
    let to = nanoclaw_plugin_api::build_marker(version);
    let mut patched = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(&to);
            patched += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(patched > 0, "no ABI marker found in {}", lib.display());
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write patched copy");
    path
}

/// True if `path` is mapped into this process (i.e. it was dlopened).
pub fn is_mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    maps.lines()
        .any(|line| line.ends_with(&*path.to_string_lossy()))
}
