//! Measurements with real `ordo serve` processes on loopback — figures to report, not tests
//! (nothing here passes or fails on speed). Run in release: `cargo bench --bench cluster`.
//!
//! (a) **Election time after a leader's kill -9**: from the SIGKILL until another node reports
//!     itself leader of a later term, polled every millisecond over connections opened before
//!     the kill. Each run restarts the killed node and waits until every node has caught up and
//!     the leader hears both followers, so every run starts from the same steady state. Run once
//!     with the shipped timing (1 s election timeout, 100 ms heartbeat) and once with a fast
//!     one (300 ms, 50 ms). A follower waits a randomized [T, 2T) of leader silence before it
//!     campaigns (T the election timeout), then needs a pre-vote and a vote round.
//! (b) **mTLS handshake time**: `NodeConnection::connect`, which binds a client UDP socket,
//!     completes the QUIC + TLS 1.3 handshake with client certificates, and one hello round
//!     trip (the only way a client learns that its certificate was accepted).
//!
//! `ORDO_BENCH_ELECTIONS` (default 20) and `ORDO_BENCH_CONNECTS` (default 200) set the counts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use ordo_common::client::{ClientRequest, ClientResponse};
use ordo_participant::NodeConnection;
use support::{
    ClusterOptions, REQUEST_TIMEOUT, TestCluster, count_from_env, machine_description, wait_until,
};

const SETTLE: Duration = Duration::from_secs(30);
const CONNECT_WARMUP: usize = 10;

fn main() {
    let elections = count_from_env("ORDO_BENCH_ELECTIONS", 20) as usize;
    let connects = count_from_env("ORDO_BENCH_CONNECTS", 200) as usize;
    println!("machine: {}", machine_description());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        for options in [ClusterOptions::shipped_defaults(3), ClusterOptions::fast(3)] {
            election_after_kill(options, elections).await;
        }
        handshakes(connects).await;
    });
}

async fn election_after_kill(options: ClusterOptions, runs: usize) {
    println!(
        "\n(a) election time after kill -9 of the leader: 3 nodes, election timeout {:?}, \
         heartbeat {:?}, tick {:?}, {runs} runs",
        options.election_timeout, options.heartbeat_interval, options.tick_interval
    );
    let mut cluster = TestCluster::start_with(options);
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        let old = steady_leader(&cluster).await;
        let survivors: Vec<NodeConnection> = {
            let mut connections = Vec::new();
            for id in cluster.ids().into_iter().filter(|id| *id != old.id) {
                connections.push(cluster.connect(id).await.expect("connect to a survivor"));
            }
            connections
        };
        let killed_at = Instant::now();
        cluster.kill9(old.id);
        // Polled by hand every millisecond: `wait_until`'s 10 ms interval is too coarse here.
        let (new_id, new_term) = 'poll: loop {
            assert!(
                killed_at.elapsed() < SETTLE,
                "no new leader within {SETTLE:?}"
            );
            for connection in &survivors {
                if let Ok(ClientResponse::Status(status)) =
                    connection.request(&ClientRequest::Status).await
                    && status.role == ordo_common::client::NodeRole::Leader
                    && status.term > old.term
                {
                    break 'poll (status.id, status.term);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let elapsed = killed_at.elapsed();
        times.push(elapsed);
        println!(
            "  run {run:>2}: node {} killed (term {}), node {new_id} leads term {new_term} after {}",
            old.id,
            old.term,
            millis(elapsed)
        );
        cluster.restart(old.id);
    }
    report("election time", &mut times);
    cluster.stop_all(SETTLE).await;
}

/// Waits until every node has caught up with one leader, and the leader has heard from both
/// followers within an election timeout; returns the leader's status.
async fn steady_leader(cluster: &TestCluster) -> ordo_common::client::NodeStatus {
    let statuses = cluster.wait_for_caught_up(1, SETTLE).await;
    let leader = support::agreed_leader(&statuses).expect("a leader").clone();
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader.id)
        .collect();
    wait_until(SETTLE, "the leader to hear both followers", async || {
        let status = cluster.status(leader.id).await?;
        (status.term == leader.term && status.reachable_peers == followers)
            .then_some(())
            .ok_or_else(|| format!("reachable {:?}", status.reachable_peers))
    })
    .await;
    leader
}

async fn handshakes(count: usize) {
    println!(
        "\n(b) mTLS handshake: NodeConnection::connect (client socket, QUIC + TLS 1.3 with \
         client certificates, one hello round trip), {count} connects after {CONNECT_WARMUP} \
         warm-up"
    );
    let cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
    let leader = cluster.wait_for_leader(SETTLE).await;
    let (address, tls) = (cluster.address(leader.id), cluster.client_tls());
    let mut times = Vec::with_capacity(count);
    for n in 0..CONNECT_WARMUP + count {
        let started = Instant::now();
        let connection = NodeConnection::connect(address, &tls, REQUEST_TIMEOUT)
            .await
            .expect("connect");
        let elapsed = started.elapsed();
        connection.raw().close(0u32.into(), b"measured");
        if n >= CONNECT_WARMUP {
            times.push(elapsed);
        }
    }
    report("handshake time", &mut times);
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let rank = |fraction: f64| {
        let index = ((fraction * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        millis(times[index])
    };
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "  {what} over {} runs: median {}, p90 {}, p99 {}, min {}, max {}, mean {}",
        times.len(),
        rank(0.5),
        rank(0.9),
        rank(0.99),
        millis(times[0]),
        millis(times[times.len() - 1]),
        millis(mean)
    );
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
