//! Run-forever figures with real `ordo serve` processes on loopback: measurements to report,
//! not tests (nothing here passes or fails on speed). Run in release:
//! `cargo bench --bench bounded`.
//!
//! (a) **Memory and disk under sustained load**: `ordo bench --clients 64 --batch 10 --size 128`
//!     for `ORDO_BENCH_MINUTES` (default 10) against 3 nodes with the shipped defaults; every
//!     30 s, each node's resident set (VmRSS) and the bytes its data directory takes on disk.
//!     `ORDO_BENCH_BATCH` changes the messages per batch (1 reaches a long history sooner).
//! (b) **Restart to serving after that history**: every node killed with SIGKILL and started
//!     again; the time from the restarts until a batch commits, and each node's own figure for
//!     opening its store (its "opened the log ... took=" line).
//! (c) **Backups of that state**: `ordo snapshot save` (built in one read transaction on the
//!     freshest node and streamed) time and size; `ordo snapshot restore` (checked and installed
//!     into an empty data directory) time.
//! (d) **Snapshot install to a follower**: 3 nodes that keep at most
//!     [`SNAPSHOT_RUN_ENTRIES_MAX`] log entries run the same load for
//!     `ORDO_BENCH_SNAPSHOT_SECONDS` (default 100) with one follower stopped; it is started
//!     again and must catch up by snapshot: the time until it has received the snapshot and
//!     until it has installed it, and the snapshot's size. Then (b) after that history.
//!     `ORDO_BENCH_SNAPSHOT_SECONDS=0` skips (d).

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ordo_common::NodeId;
use ordo_participant::{Batch, Message, new_batch_id};
use support::{
    ClusterOptions, ORDO, TestCluster, count_from_env, machine_description, path_str,
    run_ordo_checked, wait_until,
};

/// How long a node may take to start, elect and commit before the bench gives up.
const SETTLE: Duration = Duration::from_secs(120);
/// How often (a) samples memory and disk.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// The log entries each node keeps in (d): far fewer than the run commits.
const SNAPSHOT_RUN_ENTRIES_MAX: u64 = 100_000;

fn main() {
    let minutes = count_from_env("ORDO_BENCH_MINUTES", 10);
    let snapshot_seconds = std::env::var("ORDO_BENCH_SNAPSHOT_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100u64);
    println!("machine: {}", machine_description());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let mut cluster = TestCluster::start_with(shipped_defaults(Vec::new()));
        sustained_load(&cluster, Duration::from_secs(60 * minutes)).await;
        restart_to_serving(&mut cluster).await;
        backups(&cluster);
        drop(cluster);
        if snapshot_seconds > 0 {
            snapshot_install(Duration::from_secs(snapshot_seconds)).await;
        }
    });
}

/// The shipped configuration (the harness's small test ballast put back to the default).
fn shipped_defaults(mut environment: Vec<(String, String)>) -> ClusterOptions {
    let mut options = ClusterOptions::shipped_defaults(3);
    environment.push(("ORDO_STORAGE_BALLAST".into(), "128MiB".into()));
    options.environment = environment;
    options
}

/// (a): runs `ordo bench` for `duration`, sampling every node's memory and disk.
async fn sustained_load(cluster: &TestCluster, duration: Duration) {
    println!(
        "\n(a) {} s of `ordo bench --clients 64 --batch {} --size 128`, 3 nodes, shipped defaults",
        duration.as_secs(),
        batch_messages()
    );
    cluster.wait_for_leader(SETTLE).await;
    let mut bench = bench_command(cluster, duration)
        .spawn()
        .expect("start ordo bench");
    let started = Instant::now();
    let mut peaks = vec![0u64; cluster.ids().len()];
    print_sample_header(cluster);
    loop {
        tokio::time::sleep(SAMPLE_EVERY.min(duration)).await;
        let exited = bench.try_wait().expect("poll ordo bench").is_some();
        let sample = sample(cluster);
        for (peak, (rss, _)) in peaks.iter_mut().zip(&sample) {
            *peak = (*peak).max(*rss);
        }
        print_sample(started.elapsed(), &sample);
        if exited {
            break;
        }
    }
    let output = bench.wait_with_output().expect("ordo bench output");
    println!(
        "ordo bench: {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    let peaks: Vec<String> = peaks.iter().map(|rss| mib(*rss)).collect();
    println!("peak RSS per node: {}", peaks.join(", "));
}

fn bench_command(cluster: &TestCluster, duration: Duration) -> Command {
    let mut command = Command::new(ORDO);
    command
        .args(["bench", "--endpoints", &cluster.endpoints()])
        .args(["--tls-dir", path_str(cluster.tls_dir()), "--client", "cli"])
        .args(["--clients", "64", "--batch", &batch_messages().to_string()])
        .args(["--size", "128"])
        .args(["--duration", &format!("{}s", duration.as_secs()), "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

fn print_sample_header(cluster: &TestCluster) {
    let nodes: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id| format!("node {id} RSS / disk"))
        .collect();
    println!("{:>6}  {}", "t", nodes.join("  |  "));
}

fn print_sample(at: Duration, sample: &[(u64, u64)]) {
    let nodes: Vec<String> = sample
        .iter()
        .map(|(rss, disk)| format!("{:>9} / {:>9}", mib(*rss), mib(*disk)))
        .collect();
    println!("{:>5}s  {}", at.as_secs(), nodes.join("  |  "));
}

/// Per node: resident bytes, and bytes its data directory occupies on disk.
fn sample(cluster: &TestCluster) -> Vec<(u64, u64)> {
    cluster
        .ids()
        .into_iter()
        .map(|id| {
            let rss = cluster.pid(id).map_or(0, resident_bytes);
            (rss, disk_bytes(cluster.data_dir(id)))
        })
        .collect()
}

/// (b): kill -9 of every node, restart, time until a batch commits.
async fn restart_to_serving(cluster: &mut TestCluster) {
    let leader = cluster.wait_for_leader(SETTLE).await;
    let history = leader.commit_index;
    for id in cluster.ids() {
        cluster.kill9(id);
    }
    let disks: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id| mib(disk_bytes(cluster.data_dir(id))))
        .collect();
    println!(
        "\n(b) restart to serving after {history} log entries (data directories: {})",
        disks.join(", ")
    );
    let marks: Vec<(NodeId, _)> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.log_mark(id)))
        .collect();
    let started = Instant::now();
    for id in cluster.ids() {
        cluster.restart(id);
    }
    let client = support::history::client_preferring(cluster, 0, SETTLE).await;
    let batch = Batch {
        id: new_batch_id(),
        messages: vec![Message::new("bench", "after the restart")],
        preconditions: Vec::new(),
    };
    let committed = client.submit(batch).await.expect("a batch after restart");
    let serving = started.elapsed();
    println!(
        "killed cluster restarted and committed seq {} in {:.2} s",
        committed.seq,
        serving.as_secs_f64()
    );
    for (id, mark) in marks {
        let line = cluster
            .wait_for_log(id, mark, &["opened the log"], SETTLE)
            .await;
        let took = line.split("took=").nth(1).unwrap_or("?").trim();
        println!("node {id}: opened its store in {took}");
    }
}

/// (c): `ordo snapshot save` and `ordo snapshot restore` of the cluster's state.
fn backups(cluster: &TestCluster) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("backup.ordo");
    let started = Instant::now();
    run_ordo_checked(&[
        "snapshot",
        "save",
        "--endpoints",
        &cluster.endpoints(),
        "--tls-dir",
        path_str(cluster.tls_dir()),
        "--client",
        "cli",
        path_str(&file),
    ]);
    let saved = started.elapsed();
    let bytes = std::fs::metadata(&file).expect("the backup").len();
    let started = Instant::now();
    let data_dir = dir.path().join("restored");
    run_ordo_checked(&[
        "snapshot",
        "restore",
        path_str(&file),
        "--data-dir",
        path_str(&data_dir),
    ]);
    let restored = started.elapsed();
    println!(
        "\n(c) ordo snapshot save: {} in {:.2} s; ordo snapshot restore: {:.2} s",
        mib(bytes),
        saved.as_secs_f64(),
        restored.as_secs_f64()
    );
}

/// (d): a follower stopped through a run longer than the log keeps catches up by snapshot.
async fn snapshot_install(duration: Duration) {
    let retention = vec![(
        "ORDO_RETENTION_ENTRIES_MAX".to_string(),
        SNAPSHOT_RUN_ENTRIES_MAX.to_string(),
    )];
    let mut cluster = TestCluster::start_with(shipped_defaults(retention));
    let leader = cluster.wait_for_leader(SETTLE).await.id;
    let follower = cluster.others(leader)[0];
    cluster.stop(follower, SETTLE).await;
    println!(
        "\n(d) node {follower} stopped through {} s of the same load (each node keeps at most \
         {SNAPSHOT_RUN_ENTRIES_MAX} log entries)",
        duration.as_secs()
    );
    let output = bench_command(&cluster, duration)
        .output()
        .expect("run ordo bench");
    println!(
        "ordo bench: {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    let history = cluster.wait_for_leader(SETTLE).await.commit_index;
    let mark = cluster.log_mark(follower);
    let started = Instant::now();
    cluster.restart(follower);
    let received = cluster
        .wait_for_log(follower, mark, &["received a snapshot"], SETTLE)
        .await;
    let receiving = started.elapsed();
    cluster
        .wait_for_log(follower, mark, &["installed a snapshot"], SETTLE)
        .await;
    let installed = started.elapsed();
    let bytes: u64 = received
        .split("bytes=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0);
    println!(
        "after {history} log entries: a snapshot of {} built and received {:.2} s after the \
         follower started, installed at {:.2} s",
        mib(bytes),
        receiving.as_secs_f64(),
        installed.as_secs_f64()
    );
    wait_until(SETTLE, "the follower to catch up", async || {
        let statuses = cluster.statuses().await?;
        let behind = statuses[&leader].commit_index - statuses[&follower].applied_index;
        (behind == 0)
            .then_some(())
            .ok_or(format!("{behind} behind"))
    })
    .await;
    restart_to_serving(&mut cluster).await;
}

/// Messages per batch in the load (`ORDO_BENCH_BATCH`, default 10).
fn batch_messages() -> u64 {
    count_from_env("ORDO_BENCH_BATCH", 10)
}

/// VmRSS of a process, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .map_or(0, |kib: u64| kib * 1024)
}

/// Bytes allocated on disk under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}
