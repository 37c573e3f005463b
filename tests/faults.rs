//! The fault-injection suite: real `ordo serve` processes under a recorded workload, one fault
//! kind per seeded run, then heal, converge, and check the whole history (see
//! `support/history.rs` for what the checker looks for). The `locks` run adds lock holders
//! and checks their history for mutual exclusion and fencing (`support/locks.rs`).
//!
//! ```text
//! cargo test --release --test faults                       # every fault once
//! cargo test --release --test faults -- partition          # the faults whose name matches
//! cargo test --release --test faults -- kill9-leader --seed 42   # one run, reproduced
//! cargo test --release --test faults -- --soak 4h          # random faults and seeds for 4 h
//! ```
//!
//! Each run prints its seed first. The seed draws every choice the run makes (which node,
//! how long, which split, which packets the proxy drops); the processes' own timing is real, so
//! a seed replays the same faults, not the same interleaving.
//!
//! The firewall faults need root and iptables: without them they are skipped with a notice,
//! unless `ORDO_TEST_REQUIRE_IPTABLES=1` (set by CI), which makes that a failure.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ordo_common::NodeId;
use ordo_core::rng::Prng;
use support::history::{self, Seen, Workload, WorkloadOptions};
use support::locks::{self, LockHistory, Lockers};
use support::netfault::{FaultTable, Firewall, LinkFaults, REQUIRE_FIREWALL, UdpProxy};
use support::{ClusterOptions, TestCluster, members};

/// Acknowledged submits required before the first fault: a run that never loaded the cluster
/// proves nothing.
const ACKNOWLEDGED_BEFORE_FAULTS_MIN: u64 = 200;
/// Acknowledged submits required after each heal: the cluster must recover, not just survive.
const ACKNOWLEDGED_AFTER_HEAL_MIN: u64 = 10;
/// How long a healed cluster may take to elect, catch up, or make progress.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Kill cycles in the kill -9 runs.
const KILL_CYCLES: u64 = 30;
/// The most log entries a node keeps in the fault runs: small, so that logs are compacted
/// several times a run, yet more than a subscriber falls behind while it fails over to another
/// node. After a kill it notices only at the SDK's 4 s idle timeout, and the workload commits
/// at most 1,500 batches a second (6 producers, each pausing 4 ms between submits), so the
/// bound is derived from that rate and not from how fast the cluster happens to be: at 3,000,
/// a faster build let a subscriber fall below the floor during a kill.
const RETAINED_ENTRIES_MAX: u64 = 8_000;
/// How long a subscriber may read nothing while it fails over after a kill: the SDK's 4 s idle
/// timeout, plus a second to reconnect. [`RETAINED_ENTRIES_MAX`] must outlast it.
const SUBSCRIBER_FAILOVER_MAX: Duration = Duration::from_secs(5);

type Scenario = fn(&mut Run) -> std::pin::Pin<Box<dyn Future<Output = ()> + '_>>;

/// How the nodes reach each other in a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Network {
    /// Straight over loopback.
    Direct,
    /// Straight, with firewall rules cutting links (needs root and iptables).
    Cuts,
    /// Through a [`UdpProxy`] in front of every node, with the run's [`FaultTable`].
    Proxy,
}

use Network::{Cuts, Direct, Proxy};

/// Every fault kind: name, nodes, network, the fault loop.
const FAULTS: &[(&str, u64, Network, Scenario)] = &[
    ("kill9-leader", 3, Direct, |run| Box::pin(kill9(run, true))),
    ("kill9-random", 3, Direct, |run| Box::pin(kill9(run, false))),
    ("sigstop", 3, Direct, |run| Box::pin(sigstop(run))),
    ("partition-leader-minority", 5, Cuts, |run| {
        Box::pin(partition_leader_minority(run))
    }),
    ("partition-split", 5, Cuts, |run| {
        Box::pin(partition_split(run))
    }),
    ("partition-one-way", 3, Cuts, |run| {
        Box::pin(partition_one_way(run))
    }),
    ("udp-loss-delay", 3, Proxy, |run| {
        Box::pin(loss_and_delay(run))
    }),
    ("whole-cluster-restart", 3, Direct, |run| {
        Box::pin(whole_cluster_restart(run))
    }),
    ("rolling-restart", 3, Direct, |run| {
        Box::pin(rolling_restart(run))
    }),
    ("follower-snapshot", 3, Direct, |run| {
        Box::pin(follower_snapshot(run))
    }),
    ("locks", 3, Direct, |run| Box::pin(locks(run))),
    ("membership-churn", 3, Direct, |run| {
        Box::pin(membership_churn(run))
    }),
];

/// One seeded run: the cluster, its workload, and the seed's generator.
struct Run {
    cluster: TestCluster,
    workload: Option<Workload>,
    random: Prng,
    faults: u64,
    /// Set by the proxy run: the proxies and their fault table live as long as the run.
    proxies: Vec<UdpProxy>,
    links: FaultTable,
    started: Instant,
    /// Set by the lock run: what its lock holders recorded.
    lock_history: Option<LockHistory>,
}

impl Run {
    fn workload(&self) -> &Workload {
        self.workload.as_ref().expect("the workload runs")
    }

    async fn leader(&self) -> NodeId {
        self.cluster.wait_for_leader(RECOVERY_TIMEOUT).await.id
    }

    /// The cluster makes progress under (or after) the fault.
    async fn progress(&self) {
        let workload = self.workload();
        workload
            .wait_for_progress(ACKNOWLEDGED_AFTER_HEAL_MIN, RECOVERY_TIMEOUT)
            .await;
    }

    async fn pause(&mut self, low_ms: u64, high_ms: u64) {
        let millis = self.random.range_inclusive(low_ms, high_ms);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }

    fn pick(&mut self, ids: &[NodeId]) -> NodeId {
        ids[self.random.below(ids.len() as u64) as usize]
    }

    fn pick_any(&mut self) -> NodeId {
        let ids = self.cluster.ids();
        self.pick(&ids)
    }

    fn election_ms(&self) -> u64 {
        self.cluster.election_timeout().as_millis() as u64
    }

    fn host(&self, id: NodeId) -> IpAddr {
        self.cluster.address(id).ip()
    }
}

async fn kill9(run: &mut Run, leader_only: bool) {
    for _ in 0..KILL_CYCLES {
        let target = if leader_only {
            run.leader().await
        } else {
            run.pick_any()
        };
        run.cluster.kill9(target);
        run.faults += 1;
        run.progress().await;
        run.pause(0, 300).await;
        run.cluster.restart(target);
        run.leader().await;
    }
}

async fn sigstop(run: &mut Run) {
    for cycle in 0..8 {
        let target = if cycle % 2 == 0 {
            run.leader().await
        } else {
            run.pick_any()
        };
        run.cluster.sigstop(target);
        run.faults += 1;
        // Longer than an election timeout: the others must act without it.
        let election = run.election_ms();
        run.pause(2 * election, 4 * election).await;
        run.progress().await;
        run.cluster.sigcont(target);
        run.leader().await;
        run.progress().await;
    }
}

async fn partition_leader_minority(run: &mut Run) {
    for _ in 0..4 {
        let leader = run.leader().await;
        let followers = run.cluster.others(leader);
        let partner = run.pick(&followers);
        let minority = [leader, partner];
        let majority: Vec<NodeId> = run
            .cluster
            .ids()
            .into_iter()
            .filter(|id| !minority.contains(id))
            .collect();
        isolate(run, &minority, &majority).await;
    }
}

async fn partition_split(run: &mut Run) {
    for _ in 0..4 {
        let mut ids = run.cluster.ids();
        // A seeded shuffle, then the first two against the rest.
        for i in (1..ids.len()).rev() {
            let j = run.random.below(i as u64 + 1) as usize;
            ids.swap(i, j);
        }
        let (left, right) = ids.split_at(2);
        isolate(run, left, right).await;
    }
}

/// Cuts `minority` from `majority` both ways, for a few election timeouts; the majority must
/// go on; then heals.
async fn isolate(run: &mut Run, minority: &[NodeId], majority: &[NodeId]) {
    let hosts = |ids: &[NodeId]| ids.iter().map(|id| run.host(*id)).collect::<Vec<_>>();
    let (left, right) = (hosts(minority), hosts(majority));
    let mut firewall = Firewall::new();
    firewall.split(&left, &right);
    hold_then_heal(run, firewall).await;
}

/// Keeps the firewall's cuts for a few election timeouts (the cluster must make progress
/// meanwhile), then heals: the cluster must agree on a leader and make progress again.
async fn hold_then_heal(run: &mut Run, mut firewall: Firewall) {
    run.faults += 1;
    let election = run.election_ms();
    run.pause(3 * election, 6 * election).await;
    run.progress().await;
    firewall.heal();
    run.leader().await;
    run.progress().await;
}

async fn partition_one_way(run: &mut Run) {
    for cycle in 0..6 {
        let leader = run.leader().await;
        let mut firewall = Firewall::new();
        for other in run.cluster.others(leader) {
            // Even cycles: the leader cannot be heard; odd: it cannot hear.
            if cycle % 2 == 0 {
                firewall.cut(run.host(leader), run.host(other));
            } else {
                firewall.cut(run.host(other), run.host(leader));
            }
        }
        hold_then_heal(run, firewall).await;
    }
}

async fn loss_and_delay(run: &mut Run) {
    let ids = run.cluster.ids();
    let phases = [(10, 1, 15), (30, 0, 40), (5, 20, 60)];
    for (loss_percent, low, high) in phases {
        run.links.set_all(
            &ids,
            LinkFaults {
                loss_percent,
                delay_min: Duration::from_millis(low),
                delay_max: Duration::from_millis(high),
            },
        );
        run.faults += 1;
        run.pause(2_000, 4_000).await;
        run.progress().await;
    }
    // Then the leader loses every datagram both ways, and comes back.
    run.links.clear();
    let leader = run.leader().await;
    for other in run.cluster.others(leader) {
        let cut = LinkFaults {
            loss_percent: 100,
            ..LinkFaults::default()
        };
        run.links.set(leader, other, cut);
        run.links.set(other, leader, cut);
    }
    run.faults += 1;
    let election = run.election_ms();
    run.pause(3 * election, 5 * election).await;
    run.progress().await;
    run.links.clear();
    run.leader().await;
    run.progress().await;
    let (forwarded, dropped, delayed) = run.links.counts();
    println!(
        "  proxies: {forwarded} datagrams between nodes forwarded ({delayed} delayed), {dropped} dropped"
    );
    assert!(
        dropped > 0 && delayed > 0 && forwarded > 0,
        "the proxies did not carry the nodes' traffic: {forwarded} forwarded, {dropped} dropped"
    );
}

async fn whole_cluster_restart(run: &mut Run) {
    for cycle in 0..4 {
        if cycle % 2 == 0 {
            for id in run.cluster.running() {
                run.cluster.kill9(id);
            }
        } else {
            run.cluster.stop_all(RECOVERY_TIMEOUT).await;
        }
        run.faults += 1;
        println!(
            "  all nodes down at {:.1}s",
            run.started.elapsed().as_secs_f64()
        );
        run.pause(0, 500).await;
        for id in run.cluster.ids() {
            run.cluster.restart(id);
        }
        run.leader().await;
        run.progress().await;
    }
}

/// A follower stopped while more than the retained log commits must catch up by a snapshot
/// (the leader no longer has the entries it missed), under load, and agree with the others.
/// It is stopped cleanly, so that the subscriber reading from it moves to another node at once
/// (after a kill, it would notice only at its idle timeout, and might fall below the floor).
async fn follower_snapshot(run: &mut Run) {
    for _ in 0..2 {
        let leader = run.leader().await;
        let followers = run.cluster.others(leader);
        let target = run.pick(&followers);
        run.cluster.stop(target, RECOVERY_TIMEOUT).await;
        run.faults += 1;
        run.workload()
            .wait_for_progress(RETAINED_ENTRIES_MAX + 500, RECOVERY_TIMEOUT)
            .await;
        let mark = run.cluster.log_mark(target);
        run.cluster.restart(target);
        run.cluster
            .wait_for_log(target, mark, &["installed a snapshot"], RECOVERY_TIMEOUT)
            .await;
        run.progress().await;
    }
}

async fn rolling_restart(run: &mut Run) {
    for _ in 0..2 {
        for id in run.cluster.ids() {
            run.cluster.stop(id, RECOVERY_TIMEOUT).await;
            run.faults += 1;
            run.progress().await;
            run.cluster.restart(id);
            run.cluster
                .wait_for_commit_everywhere(RECOVERY_TIMEOUT)
                .await;
        }
    }
}

/// Lock holders in the lock run, and their sessions' TTL (above three election timeouts).
const LOCKERS: usize = 4;
const LOCK_TTL: Duration = Duration::from_secs(2);
/// Lock grants required before the first fault, and after each heal.
const LOCK_GRANTS_BEFORE_FAULTS: u64 = 10;
const LOCK_GRANTS_AFTER_HEAL: u64 = 3;

/// Holders contend for one lock, fence their writes on it, and now and then abandon it as a
/// paused process would, while coordinators are killed (the leader, then any) and the leader
/// is paused; see `support::locks` for what is recorded and checked.
async fn locks(run: &mut Run) {
    let seed = run.random.next_u64();
    let lockers = Lockers::start(&run.cluster, LOCKERS, LOCK_TTL, seed).await;
    lockers
        .wait_for_grants(LOCK_GRANTS_BEFORE_FAULTS, RECOVERY_TIMEOUT)
        .await;
    for cycle in 0..6 {
        let target = match cycle % 3 {
            2 => run.pick_any(),
            _ => run.leader().await,
        };
        run.faults += 1;
        if cycle % 3 == 1 {
            run.cluster.sigstop(target);
            let election = run.election_ms();
            run.pause(2 * election, 4 * election).await;
            run.cluster.sigcont(target);
        } else {
            run.cluster.kill9(target);
            run.pause(0, 300).await;
            run.cluster.restart(target);
        }
        run.leader().await;
        run.progress().await;
        lockers
            .wait_for_grants(LOCK_GRANTS_AFTER_HEAL, RECOVERY_TIMEOUT)
            .await;
    }
    run.lock_history = Some(lockers.finish(RECOVERY_TIMEOUT).await);
}

/// Runs one fault kind with `seed`; panics (with the seed in the message) on a violation.
/// Replaces voters one after another (the leader every other time): a new node joins, catches
/// up by snapshot and is promoted, then the old one is removed and stopped; meanwhile a random
/// member is killed with -9 and restarted. One of the original nodes stays, so the workload's
/// clients (which know only the original addresses) can always reach the cluster.
async fn membership_churn(run: &mut Run) {
    let originals = run.cluster.ids();
    for cycle in 0..(originals.len() - 1) {
        let new = run.cluster.prepare_joining_node();
        run.cluster.restart(new);
        let address = run.cluster.address(new).to_string();
        members::change_when_allowed(&run.cluster, &["add", &new.to_string(), &address]).await;
        run.faults += 1;
        // A crash while the newcomer catches up.
        let victims: Vec<NodeId> = run
            .cluster
            .ids()
            .into_iter()
            .filter(|id| *id != new)
            .collect();
        let crashed = run.pick(&victims);
        run.cluster.kill9(crashed);
        run.faults += 1;
        run.pause(0, 2 * run.election_ms()).await;
        run.cluster.restart(crashed);
        let mut voters: Vec<NodeId> = run.cluster.ids();
        voters.sort_unstable();
        members::wait_for_voters(&run.cluster, &voters).await;
        run.progress().await;
        // Remove the leader (even cycles) or an original follower (odd ones).
        let remaining: Vec<NodeId> = originals
            .iter()
            .copied()
            .filter(|id| run.cluster.ids().contains(id))
            .collect();
        let leader_now = run.leader().await;
        let removed = if cycle % 2 == 0 && remaining.contains(&leader_now) {
            leader_now
        } else {
            let followers: Vec<NodeId> = remaining
                .iter()
                .copied()
                .filter(|id| *id != leader_now)
                .collect();
            run.pick(&followers)
        };
        members::change_when_allowed(&run.cluster, &["remove", &removed.to_string()]).await;
        run.faults += 1;
        let after: Vec<NodeId> = voters.iter().copied().filter(|id| *id != removed).collect();
        members::wait_for_voters(&run.cluster, &after).await;
        run.cluster.stop(removed, RECOVERY_TIMEOUT).await;
        run.cluster.forget(removed);
        run.progress().await;
    }
}

async fn run_fault(name: &str, nodes: u64, network: Network, scenario: Scenario, seed: u64) {
    let started = Instant::now();
    println!("fault {name} seed={seed}: starting");
    let mut options = ClusterOptions::fast(nodes);
    options.distinct_hosts = true;
    options.environment = compaction_on();
    let mut random = Prng::new(seed);
    let mut cluster = TestCluster::prepare(options);
    let links = FaultTable::default();
    let mut proxies = Vec::new();
    if network == Proxy {
        let nodes: std::collections::BTreeMap<_, _> = cluster
            .ids()
            .into_iter()
            .map(|id| (cluster.address(id), id))
            .collect();
        for id in cluster.ids() {
            let address = cluster.address(id);
            let proxy = UdpProxy::start(
                address.ip(),
                id,
                address,
                nodes.clone(),
                links.clone(),
                random.next_u64(),
            )
            .await;
            cluster.route_peers_to(id, proxy.address());
            proxies.push(proxy);
        }
    }
    for id in cluster.ids() {
        cluster.restart(id);
    }
    cluster.wait_for_leader(RECOVERY_TIMEOUT).await;
    let workload_options = WorkloadOptions::default();
    // The retained log outlasts a subscriber's failover at the workload's top rate.
    let top_rate = workload_options.producers as f64 / workload_options.pause.as_secs_f64();
    let failover_entries = (top_rate * SUBSCRIBER_FAILOVER_MAX.as_secs_f64()).ceil() as u64;
    assert!(
        RETAINED_ENTRIES_MAX >= failover_entries,
        "RETAINED_ENTRIES_MAX ({RETAINED_ENTRIES_MAX}) is below what the workload can commit \
         ({top_rate:.0}/s) while a subscriber fails over ({SUBSCRIBER_FAILOVER_MAX:?}): \
         {failover_entries}"
    );
    let workload = Workload::start(&cluster, workload_options, random.next_u64()).await;
    let mut run = Run {
        cluster,
        workload: Some(workload),
        random,
        faults: 0,
        proxies,
        links,
        started,
        lock_history: None,
    };
    run.workload()
        .wait_for_progress(ACKNOWLEDGED_BEFORE_FAULTS_MIN, RECOVERY_TIMEOUT)
        .await;
    scenario(&mut run).await;
    // Heal: every node running and caught up.
    for id in run.cluster.ids() {
        if !run.cluster.is_running(id) {
            run.cluster.restart(id);
        }
    }
    run.cluster
        .wait_for_commit_everywhere(RECOVERY_TIMEOUT)
        .await;
    let workload = run.workload.take().expect("the workload runs");
    let mut history = workload.finish(Duration::from_secs(60)).await;
    // Without load, every node reaches the leader's whole log.
    run.cluster.wait_for_caught_up(0, RECOVERY_TIMEOUT).await;
    let lock_history = run.lock_history.take();
    if let Some(lock_history) = &lock_history {
        history
            .operations
            .extend(lock_history.operations.iter().cloned());
    }
    let mut violations = history::check(&history);
    let mut summary = history.summary();
    if let Some(lock_history) = &lock_history {
        violations.extend(locks::check(lock_history, &history.applied[0]));
        summary = format!("{summary}; lock: {}", lock_history.summary());
        // Fencing was exercised: some stale holder was refused.
        if lock_history.stale.fenced == 0 {
            violations.push("no stale lock holder was fenced: the run proved nothing".into());
        }
    }
    assert!(
        violations.is_empty(),
        "fault {name} seed={seed}: {} violations (reproduce: cargo test --release --test faults \
         -- {name} --seed {seed}):\n  {}\nhistory: {summary}",
        violations.len(),
        violations.join("\n  ")
    );
    let applied = history::applied_ids(&history);
    let mut unknown_applied = 0;
    for operation in &history.operations {
        if let Seen::Unknown { detail } = &operation.seen {
            unknown_applied += usize::from(applied.contains(&operation.batch.id));
            println!(
                "  unknown outcome: batch {} submitted {:.1}s into the run, for {:.1}s ({detail}); \
                 afterwards the cluster said {:?}",
                operation.batch.id,
                operation.invoked.duration_since(started).as_secs_f64(),
                operation
                    .completed
                    .duration_since(operation.invoked)
                    .as_secs_f64(),
                operation.resolved
            );
        }
    }
    drop(run.proxies);
    let installs: usize = run
        .cluster
        .ids()
        .into_iter()
        .map(|id| run.cluster.log(id).matches("installed a snapshot").count())
        .sum();
    println!(
        "fault {name} seed={seed}: ok in {:.1}s, {} faults; {summary}; {unknown_applied} of the \
         unknown outcomes committed; {installs} snapshots installed",
        started.elapsed().as_secs_f64(),
        run.faults,
    );
}

/// Every fault run compacts: a node keeps few entries beyond its applied state, so a node that
/// was down or cut off for a moment catches up by snapshot, restarts open from compacted logs,
/// and subscribers are served from a log with a moving floor. The log also stays in memory only
/// within a small window, so followers are fed from disk.
fn compaction_on() -> Vec<(String, String)> {
    [
        (
            "ORDO_RETENTION_ENTRIES_MAX",
            RETAINED_ENTRIES_MAX.to_string(),
        ),
        ("ORDO_RETENTION_TRAILING_ENTRIES", "50".to_string()),
        ("ORDO_RAFT_LOG_WINDOW_BYTES_MAX", "256KiB".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

struct Arguments {
    filters: Vec<String>,
    seed: Option<u64>,
    soak: Option<Duration>,
    list: bool,
}

fn parse_arguments() -> Arguments {
    let mut arguments = Arguments {
        filters: Vec::new(),
        seed: None,
        soak: None,
        list: false,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--seed" => {
                let value = words.next().expect("--seed needs a number");
                arguments.seed = Some(value.parse().expect("--seed needs a number"));
            }
            "--soak" => {
                let value = words.next().expect("--soak needs a duration, e.g. 4h");
                let duration = humantime::parse_duration(&value).expect("--soak needs a duration");
                arguments.soak = Some(duration);
            }
            "--list" => arguments.list = true,
            // libtest's own flags (cargo passes some through): nothing to do here.
            other if other.starts_with('-') => {}
            filter => arguments.filters.push(filter.to_string()),
        }
    }
    arguments
}

/// Runs that change the membership: Multi-Paxos keeps its bootstrap voters, so they run on
/// Raft only.
const MEMBERSHIP_RUNS: &[&str] = &["membership-churn"];

pub(crate) fn main() {
    let arguments = parse_arguments();
    let engine = support::test_engine();
    println!("consensus engine: {engine}");
    let selected: Vec<_> = FAULTS
        .iter()
        .filter(|(name, ..)| {
            arguments.filters.is_empty() || arguments.filters.iter().any(|f| name.contains(f))
        })
        .filter(|(name, ..)| {
            let skip =
                engine == ordo_common::EngineKind::MultiPaxos && MEMBERSHIP_RUNS.contains(name);
            if skip {
                println!("fault {name}: not run on {engine}, which keeps its bootstrap voters");
            }
            !skip
        })
        .collect();
    if arguments.list {
        for (name, ..) in &selected {
            println!("{name}: test");
        }
        return;
    }
    history::self_test();
    println!("history checker: caught every planted violation in its self-test");
    locks::self_test();
    println!("lock checker: caught every planted violation in its self-test");
    let firewall = Firewall::check();
    let require_firewall = std::env::var_os(REQUIRE_FIREWALL).is_some_and(|v| v == "1");
    if let Err(why) = &firewall {
        assert!(!require_firewall, "{REQUIRE_FIREWALL}=1 but {why}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let first_seed = arguments.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
    });
    let mut seeds = Prng::new(first_seed);
    let soak_until = arguments.soak.map(|duration| Instant::now() + duration);
    let mut runs = 0u64;
    loop {
        for (name, nodes, network, scenario) in &selected {
            if *network == Cuts
                && let Err(why) = &firewall
            {
                println!("fault {name}: SKIPPED ({why}; set {REQUIRE_FIREWALL}=1 to require it)");
                continue;
            }
            // The first pass uses the given seed as is, so a printed seed replays its run.
            let seed = if runs == 0 || soak_until.is_none() && arguments.seed.is_some() {
                first_seed
            } else {
                seeds.next_u64()
            };
            runtime.block_on(run_fault(name, *nodes, *network, *scenario, seed));
            runs += 1;
        }
        match soak_until {
            Some(until) if Instant::now() < until => {}
            _ => break,
        }
    }
    println!("faults: {runs} runs passed");
}
