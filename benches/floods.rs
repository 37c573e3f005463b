//! What hostile clients cost everyone else — figures to report, not a test. Run in release:
//! `cargo bench --bench floods`.
//!
//! A 3-node cluster with the shipped defaults. A well-behaved client commits small batches one
//! at a time (`ORDO_BENCH_FLOOD_PROBES`, default 200) with no flood, then during each flood in
//! turn; for each, the commit p50/p99, the flooded node's peak RSS and its longest tick gap are
//! reported. The floods are those of `tests/hostile.rs`:
//!
//! - 5,000 connections from one identity to the leader;
//! - 16 connections to the leader with 8 unread unidirectional streams of 32 MiB each and 4
//!   request bodies declaring 64 MiB that stall after 40 MiB;
//! - 64 MiB submits, over and over, at both followers (4 connections x 4 streams);
//! - 1,000 subscriptions to the leader whose filter matches nothing, over 20,000 batches.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ordo_common::client::NodeStatus;
use ordo_participant::Client;
use support::floods::{self, Flooder, RssPeak};
use support::{ClusterOptions, TestCluster, count_from_env, machine_description};

const STARTUP: Duration = Duration::from_secs(30);

struct Row {
    flood: &'static str,
    target: u64,
    p50: f64,
    p99: f64,
    rss_mib: u64,
    tick_gap_ms: f64,
}

fn main() {
    let probes = count_from_env("ORDO_BENCH_FLOOD_PROBES", 200) as usize;
    println!("machine: {}", machine_description());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rows = runtime.block_on(run(probes));
    println!();
    println!(
        "| flood | node | commit p50 ms | commit p99 ms | node peak RSS MiB | longest tick gap ms |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {} | {:.1} |",
            row.flood, row.target, row.p50, row.p99, row.rss_mib, row.tick_gap_ms
        );
    }
}

async fn status(cluster: &TestCluster, id: u64) -> NodeStatus {
    cluster.status(id).await.expect("status")
}

/// Probes while `flood` runs against node `target`.
async fn measure(
    cluster: &TestCluster,
    client: &Client,
    probes: usize,
    flood: &'static str,
    target: u64,
) -> Row {
    let pid = cluster.pid(target).expect("running");
    let peak = RssPeak::watch(pid);
    let latencies = floods::commit_latencies(client, probes)
        .await
        .unwrap_or_else(|error| panic!("{flood}: {error}"));
    let rss = peak.finish().await;
    let gap = status(cluster, target).await.tick_gap_max_us;
    let row = Row {
        flood,
        target,
        p50: floods::quantile_ms(&latencies, 0.5),
        p99: floods::quantile_ms(&latencies, 0.99),
        rss_mib: rss >> 20,
        tick_gap_ms: gap as f64 / 1000.0,
    };
    println!(
        "{flood}: node {target}, commit p50 {:.2} ms, p99 {:.2} ms, peak RSS {} MiB, longest tick \
         gap {:.1} ms",
        row.p50, row.p99, row.rss_mib, row.tick_gap_ms
    );
    row
}

async fn run(probes: usize) -> Vec<Row> {
    let cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
    floods::issue_client(&cluster, "flood");
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let followers = cluster.others(leader);
    let mut config = cluster.client_config();
    config.client_name = Some("cli".into());
    let client = Client::connect(config).await.expect("client");
    let flooder = Arc::new(Flooder::new(cluster.tls_dir(), "flood"));
    let mut rows = Vec::new();
    // Warm up, then the flood-free figures.
    floods::commit_latencies(&client, 50)
        .await
        .expect("warm-up");
    tokio::time::sleep(floods::TICK_GAP_SETTLE).await;
    rows.push(measure(&cluster, &client, probes, "none", leader).await);

    let (held, refused) = flooder.hold(cluster.address(leader), 5000, 64).await;
    println!(
        "connections: the leader kept {} of 5,000, refused {refused}",
        held.len()
    );
    rows.push(measure(&cluster, &client, probes, "5,000 connections", leader).await);
    drop(held);
    tokio::time::sleep(floods::TICK_GAP_SETTLE).await;

    let (connections, _) = flooder.hold(cluster.address(leader), 16, 16).await;
    let uni = floods::unread_uni_streams(&connections, 8, 32 << 20);
    let slow = floods::stalled_bodies(&connections, 4, 64 << 20, 40 << 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(
        measure(
            &cluster,
            &client,
            probes,
            "unread streams + stalled bodies",
            leader,
        )
        .await,
    );
    drop((uni, slow, connections));
    tokio::time::sleep(floods::TICK_GAP_SETTLE).await;

    let mut connections = Vec::new();
    for follower in &followers {
        connections.extend(flooder.hold(cluster.address(*follower), 2, 2).await.0);
    }
    let frame = floods::large_submit_frame(ordo_common::limits::BATCH_BYTES_MAX as usize - 4096);
    let stop = Arc::new(AtomicBool::new(false));
    let (flood, answered) = floods::repeat_requests(&connections, 4, frame, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(
        measure(
            &cluster,
            &client,
            probes,
            "64 MiB submits at the followers",
            followers[0],
        )
        .await,
    );
    stop.store(true, Ordering::Relaxed);
    println!(
        "64 MiB submits answered during the flood: {}",
        answered.load(Ordering::Relaxed)
    );
    drop(flood);
    drop(connections);
    tokio::time::sleep(floods::TICK_GAP_SETTLE).await;

    floods::write_history(&client, 20_000).await;
    let (connections, _) = flooder.hold(cluster.address(leader), 20, 20).await;
    let (mut subscriptions, _) = floods::idle_subscriptions(&connections, 50);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rows.push(
        measure(
            &cluster,
            &client,
            probes,
            "1,000 subscriptions matching nothing",
            leader,
        )
        .await,
    );
    subscriptions.abort_all();
    rows
}
