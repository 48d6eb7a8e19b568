//! The repository's plugins.toml is documentation operators copy: keep it valid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nanoclaw::config::secrets::SecretSource;
use nanoclaw::plugins::settings::resolve_settings;
use nanoclaw::plugins::{PluginsConfig, SettingsError};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins.toml")
}

#[test]
fn shipped_plugins_toml_enables_only_cli() {
    let config = PluginsConfig::load(&shipped()).expect("plugins.toml parses");
    let enabled: Vec<&str> = config
        .plugins
        .iter()
        .filter(|(_, e)| e.enabled)
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(enabled, ["cli"]);
    // Every channel NanoClaw ships is there, disabled until configured.
    let names: Vec<&str> = config.plugins.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, nanoclaw::plugins::config::FIRST_PARTY_CHANNELS);
}

#[test]
fn commented_channels_are_valid_when_uncommented() {
    let text = std::fs::read_to_string(shipped()).expect("read plugins.toml");
    let (head, channels) = text.split_once("[plugins.cli]").expect("cli table");
    let uncommented: String = channels
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let full = format!("{head}[plugins.cli]{uncommented}");
    let config = PluginsConfig::parse(&full, Path::new(".")).expect("uncommented file parses");
    let names: Vec<&str> = config.plugins.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, nanoclaw::plugins::config::FIRST_PARTY_CHANNELS);

    // No literal secrets: with an empty environment, the only possible error is a missing
    // variable.
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = SecretSource::with_vars(dir.path(), HashMap::new());
    for (name, entry) in &config.plugins {
        match resolve_settings(name.as_str(), &entry.settings, &secrets) {
            Ok(_) | Err(SettingsError::MissingEnv { .. }) => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
