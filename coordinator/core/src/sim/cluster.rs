//! A whole cluster of real cores on a virtual clock, a faulty network and crashable disks, with
//! the checker watching every step. Scripted scenarios drive it by hand; [`super::run_seed`]
//! drives it with random faults.

use std::collections::BTreeMap;

use bytes::Bytes;
use ordo_common::{Entry, LogId, LogIndex, NodeId, Term};

use ordo_common::EntryPayload;
use ordo_common::batch::{Batch, BatchId, Outcome};

use super::batches::BatchOracle;
use super::checker::{Checker, Oracle, Violation, mix, proposal_id_of};
use super::disk::Disk;
use super::network::{MessageFilter, Network, NetworkFaults};
use crate::raft::{
    Config, Output, ProposalId, ProposalLost, ProposeError, Raft, ReadError, ReadId, Restored,
    Role, TransferError,
};
use crate::rng::Prng;
use crate::state::{BatchState, Command, REGISTRY_ENTRIES_MAX_DEFAULT};

/// How to build a cluster.
pub struct ClusterOptions {
    pub nodes: usize,
    pub seed: u64,
    pub network: NetworkFaults,
    pub disk_latency_ticks_max: u64,
    /// Chance, per output carried out, that the node crashes right there (the driver dying
    /// halfway through a batch of outputs).
    pub crash_mid_output_per_mille: u64,
    /// Chance that a node misses a tick (a paused process, a slow clock).
    pub tick_skip_percent: u64,
    /// Adjusts each node's configuration (e.g. smaller append budgets); `config.id` says
    /// which node it is.
    pub configure: Box<dyn Fn(&mut Config)>,
}

impl ClusterOptions {
    /// A fault-free cluster: messages take one tick, disks complete at the next step.
    pub fn calm(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            network: NetworkFaults {
                delay_ticks_max: 1,
                fifo: true,
                ..NetworkFaults::default()
            },
            disk_latency_ticks_max: 0,
            crash_mid_output_per_mille: 0,
            tick_skip_percent: 0,
            configure: Box::new(|_| {}),
        }
    }
}

struct SimNode {
    raft: Option<Raft>,
    config: Config,
    disk: Disk,
    boots: u64,
    /// The node's batch state machine, rebuilt from the log at every restart.
    state: BatchState,
    /// Recent outcomes by index, to answer the submitter when its proposal's result arrives.
    outcomes: BTreeMap<LogIndex, (BatchId, Outcome)>,
}

/// Marks a simulator payload (after its 8-byte request id) as a batch; raw proposals carry
/// their request id and padding of a different byte.
const BATCH_PAYLOAD_TAG: u8 = 0xBA;

/// Outcomes kept per node for answering submitters.
const OUTCOMES_KEPT_MAX: usize = 4096;

pub struct Cluster {
    pub now: u64,
    rng: Prng,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    pub network: Network,
    pub checker: Checker,
    pub oracle: Oracle,
    pub batches: BatchOracle,
    /// Submitted batches by request, and every batch not yet acknowledged (for retries).
    batch_requests: BTreeMap<u64, BatchId>,
    pending_batches: BTreeMap<BatchId, Batch>,
    crash_mid_output_per_mille: u64,
    tick_skip_percent: u64,
    /// A running hash of everything that happened, to prove that a seed replays exactly.
    pub trace: u64,
    next_request: u64,
    violation: Option<Violation>,
}

impl Cluster {
    pub fn new(options: ClusterOptions) -> Self {
        let mut rng = Prng::new(options.seed);
        let ids: Vec<NodeId> = (1..=options.nodes as u64).collect();
        let checker = Checker::new(&ids);
        let network = Network::new(options.network, rng.fork());
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let mut config = Config::new(id, ids.clone());
            (options.configure)(&mut config);
            let disk = Disk::new(options.disk_latency_ticks_max);
            nodes.insert(
                id,
                SimNode {
                    raft: None,
                    config,
                    disk,
                    boots: 0,
                    state: BatchState::new(REGISTRY_ENTRIES_MAX_DEFAULT),
                    outcomes: BTreeMap::new(),
                },
            );
        }
        let mut cluster = Self {
            now: 0,
            rng,
            ids,
            nodes,
            network,
            checker,
            oracle: Oracle::default(),
            batches: BatchOracle::default(),
            batch_requests: BTreeMap::new(),
            pending_batches: BTreeMap::new(),
            crash_mid_output_per_mille: options.crash_mid_output_per_mille,
            tick_skip_percent: options.tick_skip_percent,
            trace: 0,
            next_request: 1,
            violation: None,
        };
        for id in cluster.ids.clone() {
            cluster.restart(id);
        }
        cluster
    }

    // ----- observation -----

    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// The first safety violation seen, if any. Once set, the cluster stops changing.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    pub fn node(&self, id: NodeId) -> Option<&Raft> {
        self.nodes[&id].raft.as_ref()
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].raft.is_some()
    }

    pub fn durable_log(&self, id: NodeId) -> &[Entry] {
        &self.nodes[&id].disk.log
    }

    /// The leader of the highest term any live node leads.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, node)| node.raft.as_ref().map(|raft| (*id, raft)))
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(id, _)| id)
    }

    /// Every live node that believes it is a leader (of any term).
    pub fn self_declared_leaders(&self) -> Vec<NodeId> {
        let up = self
            .nodes
            .iter()
            .filter_map(|(id, node)| Some((*id, node.raft.as_ref()?)));
        up.filter(|(_, raft)| raft.role() == Role::Leader)
            .map(|(id, _)| id)
            .collect()
    }

    pub fn max_last_index(&self) -> LogIndex {
        let lasts = self.nodes.values().filter_map(|node| node.raft.as_ref());
        lasts
            .map(|raft| raft.last_log_id().index)
            .max()
            .unwrap_or(0)
    }

    pub fn max_term(&self) -> Term {
        self.nodes
            .values()
            .filter_map(|node| node.raft.as_ref())
            .map(Raft::term)
            .max()
            .unwrap_or(0)
    }

    /// One line per node: role, term, leader, log and progress indexes.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for (id, node) in &self.nodes {
            match &node.raft {
                None => lines.push(format!("[{id}: down]")),
                Some(raft) => {
                    let status = raft.status();
                    lines.push(format!(
                        "[{id}: {:?} term={} vote={:?} leader={:?} last={} durable={} commit={} applied={}]",
                        status.role,
                        status.term,
                        status.vote,
                        status.leader,
                        status.last_log_id,
                        status.durable_index,
                        status.commit_index,
                        status.applied_index
                    ));
                }
            }
        }
        if let Some(leader) = self.leader().and_then(|id| self.node(id)) {
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
    /// all logs are identical, and everything is committed and applied everywhere.
    pub fn converged(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let leader_raft = self.node(leader).expect("leader is up");
        let (term, last) = (leader_raft.term(), leader_raft.last_log_id());
        self.nodes.values().all(|node| {
            node.raft.as_ref().is_some_and(|raft| {
                raft.term() == term
                    && raft.leader() == Some(leader)
                    && raft.last_log_id() == last
                    && raft.commit_index() == last.index
                    && raft.applied_index() == last.index
            })
        })
    }

    // ----- faults and control -----

    /// Crashes a node: its memory is gone, writes in progress may or may not have landed.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.raft.take().is_some() {
            node.disk.crash(&mut self.rng);
            self.trace = mix(self.trace, 0xC0 ^ id);
        }
    }

    /// Starts a crashed (or never started) node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.raft.is_some() {
            return;
        }
        node.boots += 1;
        node.state = BatchState::new(REGISTRY_ENTRIES_MAX_DEFAULT);
        node.outcomes.clear();
        let restored = Restored {
            hard_state: node.disk.hard_state,
            entries: node.disk.log.clone(),
            applied: 0,
        };
        let seed = mix(self.rng.next_u64(), id);
        let raft = Raft::new(node.config.clone(), restored, seed).expect("valid restore");
        let result = self.checker.on_restart(id, &raft, &node.disk.log);
        node.raft = Some(raft);
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

    /// Ends every fault: partitions, message faults, crashes mid-output and missed ticks.
    pub fn calm(&mut self) {
        self.network.heal();
        self.network.calm();
        self.crash_mid_output_per_mille = 0;
        self.tick_skip_percent = 0;
    }

    pub fn set_filter(&mut self, filter: Option<MessageFilter>) {
        self.network.set_filter(filter);
    }

    // ----- client operations -----

    /// Proposes a fresh payload on `id`, recording it with the oracle.
    pub fn propose(&mut self, id: NodeId, padding: usize) -> Result<LogId, ProposeError> {
        let result = self.propose_raw(id, padding);
        self.after_step(id);
        result
    }

    /// Proposes one raw payload (its request id, then `padding` bytes) without carrying out
    /// any output.
    fn propose_raw(&mut self, id: NodeId, padding: usize) -> Result<LogId, ProposeError> {
        let request = self.next_request;
        self.next_request += 1;
        let mut payload = request.to_le_bytes().to_vec();
        payload.resize(8 + padding, (request % 127) as u8);
        let Some(raft) = self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) else {
            return Err(ProposeError::NotLeader { leader_hint: None });
        };
        self.oracle.invoke(request);
        raft.propose(ProposalId(request), Bytes::from(payload))
    }

    /// Submits `batch` on `id`, as a client would (again, with the same id, when retrying).
    pub fn submit(&mut self, id: NodeId, batch: Batch) -> Result<LogId, ProposeError> {
        let request = self.next_request;
        self.next_request += 1;
        let mut payload = request.to_le_bytes().to_vec();
        payload.push(BATCH_PAYLOAD_TAG);
        payload.extend(Command::Batch(batch.clone()).encode());
        let Some(raft) = self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) else {
            return Err(ProposeError::NotLeader { leader_hint: None });
        };
        self.oracle.invoke(request);
        self.batches.submit(&batch);
        self.batch_requests.insert(request, batch.id);
        self.pending_batches.insert(batch.id, batch);
        let result = raft.propose(ProposalId(request), Bytes::from(payload));
        self.after_step(id);
        result
    }

    /// The `n`-th batch (in id order, wrapping) still waiting for an outcome.
    pub fn pending_batch(&self, n: usize) -> Option<Batch> {
        let count = self.pending_batches.len();
        (count > 0)
            .then(|| self.pending_batches.values().nth(n % count).cloned())
            .flatten()
    }

    /// The batch state of node `id` (for clients choosing preconditions).
    pub fn batch_state(&self, id: NodeId) -> &BatchState {
        &self.nodes[&id].state
    }

    /// Proposes `count` payloads on `id` before carrying out any output, as a driver does with
    /// the proposals that queued up while it was busy.
    pub fn propose_batch(
        &mut self,
        id: NodeId,
        count: usize,
        padding: usize,
    ) -> Result<(), ProposeError> {
        for _ in 0..count {
            self.propose_raw(id, padding)?;
        }
        self.after_step(id);
        Ok(())
    }

    /// Starts a linearizable read on `id`.
    pub fn read(&mut self, id: NodeId) -> Result<u64, ReadError> {
        let request = self.next_request;
        self.next_request += 1;
        let Some(raft) = self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) else {
            return Err(ReadError::NotLeader { leader_hint: None });
        };
        self.oracle.invoke_read(request);
        let result = raft.read_index(ReadId(request));
        if result.is_err() {
            self.oracle.forget_read(request);
        }
        self.after_step(id);
        result.map(|()| request)
    }

    pub fn campaign(&mut self, id: NodeId) {
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) {
            raft.campaign();
            self.after_step(id);
        }
    }

    pub fn transfer(
        &mut self,
        id: NodeId,
        target: Option<NodeId>,
    ) -> Result<NodeId, TransferError> {
        let Some(raft) = self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) else {
            return Err(TransferError::NotLeader { leader_hint: None });
        };
        let result = raft.transfer_leadership(target);
        self.after_step(id);
        result
    }

    // ----- time -----

    /// One tick: every live node ticks, then due messages and disk completions are delivered.
    pub fn tick(&mut self) {
        if self.violation.is_some() {
            return;
        }
        self.now += 1;
        self.trace = mix(self.trace, self.now);
        for id in self.ids.clone() {
            if self.is_up(id) && !self.rng.chance_percent(self.tick_skip_percent) {
                self.nodes
                    .get_mut(&id)
                    .and_then(|n| n.raft.as_mut())
                    .expect("up")
                    .tick();
                self.after_step(id);
            }
        }
        self.deliver_due();
    }

    /// Delivers messages and completes disk writes due now, until nothing more is due.
    pub fn deliver_due(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((from, to, message)) = self.network.next_due(self.now) {
                progressed = true;
                let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) else {
                    continue;
                };
                self.trace = mix(self.trace, mix(from << 8 | to, message.term));
                if let Err(error) = raft.handle_message(from, message) {
                    self.record(Err(Violation(format!(
                        "node {to} refused a message from {from}: {error}"
                    ))));
                }
                self.after_step(to);
            }
            for id in self.ids.clone() {
                if !self.is_up(id) {
                    continue;
                }
                let completed = self
                    .nodes
                    .get_mut(&id)
                    .expect("known")
                    .disk
                    .complete_due(self.now);
                for log_id in completed {
                    progressed = true;
                    let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
                        break;
                    };
                    raft.handle_durable(log_id);
                    self.after_step(id);
                }
            }
            if !progressed || self.violation.is_some() {
                return;
            }
        }
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
        while let Some(output) = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.raft.as_mut())
            .and_then(Raft::poll_output)
        {
            if self.violation.is_some() {
                return;
            }
            if self.rng.below(1000) < self.crash_mid_output_per_mille {
                self.crash(id);
                return;
            }
            let result = self.carry_out(id, output);
            self.record(result);
        }
        let result = self.check_after_step(id);
        self.record(result);
    }

    fn carry_out(&mut self, id: NodeId, output: Output) -> Result<(), Violation> {
        let now = self.now;
        match output {
            Output::PersistHardState(hard_state) => {
                self.trace = mix(self.trace, hard_state.term ^ 0x100);
                self.checker.on_hard_state(id, hard_state)?;
                self.nodes.get_mut(&id).expect("known").disk.hard_state = hard_state;
            }
            Output::PersistEntries(entries) => {
                self.trace = mix(
                    self.trace,
                    entries.last().map_or(0, |e| e.index ^ e.term << 32),
                );
                self.checker.on_write(id, &entries)?;
                let node = self.nodes.get_mut(&id).expect("known");
                node.disk.write_entries(now, entries, &mut self.rng);
            }
            Output::Send { to, message } => {
                self.checker.on_send(id, to, &message)?;
                self.network.send(now, id, to, message);
            }
            Output::Apply(entries) => {
                let known = self.checker_applied_len();
                self.checker.on_apply(id, &entries)?;
                for entry in entries.iter().filter(|entry| entry.index > known) {
                    self.oracle.on_first_apply(entry)?;
                }
                self.trace = mix(self.trace, entries.last().map_or(0, |e| e.index));
                for entry in &entries {
                    self.apply_batch(id, entry)?;
                }
            }
            Output::ProposalResult {
                id: ProposalId(request),
                result,
            } => {
                if let (Ok(log_id), Some(batch)) = (result, self.batch_requests.remove(&request)) {
                    let node = &self.nodes[&id];
                    let Some((applied_id, outcome)) = node.outcomes.get(&log_id.index).cloned()
                    else {
                        let problem = format!("node {id} answered {log_id} before applying it");
                        return Err(Violation(problem));
                    };
                    if applied_id != batch {
                        let problem =
                            format!("node {id} answered {batch} with {applied_id}'s outcome");
                        return Err(Violation(problem));
                    }
                    self.batches.on_acknowledge(batch, &outcome)?;
                    self.pending_batches.remove(&batch);
                }
                let result = result.map_err(|ProposalLost::Overwritten { index }| index);
                self.oracle.on_result(request, result)?;
            }
            Output::ReadResult {
                id: ReadId(request),
                result,
            } => match result {
                Ok(index) => {
                    let applied = self.node(id).map_or(0, Raft::applied_index);
                    self.oracle.on_read(request, index, applied)?;
                }
                Err(_) => self.oracle.forget_read(request),
            },
            Output::RoleChanged { role, term, .. } => {
                self.trace = mix(self.trace, term << 4 | role as u64);
                self.checker.on_role(id, role, term)?;
            }
        }
        Ok(())
    }

    /// Runs `entry` through node `id`'s batch state machine, if it carries a batch.
    fn apply_batch(&mut self, id: NodeId, entry: &Entry) -> Result<(), Violation> {
        let EntryPayload::Normal(payload) = &entry.payload else {
            return Ok(());
        };
        if payload.get(8) != Some(&BATCH_PAYLOAD_TAG) {
            return Ok(());
        }
        let Some(Ok(Command::Batch(batch))) = payload.get(9..).map(Command::decode) else {
            return Ok(());
        };
        let node = self.nodes.get_mut(&id).expect("known node");
        let applied = node.state.apply(entry.index, &batch);
        node.outcomes
            .insert(entry.index, (batch.id, applied.outcome.clone()));
        while node.outcomes.len() > OUTCOMES_KEPT_MAX {
            node.outcomes.pop_first();
        }
        self.batches
            .on_apply(id, &batch, &applied, node.state.offsets())
    }

    /// After convergence: every node's batch state holds the whole committed sequence.
    pub fn check_batches_converged(&self) -> Result<(), Violation> {
        for (id, node) in &self.nodes {
            self.batches.check_converged(*id, node.state.last_seq())?;
        }
        Ok(())
    }

    fn checker_applied_len(&self) -> LogIndex {
        self.checker.applied_len()
    }

    fn check_after_step(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(raft) = self.nodes[&id].raft.as_ref() else {
            return Ok(());
        };
        let disks: BTreeMap<NodeId, &[Entry]> = self
            .nodes
            .iter()
            .map(|(id, node)| (*id, node.disk.log.as_slice()))
            .collect();
        let durable_hard_state = self.nodes[&id].disk.hard_state;
        self.checker.observe(id, raft, durable_hard_state, &disks)?;
        for (other, node) in &self.nodes {
            if let Some(raft) = &node.raft {
                self.checker.check_leader_completeness(*other, raft)?;
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

    /// The proposal id carried by `entry`, if it was proposed through this cluster.
    pub fn proposal_of(entry: &Entry) -> Option<u64> {
        proposal_id_of(entry)
    }
}
