//! The deterministic crates stay deterministic: no I/O runtime, no clock, no unseeded
//! randomness, no storage engine — in their sources, and anywhere in the dependency graph they
//! pull in. A direct dependency list can look clean while a dependency of a dependency brings
//! tokio along (ordo-common once did, through its TLS and framing modules), so the graph test
//! walks the graph cargo actually resolved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates that must be pure, with their source folders relative to the workspace root. The
/// simulator is among them: a failure it finds must replay from its seed.
const PURE_CRATES: &[(&str, &str)] = &[
    ("ordo-common", "common/src"),
    ("ordo-core", "coordinator/core/src"),
    ("ordo-node", "coordinator/node/src"),
    ("ordo-sim", "coordinator/sim/src"),
];

const FORBIDDEN_IN_SOURCES: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "tokio",
    "std::net",
    "std::fs",
    "std::thread",
    "std::time",
];

/// Crates that do I/O, read clocks, draw unseeded randomness or wrap a storage engine.
const FORBIDDEN_DEPENDENCIES: &[&str] = &[
    "tokio",
    "quinn",
    "quinn-proto",
    "quinn-udp",
    "rustls",
    "ring",
    "socket2",
    "mio",
    "redb",
    "rand",
    "getrandom",
    "chrono",
    "time",
    "async-std",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("coordinator/core sits two folders below the workspace root")
        .to_path_buf()
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn pure_sources_use_no_clock_no_io_runtime_and_no_unseeded_randomness() {
    let root = workspace_root();
    let mut offences = Vec::new();
    for (name, folder) in PURE_CRATES {
        let mut files = Vec::new();
        sources(&root.join(folder), &mut files);
        assert!(!files.is_empty(), "{name}: no sources under {folder}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("utf-8 source");
            // Comments may name what the crate stays away from; code may not use it.
            let code = text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim_start().starts_with("//"));
            for (number, line) in code {
                for word in FORBIDDEN_IN_SOURCES {
                    if line.contains(word) {
                        offences.push(format!("{}:{}: {word}", file.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "forbidden in a pure crate:\n{}",
        offences.join("\n")
    );
}

/// The resolved graph of the workspace: package id → (name, normal dependencies' ids).
fn resolved_graph() -> BTreeMap<String, (String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| {
            let id = package["id"].as_str().expect("id");
            (id, package["name"].as_str().expect("name"))
        })
        .collect();
    let mut graph = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().expect("node id");
        // Only normal dependencies ship in the crate: a dependency edge counts when one of its
        // kinds is "normal" (null in cargo's output), whatever the target.
        let normal = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|dependency| {
                dependency["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|kind| kind["kind"].is_null()))
            })
            .map(|dependency| dependency["pkg"].as_str().expect("pkg").to_string())
            .collect();
        graph.insert(id.to_string(), (names[id].to_string(), normal));
    }
    graph
}

/// Every crate `name` reaches through normal dependencies, with one path to each.
fn reachable(
    graph: &BTreeMap<String, (String, Vec<String>)>,
    name: &str,
) -> BTreeMap<String, String> {
    let start = graph
        .iter()
        .find(|(_, (package, _))| package == name)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("{name} is not in the workspace graph"));
    let mut seen = BTreeSet::from([start.clone()]);
    let mut paths = BTreeMap::new();
    let mut queue = vec![(start, name.to_string())];
    while let Some((id, path)) = queue.pop() {
        for dependency in &graph[&id].1 {
            if seen.insert(dependency.clone()) {
                let dependency_name = &graph[dependency].0;
                let path = format!("{path} -> {dependency_name}");
                paths.insert(dependency_name.clone(), path.clone());
                queue.push((dependency.clone(), path));
            }
        }
    }
    paths
}

#[test]
fn pure_crates_reach_no_runtime_tls_storage_clock_or_rng_even_transitively() {
    let graph = resolved_graph();
    let mut offences = Vec::new();
    for (name, _) in PURE_CRATES {
        for (dependency, path) in reachable(&graph, name) {
            if FORBIDDEN_DEPENDENCIES.contains(&dependency.as_str()) {
                offences.push(path);
            }
        }
    }
    assert!(
        offences.is_empty(),
        "pure crates reach forbidden dependencies:\n{}",
        offences.join("\n")
    );
}
