//! Embeds every `central/NNN_name.sql` file, in order, into the crate.

use std::{env, fmt::Write, fs, path::Path};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("central");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(u32, String, String)> = Vec::new();
    for entry in fs::read_dir(&dir).expect("read migrations/central") {
        let path = entry.expect("dir entry").path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".sql") else {
            continue;
        };
        let (num, name) = stem
            .split_once('_')
            .unwrap_or_else(|| panic!("migration {file} must be named NNN_name.sql"));
        let version: u32 = num
            .parse()
            .unwrap_or_else(|_| panic!("migration {file} must start with a number"));
        files.push((version, name.to_string(), path.display().to_string()));
    }
    files.sort();
    for pair in files.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations share number {}",
            pair[0].0
        );
    }
    for (i, (version, _, _)) in files.iter().enumerate() {
        assert_eq!(
            *version as usize,
            i + 1,
            "migration numbers must be 1, 2, 3, ... without gaps"
        );
    }
    let mut out = String::from("&[\n");
    for (version, name, path) in &files {
        writeln!(
            out,
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({path:?}) }},"
        )
        .unwrap();
    }
    out.push(']');
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("central_migrations.rs");
    fs::write(dest, out).expect("write generated migrations");
}
