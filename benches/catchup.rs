//! How long a new coordinator takes to catch up, and what it costs the cluster meanwhile —
//! figures to report, not a test. Run in release: `cargo bench --bench catchup`.
//!
//! A 3-node cluster with the shipped defaults is loaded with `ORDO_BENCH_CATCHUP_BATCHES`
//! batches (default 1,000,000; one 128-byte message each, 64 submitters). The submitters keep
//! going while a fourth node starts with `--join` and is added with `ordo member add`; the
//! catch-up time runs from the add until the member list shows it a voter (it is promoted by
//! itself once within `promote_lag_entries_max` of the leader). Throughput is reported per
//! second before and during the catch-up.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_participant::{Batch, Message, new_batch_id};
use support::history::client_preferring;
use support::members::{member, member_list, voters};
use support::{ClusterOptions, TestCluster, count_from_env, machine_description};

const SUBMITTERS: usize = 64;
const MEASURE: Duration = Duration::from_secs(10);

fn main() {
    let batches = count_from_env("ORDO_BENCH_CATCHUP_BATCHES", 1_000_000);
    println!("machine: {}", machine_description());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(catch_up(batches));
}

async fn catch_up(batches: u64) {
    let mut cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..SUBMITTERS {
        let client = client_preferring(&cluster, n, Duration::from_secs(30)).await;
        let (committed, stop) = (committed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![b'x'; 128]);
            while !stop.load(Ordering::Relaxed) {
                let batch = Batch {
                    id: new_batch_id(),
                    messages: vec![Message::new("load", payload.clone())],
                    preconditions: Vec::new(),
                };
                if client.submit(batch).await.is_ok() {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let loading = Instant::now();
    while committed.load(Ordering::Relaxed) < batches {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let loaded = committed.load(Ordering::Relaxed);
    println!(
        "loaded {loaded} batches in {:.1} s ({:.0} batches/s)",
        loading.elapsed().as_secs_f64(),
        loaded as f64 / loading.elapsed().as_secs_f64()
    );
    let before = rate(&committed, MEASURE).await;
    println!("throughput before: {before:.0} batches/s (over {MEASURE:?})");

    let id = cluster.prepare_joining_node();
    cluster.restart(id);
    let address = cluster.address(id).to_string();
    let added = Instant::now();
    let (code, stdout, stderr) = member(&cluster, &["add", &id.to_string(), &address]);
    assert_eq!(code, 0, "member add: {stdout}{stderr}");
    let start_count = committed.load(Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut last = (Instant::now(), start_count);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (Instant::now(), committed.load(Ordering::Relaxed));
        samples.push((now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64());
        last = now;
        let list = member_list(&cluster).unwrap_or_default();
        if voters(&list).contains(&id) {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(3600),
            "no catch-up within an hour"
        );
    }
    let took = added.elapsed();
    let during = (committed.load(Ordering::Relaxed) - start_count) as f64 / took.as_secs_f64();
    let lowest = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let installed = cluster.log(id).contains("installed a snapshot");
    println!(
        "catch-up of node {id} after {loaded} batches: {:.1} s (from `ordo member add` to voter); \
         {}; throughput during it {during:.0} batches/s ({:.0}% of before), lowest second \
         {lowest:.0}",
        took.as_secs_f64(),
        if installed {
            "by snapshot, then the log after it"
        } else {
            "by the log"
        },
        100.0 * during / before
    );
    let after = rate(&committed, MEASURE).await;
    println!("throughput after, with 4 voters: {after:.0} batches/s");
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    cluster.stop_all(Duration::from_secs(30)).await;
}

/// Batches committed per second over `window`.
async fn rate(committed: &AtomicU64, window: Duration) -> f64 {
    let start = committed.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    (committed.load(Ordering::Relaxed) - start) as f64 / window.as_secs_f64()
}
