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
//! (c) **A service's leader failover** (`ordo elect`): two `ordo elect NAME --value V --ttl 3s`
//!     processes campaign; the elected one is killed with SIGKILL, and the time until the
//!     other prints that it is elected is measured. The dead process's session must expire
//!     first: its last renewal was at most a third of the TTL before the kill, so about
//!     2/3 TTL to one TTL, plus the commit of the expiry and the grant.
//!
//! (d) **Failover as a client sees it**: one SDK client with its default settings submits one
//!     batch after another to a cluster with the shipped timing; the leader is killed with
//!     SIGKILL, and the time from the kill to the acknowledgement of the submit the dead leader
//!     left unanswered is measured (retried by the SDK at the next leader; an answer already
//!     on its way back at the kill does not count). Each run
//!     restarts the killed node and waits for the steady state of (a).
//!
//! `ORDO_BENCH_ELECTIONS` (default 20), `ORDO_BENCH_CONNECTS` (default 200),
//! `ORDO_BENCH_FAILOVERS` (default 10) and `ORDO_BENCH_CLIENT_FAILOVERS` (default 20) set the
//! counts; `ORDO_BENCH_ONLY=d` (or any of a–d) runs one part; `ORDO_TEST_ENGINE=multi-paxos`
//! runs the clusters on Multi-Paxos (`bench/engines.sh` does, beside Raft).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ordo_common::client::{ClientRequest, ClientResponse};
use ordo_participant::{Batch, Client, Message, NodeConnection, new_batch_id};
use support::{
    ClusterOptions, REQUEST_TIMEOUT, TestCluster, count_from_env, machine_description, wait_until,
};

const SETTLE: Duration = Duration::from_secs(30);
const CONNECT_WARMUP: usize = 10;

fn main() {
    let elections = count_from_env("ORDO_BENCH_ELECTIONS", 20) as usize;
    let connects = count_from_env("ORDO_BENCH_CONNECTS", 200) as usize;
    let failovers = count_from_env("ORDO_BENCH_FAILOVERS", 10) as usize;
    println!("machine: {}", machine_description());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let client_failovers = count_from_env("ORDO_BENCH_CLIENT_FAILOVERS", 20) as usize;
    let only = std::env::var("ORDO_BENCH_ONLY").unwrap_or_default();
    let runs = |part: &str| only.is_empty() || only == part;
    runtime.block_on(async {
        if runs("a") {
            for options in [ClusterOptions::shipped_defaults(3), ClusterOptions::fast(3)] {
                election_after_kill(options, elections).await;
            }
        }
        if runs("b") {
            handshakes(connects).await;
        }
        if runs("c") {
            service_failover(failovers).await;
        }
        if runs("d") {
            client_failover(client_failovers).await;
        }
    });
}

/// In (d), an acknowledgement this soon after the kill was answered by the dead leader.
const ANSWER_IN_FLIGHT: Duration = Duration::from_millis(50);

/// The session TTL of the campaigners in (c).
const CAMPAIGN_TTL: Duration = Duration::from_secs(3);

/// An `ordo elect` process, with its output lines read on a thread.
struct Campaigner {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Campaigner {
    fn spawn(cluster: &TestCluster, name: &str, value: &str) -> Self {
        let ttl = format!("{}s", CAMPAIGN_TTL.as_secs());
        let mut child = Command::new(env!("CARGO_BIN_EXE_ordo"))
            .args(["elect", name, "--value", value, "--ttl", &ttl])
            .env("ORDO_ENDPOINTS", cluster.endpoints())
            .env("ORDO_TLS_DIR", cluster.tls_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ordo elect");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    fn elected(&self, timeout: Duration) -> bool {
        self.lines
            .recv_timeout(timeout)
            .is_ok_and(|line| line.contains("\"epoch\""))
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn service_failover(runs: usize) {
    println!(
        "\n(c) a service's leader failover: kill -9 of the elected `ordo elect` process until \
         the other campaigner is elected; session TTL {CAMPAIGN_TTL:?}, {runs} runs"
    );
    let cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
    cluster.wait_for_leader(SETTLE).await;
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        let name = format!("failover-{run}");
        let first = Campaigner::spawn(&cluster, &name, "first");
        assert!(
            first.elected(SETTLE),
            "run {run}: the first campaigner was not elected"
        );
        let second = Campaigner::spawn(&cluster, &name, "second");
        // Let it queue, and the first renew a few times, so the kill lands anywhere in a
        // renewal period.
        tokio::time::sleep(CAMPAIGN_TTL + Duration::from_millis(137 * run as u64 % 1000)).await;
        let killed_at = Instant::now();
        first.kill();
        assert!(
            second.elected(SETTLE),
            "run {run}: no failover within {SETTLE:?}"
        );
        let elapsed = killed_at.elapsed();
        println!(
            "  run {run:>2}: the second campaigner elected {} after the kill",
            millis(elapsed)
        );
        times.push(elapsed);
        second.kill();
    }
    report("failover", &mut times);
}

async fn client_failover(runs: usize) {
    println!(
        "\n(d) failover as a client sees it: kill -9 of the leader until the acknowledgement of \
         the submit it left unanswered, from one SDK client submitting one batch after another \
         (default settings); shipped timing, {runs} runs"
    );
    let mut cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
    cluster.wait_for_leader(SETTLE).await;
    let client = Client::connect(cluster.client_config())
        .await
        .expect("connect");
    // Each acknowledgement: (when its submit was sent, when it was acknowledged).
    let (acked, mut latest) = tokio::sync::watch::channel((Instant::now(), Instant::now()));
    let errors = Arc::new(AtomicU64::new(0));
    // Paused between runs, while the cluster settles (its log must stop moving for that).
    let paused = Arc::new(AtomicBool::new(true));
    let submitter = tokio::spawn({
        let (errors, paused) = (errors.clone(), paused.clone());
        async move {
            for n in 0u64.. {
                while paused.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let batch = Batch {
                    id: new_batch_id(),
                    messages: vec![Message::new("failover", n.to_le_bytes().to_vec())],
                    preconditions: Vec::new(),
                };
                let sent = Instant::now();
                match client.submit(batch).await {
                    Ok(_) => {
                        acked.send_replace((sent, Instant::now()));
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        paused.store(true, Ordering::Relaxed);
        let old = steady_leader(&cluster).await;
        paused.store(false, Ordering::Relaxed);
        // Let the client find the leader again, and land the kill anywhere in a submit.
        tokio::time::sleep(Duration::from_millis(500 + 37 * run as u64 % 200)).await;
        let killed_at = Instant::now();
        cluster.kill9(old.id);
        // The submit the dead leader left unanswered: the first acknowledged after the kill
        // that was not already on its way back (an answer sent just before the kill arrives
        // within a round trip of it).
        let answered_late = |(sent, at): &(Instant, Instant)| {
            *at > killed_at && at.duration_since(*sent.max(&killed_at)) > ANSWER_IN_FLIGHT
        };
        let (_, at) = *tokio::time::timeout(SETTLE, latest.wait_for(answered_late))
            .await
            .expect("an acknowledgement after the kill")
            .expect("the submitter runs");
        let elapsed = at.duration_since(killed_at);
        println!(
            "  run {run:>2}: node {} killed, the waiting submit acknowledged {} later",
            old.id,
            millis(elapsed)
        );
        times.push(elapsed);
        cluster.restart(old.id);
    }
    submitter.abort();
    report("client failover", &mut times);
    println!(
        "  submits that failed along the way: {}",
        errors.load(Ordering::Relaxed)
    );
    cluster.stop_all(SETTLE).await;
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
