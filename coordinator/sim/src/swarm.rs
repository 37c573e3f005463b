//! The seed runner: one seed draws its fault rates, runs a cluster of real nodes through a
//! safety phase and a liveness phase, and reports what happened.
//!
//! In the **safety phase** the seed's faults are on: message loss, duplication, delay and
//! reordering; partitions (one node isolated, a split, a one-way cut, flapping); crashes that
//! lose unreported writes, some in the middle of a batch of outputs (between apply and reply,
//! say) and some right after a restart; storage reports that arrive late and folded together;
//! replies lost on the way to their client; nodes missing ticks; clients proposing, submitting,
//! retrying with the same batch id, resubmitting decided batches and asking for outcomes all
//! along, and a subscriber on every node. In the **liveness phase** every fault is healed and
//! every node restarted, and the cluster must elect one leader and converge — identical logs,
//! all committed, applied and servable, every subscriber caught up — within a bounded number of
//! ticks.
//!
//! Everything random comes from the seed, so a seed replays exactly; [`RunReport::trace`] is
//! a hash of the run, equal for equal seeds.

use ordo_common::EngineKind;
use ordo_common::batch::{Batch, BatchId, Message, Precondition};
use ordo_common::client::{ClientRequest, ClientResponse};
use ordo_common::coord::{MutexKind, SessionId};
use ordo_core::MembershipChange;
use ordo_core::paxos::PlantedBug;
use ordo_core::rng::Prng;
use ordo_core::state::RegistryLimits;
use ordo_node::storage::Retention;
use std::num::NonZeroU64;

use crate::cluster::{Cluster, ClusterOptions, TICK_MS, address_of};
use crate::network::NetworkFaults;

/// Safety-phase length.
pub const SAFETY_TICKS: u64 = 2_000;
/// The liveness phase must converge within this many ticks, plus time to move the backlog.
pub const LIVENESS_TICKS_MAX: u64 = 600;

/// The partition shapes the safety phase cycles through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    None,
    IsolateOne,
    Split,
    OneWay,
    Flapping,
}

/// What a seed drew. Printed with every failure, so the run can be understood and replayed.
#[derive(Clone, Debug)]
pub struct SeedOptions {
    pub seed: u64,
    pub nodes: usize,
    pub network: NetworkFaults,
    pub disk_latency_ticks_max: u64,
    pub report_delay_ticks_max: u64,
    pub crash_per_mille: u64,
    pub crash_mid_output_per_mille: u64,
    pub restart_crash_percent: u64,
    pub reply_loss_percent: u64,
    pub tick_skip_percent: u64,
    /// The registry's horizon, byte budget and allowed skew (small, so eviction happens).
    pub registry: RegistryLimits,
    pub clock_skew_ms_max: u64,
    /// What each store keeps, and the core's in-memory window (small, so entries are read back
    /// from storage and followers get snapshots).
    pub retention: Retention,
    pub log_window_bytes_max: u64,
    pub install_crash_percent: u64,
    pub partition_interval_ticks: u64,
    pub propose_percent: u64,
    pub read_percent: u64,
    /// Small append budgets make replication span many messages and windows fill up.
    pub append_entries_max: usize,
    pub inflight_messages_max: usize,
    /// Lock clients: how many, how often they act, and how often one stops renewing for a
    /// while (its session then expires and its locks move on).
    pub lockers: usize,
    pub lock_percent: u64,
    pub pause_percent: u64,
    /// Membership churn: the chance per tick that the leader is asked to add a learner,
    /// promote one, or remove a voter (the leader included) or a learner.
    pub membership_per_mille: u64,
    /// In a churning seed: the tick at which a voter's disk dies (it restarts empty, under
    /// the same id; the swarm then removes it, as an operator would).
    pub wipe_at: Option<u64>,
    /// The consensus engine every node runs. The rest of a seed's options are the same for
    /// both engines, so each seed runs the same workload under each.
    pub engine: EngineKind,
    /// A Multi-Paxos bug planted in every node, to see the checkers catch it (tests only).
    pub plant: Option<PlantedBug>,
}

/// Ids a churning seed may add (ids are never reused, so this bounds the adds).
const SPARE_NODES: usize = 4;

impl SeedOptions {
    /// Draws every fault rate from the seed. `nodes` overrides the drawn cluster size.
    pub fn draw(seed: u64, nodes: Option<usize>) -> Self {
        let mut rng = Prng::new(seed ^ 0x5EED_0F0D_0000_0000);
        let drawn_nodes = if rng.chance_percent(50) { 3 } else { 5 };
        Self {
            seed,
            nodes: nodes.unwrap_or(drawn_nodes),
            network: NetworkFaults {
                drop_percent: rng.range_inclusive(0, 30),
                duplicate_percent: rng.range_inclusive(0, 50),
                delay_ticks_max: rng.range_inclusive(1, 6),
                long_delay_percent: rng.range_inclusive(0, 5),
                fifo: rng.chance_percent(30),
            },
            disk_latency_ticks_max: rng.range_inclusive(0, 4),
            report_delay_ticks_max: rng.range_inclusive(0, 5),
            crash_per_mille: rng.range_inclusive(0, 6),
            crash_mid_output_per_mille: rng.range_inclusive(0, 3),
            restart_crash_percent: rng.range_inclusive(0, 20),
            reply_loss_percent: rng.range_inclusive(0, 10),
            tick_skip_percent: rng.range_inclusive(0, 10),
            registry: RegistryLimits {
                horizon_ms: rng.range_inclusive(200, 20_000),
                bytes_max: if rng.chance_percent(50) {
                    u64::MAX
                } else {
                    rng.range_inclusive(8, 400) * 100
                },
                future_skew_ms: rng.range_inclusive(50, 2_000),
            },
            clock_skew_ms_max: rng.range_inclusive(0, 300),
            retention: Retention {
                entries_max: NonZeroU64::new(if rng.chance_percent(60) {
                    rng.range_inclusive(10, 300)
                } else {
                    0
                }),
                bytes_max: NonZeroU64::new(if rng.chance_percent(40) {
                    rng.range_inclusive(2_000, 40_000)
                } else {
                    0
                }),
                age_ms: NonZeroU64::new(if rng.chance_percent(40) {
                    rng.range_inclusive(500, 10_000)
                } else {
                    0
                }),
                trailing_entries: rng.range_inclusive(0, 40),
            },
            log_window_bytes_max: rng.range_inclusive(0, 4_000),
            install_crash_percent: rng.range_inclusive(0, 30),
            partition_interval_ticks: rng.range_inclusive(30, 300),
            propose_percent: rng.range_inclusive(10, 80),
            read_percent: rng.range_inclusive(0, 30),
            append_entries_max: rng.range_inclusive(1, 64) as usize,
            inflight_messages_max: rng.range_inclusive(1, 8) as usize,
            lockers: rng.range_inclusive(0, 4) as usize,
            lock_percent: rng.range_inclusive(5, 60),
            pause_percent: rng.range_inclusive(0, 3),
            membership_per_mille: if rng.chance_percent(40) {
                rng.range_inclusive(2, 20)
            } else {
                0
            },
            wipe_at: rng
                .chance_percent(50)
                .then(|| rng.range_inclusive(100, SAFETY_TICKS / 2)),
            engine: EngineKind::Raft,
            plant: None,
        }
    }

    /// The same seed under `engine`. Multi-Paxos keeps the voters a cluster bootstraps with, so
    /// its seeds change no membership (and lose no disk, which only a removal could recover).
    pub fn under(mut self, engine: EngineKind) -> Self {
        self.engine = engine;
        if engine == EngineKind::MultiPaxos {
            self.membership_per_mille = 0;
            self.wipe_at = None;
        }
        self
    }

    /// When a voter's disk dies: only in churning seeds, which can replace it.
    pub fn wipe_at(&self) -> Option<u64> {
        self.wipe_at.filter(|_| self.membership_per_mille > 0)
    }

    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p ordo-sim -- --seeds 1 --start {} --nodes {} --engine {}",
            self.seed, self.nodes, self.engine
        )
    }
}

impl std::fmt::Display for SeedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed={} engine={} nodes={} drop={}% dup={}% delay<={} long_delay={}% fifo={} disk<={} \
             report_delay<={} crash={}‰ crash_mid_output={}‰ restart_crash={}% reply_loss={}% \
             tick_skip={}% horizon={}ms registry_bytes<={} future_skew={}ms clock_skew<={}ms \
             retain_entries<={:?} retain_bytes<={:?} retain_age={:?}ms trailing={} window<={} \
             install_crash={}% partition_every={} propose={}% read={}% append_entries_max={} \
             inflight_max={} lockers={} lock={}% pause={}% membership={}‰ wipe_at={:?}",
            self.seed,
            self.engine,
            self.nodes,
            self.network.drop_percent,
            self.network.duplicate_percent,
            self.network.delay_ticks_max,
            self.network.long_delay_percent,
            self.network.fifo,
            self.disk_latency_ticks_max,
            self.report_delay_ticks_max,
            self.crash_per_mille,
            self.crash_mid_output_per_mille,
            self.restart_crash_percent,
            self.reply_loss_percent,
            self.tick_skip_percent,
            self.registry.horizon_ms,
            self.registry.bytes_max,
            self.registry.future_skew_ms,
            self.clock_skew_ms_max,
            self.retention.entries_max,
            self.retention.bytes_max,
            self.retention.age_ms,
            self.retention.trailing_entries,
            self.log_window_bytes_max,
            self.install_crash_percent,
            self.partition_interval_ticks,
            self.propose_percent,
            self.read_percent,
            self.append_entries_max,
            self.inflight_messages_max,
            self.lockers,
            self.lock_percent,
            self.pause_percent,
            self.membership_per_mille,
            self.wipe_at(),
        )
    }
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub options: SeedOptions,
    pub failure: Option<String>,
    pub ticks: u64,
    pub messages: u64,
    pub commits: u64,
    pub acknowledged: u64,
    /// Status reads answered, and batches read by subscribers.
    pub reads: u64,
    pub subscribed: u64,
    /// Registry events: retries absorbed, conflicts, refusals beyond the horizon, evictions.
    pub duplicates: u64,
    pub conflicts: u64,
    pub beyond_horizon: u64,
    pub evicted: u64,
    /// Snapshots sent and installed, and reads of entries back from storage.
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub entries_read_back: u64,
    /// Lock and election grants the model made, sessions it expired, and grants clients were
    /// told of (each checked against the model).
    pub locks_granted: u64,
    pub sessions_expired: u64,
    pub held_answers: u64,
    /// Membership changes committed.
    pub configs_committed: u64,
    /// Batches committed, and acknowledged committed / rejected to clients.
    pub batches_committed: u64,
    pub batches_acknowledged: u64,
    pub batches_rejected: u64,
    pub trace: u64,
}

/// Runs one seed through both phases. Panics in the core are caught and reported as failures.
pub fn run_seed(options: SeedOptions) -> RunReport {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_phases(&options)));
    match outcome {
        Ok(report) => report,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            RunReport {
                options,
                failure: Some(format!("panic: {message}")),
                ticks: 0,
                messages: 0,
                commits: 0,
                acknowledged: 0,
                reads: 0,
                subscribed: 0,
                duplicates: 0,
                conflicts: 0,
                beyond_horizon: 0,
                evicted: 0,
                snapshots_sent: 0,
                snapshots_installed: 0,
                entries_read_back: 0,
                locks_granted: 0,
                sessions_expired: 0,
                held_answers: 0,
                configs_committed: 0,
                batches_committed: 0,
                batches_acknowledged: 0,
                batches_rejected: 0,
                trace: 0,
            }
        }
    }
}

fn run_phases(options: &SeedOptions) -> RunReport {
    let (append_entries_max, inflight_messages_max) =
        (options.append_entries_max, options.inflight_messages_max);
    let log_window_bytes_max = options.log_window_bytes_max;
    let plant = options.plant;
    let mut cluster = Cluster::new(ClusterOptions {
        nodes: options.nodes,
        spares: if options.membership_per_mille > 0 {
            SPARE_NODES
        } else {
            0
        },
        seed: options.seed,
        network: options.network.clone(),
        disk_latency_ticks_max: options.disk_latency_ticks_max,
        report_delay_ticks_max: options.report_delay_ticks_max,
        crash_mid_output_per_mille: options.crash_mid_output_per_mille,
        restart_crash_percent: options.restart_crash_percent,
        reply_loss_percent: options.reply_loss_percent,
        tick_skip_percent: options.tick_skip_percent,
        registry: options.registry,
        clock_skew_ms_max: options.clock_skew_ms_max,
        retention: options.retention,
        install_crash_percent: options.install_crash_percent,
        configure: Box::new(move |config| {
            config.append_entries_max = append_entries_max;
            config.inflight_messages_max = inflight_messages_max;
            config.log_window_bytes_max = log_window_bytes_max;
            // A transfer lost on the way is retried after a few election timeouts.
            config.snapshot_timeout_ticks = 60;
            // Small enough that busy seeds hit back-pressure.
            config.uncommitted_bytes_max = 64 * 1024;
            config.plant_paxos = plant;
        }),
        engine: options.engine,
    });
    let mut rng = Prng::new(options.seed ^ 0x00C1_1E17);
    let mut down_until = vec![0u64; options.nodes + SPARE_NODES + 1];
    let mut partition = Partition::None;
    let mut next_partition_change = options.partition_interval_ticks;
    let mut failure = None;
    let mut lockers = Lockers::new(options);

    for _ in 0..SAFETY_TICKS {
        let now = cluster.now;
        if now >= next_partition_change {
            partition = choose_partition(&mut cluster, &mut rng);
            next_partition_change = now + rng.range_inclusive(1, options.partition_interval_ticks);
        } else if partition == Partition::Flapping && rng.chance_percent(20) {
            cluster.heal();
            if rng.chance_percent(50) {
                let victim = pick(&cluster, &mut rng);
                cluster.isolate(victim);
            }
        }
        for id in cluster.ids().to_vec() {
            if cluster.is_up(id) {
                if rng.below(1000) < options.crash_per_mille {
                    cluster.crash(id);
                    down_until[id as usize] = now + rng.range_inclusive(1, 80);
                }
            } else if now >= down_until[id as usize] {
                cluster.restart(id);
            }
        }
        client_actions(&mut cluster, &mut rng, options);
        lockers.act(&mut cluster, options);
        if rng.below(1000) < options.membership_per_mille {
            membership_action(&mut cluster, &mut rng);
        }
        if options.wipe_at() == Some(now)
            && let Some(leader) = cluster.leader()
        {
            let voters = cluster
                .node(leader)
                .expect("leader is up")
                .membership()
                .voters
                .clone();
            let voters: Vec<u64> = voters.into_iter().collect();
            let victim = voters[rng.below(voters.len() as u64) as usize];
            cluster.wipe(victim);
            down_until[victim as usize] = now + rng.range_inclusive(1, 80);
        }
        remove_wiped(&mut cluster);
        cluster.tick();
        if let Some(violation) = cluster.violation() {
            failure = Some(violation.to_string());
            break;
        }
    }

    if failure.is_none() {
        cluster.calm();
        for id in cluster.ids().to_vec() {
            cluster.restart(id);
        }
        // Catching up is bounded by throughput: a seed with one-entry appends and a window of
        // one moves one entry per round trip, so the bound grows with the backlog.
        let backlog = cluster.max_last_index();
        // A round trip is a tick each way, plus the follower's disk write and the report of
        // it (both stay slow after healing: liveness must hold on a slow disk too).
        let per_round_trip = (options.append_entries_max * options.inflight_messages_max) as u64;
        let round_trip_ticks = 4 + options.disk_latency_ticks_max + options.report_delay_ticks_max;
        // Entries that left the leader's in-memory window are read back from storage first:
        // one read (a disk latency) per append message, one read at a time per follower, so a
        // follower fed from disk moves a message's worth per read, not a window's worth.
        let read_back_ticks =
            (2 + options.disk_latency_ticks_max) * backlog / options.append_entries_max as u64;
        let ticks_max =
            LIVENESS_TICKS_MAX + round_trip_ticks * backlog / per_round_trip + read_back_ticks;
        // A node that lost its disk stays out until the operator removes it: asked every tick
        // until the cluster converges without it (one more liveness bound for the change).
        let ticks_max = ticks_max + LIVENESS_TICKS_MAX * cluster.wiped().len() as u64;
        let mut converged = false;
        for _ in 0..ticks_max {
            remove_wiped(&mut cluster);
            converged = cluster.converged();
            if converged || cluster.violation().is_some() {
                break;
            }
            cluster.tick();
        }
        let batches = if converged {
            cluster.check_batches_converged().err()
        } else {
            None
        };
        failure = match cluster.violation().cloned().or(batches) {
            Some(violation) => Some(violation.to_string()),
            None if !converged => Some(format!(
                "liveness: no convergence within {ticks_max} ticks after healing: {}",
                cluster.describe()
            )),
            None => None,
        };
    }

    RunReport {
        options: options.clone(),
        failure,
        ticks: cluster.now,
        messages: cluster.network.sent,
        commits: cluster.checker.committed_count(),
        acknowledged: cluster.oracle.acknowledged,
        reads: cluster.batches.statuses_served,
        subscribed: cluster.batches.subscribed,
        duplicates: cluster.batches.duplicates_absorbed,
        conflicts: cluster.batches.conflicts,
        beyond_horizon: cluster.batches.beyond_horizon,
        evicted: cluster.batches.evicted,
        snapshots_sent: cluster.snapshots_sent,
        snapshots_installed: cluster.snapshots_installed,
        entries_read_back: cluster.entries_read_back,
        locks_granted: cluster.batches.locks.granted,
        sessions_expired: cluster.batches.locks.expired,
        held_answers: cluster.batches.locks.held_answers,
        configs_committed: cluster.batches.configs_committed,
        batches_committed: cluster.batches.committed_seqs(),
        batches_acknowledged: cluster.batches.acknowledged_committed,
        batches_rejected: cluster.batches.acknowledged_rejected,
        trace: cluster.trace,
    }
}

/// Asks the leader to remove every node that lost its disk and is still a member, as the
/// operator does on the node's refusal message (the change may be refused for now: it is asked
/// again next tick).
fn remove_wiped(cluster: &mut Cluster) {
    let Some(leader) = cluster.leader() else {
        return;
    };
    let wiped: Vec<u64> = cluster.wiped().iter().copied().collect();
    for id in wiped {
        if id != leader && cluster.is_member(id) {
            let _ = cluster.change_membership(leader, MembershipChange::Remove { id });
        }
    }
}

/// One membership change, asked of the leader (now and then of a random node, which must
/// refuse it): add a spare as a learner (mostly promoted automatically once caught up), promote
/// a learner by hand, remove a voter (the leader too) while more than three remain, or remove a
/// learner.
fn membership_action(cluster: &mut Cluster, rng: &mut Prng) {
    let Some(leader) = cluster.leader() else {
        return;
    };
    let membership = cluster
        .node(leader)
        .expect("leader is up")
        .membership()
        .clone();
    let at = if rng.chance_percent(90) {
        leader
    } else {
        pick(cluster, rng)
    };
    let choose = |set: &std::collections::BTreeSet<u64>, rng: &mut Prng| {
        let all: Vec<u64> = set.iter().copied().collect();
        (!all.is_empty()).then(|| all[rng.below(all.len() as u64) as usize])
    };
    let change = match rng.below(4) {
        0 => cluster
            .spare_ids()
            .first()
            .map(|&id| MembershipChange::AddLearner {
                id,
                address: address_of(id),
                promote: rng.chance_percent(70),
            }),
        1 => choose(&membership.learners, rng).map(|id| MembershipChange::Promote { id }),
        2 if membership.voters.len() > 3 => {
            choose(&membership.voters, rng).map(|id| MembershipChange::Remove { id })
        }
        _ => choose(&membership.learners, rng).map(|id| MembershipChange::Remove { id }),
    };
    if let Some(change) = change {
        let _ = cluster.change_membership(at, change);
    }
}

fn pick(cluster: &Cluster, rng: &mut Prng) -> u64 {
    let ids = cluster.ids();
    ids[rng.below(ids.len() as u64) as usize]
}

fn choose_partition(cluster: &mut Cluster, rng: &mut Prng) -> Partition {
    cluster.heal();
    let partition = match rng.below(6) {
        0 | 1 => Partition::None,
        2 => Partition::IsolateOne,
        3 => Partition::Split,
        4 => Partition::OneWay,
        _ => Partition::Flapping,
    };
    match partition {
        Partition::IsolateOne => {
            // Prefer the leader: that is the interesting node to cut off.
            let victim = cluster.leader().unwrap_or_else(|| pick(cluster, rng));
            cluster.isolate(victim);
        }
        Partition::Split => {
            let mut ids = cluster.ids().to_vec();
            for index in (1..ids.len()).rev() {
                ids.swap(index, rng.below(index as u64 + 1) as usize);
            }
            let side = rng.range_inclusive(1, ids.len() as u64 / 2) as usize;
            cluster.split(&ids[..side]);
        }
        Partition::OneWay => {
            let from = cluster.leader().unwrap_or_else(|| pick(cluster, rng));
            for to in cluster.ids().to_vec() {
                if to != from && rng.chance_percent(60) {
                    cluster.network.cut_one_way(from, to);
                }
            }
        }
        Partition::None | Partition::Flapping => {}
    }
    partition
}

fn client_actions(cluster: &mut Cluster, rng: &mut Prng, options: &SeedOptions) {
    // Clients mostly find the newest leader, but they also talk to nodes that still believe
    // they lead (a deposed leader must not serve stale reads or acknowledge lost writes) and
    // to random nodes (which redirect them).
    let target = |cluster: &Cluster, rng: &mut Prng| {
        let believers = cluster.self_declared_leaders();
        match cluster.leader() {
            Some(leader) if rng.chance_percent(70) => leader,
            _ if !believers.is_empty() && rng.chance_percent(70) => {
                believers[rng.below(believers.len() as u64) as usize]
            }
            _ => pick(cluster, rng),
        }
    };
    let proposals = if rng.chance_percent(options.propose_percent) {
        rng.range_inclusive(1, 4)
    } else {
        0
    };
    for _ in 0..proposals {
        let node = target(cluster, rng);
        match rng.below(10) {
            // Raw entries exercise Raft alone.
            0 => {
                let padding = rng.below(64) as usize;
                let _ = cluster.propose(node, padding);
            }
            // Retries reuse the batch id: the state machine must absorb the duplicates.
            1 | 2 => {
                if let Some(batch) = cluster.pending_batch(rng.below(1 << 16) as usize) {
                    let _ = cluster.submit(node, batch);
                }
            }
            // A client that did not hear its answer resubmits a batch that was decided: it
            // must get the original outcome (or, past the horizon, a refusal). Now and then a
            // careless client reuses a decided id for other content: a conflict.
            3 => {
                let decided = cluster.batches.decided(256, rng.next_u64());
                if let Some(mut batch) = decided.and_then(|id| cluster.submitted_batch(&id)) {
                    if rng.chance_percent(10) {
                        batch
                            .messages
                            .push(Message::new("conflict", "other content"));
                    }
                    let _ = cluster.submit(node, batch);
                }
            }
            _ => {
                let batch = random_batch(cluster, rng, node, options);
                let _ = cluster.submit(node, batch);
            }
        }
    }
    if rng.chance_percent(options.read_percent) {
        // Ask every node that believes it leads: during a leader change the old one may not
        // know yet, and it must not answer from its stale state.
        for node in cluster.self_declared_leaders() {
            let _ = cluster.read(node);
        }
        let node = pick(cluster, rng);
        let _ = cluster.read(node);
        // And about a batch still in flight, whose outcome may appear at any moment.
        if let Some(batch) = cluster.pending_batch(rng.below(1 << 16) as usize) {
            let node = target(cluster, rng);
            let _ = cluster.read_status(node, batch.id);
        }
    }
}

const TOPICS: [&str; 3] = ["orders", "payments", "audit"];

/// A batch of 1–4 messages over a few topics; some race on a topic offset, some depend on an
/// earlier batch.
/// A client's UUID v7: its time is the client's clock, which is mostly right, sometimes
/// behind by more than the registry's horizon (refused), sometimes ahead by more than the
/// allowed skew (refused).
fn fresh_id(cluster: &Cluster, rng: &mut Prng, options: &SeedOptions) -> BatchId {
    let now = cluster.clock_ms();
    let time = match rng.below(100) {
        0 => now.saturating_sub(options.registry.horizon_ms + rng.range_inclusive(1, 500)),
        1 => now + options.registry.future_skew_ms + rng.range_inclusive(1, 500),
        _ => now.saturating_sub(rng.below(50)),
    };
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    random[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
    BatchId::v7(time, random)
}

fn random_batch(cluster: &Cluster, rng: &mut Prng, node: u64, options: &SeedOptions) -> Batch {
    let id = fresh_id(cluster, rng, options);
    let messages = (0..rng.range_inclusive(1, 4))
        .map(|_| {
            let topic = TOPICS[rng.below(TOPICS.len() as u64) as usize];
            let payload: Vec<u8> = (0..rng.below(24)).map(|_| rng.below(256) as u8).collect();
            Message::new(topic, payload)
        })
        .collect();
    let mut preconditions = Vec::new();
    if rng.chance_percent(25) {
        let topic = TOPICS[rng.below(TOPICS.len() as u64) as usize];
        let offset = match cluster.batch_state(node) {
            Some(state) => state.offset(topic),
            None => cluster.batches.offset(topic),
        };
        preconditions.push(Precondition::TopicOffset {
            topic: topic.to_string(),
            offset,
        });
    }
    if rng.chance_percent(10)
        && let Some(earlier) = cluster.pending_batch(rng.below(1 << 16) as usize)
    {
        preconditions.push(Precondition::BatchCommitted { batch: earlier.id });
    }
    Batch {
        id,
        messages,
        preconditions,
    }
}

/// Locks every lock client contends for, and the election they campaign in.
const LOCK_NAMES: [&str; 2] = ["a", "b"];
const ELECTION_NAME: &str = "e";

/// One lock client: a session it keeps alive (or, paused, does not), what it holds.
#[derive(Debug, Default)]
struct Locker {
    session: Option<SessionId>,
    ttl_ms: u64,
    next_keepalive: u64,
    paused_until: u64,
    /// Held locks (or the election) with their tokens, as the client was told.
    held: Vec<(MutexKind, String, u64)>,
}

/// The lock clients of a seed: they open sessions, renew them every third of the TTL, acquire
/// and release locks, campaign, submit batches fenced on what they hold (and now and then on a
/// token they no longer hold), and sometimes stop renewing so that their sessions expire.
struct Lockers {
    rng: Prng,
    lockers: Vec<Locker>,
}

impl Lockers {
    fn new(options: &SeedOptions) -> Self {
        Self {
            rng: Prng::new(options.seed ^ 0x10C4_5E55),
            lockers: (0..options.lockers).map(|_| Locker::default()).collect(),
        }
    }

    fn act(&mut self, cluster: &mut Cluster, options: &SeedOptions) {
        for (request, response) in cluster.take_coord_replies() {
            self.hear(&request, &response);
        }
        let now = cluster.now;
        for index in 0..self.lockers.len() {
            let rng = &mut self.rng;
            let node = match cluster.leader() {
                Some(leader) if rng.chance_percent(80) => leader,
                _ => pick(cluster, rng),
            };
            let locker = &mut self.lockers[index];
            if now < locker.paused_until {
                continue;
            }
            let Some(session) = locker.session else {
                if rng.chance_percent(options.lock_percent) {
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
                    id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
                    let ttl_ms = rng.range_inclusive(300, 1_500);
                    let body = ClientRequest::OpenSession {
                        session: SessionId(id),
                        ttl_ms,
                        owner: format!("sim-{index}"),
                    };
                    let _ = cluster.coord(node, body);
                }
                continue;
            };
            if rng.chance_percent(options.pause_percent) {
                // A long pause: longer than the TTL, so the session expires.
                locker.paused_until = now + 2 * locker.ttl_ms / TICK_MS + rng.below(100);
                continue;
            }
            if now >= locker.next_keepalive {
                locker.next_keepalive = now + (locker.ttl_ms / TICK_MS / 3).max(1);
                let _ = cluster.coord(node, ClientRequest::KeepAlive { session });
            }
            if !rng.chance_percent(options.lock_percent) {
                continue;
            }
            let body = match rng.below(10) {
                0..=3 => {
                    let (kind, name, value) = if rng.chance_percent(70) {
                        let name = LOCK_NAMES[rng.below(2) as usize];
                        (MutexKind::Lock, name, Vec::new())
                    } else {
                        (MutexKind::Election, ELECTION_NAME, vec![index as u8])
                    };
                    let lock_delay_ms = if rng.chance_percent(30) {
                        rng.below(300)
                    } else {
                        0
                    };
                    ClientRequest::Acquire {
                        kind,
                        name: name.to_string(),
                        session,
                        value,
                        lock_delay_ms,
                    }
                }
                4 | 5 if !locker.held.is_empty() => {
                    let at = rng.below(locker.held.len() as u64) as usize;
                    let (kind, name, _) = locker.held.remove(at);
                    ClientRequest::Release {
                        kind,
                        name,
                        session,
                    }
                }
                6..=8 if !locker.held.is_empty() => {
                    let at = rng.below(locker.held.len() as u64) as usize;
                    let (kind, name, token) = locker.held[at].clone();
                    // Now and then a token that is surely stale.
                    let token = if rng.chance_percent(20) {
                        token.saturating_sub(1)
                    } else {
                        token
                    };
                    let mut batch = random_batch(cluster, rng, node, options);
                    batch.preconditions.push(match kind {
                        MutexKind::Lock => Precondition::LockHeld { name, token },
                        MutexKind::Election => Precondition::Leader {
                            election: name,
                            epoch: token,
                        },
                    });
                    let _ = cluster.submit(node, batch);
                    continue;
                }
                9 if rng.chance_percent(20) => {
                    locker.held.clear();
                    locker.session = None;
                    ClientRequest::CloseSession { session }
                }
                _ => continue,
            };
            let _ = cluster.coord(node, body);
        }
    }

    /// What a client learns from an answer.
    fn hear(&mut self, request: &ClientRequest, response: &ClientResponse) {
        let session = match request {
            ClientRequest::OpenSession { session, .. }
            | ClientRequest::KeepAlive { session }
            | ClientRequest::Acquire { session, .. }
            | ClientRequest::Release { session, .. } => *session,
            _ => return,
        };
        let owner = match request {
            ClientRequest::OpenSession { owner, .. } => owner.strip_prefix("sim-"),
            _ => None,
        };
        if let (Some(owner), ClientResponse::SessionOpened { ttl_ms }) = (owner, response) {
            let index: usize = owner.parse().unwrap_or(usize::MAX);
            if let Some(locker) = self.lockers.get_mut(index)
                && locker.session.is_none()
            {
                locker.session = Some(session);
                locker.ttl_ms = *ttl_ms;
                locker.next_keepalive = 0;
                locker.held.clear();
            }
            return;
        }
        let Some(locker) = self.lockers.iter_mut().find(|l| l.session == Some(session)) else {
            return;
        };
        match (request, response) {
            (_, ClientResponse::SessionGone { .. }) => {
                locker.session = None;
                locker.held.clear();
            }
            (ClientRequest::Acquire { kind, name, .. }, ClientResponse::Held { token }) => {
                locker.held.retain(|(k, n, _)| !(k == kind && n == name));
                locker.held.push((*kind, name.clone(), *token));
            }
            _ => {}
        }
    }
}
