//! The core is deterministic: no I/O runtime, no clock, no unseeded randomness. Its dependency
//! list is the first fence; this test is the second, over every source file of the crate.

use std::path::Path;

const FORBIDDEN_IN_SOURCES: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "tokio",
    "std::net",
    "std::fs",
    "std::thread",
];
const FORBIDDEN_DEPENDENCIES: &[&str] = &[
    "tokio",
    "quinn",
    "redb",
    "rand",
    "getrandom",
    "chrono",
    "time",
    "async-std",
    "mio",
];

fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn core_sources_use_no_clock_no_io_runtime_and_no_unseeded_randomness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 5, "found only {files:?}");
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("utf-8 source");
        for (number, line) in text.lines().enumerate() {
            for word in FORBIDDEN_IN_SOURCES {
                if line.contains(word) {
                    offences.push(format!("{}:{}: {word}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "forbidden in the core:\n{}",
        offences.join("\n")
    );
}

#[test]
fn core_dependencies_exclude_runtimes_storage_clocks_and_rngs() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("manifest");
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if !section.contains("dependencies") || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
        assert!(
            !FORBIDDEN_DEPENDENCIES.contains(&name),
            "ordo-core must not depend on {name} (section {section})"
        );
    }
}
