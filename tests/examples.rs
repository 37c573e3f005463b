//! The programs in `examples/` against real 3-node clusters of `ordo serve` processes, pointed
//! at them through `ORDO_ENDPOINTS`, `ORDO_TLS_DIR` and `ORDO_CLIENT`, as a user would:
//!
//! - `quickstart` submits, reads the status and finds its batch in the subscription: exit 0;
//! - `bank_transfer`'s checks (money conserved, no negative balance, the two services agree,
//!   exactly once, rejected never applied) hold while the leader is killed with SIGKILL about
//!   two seconds into the run and restarted once transfers flow again under the new leader,
//!   and enough transfers were acknowledged for the checks to mean something;
//! - `job_scheduler`'s checks (jobs published once by epochs that never go back, a takeover
//!   after its scheduler is killed, jobs done exactly once under tokens that never go back, the
//!   frozen worker's late write fenced, observers see each epoch once) hold: the example plays
//!   those faults on its own worker processes.
//!
//! The examples are their own binaries. `cargo test` builds them before it runs the tests;
//! `cargo test --test examples` alone does not, so build them first with
//! `cargo build --release --examples` (the test says so when they are missing or stale).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{CLIENT_NAME, ClusterOptions, TestCluster, die_with_this_thread, wait_until};

/// Time for a fresh cluster's processes to start and elect a leader, on a busy machine.
const STARTUP: Duration = Duration::from_secs(30);
/// How long `bank_transfer` submits transfers in the test.
const BANK_DURATION: &str = "8s";
/// The example's clock readings (from its progress lines) at which the test kills the leader
/// and restarts it.
const KILL_AT_SECONDS: f64 = 2.0;
const RESTART_AT_SECONDS: f64 = 5.0;
/// Fewer acknowledged transfers would make the checks nearly vacuous.
const ACKNOWLEDGED_MIN: u64 = 50;
/// The whole example run: the transfers, then resolving unknown outcomes (up to 30 s) and the
/// services catching up to the closing batch (up to 60 s), with a margin.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_submits_reads_the_status_and_finds_its_batch_in_the_subscription() {
    let cluster = TestCluster::start_with(ClusterOptions::fast(3));
    cluster.wait_for_leader(STARTUP).await;
    let mut quickstart = ExampleRun::start("quickstart", &cluster, &[]);
    let (status, output) = quickstart.finish(EXAMPLE_TIMEOUT).await;
    assert!(status.success(), "quickstart failed ({status}):\n{output}");
    for expected in [
        "committed at seq 1",
        "its status: Committed {",
        "seq 1: batch",
    ] {
        assert!(
            output.contains(expected),
            "quickstart's output lacks {expected:?}:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfer_checks_hold_while_the_leader_is_killed_and_restarted_under_it() {
    let mut cluster = TestCluster::start_with(ClusterOptions::fast(3));
    cluster.wait_for_leader(STARTUP).await;
    let data_dir = tempfile::Builder::new()
        .prefix("ordo-test-bank-")
        .tempdir()
        .expect("create a temporary directory");
    let data_dir_argument = data_dir.path().to_str().expect("a UTF-8 path");
    let arguments = ["--duration", BANK_DURATION, "--data-dir", data_dir_argument];
    let mut bank = ExampleRun::start("bank_transfer", &cluster, &arguments);

    let (seconds, acknowledged_at_kill) = bank
        .wait_for_progress("transfers to flow", STARTUP, |seconds, acknowledged| {
            seconds >= KILL_AT_SECONDS && acknowledged > 0
        })
        .await;
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    cluster.kill9(leader);
    eprintln!(
        "killed leader node {leader} at {seconds:.1} s, {acknowledged_at_kill} transfers \
         acknowledged"
    );
    let new_leader = cluster.wait_for_leader(STARTUP).await.id;
    // Not "until transfers flow again": a service whose subscription was on the killed node
    // waits for the QUIC idle timeout (10 s) to notice, and the producers read their view from
    // the accounts service, so the run may pause beyond its end.
    let (seconds, acknowledged) = bank
        .wait_for_progress("the time to restart", STARTUP, |seconds, _| {
            seconds >= RESTART_AT_SECONDS
        })
        .await;
    cluster.restart(leader);
    eprintln!(
        "node {new_leader} leads; restarted node {leader} at {seconds:.1} s, {acknowledged} \
         transfers acknowledged"
    );

    let (status, output) = bank.finish(EXAMPLE_TIMEOUT).await;
    assert!(
        status.success(),
        "bank_transfer failed ({status}):\n{output}"
    );
    for check in [
        "[ok] money conserved",
        "[ok] no negative balance",
        "[ok] services agree",
        "[ok] every acknowledged transfer applied exactly once",
        "[ok] rejected transfers never applied",
        "PASS",
    ] {
        assert!(
            output.contains(check),
            "bank_transfer's report lacks {check:?}:\n{output}"
        );
    }
    let acknowledged = report_count(&output, "acknowledged:");
    assert!(
        acknowledged >= ACKNOWLEDGED_MIN,
        "only {acknowledged} transfers acknowledged, fewer than {ACKNOWLEDGED_MIN}:\n{output}"
    );
    let report = output
        .find("bank_transfer: transfers in")
        .map_or("", |at| &output[at..]);
    let after_kill = acknowledged.saturating_sub(acknowledged_at_kill);
    eprintln!("{report}({after_kill} transfers acknowledged after the kill)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_scheduler_checks_hold_with_its_scheduler_killed_and_a_worker_frozen() {
    let cluster = TestCluster::start_with(ClusterOptions::fast(3));
    cluster.wait_for_leader(STARTUP).await;
    let mut scheduler = ExampleRun::start("job_scheduler", &cluster, &[]);
    let (status, output) = scheduler.finish(EXAMPLE_TIMEOUT).await;
    assert!(
        status.success(),
        "job_scheduler failed ({status}):\n{output}"
    );
    for check in [
        "[ok] every job published once, in order",
        "[ok] scheduler epochs never go back, one writer each",
        "[ok] a new scheduler took over after the kill",
        "[ok] every job done exactly once, in order, after it was published",
        "[ok] lock tokens never go back",
        "[ok] the frozen worker's late result was fenced",
        "[ok] observers see epochs once, in order",
        "job_scheduler: PASS",
    ] {
        assert!(
            output.contains(check),
            "job_scheduler's report lacks {check:?}:\n{output}"
        );
    }
    let report = output
        .find("job_scheduler: report")
        .map_or("", |at| &output[at..]);
    eprintln!("{report}");
}

/// An example's process, with its stdout and stderr collected line by line as they come.
struct ExampleRun {
    name: String,
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    /// The threads that read stdout and stderr; they end when the process closes them.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ExampleRun {
    /// Starts the built example `name` against `cluster`.
    fn start(name: &str, cluster: &TestCluster, arguments: &[&str]) -> Self {
        let mut command = Command::new(example_binary(name));
        for (variable, _) in std::env::vars_os() {
            if variable.to_string_lossy().starts_with("ORDO_") {
                command.env_remove(variable);
            }
        }
        command
            .args(arguments)
            .env("ORDO_ENDPOINTS", cluster.endpoints())
            .env("ORDO_TLS_DIR", cluster.tls_dir())
            .env("ORDO_CLIENT", CLIENT_NAME)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_this_thread(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("start the {name} example: {error}"));
        let output = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect_lines(child.stdout.take().expect("piped stdout"), "", &output),
            collect_lines(
                child.stderr.take().expect("piped stderr"),
                "stderr: ",
                &output,
            ),
        ];
        Self {
            name: name.to_string(),
            child: Some(child),
            output,
            readers,
        }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits for a progress line (`bank_transfer:  2.0 s: 431 transfers acknowledged, ...`)
    /// whose seconds and acknowledged count satisfy `reached`; returns them. Fails at once if
    /// the example exits first.
    async fn wait_for_progress(
        &mut self,
        what: &str,
        timeout: Duration,
        reached: impl Fn(f64, u64) -> bool,
    ) -> (f64, u64) {
        let what = format!("{what} (a progress line of {})", self.name);
        wait_until(timeout, &what, async || {
            let output = self.output();
            let last = output.lines().filter_map(progress).next_back();
            if let Some((seconds, acknowledged)) = last
                && reached(seconds, acknowledged)
            {
                return Ok((seconds, acknowledged));
            }
            let child = self.child.as_mut().expect("the example is running");
            if let Some(status) = child.try_wait().expect("poll the example") {
                panic!("{} exited ({status}) before {what}:\n{output}", self.name);
            }
            Err(format!("last progress {last:?}"))
        })
        .await
    }

    /// Waits for the example to exit; returns how it ended and everything it printed.
    async fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let what = format!("{} to exit", self.name);
        let status = wait_until(timeout, &what, async || {
            let child = self.child.as_mut().expect("the example is running");
            match child.try_wait().expect("poll the example") {
                Some(status) => Ok(status),
                None => Err(format!("its output so far:\n{}", self.output())),
            }
        })
        .await;
        self.child = None;
        // The process has exited, so its pipes are closed and the readers are at their end.
        for reader in self.readers.drain(..) {
            reader.join().expect("an output reader panicked");
        }
        (status, self.output())
    }
}

impl Drop for ExampleRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "--- {} was stopped; its output:\n{}",
                self.name,
                self.output()
            );
        }
    }
}

/// The example's binary, next to the `ordo` binary under test (`target/<profile>/examples/`).
fn example_binary(name: &str) -> PathBuf {
    let ordo = Path::new(env!("CARGO_BIN_EXE_ordo"));
    let binary = ordo
        .parent()
        .expect("the ordo binary's directory")
        .join("examples")
        .join(name);
    let build = "build the examples first: `cargo build --release --examples` (`cargo test` \
                 builds them, `cargo test --test examples` alone does not)";
    let built = std::fs::metadata(&binary)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|_| panic!("{} is missing; {build}", binary.display()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let written = std::fs::metadata(&source)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|error| panic!("{}: {error}", source.display()));
    assert!(
        built >= written,
        "{} is older than {}; {build}",
        binary.display(),
        source.display()
    );
    binary
}

/// Appends every line of `stream` to `output`, from a thread of its own.
fn collect_lines(
    stream: impl Read + Send + 'static,
    prefix: &str,
    output: &Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    let (prefix, output) = (prefix.to_string(), output.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut output = output.lock().expect("output lock");
            output.push_str(&prefix);
            output.push_str(&line);
            output.push('\n');
        }
    })
}

/// `bank_transfer:  2.0 s: 431 transfers acknowledged, ...` → (2.0, 431).
fn progress(line: &str) -> Option<(f64, u64)> {
    let rest = line.strip_prefix("bank_transfer:")?;
    let (seconds, rest) = rest.split_once(" s: ")?;
    let (acknowledged, _) = rest.split_once(" transfers acknowledged")?;
    Some((seconds.trim().parse().ok()?, acknowledged.parse().ok()?))
}

/// The number after `label` at the start of a report line (`  acknowledged: 812 (81/s)`).
fn report_count(output: &str, label: &str) -> u64 {
    output
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} line in the report:\n{output}"))
}
