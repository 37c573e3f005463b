//! `ordo dev --demo`, the README's first command, as a newcomer runs it (shortened): a real
//! 3-node cluster, the demo's workload, the leader killed with SIGKILL halfway, and the checks
//! the demo ends with.

mod support;

use std::process::Command;

/// Three consecutive loopback ports, UDP and TCP, that were free a moment ago.
fn three_free_ports() -> u16 {
    for _ in 0..100 {
        let base = support::free_loopback_ports(1)[0];
        let free = (0..3u16).all(|offset| {
            let port = base.saturating_add(offset);
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no three consecutive free loopback ports");
}

#[test]
fn the_demo_survives_a_killed_leader_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("a directory for the cluster");
    let base = three_free_ports();
    let mut command = Command::new(support::ORDO);
    command
        .args(["dev", "--demo", "--demo-duration", "10s", "--base-port"])
        .arg(base.to_string())
        .args(["--consensus-engine", support::test_engine().name()])
        .arg("--dir")
        .arg(dir.path().join("dev"))
        .env_remove("RUST_LOG");
    // The nodes take the environment too, and refuse ORDO_ variables they do not know (CI sets
    // ORDO_TEST_*): start them as a newcomer's shell would.
    support::remove_ordo_environment(&mut command);
    let output = command.output().expect("run ordo dev --demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(output.status.success(), "the demo failed:\n{report}");
    for expected in [
        "console and /metrics at http://127.0.0.1:",
        "---- kill -9 of the leader, node",
        "elected leader (term",
        "no acknowledged batch lost: yes; participants agree: yes; every acknowledged batch \
         applied",
        "money conserved (sum 0): yes",
    ] {
        assert!(
            stdout.contains(expected),
            "no {expected:?} in the output:\n{report}"
        );
    }
    // The nodes' logs went to files, not into the demo's output.
    assert!(
        !stdout.contains(" INFO "),
        "node logs in the demo's output:\n{report}"
    );
    for id in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("dev/node-{id}.log")))
            .unwrap_or_else(|error| panic!("node {id}'s log file: {error}"));
        let serving = format!("engine={}", support::test_engine());
        assert!(
            log.contains("serving") && log.contains(&serving),
            "node {id}'s log does not show it serving on {serving}:\n{log}"
        );
    }
}

#[test]
fn a_failing_command_names_its_stable_code_in_text_and_json() {
    let dir = tempfile::tempdir().expect("a directory");
    let missing = dir.path().join("no-such-tls-dir");
    let run = |format: &str| {
        Command::new(support::ORDO)
            .args([
                "--log-format",
                format,
                "status",
                "--endpoints",
                "127.0.0.1:9",
            ])
            .arg("--tls-dir")
            .arg(&missing)
            .output()
            .expect("run ordo status")
    };
    let text = run("text");
    assert!(
        !text.status.success(),
        "ordo status without certificates failed"
    );
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(
        stderr.contains("error[tls]: "),
        "the text form names the code: {stderr}"
    );
    let json = run("json");
    assert!(!json.status.success());
    let stderr = String::from_utf8_lossy(&json.stderr);
    let last: serde_json::Value = stderr
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("the last line is a JSON object: {stderr}"));
    assert_eq!(last["code"], "tls", "{last}");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|error| error.contains("no-such-tls-dir")),
        "the message names what is missing: {last}"
    );
    assert!(
        ordo_common::errors::lookup("tls").is_some(),
        "the code is in ERRORS.md"
    );
}
