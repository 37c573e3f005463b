//! A whole cluster of real [`Node`]s on a virtual clock, a faulty network and crashable disks
//! (the real in-memory store), with the checker and the oracles watching every output.
//! Scripted scenarios drive it by hand; [`crate::swarm::run_seed`] drives it with random
//! faults.
//!
//! The harness plays every client: it numbers requests, remembers what each one was, and checks
//! each reply when it arrives. Clients of a crashed node, or whose reply was lost, hear nothing;
//! they retry later with the same batch id, or ask for the outcome.

use std::collections::BTreeMap;

use bytes::Bytes;
use ordo_common::batch::{Batch, BatchId};
use ordo_common::client::{BusyCode, ClientRequest, ClientResponse};
use ordo_common::{EngineKind, LogId, LogIndex, NodeId, Term};
use ordo_core::rng::Prng;
use ordo_core::state::{BatchState, Registered, RegistryLimits};
use ordo_core::{
    Config, Engine, InvalidMessage, MembershipChange, MembershipError, Role, TransferError,
};
use ordo_node::snapshot::{decode_snapshot, encode_snapshot};
use ordo_node::storage::{LogRead, Retention};
use ordo_node::{Node, NodeConfig, Output, RequestId, committed_batch};

use crate::batches::BatchOracle;
use crate::checker::{Checker, Oracle, Violation, mix, proposal_id_of};
use crate::disk::Disk;
use crate::network::{MessageFilter, Network, NetworkFaults};

/// How to build a cluster.
pub struct ClusterOptions {
    pub nodes: usize,
    /// Nodes that may join later: ids after the first `nodes`, configured to join (no
    /// bootstrap voters) and started when [`Cluster::change_membership`] adds them.
    pub spares: usize,
    pub seed: u64,
    pub network: NetworkFaults,
    pub disk_latency_ticks_max: u64,
    /// How late a storage report may reach its node.
    pub report_delay_ticks_max: u64,
    /// Chance, per output carried out, that the node crashes right there (the runtime dying
    /// halfway through a batch of outputs: between apply and reply, say).
    pub crash_mid_output_per_mille: u64,
    /// Chance that a node restarted by [`Cluster::restart`] crashes again within its first few
    /// steps (while it is still catching up on what it recovered).
    pub restart_crash_percent: u64,
    /// Chance that a reply never reaches its client.
    pub reply_loss_percent: u64,
    /// Chance that a node misses a tick (a paused process, a slow clock).
    pub tick_skip_percent: u64,
    /// The idempotency registry's bounds, on every node and in the model.
    pub registry: RegistryLimits,
    /// How far each node's clock may be off the simulation's (drawn per node, either way).
    pub clock_skew_ms_max: u64,
    /// What every node's store keeps (small, so compaction happens often).
    pub retention: Retention,
    /// Chance that a node crashes while installing a snapshot, the install landed or not.
    pub install_crash_percent: u64,
    /// Adjusts each node's core configuration (e.g. smaller append budgets); `config.id` says
    /// which node it is.
    pub configure: Box<dyn Fn(&mut Config)>,
    /// The consensus engine every node runs.
    pub engine: EngineKind,
}

impl ClusterOptions {
    /// A fault-free cluster: messages take one tick, disks complete at the next step.
    pub fn calm(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            spares: 0,
            seed,
            network: NetworkFaults {
                delay_ticks_max: 1,
                fifo: true,
                ..NetworkFaults::default()
            },
            disk_latency_ticks_max: 0,
            report_delay_ticks_max: 0,
            crash_mid_output_per_mille: 0,
            restart_crash_percent: 0,
            reply_loss_percent: 0,
            tick_skip_percent: 0,
            registry: RegistryLimits::default(),
            clock_skew_ms_max: 0,
            retention: Retention::default(),
            install_crash_percent: 0,
            configure: Box::new(|_| {}),
            engine: EngineKind::Raft,
        }
    }
}

/// The peer address the simulation gives node `id`.
pub fn address_of(id: NodeId) -> String {
    format!("sim-node-{id}:7000")
}

/// Simulated milliseconds per tick (the wall clock a node is given advances this much a tick).
pub const TICK_MS: u64 = 10;
/// The simulated wall clock at tick 0: a plausible present, in ms since the Unix epoch.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// Most unread answers to session, lock and election requests kept for the swarm.
const COORD_REPLIES_MAX: usize = 4096;

/// What a request sent to a node was, to check its reply.
#[derive(Clone, Debug)]
enum Request {
    Raw {
        proposal: u64,
    },
    Submit {
        batch: Batch,
    },
    Status {
        read: u64,
    },
    /// A session, lock or election request.
    Coord {
        body: ClientRequest,
    },
}

struct SimNode {
    node: Option<Node>,
    config: NodeConfig,
    disk: Disk,
    boots: u64,
    /// Requests sent to the node's current process and not yet answered.
    requests: BTreeMap<RequestId, Request>,
    /// The highest seq the node declared servable, in any of its processes: it never goes back.
    servable: u64,
    /// The last index the node's state writes recorded as applied (this process).
    applied: LogIndex,
    /// Steps until a scheduled crash soon after a restart.
    crash_in_steps: Option<u64>,
    /// How far this node's clock is off the simulation's, in ms (either way).
    clock_skew_ms: i64,
}

/// A snapshot on its way from a leader to a follower.
#[derive(Debug)]
struct Transfer {
    deliver_at: u64,
    from: NodeId,
    to: NodeId,
    term: Term,
    bytes: Vec<u8>,
    /// The transfer fails on the way (the sender learns it at `deliver_at`).
    lost: bool,
}

/// A reader of the committed sequence on one node, as a subscription is: from the node's
/// durable store, up to what the node declared servable.
#[derive(Debug)]
struct Subscriber {
    node: NodeId,
    next_seq: u64,
}

pub struct Cluster {
    pub now: u64,
    rng: Prng,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    pub network: Network,
    pub checker: Checker,
    pub oracle: Oracle,
    pub batches: BatchOracle,
    /// Every batch not yet acknowledged (for retries).
    pending_batches: BTreeMap<BatchId, Batch>,
    /// Every batch ever submitted, for resubmits of decided ones.
    submitted: BTreeMap<BatchId, Batch>,
    subscribers: Vec<Subscriber>,
    /// Answers to session, lock and election requests, for the swarm's clients.
    coord_replies: Vec<(ClientRequest, ClientResponse)>,
    /// The request a scripted caller waits to hear an immediate answer to, and that answer.
    awaiting_immediate: Option<RequestId>,
    immediate: Option<ClientResponse>,
    crash_mid_output_per_mille: u64,
    restart_crash_percent: u64,
    reply_loss_percent: u64,
    tick_skip_percent: u64,
    install_crash_percent: u64,
    retention: Retention,
    /// Snapshots on their way between nodes.
    transfers: Vec<Transfer>,
    /// The consensus engine every node runs.
    engine: EngineKind,
    /// The snapshot bytes' hash each applied index had on the first node to build one there:
    /// every node's snapshot at that index must be the same bytes.
    snapshot_digests: BTreeMap<LogIndex, u64>,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub entries_read_back: u64,
    /// Seqs subscribers skipped because their node had compacted them away.
    pub compacted_skips: u64,
    /// A running hash of everything that happened, to prove that a seed replays exactly.
    pub trace: u64,
    next_request: u64,
    violation: Option<Violation>,
    /// Nodes whose disk died: they restart empty, and every peer refuses what they send (see
    /// [`Cluster::wipe`]).
    wiped: std::collections::BTreeSet<NodeId>,
    /// What a wiped node's disk held when it died: the entries it acknowledged count toward
    /// the majorities that committed them (its new disk counts for nothing: it is refused).
    lost_disks: BTreeMap<NodeId, Vec<LogId>>,
}

/// Every node's durable log as the commit checks count it: a wiped node's lost disk instead of
/// its new one.
fn quorum_disks<'a>(
    nodes: &'a BTreeMap<NodeId, SimNode>,
    lost: &'a BTreeMap<NodeId, Vec<LogId>>,
) -> BTreeMap<NodeId, &'a [LogId]> {
    nodes
        .iter()
        .map(|(id, node)| {
            let log = lost.get(id).unwrap_or(&node.disk.durable_ids);
            (*id, log.as_slice())
        })
        .collect()
}

impl Cluster {
    pub fn new(options: ClusterOptions) -> Self {
        let mut rng = Prng::new(options.seed);
        let ids: Vec<NodeId> = (1..=options.nodes as u64).collect();
        let all: Vec<NodeId> = (1..=(options.nodes + options.spares) as u64).collect();
        let checker = Checker::new(&ids, options.engine);
        let network = Network::new(options.network, rng.fork());
        let addresses: BTreeMap<NodeId, String> =
            all.iter().map(|id| (*id, address_of(*id))).collect();
        let mut nodes = BTreeMap::new();
        for &id in &all {
            // A spare joins a running cluster: it knows no voters and learns the membership
            // from the leader.
            let bootstrap = if ids.contains(&id) {
                ids.clone()
            } else {
                Vec::new()
            };
            let mut raft = Config::new(id, bootstrap);
            // Every invariant the core can check, it checks here, whatever the build profile.
            raft.invariant_checks = true;
            (options.configure)(&mut raft);
            let config = NodeConfig {
                raft,
                engine: options.engine,
                addresses: addresses.clone(),
                cluster: ordo_common::ClusterId::initial(ids.iter().copied()),
                registry: options.registry,
                tick_ms: TICK_MS,
                clock_skew_ms: 2 * options.clock_skew_ms_max,
            };
            let disk = Disk::new(
                options.disk_latency_ticks_max,
                options.report_delay_ticks_max,
                options.engine,
            );
            let node = SimNode {
                node: None,
                config,
                disk,
                boots: 0,
                requests: BTreeMap::new(),
                servable: 0,
                applied: 0,
                crash_in_steps: None,
                clock_skew_ms: {
                    let span = 2 * options.clock_skew_ms_max + 1;
                    rng.below(span) as i64 - options.clock_skew_ms_max as i64
                },
            };
            nodes.insert(id, node);
        }
        let subscribers = ids
            .iter()
            .map(|&node| Subscriber { node, next_seq: 1 })
            .collect();
        let mut cluster = Self {
            now: 0,
            rng,
            ids,
            nodes,
            network,
            checker,
            oracle: Oracle::default(),
            batches: BatchOracle::new(options.registry),
            pending_batches: BTreeMap::new(),
            submitted: BTreeMap::new(),
            subscribers,
            awaiting_immediate: None,
            coord_replies: Vec::new(),
            immediate: None,
            crash_mid_output_per_mille: options.crash_mid_output_per_mille,
            restart_crash_percent: 0,
            reply_loss_percent: options.reply_loss_percent,
            tick_skip_percent: options.tick_skip_percent,
            install_crash_percent: options.install_crash_percent,
            retention: options.retention,
            transfers: Vec::new(),
            engine: options.engine,
            snapshot_digests: BTreeMap::new(),
            snapshots_sent: 0,
            snapshots_installed: 0,
            entries_read_back: 0,
            compacted_skips: 0,
            trace: 0,
            next_request: 1,
            violation: None,
            wiped: std::collections::BTreeSet::new(),
            lost_disks: BTreeMap::new(),
        };
        for id in cluster.ids.clone() {
            cluster.restart(id);
        }
        cluster.restart_crash_percent = options.restart_crash_percent;
        cluster
    }

    // ----- membership -----

    /// Asks node `at` (the leader, if it is to work) for a membership change. A node added as
    /// a learner is started, empty, at once.
    pub fn change_membership(
        &mut self,
        at: NodeId,
        change: MembershipChange,
    ) -> Result<LogId, MembershipError> {
        let not_leader = MembershipError::NotLeader { leader_hint: None };
        let node = self
            .nodes
            .get_mut(&at)
            .and_then(|sim| sim.node.as_mut())
            .ok_or(not_leader)?;
        let result = node.change_membership(change.clone());
        self.trace = mix(
            self.trace,
            0xAD ^ change.node() << 8 ^ u64::from(result.is_ok()),
        );
        self.after_step(at);
        if let (Ok(_), MembershipChange::AddLearner { id, .. }) = (&result, change)
            && self.nodes.contains_key(&id)
            && !self.ids.contains(&id)
        {
            self.ids.push(id);
            self.checker.add_node(id);
            self.subscribers.push(Subscriber {
                node: id,
                next_seq: 1,
            });
            self.restart(id);
        }
        result
    }

    /// Spare ids never started yet, lowest first.
    pub fn spare_ids(&self) -> Vec<NodeId> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.ids.contains(id))
            .collect()
    }

    /// Whether node `id` is a member (voter or learner) of the membership in force on the
    /// current leader (every node counts while there is none).
    pub fn is_member(&self, id: NodeId) -> bool {
        match self.leader().and_then(|leader| self.node(leader)) {
            Some(leader) => leader.membership().contains(id),
            None => true,
        }
    }

    // ----- observation -----

    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// The first safety violation seen, if any. Once set, the cluster stops changing.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Node `id`'s consensus engine, while it is up.
    pub fn node(&self, id: NodeId) -> Option<&Engine> {
        self.nodes[&id].node.as_ref().map(Node::engine)
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].node.is_some()
    }

    /// The ids of the entries node `id` holds durably, index 1 first.
    pub fn durable_log(&self, id: NodeId) -> &[LogId] {
        &self.nodes[&id].disk.durable_ids
    }

    /// The leader of the highest term any live node leads.
    pub fn leader(&self) -> Option<NodeId> {
        self.rafts()
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(id, _)| id)
    }

    /// Every live node that believes it is a leader (of any term).
    pub fn self_declared_leaders(&self) -> Vec<NodeId> {
        self.rafts()
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .map(|(id, _)| id)
            .collect()
    }

    fn rafts(&self) -> impl Iterator<Item = (NodeId, &Engine)> {
        self.nodes
            .iter()
            .filter_map(|(id, node)| Some((*id, node.node.as_ref()?.engine())))
    }

    pub fn max_last_index(&self) -> LogIndex {
        self.rafts()
            .map(|(_, raft)| raft.last_log_id().index)
            .max()
            .unwrap_or(0)
    }

    pub fn max_term(&self) -> Term {
        self.rafts().map(|(_, raft)| raft.term()).max().unwrap_or(0)
    }

    /// One line per node: role, term, leader, log and progress indexes.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for (id, node) in &self.nodes {
            match &node.node {
                None => lines.push(format!("[{id}: down]")),
                Some(node) => {
                    let status = node.engine().status();
                    let membership = node.engine().membership();
                    lines.push(format!(
                        "[{id}: {:?} term={} vote={:?} leader={:?} last={} durable={} commit={} applied={} servable={} voters={:?} learners={:?}{}]",
                        status.role,
                        status.term,
                        status.vote,
                        status.leader,
                        status.last_log_id,
                        status.durable_index,
                        status.commit_index,
                        status.applied_index,
                        node.servable_seq(),
                        membership.voters,
                        membership.learners,
                        if self.wiped.contains(id) { " wiped" } else { "" },
                    ));
                }
            }
        }
        if let Some(leader) = self
            .leader()
            .and_then(|id| self.node(id))
            .and_then(Engine::as_paxos)
        {
            for id in &self.ids {
                if let Some(peer) = leader.describe_peer(*id) {
                    lines.push(format!("[{id} seen by leader: {peer}]"));
                }
            }
        }
        if let Some(leader) = self
            .leader()
            .and_then(|id| self.node(id))
            .and_then(Engine::as_raft)
        {
            for id in &self.ids {
                if let Some((mode, matched, next)) = leader.replication(*id) {
                    lines.push(format!(
                        "[{id} seen by leader: {mode:?} match={matched} next={next}]"
                    ));
                }
            }
        }
        lines.join(" ")
    }

    /// True when every node is up, one leader leads the highest term and everyone follows it,
    /// all logs are identical, everything is committed and applied everywhere (and the applied
    /// state is durable), and every node serves every committed batch.
    pub fn converged(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let leader_raft = self.node(leader).expect("leader is up");
        let (term, last) = (leader_raft.term(), leader_raft.last_log_id());
        let membership = leader_raft.membership();
        if !membership.voters.contains(&leader) || leader_raft.commit_index() != last.index {
            return false;
        }
        // Removed nodes and spares never added are not part of the cluster any more.
        let members = self
            .nodes
            .iter()
            .filter(|(id, _)| membership.contains(**id))
            .map(|(_, sim)| sim);
        // A Multi-Paxos acceptor may keep values an old ballot left in slots past the leader's
        // last one; they are harmless until a leader reaches those slots.
        let slots = self.engine == EngineKind::MultiPaxos;
        members.into_iter().all(|sim| {
            sim.node.as_ref().is_some_and(|node| {
                let raft = node.engine();
                raft.term() == term
                    && raft.leader() == Some(leader)
                    && (raft.last_log_id() == last
                        || (slots && raft.last_log_id().index >= last.index))
                    && raft.commit_index() == last.index
                    && raft.applied_index() == last.index
                    && sim.disk.applied_index() == last.index
                    && node.servable_seq() == node.batch_state().last_seq()
            })
        })
    }

    /// The batch state of node `id` (for clients choosing preconditions).
    pub fn batch_state(&self, id: NodeId) -> Option<&BatchState> {
        self.nodes[&id].node.as_ref().map(Node::batch_state)
    }

    /// After convergence: every node's batch state holds the whole committed sequence, every
    /// node's stored registry is the model's, and every subscriber has read everything.
    pub fn check_batches_converged(&self) -> Result<(), Violation> {
        for (id, node) in self.nodes.iter().filter(|(id, _)| self.is_member(**id)) {
            let last_seq = node.node.as_ref().map_or(0, |n| n.batch_state().last_seq());
            self.batches.check_converged(*id, last_seq)?;
            let stored = node.disk.store().tables().map_err(|error| {
                Violation(format!("node {id}'s tables cannot be read: {error}"))
            })?;
            let registry: Vec<(BatchId, Registered)> = stored
                .registry
                .iter()
                .map(|(batch, record)| {
                    let record = ordo_common::codec::decode(record, u64::MAX)
                        .map_err(|error| Violation(format!("node {id}'s registry: {error}")));
                    record.map(|record| (BatchId(*batch), record))
                })
                .collect::<Result<_, _>>()?;
            self.batches.check_registry(*id, &registry)?;
        }
        for subscriber in self.subscribers.iter().filter(|s| self.is_member(s.node)) {
            let read = subscriber.next_seq - 1;
            if read != self.batches.committed_seqs() {
                return Err(Violation(format!(
                    "a subscriber on node {} read through seq {read}, the cluster committed {}",
                    subscriber.node,
                    self.batches.committed_seqs()
                )));
            }
        }
        Ok(())
    }

    // ----- faults and control -----

    /// Node `id`'s disk dies: it crashes and will restart (with [`Cluster::restart`]) on an
    /// empty disk, under the same id. It forgot its votes and what it acknowledged, so it must
    /// never count again: as `ordo serve` nodes do with a peer whose incarnation changed, every
    /// peer refuses what it sends from now on. The operator's way out is to remove it and add
    /// a new node.
    pub fn wipe(&mut self, id: NodeId) {
        self.crash(id);
        let sim = self.nodes.get_mut(&id).expect("known node");
        let replacement = sim.disk.replacement();
        let lost = std::mem::replace(&mut sim.disk, replacement);
        self.lost_disks.insert(id, lost.durable_ids);
        sim.servable = 0;
        sim.applied = 0;
        self.wiped.insert(id);
        self.checker.on_wipe(id);
        self.trace = mix(self.trace, 0x3E ^ id);
    }

    /// Nodes whose disk died (see [`Cluster::wipe`]).
    pub fn wiped(&self) -> &std::collections::BTreeSet<NodeId> {
        &self.wiped
    }

    /// Crashes a node: its memory is gone, writes in progress may or may not have landed, and
    /// its clients hear nothing more.
    pub fn crash(&mut self, id: NodeId) {
        let sim = self.nodes.get_mut(&id).expect("known node");
        if sim.node.take().is_none() {
            return;
        }
        sim.crash_in_steps = None;
        for request in std::mem::take(&mut sim.requests).into_values() {
            if let Request::Status { read } = request {
                self.batches.forget_status(read);
            }
        }
        let result = sim.disk.crash(&mut self.rng);
        self.trace = mix(self.trace, 0xC0 ^ id);
        self.record(result);
    }

    /// Starts a crashed (or never started) node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        let sim = self.nodes.get_mut(&id).expect("known node");
        if sim.node.is_some() {
            return;
        }
        sim.boots += 1;
        let recovered = match sim.disk.open(self.retention) {
            Ok(recovered) => recovered,
            Err(violation) => return self.record(Err(violation)),
        };
        let (applied, entries) = (recovered.applied, recovered.entries.clone());
        sim.applied = recovered.applied.index;
        let seed = mix(self.rng.next_u64(), id);
        let node = match Node::new(sim.config.clone(), recovered, seed) {
            Ok(node) => node,
            Err(error) => {
                let problem = format!("node {id} cannot restart from its disk: {error}");
                return self.record(Err(Violation(problem)));
            }
        };
        if node.servable_seq() < sim.servable {
            let problem = format!(
                "node {id} restarted serving up to seq {}, below the {} it served before",
                node.servable_seq(),
                sim.servable
            );
            return self.record(Err(Violation(problem)));
        }
        sim.servable = node.servable_seq();
        if self.rng.chance_percent(self.restart_crash_percent) {
            sim.crash_in_steps = Some(self.rng.range_inclusive(0, 6));
        }
        let disks = quorum_disks(&self.nodes, &self.lost_disks);
        let result = self
            .checker
            .on_restart(id, node.engine(), applied, &entries, &disks);
        self.nodes.get_mut(&id).expect("known").node = Some(node);
        self.trace = mix(self.trace, 0xB0 ^ id);
        self.record(result);
    }

    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids.clone() {
            if other != id {
                self.network.cut_both_ways(id, other);
            }
        }
    }

    /// Splits the cluster: no messages cross between `side` and the rest.
    pub fn split(&mut self, side: &[NodeId]) {
        for &a in side {
            for b in self.ids.clone() {
                if !side.contains(&b) {
                    self.network.cut_both_ways(a, b);
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.network.heal();
    }

    /// Ends every fault: partitions, message faults, crashes mid-output and after restarts,
    /// lost replies and missed ticks.
    pub fn calm(&mut self) {
        self.network.heal();
        self.network.calm();
        self.crash_mid_output_per_mille = 0;
        self.restart_crash_percent = 0;
        self.reply_loss_percent = 0;
        self.tick_skip_percent = 0;
        self.install_crash_percent = 0;
        for node in self.nodes.values_mut() {
            node.crash_in_steps = None;
        }
    }

    pub fn set_filter(&mut self, filter: Option<MessageFilter>) {
        self.network.set_filter(filter);
    }

    // ----- client operations -----

    /// Sends `body` to node `id` as request `request` without carrying out any output.
    /// Returns false when the node is down (nothing was sent).
    fn send_request(
        &mut self,
        id: NodeId,
        request: Request,
        body: ClientRequest,
    ) -> Option<RequestId> {
        let number = RequestId(self.next_request);
        self.next_request += 1;
        let sim = self.nodes.get_mut(&id).expect("known node");
        let node = sim.node.as_mut()?;
        sim.requests.insert(number, request);
        self.awaiting_immediate = Some(number);
        self.immediate = None;
        node.handle_request(number, body);
        Some(number)
    }

    /// What a node answered at once to `request`, if it did (it refused, redirected or pushed
    /// back instead of proposing).
    fn immediate_answer(&mut self, request: Option<RequestId>) -> Option<ClientResponse> {
        self.awaiting_immediate = None;
        match request {
            None => Some(ClientResponse::NotLeader {
                leader: None,
                leader_address: None,
            }),
            Some(_) => self.immediate.take(),
        }
    }

    /// Proposes a fresh raw payload on `id` (its proposal number, then `padding` bytes),
    /// recording it with the oracle. `Ok` names the entry the leader appended; `Err` is the
    /// node's immediate answer.
    pub fn propose(&mut self, id: NodeId, padding: usize) -> Result<LogId, ClientResponse> {
        let request = self.propose_raw(id, padding);
        self.after_step(id);
        match self.immediate_answer(request) {
            Some(answer) => Err(answer),
            None => Ok(self
                .node(id)
                .map_or_else(LogId::default, Engine::last_log_id)),
        }
    }

    /// Proposes one raw payload without carrying out any output.
    fn propose_raw(&mut self, id: NodeId, padding: usize) -> Option<RequestId> {
        let proposal = self.next_request;
        let mut payload = proposal.to_le_bytes().to_vec();
        payload.resize(8 + padding, (proposal % 127) as u8);
        self.oracle.invoke(proposal);
        let body = ClientRequest::Propose {
            payload: Bytes::from(payload),
        };
        self.send_request(id, Request::Raw { proposal }, body)
    }

    /// Proposes `count` payloads on `id` before carrying out any output, as a runtime does with
    /// the proposals that queued up while it was busy.
    pub fn propose_batch(&mut self, id: NodeId, count: usize, padding: usize) {
        for _ in 0..count {
            self.propose_raw(id, padding);
        }
        self.after_step(id);
    }

    /// Submits `batch` on `id`, as a client would (again, with the same id, when retrying).
    pub fn submit(&mut self, id: NodeId, batch: Batch) -> Result<(), ClientResponse> {
        self.batches.submit(&batch);
        let batch_id = batch.id;
        self.submitted
            .entry(batch_id)
            .or_insert_with(|| batch.clone());
        if !self.batches.is_acknowledged(&batch_id) {
            self.pending_batches.insert(batch_id, batch.clone());
        }
        let request = self.send_request(
            id,
            Request::Submit {
                batch: batch.clone(),
            },
            ClientRequest::Submit { batch },
        );
        self.after_step(id);
        self.immediate_answer(request).map_or(Ok(()), Err)
    }

    /// The `n`-th batch (in id order, wrapping) still waiting for an outcome.
    pub fn pending_batch(&self, n: usize) -> Option<Batch> {
        let count = self.pending_batches.len();
        (count > 0)
            .then(|| self.pending_batches.values().nth(n % count).cloned())
            .flatten()
    }

    /// A batch submitted earlier, by id.
    pub fn submitted_batch(&self, id: &BatchId) -> Option<Batch> {
        self.submitted.get(id).cloned()
    }

    /// Sends a session, lock or election request to node `id`. `Err` is the node's immediate
    /// answer; later answers arrive in [`Cluster::take_coord_replies`].
    pub fn coord(&mut self, id: NodeId, body: ClientRequest) -> Result<(), ClientResponse> {
        let what = Request::Coord { body: body.clone() };
        let request = self.send_request(id, what, body);
        self.after_step(id);
        self.immediate_answer(request).map_or(Ok(()), Err)
    }

    /// Answers to session, lock and election requests since the last call, in order.
    pub fn take_coord_replies(&mut self) -> Vec<(ClientRequest, ClientResponse)> {
        std::mem::take(&mut self.coord_replies)
    }

    /// Asks node `id` for the outcome of `batch`, linearizably. `Ok` names the read; `Err` is
    /// the node's immediate answer.
    pub fn read_status(&mut self, id: NodeId, batch: BatchId) -> Result<u64, ClientResponse> {
        let read = self.next_request;
        let acknowledged = self.oracle.acknowledged_index_max();
        self.batches.invoke_status(read, batch, acknowledged);
        let request = self.send_request(
            id,
            Request::Status { read },
            ClientRequest::BatchStatus { id: batch },
        );
        if request.is_none() {
            self.batches.forget_status(read);
        }
        self.after_step(id);
        match self.immediate_answer(request) {
            Some(answer) => Err(answer),
            None => Ok(read),
        }
    }

    /// A linearizable read on `id`: the status of a recently decided batch (or of a batch id
    /// nobody submitted, before any is decided).
    pub fn read(&mut self, id: NodeId) -> Result<u64, ClientResponse> {
        let pick = self.rng.next_u64();
        let batch = self.batches.decided(64, pick).unwrap_or(BatchId(
            pick.to_le_bytes().repeat(2).try_into().expect("16 bytes"),
        ));
        self.read_status(id, batch)
    }

    pub fn campaign(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id).and_then(|sim| sim.node.as_mut()) {
            node.campaign();
            self.after_step(id);
        }
    }

    pub fn transfer(
        &mut self,
        id: NodeId,
        target: Option<NodeId>,
    ) -> Result<NodeId, TransferError> {
        let Some(node) = self.nodes.get_mut(&id).and_then(|sim| sim.node.as_mut()) else {
            return Err(TransferError::NotLeader { leader_hint: None });
        };
        let result = node.transfer_leadership(target);
        self.after_step(id);
        result
    }

    // ----- time -----

    /// One tick: every live node ticks, then due messages, disk completions and storage
    /// reports are delivered, and subscribers read what became servable.
    pub fn tick(&mut self) {
        if self.violation.is_some() {
            return;
        }
        self.now += 1;
        self.trace = mix(self.trace, self.now);
        for id in self.ids.clone() {
            if self.is_up(id) && !self.rng.chance_percent(self.tick_skip_percent) {
                let now_ms = self.clock_ms();
                let sim = self.nodes.get_mut(&id).expect("known");
                let clock_ms = now_ms.saturating_add_signed(sim.clock_skew_ms);
                if let Some(node) = sim.node.as_mut() {
                    node.tick(clock_ms);
                }
                self.after_step(id);
            }
        }
        self.deliver_due();
        let result = self.read_subscriptions();
        self.record(result);
    }

    /// Delivers messages, completes disk writes and delivers storage reports due now, until
    /// nothing more is due.
    pub fn deliver_due(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((from, to, message)) = self.network.next_due(self.now) {
                progressed = true;
                if self.wiped.contains(&from) {
                    continue; // refused: it lost its data
                }
                let Some(node) = self.nodes.get_mut(&to).and_then(|n| n.node.as_mut()) else {
                    continue;
                };
                self.trace = mix(self.trace, mix(from << 8 | to, message.term));
                match node.handle_message(from, message) {
                    // A removed node that never learned of its removal still speaks.
                    Ok(()) | Err(InvalidMessage::RetiredSender(_)) => {}
                    Err(error) => self.record(Err(Violation(format!(
                        "node {to} refused a message from {from}: {error}"
                    )))),
                }
                self.after_step(to);
            }
            for id in self.ids.clone() {
                if !self.is_up(id) {
                    continue;
                }
                let sim = self.nodes.get_mut(&id).expect("known");
                if let Err(violation) = sim.disk.complete_due(self.now, &mut self.rng) {
                    return self.record(Err(violation));
                }
                if let Err(violation) = self.rewrite_installed(id) {
                    return self.record(Err(violation));
                }
                let sim = self.nodes.get_mut(&id).expect("known");
                if let Some(report) = sim.disk.due_report(self.now, &mut self.rng) {
                    progressed = true;
                    self.trace = mix(self.trace, report.write.0 ^ 0xD0);
                    if let Some(node) = sim.node.as_mut() {
                        node.handle_durable(report);
                    }
                    self.after_step(id);
                }
                let sim = self.nodes.get_mut(&id).expect("known");
                let bytes_max = sim.config.raft.append_bytes_max;
                if let Some((to, low, read)) = sim.disk.due_read(self.now, bytes_max) {
                    progressed = true;
                    self.entries_read_back += 1;
                    self.trace = mix(self.trace, low ^ 0xF0);
                    if let Some(node) = sim.node.as_mut() {
                        node.handle_entries_read(to, low, read);
                    }
                    self.after_step(id);
                }
            }
            progressed |= self.deliver_snapshots();
            if !progressed || self.violation.is_some() {
                return;
            }
        }
    }

    /// Delivers the snapshot transfers due now: to the follower if it arrived, and the
    /// transfer's fate to the leader. Returns whether any was due.
    fn deliver_snapshots(&mut self) -> bool {
        let now = self.now;
        let (due, later): (Vec<Transfer>, Vec<Transfer>) = std::mem::take(&mut self.transfers)
            .into_iter()
            .partition(|transfer| transfer.deliver_at <= now);
        self.transfers = later;
        let progressed = !due.is_empty();
        for transfer in due {
            let arrived = !transfer.lost
                && !self.network.is_cut(transfer.from, transfer.to)
                && !self.wiped.contains(&transfer.from);
            if arrived
                && let Some(node) = self
                    .nodes
                    .get_mut(&transfer.to)
                    .and_then(|n| n.node.as_mut())
            {
                let state = match decode_snapshot(&transfer.bytes) {
                    Ok(state) => state,
                    Err(error) => {
                        let problem = format!("a snapshot does not decode: {error}");
                        self.record(Err(Violation(problem)));
                        continue;
                    }
                };
                self.trace = mix(self.trace, state.applied.index ^ 0x5A);
                node.handle_snapshot(transfer.from, transfer.term, state);
                self.after_step(transfer.to);
            }
            if let Some(node) = self
                .nodes
                .get_mut(&transfer.from)
                .and_then(|n| n.node.as_mut())
            {
                node.handle_snapshot_report(transfer.to, arrived);
                self.after_step(transfer.from);
            }
        }
        progressed
    }

    /// After snapshots landed on `id`'s disk: its durable log is the committed prefix through
    /// the snapshot and what the store holds after it.
    fn rewrite_installed(&mut self, id: NodeId) -> Result<(), Violation> {
        let sim = self.nodes.get_mut(&id).expect("known");
        for last in sim.disk.take_installed() {
            let store = sim.disk.store();
            let log = store.log_state().map_err(|e| Violation(e.to_string()))?;
            let after = store
                .entries(log.first_index, log.last_index() + 1, u64::MAX)
                .map_err(|e| Violation(e.to_string()))?;
            let mut ids = self.checker.committed_ids(last.index);
            ids.extend(after.iter().map(ordo_common::Entry::log_id));
            sim.disk.durable_ids = ids;
            self.snapshots_installed += 1;
        }
        Ok(())
    }

    /// Builds `id`'s snapshot now and sends it to `to`, with the network's faults; checks that
    /// every node's snapshot at one applied index is the same bytes.
    fn send_snapshot(&mut self, id: NodeId, to: NodeId, term: Term) -> Result<(), Violation> {
        let store = self.nodes[&id].disk.store();
        let state = store
            .snapshot()
            .map_err(|error| Violation(format!("node {id} cannot build a snapshot: {error}")))?;
        let bytes = encode_snapshot(&state);
        // A Multi-Paxos slot's ballot differs between nodes; the state it leads to does not.
        let digest = match self.engine {
            EngineKind::Raft => crate::batches::bytes_digest(&bytes),
            EngineKind::MultiPaxos => {
                let mut valued = state.clone();
                valued.applied.term = 0;
                crate::batches::bytes_digest(&encode_snapshot(&valued))
            }
        };
        match self.snapshot_digests.get(&state.applied.index) {
            Some(known) if *known != digest => {
                return Err(Violation(format!(
                    "node {id}'s snapshot at index {} differs from another node's",
                    state.applied.index
                )));
            }
            Some(_) => {}
            None => {
                self.snapshot_digests.insert(state.applied.index, digest);
            }
        }
        self.snapshots_sent += 1;
        let faults = self.network.faults.clone();
        let copies = if self.rng.chance_percent(faults.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self
                .rng
                .range_inclusive(1, faults.delay_ticks_max.max(1) * 4);
            let lost = self.rng.chance_percent(faults.drop_percent);
            self.transfers.push(Transfer {
                deliver_at: self.now + delay,
                from: id,
                to,
                term,
                bytes: bytes.clone(),
                lost,
            });
        }
        Ok(())
    }

    /// The simulation's wall clock: what a client's clock reads (nodes' clocks are skewed).
    pub fn clock_ms(&self) -> u64 {
        EPOCH_MS + self.now * TICK_MS
    }

    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Ticks until `done` holds (true) or `ticks_max` pass (false).
    pub fn run_until(&mut self, ticks_max: u64, done: impl Fn(&Cluster) -> bool) -> bool {
        for _ in 0..ticks_max {
            if done(self) {
                return true;
            }
            self.tick();
            if self.violation.is_some() {
                return false;
            }
        }
        done(self)
    }

    // ----- carrying out outputs -----

    /// Carries out every output `id` produced, then runs the per-step checks.
    fn after_step(&mut self, id: NodeId) {
        loop {
            if self.violation.is_some() {
                return;
            }
            let sim = self.nodes.get_mut(&id).expect("known");
            if let Some(steps) = &mut sim.crash_in_steps {
                if *steps == 0 {
                    return self.crash(id);
                }
                *steps -= 1;
            }
            let Some(output) = sim.node.as_mut().and_then(Node::poll_output) else {
                break;
            };
            if self.rng.below(1000) < self.crash_mid_output_per_mille {
                return self.crash(id);
            }
            let result = self.carry_out(id, output);
            self.record(result);
        }
        let result = self.check_after_step(id);
        self.record(result);
    }

    fn carry_out(&mut self, id: NodeId, output: Output) -> Result<(), Violation> {
        match output {
            Output::Persist { write, batch, sync } => {
                if let Some(hard_state) = batch.hard_state {
                    self.trace = mix(self.trace, hard_state.term ^ 0x100);
                    self.checker.on_hard_state(id, hard_state)?;
                }
                if let Some(last) = batch.entries.last() {
                    self.trace = mix(self.trace, last.index ^ last.term << 32);
                    self.checker.on_write(id, &batch.entries)?;
                    let leading = self.nodes[&id]
                        .node
                        .as_ref()
                        .filter(|node| node.engine().role() == Role::Leader)
                        .map(|node| node.engine().term());
                    let now_ms = self.now * TICK_MS;
                    for entry in &batch.entries {
                        if leading == Some(entry.term) {
                            self.batches.locks.on_proposed(entry, now_ms);
                        }
                    }
                }
                if let Some(state) = &batch.state {
                    self.on_applied(id, state)?;
                }
                let install = batch
                    .install
                    .as_ref()
                    .map(|install| (install.last_included, install.keep_suffix));
                if let Some((last, _)) = install
                    && self.rng.chance_percent(self.install_crash_percent)
                {
                    // A crash during the install: before the swap, or after it but before the
                    // node hears it is done.
                    if self.rng.chance_percent(50) {
                        let now = self.now;
                        let sim = self.nodes.get_mut(&id).expect("known");
                        sim.disk.write(now, write, batch, true, &mut self.rng)?;
                        self.rewrite_installed(id)?;
                        self.trace = mix(self.trace, last.index ^ 0x1C);
                    }
                    self.crash(id);
                    return Ok(());
                }
                let now = self.now;
                let sim = self.nodes.get_mut(&id).expect("known");
                let report = sim.disk.write(now, write, batch, sync, &mut self.rng)?;
                if let Some((last, keep_suffix)) = install {
                    let disks = quorum_disks(&self.nodes, &self.lost_disks);
                    let quorum = self.nodes[&id]
                        .node
                        .as_ref()
                        .map_or(1, |node| node.engine().membership().voters.len() / 2 + 1);
                    self.checker
                        .on_install(id, last, keep_suffix, quorum, &disks)?;
                    self.rewrite_installed(id)?;
                    let sim = self.nodes.get_mut(&id).expect("known");
                    sim.applied = last.index;
                }
                if let Some(report) = report {
                    // The runtime waits for a sync write and tells the node before going on.
                    let sim = self.nodes.get_mut(&id).expect("known");
                    sim.node.as_mut().expect("up").handle_durable(report);
                }
            }
            Output::Send { to, message } => {
                let durable = self.nodes[&id].disk.hard_state();
                self.checker.on_send(id, to, &message, durable)?;
                self.network.send(self.now, id, to, message);
            }
            Output::Reply { request, response } => {
                let sim = self.nodes.get_mut(&id).expect("known");
                let Some(what) = sim.requests.remove(&request) else {
                    return Err(Violation(format!(
                        "node {id} answered request {request:?}, which it never got or answered before"
                    )));
                };
                if self.rng.chance_percent(self.reply_loss_percent) {
                    if let Request::Status { read } = what {
                        self.batches.forget_status(read);
                    }
                    return Ok(());
                }
                self.trace = mix(self.trace, request.0 ^ 0xE0);
                self.on_reply(id, request, what, response)?;
            }
            Output::Servable { seq } => self.on_servable(id, seq)?,
            Output::RoleChanged { role, term, .. } => {
                self.trace = mix(self.trace, term << 4 | role as u64);
                self.checker.on_role(id, role, term)?;
            }
            Output::Halt(fault) => {
                return Err(Violation(format!("node {id} halted: {fault}")));
            }
            Output::ReadEntries { to, low, high } => {
                let now = self.now;
                let sim = self.nodes.get_mut(&id).expect("known");
                sim.disk.read(now, to, low, high, &mut self.rng);
            }
            Output::SendSnapshot { to, term } => self.send_snapshot(id, to, term)?,
        }
        Ok(())
    }

    /// Node `id` applied entries and recorded `state`: the checker and the oracles see the
    /// entries (the first node to apply an index feeds the models), then the batch oracle
    /// compares what the node recorded with its model.
    fn on_applied(
        &mut self,
        id: NodeId,
        state: &ordo_node::storage::StateUpdate,
    ) -> Result<(), Violation> {
        let sim = &self.nodes[&id];
        let previously = sim.applied;
        // Applied entries are durable here, and retention keeps them until this write lands.
        let entries = sim
            .disk
            .store()
            .entries(previously + 1, state.applied.index + 1, u64::MAX)
            .map_err(|error| {
                Violation(format!(
                    "node {id} recorded apply through {} but its disk lacks the entries: {error}",
                    state.applied
                ))
            })?;
        let known = self.checker.applied_len();
        self.checker.on_apply(id, &entries)?;
        for entry in entries.iter().filter(|entry| entry.index > known) {
            self.oracle.on_first_apply(entry)?;
            self.batches.on_first_apply(entry)?;
        }
        self.trace = mix(self.trace, state.applied.index);
        self.batches.on_state_write(id, previously, state)?;
        self.nodes.get_mut(&id).expect("known").applied = state.applied.index;
        Ok(())
    }

    fn on_reply(
        &mut self,
        id: NodeId,
        request: RequestId,
        what: Request,
        response: ClientResponse,
    ) -> Result<(), Violation> {
        let refused_at_once = matches!(
            response,
            ClientResponse::NotLeader { .. } | ClientResponse::Refused { .. }
        ) || matches!(
            response,
            ClientResponse::Busy { code, .. } if !code.may_have_appended() && code != BusyCode::ProposalOverwritten
        );
        match (what, &response) {
            (Request::Raw { proposal }, ClientResponse::Committed { index, term }) => {
                let durable = self.nodes[&id].disk.last_index();
                if durable < *index {
                    return Err(Violation(format!(
                        "node {id} answered proposal {proposal} committed at {index} before the entry was durable in its log ({durable})"
                    )));
                }
                self.oracle
                    .on_result(proposal, Some(LogId::new(*term, *index)))?;
            }
            (
                Request::Raw { proposal },
                ClientResponse::Busy {
                    code: BusyCode::ProposalOverwritten,
                    ..
                },
            ) => self.oracle.on_result(proposal, None)?,
            (Request::Submit { batch }, ClientResponse::Invalid(error)) => {
                return Err(Violation(format!(
                    "node {id} called batch {} invalid: {error}",
                    batch.id
                )));
            }
            (Request::Submit { batch }, response)
                if matches!(
                    response,
                    ClientResponse::Outcome(_) | ClientResponse::Refused { .. }
                ) =>
            {
                let durable_last = self.nodes[&id].disk.last_index();
                self.batches
                    .on_submit_answer(id, &batch, response, durable_last)?;
                self.pending_batches.remove(&batch.id);
            }
            (Request::Status { read }, response) => self.batches.on_status(id, read, response)?,
            (Request::Coord { body }, response) => {
                if let ClientRequest::Acquire {
                    kind,
                    name,
                    session,
                    ..
                } = &body
                {
                    self.batches
                        .locks
                        .on_held(*kind, name, *session, response)?;
                }
                if self.coord_replies.len() < COORD_REPLIES_MAX {
                    self.coord_replies.push((body, response.clone()));
                }
            }
            (_, ClientResponse::Busy { code, reason })
                if code.may_have_appended() && !reason.contains("snapshot") =>
            {
                return Err(Violation(format!(
                    "node {id} lost track of a request while running: {reason}"
                )));
            }
            _ => {}
        }
        if refused_at_once && self.awaiting_immediate == Some(request) {
            self.immediate = Some(response);
        }
        Ok(())
    }

    /// Node `id` declared batches through `seq` servable: they must be durable there.
    fn on_servable(&mut self, id: NodeId, seq: u64) -> Result<(), Violation> {
        let sim = self.nodes.get_mut(&id).expect("known");
        if seq < sim.servable {
            return Err(Violation(format!(
                "node {id} declared seq {seq} servable after {}",
                sim.servable
            )));
        }
        let store = sim.disk.store();
        let first_seq = store.first_seq().map_err(|e| Violation(e.to_string()))?;
        for unread in (sim.servable + 1).max(first_seq)..=seq {
            if store.batch_index(unread).ok().flatten().is_none() {
                return Err(Violation(format!(
                    "node {id} declared seq {seq} servable, but seq {unread} is not durable there"
                )));
            }
        }
        sim.servable = seq;
        Ok(())
    }

    /// Every subscriber reads what its node serves, from the node's durable store.
    fn read_subscriptions(&mut self) -> Result<(), Violation> {
        for subscriber in &mut self.subscribers {
            let sim = &self.nodes[&subscriber.node];
            let Some(node) = &sim.node else {
                continue;
            };
            let store = sim.disk.store();
            // History the node compacted away: a real subscriber is told so, and skips it.
            let first_seq = store.first_seq().map_err(|e| Violation(e.to_string()))?;
            if subscriber.next_seq < first_seq {
                self.compacted_skips += first_seq - subscriber.next_seq;
                subscriber.next_seq = first_seq;
            }
            while subscriber.next_seq <= node.servable_seq() {
                let seq = subscriber.next_seq;
                let problem = |detail: String| {
                    Violation(format!(
                        "a subscriber on node {} cannot read servable seq {seq}: {detail}",
                        subscriber.node
                    ))
                };
                let index = store
                    .batch_index(seq)
                    .map_err(|error| problem(error.to_string()))?
                    .ok_or_else(|| problem("not durable".into()))?;
                let entries = store
                    .entries(index, index + 1, u64::MAX)
                    .map_err(|error| problem(error.to_string()))?;
                let entry = entries.first().ok_or_else(|| problem("no entry".into()))?;
                let batch =
                    committed_batch(seq, entry).map_err(|fault| problem(fault.to_string()))?;
                self.batches.on_subscribed(subscriber.node, &batch)?;
                subscriber.next_seq += 1;
            }
        }
        Ok(())
    }

    fn check_after_step(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes[&id].node.as_ref() else {
            return Ok(());
        };
        let disks = quorum_disks(&self.nodes, &self.lost_disks);
        let durable_hard_state = self.nodes[&id].disk.hard_state();
        self.checker
            .observe(id, node.engine(), durable_hard_state, &disks)?;
        for (other, engine) in self.rafts() {
            if let Some(raft) = engine.as_raft() {
                self.checker.check_leader_completeness(other, raft)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, result: Result<(), Violation>) {
        if let Err(violation) = result
            && self.violation.is_none()
        {
            self.violation = Some(Violation(format!("tick {}: {violation}", self.now)));
        }
    }

    /// The raw proposal number carried by `entry`, if it was proposed through this cluster.
    pub fn proposal_of(entry: &ordo_common::Entry) -> Option<u64> {
        proposal_id_of(entry)
    }
}
