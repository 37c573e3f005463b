//! The global observer: it sees every node's outputs and state after every step and checks
//! the consensus engine's safety properties, plus the client oracle for proposals and reads.
//! The properties marked *Raft* hold for Raft's log only (a Multi-Paxos slot carries the ballot
//! its value was accepted at, which differs between nodes, so there is no log matching); the
//! others hold for both engines, "term" meaning the promised ballot under Multi-Paxos.
//!
//! | property | checked in |
//! |---|---|
//! | at most one leader per term (ballot) | [`Checker::on_role`] |
//! | one vote per voter per term, kept across crashes (*Raft*) | [`Checker::on_send`], [`Checker::on_hard_state`] |
//! | a promise is durable before it is sent; no accept below a durable promise (*Multi-Paxos*) | [`Checker::on_send`] |
//! | term never decreases | [`Checker::on_hard_state`], [`Checker::on_restart`] |
//! | the core's term/vote are durable after each step | [`Checker::observe`] |
//! | log matching (same index+term ⇒ same prefix) via a running hash (*Raft*) | [`Checker::on_write`] |
//! | a leader's log is append-only (*Raft*) | [`Checker::observe`] |
//! | committed ⇒ durable on a majority; committed prefix never changes (*Raft*) | [`Checker::observe`] |
//! | leader completeness (*Raft*) | [`Checker::observe`] |
//! | state machine safety: same entry (Multi-Paxos: same value) applied at each index | [`Checker::on_apply`] |
//! | apply ≤ commit, apply ≤ durable | [`Checker::observe`] |
//! | acknowledged proposals applied once, at their index, in real-time order | [`Oracle`] |

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ordo_common::{EngineKind, Entry, EntryPayload, HardState, LogId, LogIndex, NodeId, Term};
use ordo_core::state::Command;
use ordo_core::{Body, Engine, Message, Raft, Role};

/// A broken property: what, where, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! violation {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

/// A 64-bit mix (SplitMix64's finaliser), for running hashes.
pub fn mix(state: u64, value: u64) -> u64 {
    let mut z = state ^ value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A majority of the voters `raft` holds in force. Membership changes are one voter at a time,
/// so this majority overlaps the majority of the configuration any of its entries committed
/// under; entries are counted on every node's disk, removed nodes' included.
fn quorum_of(raft: &Raft) -> usize {
    raft.membership().voters.len() / 2 + 1
}

/// An entry's value, without the term or ballot it was written at: what Multi-Paxos nodes
/// must agree on.
fn value_hash(entry: &Entry) -> u64 {
    entry_hash(&Entry {
        term: 0,
        ..entry.clone()
    })
}

fn entry_hash(entry: &Entry) -> u64 {
    let mut hash = mix(entry.term, entry.index);
    match &entry.payload {
        EntryPayload::Noop => hash = mix(hash, 0xA),
        EntryPayload::Config(membership) => {
            hash = mix(hash, 0xC);
            for (kind, ids) in [
                (1, &membership.voters),
                (2, &membership.learners),
                (3, &membership.retired),
            ] {
                for id in ids {
                    hash = mix(hash, kind);
                    hash = mix(hash, *id);
                }
            }
        }
        EntryPayload::Normal(bytes) => {
            hash = mix(hash, bytes.len() as u64);
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                hash = mix(hash, u64::from_le_bytes(word));
            }
        }
    }
    hash
}

/// One node's log as the checker reconstructs it from `PersistEntries` outputs, with the
/// running hash of the prefix ending at each entry.
#[derive(Debug, Default, Clone)]
struct Shadow {
    entries: Vec<(LogId, u64)>,
}

impl Shadow {
    /// A log known only through `last` (what a restart or a snapshot left applied).
    fn through(last: LogId) -> Self {
        let mut entries: Vec<(LogId, u64)> = (1..last.index)
            .map(|index| (LogId::new(0, index), 0))
            .collect();
        if last.index > 0 {
            entries.push((last, 0));
        }
        Self { entries }
    }

    fn last(&self) -> LogId {
        self.entries.last().map_or(LogId::default(), |(id, _)| *id)
    }

    fn chain_at(&self, index: LogIndex) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.entries
            .get(index as usize - 1)
            .map(|(_, chain)| *chain)
    }
}

pub struct Checker {
    engine: EngineKind,
    leaders: BTreeMap<Term, NodeId>,
    votes: BTreeMap<(NodeId, Term), NodeId>,
    chains: HashMap<LogId, u64>,
    shadows: BTreeMap<NodeId, Shadow>,
    hard_states: BTreeMap<NodeId, HardState>,
    /// While a node leads a term: (term, its last index, the running hash there).
    leader_marks: BTreeMap<NodeId, (Term, LogIndex, u64)>,
    /// Committed entries, index 1 first: (id, running hash).
    committed: Vec<(LogId, u64)>,
    /// Highest index a leader of each term committed.
    commit_terms: BTreeMap<Term, LogIndex>,
    /// The entry applied at each index, first node to apply it wins.
    applied: Vec<u64>,
    applied_by_node: BTreeMap<NodeId, LogIndex>,
    /// Nodes that lost their disk: their peers refuse them (as `ordo serve` refuses a peer
    /// whose incarnation changed), so what they send counts for nothing.
    wiped: BTreeSet<NodeId>,
}

impl Checker {
    pub fn new(voters: &[NodeId], engine: EngineKind) -> Self {
        Self {
            engine,
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            chains: HashMap::new(),
            shadows: voters.iter().map(|id| (*id, Shadow::default())).collect(),
            hard_states: voters
                .iter()
                .map(|id| (*id, HardState::default()))
                .collect(),
            leader_marks: BTreeMap::new(),
            committed: Vec::new(),
            commit_terms: BTreeMap::new(),
            applied: Vec::new(),
            applied_by_node: voters.iter().map(|id| (*id, 0)).collect(),
            wiped: BTreeSet::new(),
        }
    }

    /// Node `id` lost its disk and restarts empty, under the same id, as a new incarnation:
    /// its term, vote and log start over, and nothing it sends is heard.
    pub fn on_wipe(&mut self, id: NodeId) {
        self.shadows.insert(id, Shadow::default());
        self.hard_states.insert(id, HardState::default());
        self.applied_by_node.insert(id, 0);
        self.leader_marks.remove(&id);
        self.wiped.insert(id);
    }

    /// Node `id` joins the cluster (it was added as a learner): it starts with nothing.
    pub fn add_node(&mut self, id: NodeId) {
        self.shadows.entry(id).or_default();
        self.hard_states.entry(id).or_default();
        self.applied_by_node.entry(id).or_insert(0);
    }

    pub fn applied_len(&self) -> LogIndex {
        self.applied.len() as u64
    }

    /// Entries known committed: under Raft the committed prefix the checker tracks, under
    /// Multi-Paxos (which has no log matching to track it by) the slots applied somewhere.
    pub fn committed_count(&self) -> u64 {
        match self.engine {
            EngineKind::Raft => self.committed.len() as u64,
            EngineKind::MultiPaxos => self.applied.len() as u64,
        }
    }

    pub fn on_role(&mut self, node: NodeId, role: Role, term: Term) -> Result<(), Violation> {
        if role == Role::Leader
            && let Some(other) = self.leaders.insert(term, node)
            && other != node
        {
            violation!("two leaders in term {term}: nodes {other} and {node}");
        }
        Ok(())
    }

    pub fn on_hard_state(&mut self, node: NodeId, next: HardState) -> Result<(), Violation> {
        let previous = self.hard_states[&node];
        if next.term < previous.term {
            violation!(
                "node {node}: term went back from {} to {}",
                previous.term,
                next.term
            );
        }
        if next.term == previous.term && previous.vote.is_some() && next.vote != previous.vote {
            violation!(
                "node {node}: vote in term {} changed from {:?} to {:?}",
                next.term,
                previous.vote,
                next.vote
            );
        }
        self.hard_states.insert(node, next);
        Ok(())
    }

    /// Every message sent; a granted (real) vote is recorded per (voter, term).
    pub fn on_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: &Message,
        durable: HardState,
    ) -> Result<(), Violation> {
        if self.wiped.contains(&from) {
            return Ok(()); // refused by every peer: it votes for no one
        }
        match message.body {
            Body::Promise { .. } if durable.term < message.term => violation!(
                "node {from} promised ballot {} to {to} before the promise was durable (durable: {})",
                message.term,
                durable.term
            ),
            Body::Accepted { .. } if durable.term > message.term => violation!(
                "node {from} accepted ballot {} from {to} below its durable promise {}",
                message.term,
                durable.term
            ),
            _ => {}
        }
        if let Body::VoteResponse {
            pre_vote: false,
            granted: true,
        } = message.body
        {
            let term = message.term;
            if let Some(previous) = self.votes.insert((from, term), to)
                && previous != to
            {
                violation!("node {from} granted two votes in term {term}: to {previous} and {to}");
            }
        }
        Ok(())
    }

    /// A node's log changed: entries written from `entries[0].index` on.
    pub fn on_write(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), Violation> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let shadow = self.shadows.get_mut(&node).expect("known node");
        if first.index as usize > shadow.entries.len() + 1 {
            violation!(
                "node {node}: write at {} leaves a hole after {}",
                first.index,
                shadow.last()
            );
        }
        shadow.entries.truncate(first.index as usize - 1);
        if self.engine == EngineKind::MultiPaxos {
            // Slots carry the ballot they were accepted at: no log matching to check.
            shadow
                .entries
                .extend(entries.iter().map(|entry| (entry.log_id(), 0)));
            return Ok(());
        }
        for entry in entries {
            let previous = shadow.chain_at(entry.index - 1).expect("contiguous");
            let chain = mix(previous, entry_hash(entry));
            shadow.entries.push((entry.log_id(), chain));
            match self.chains.get(&entry.log_id()) {
                Some(known) if *known != chain => violation!(
                    "log matching: node {node} holds entry {} with a different prefix",
                    entry.log_id()
                ),
                Some(_) => {}
                None => {
                    self.chains.insert(entry.log_id(), chain);
                }
            }
        }
        Ok(())
    }

    /// A node restarted from its disk: its log is the committed prefix through its applied
    /// entry (which it applied, so the cluster committed it) and the durable entries after it.
    pub fn on_restart(
        &mut self,
        node: NodeId,
        engine: &Engine,
        applied: LogId,
        durable_after: &[Entry],
        disks: &BTreeMap<NodeId, &[LogId]>,
    ) -> Result<(), Violation> {
        let shadow = match engine.as_raft() {
            Some(raft) => self.committed_shadow(node, applied, quorum_of(raft), disks)?,
            None => Shadow::through(applied),
        };
        self.shadows.insert(node, shadow);
        self.on_write(node, durable_after)?;
        self.leader_marks.remove(&node);
        self.applied_by_node.insert(node, engine.applied_index());
        self.on_hard_state(node, engine.hard_state())
    }

    /// A node installed a snapshot through `last_included`: its log is the committed prefix
    /// through it, and (if it kept it) the suffix it held after it.
    pub fn on_install(
        &mut self,
        node: NodeId,
        last_included: LogId,
        keep_suffix: bool,
        quorum: usize,
        disks: &BTreeMap<NodeId, &[LogId]>,
    ) -> Result<(), Violation> {
        if self.engine == EngineKind::MultiPaxos {
            // The slots after the snapshot stay, whatever the ballots they hold.
            let old = &self.shadows[&node];
            let mut shadow = Shadow::through(last_included);
            if let Some(suffix) = old.entries.get(last_included.index as usize..) {
                shadow.entries.extend_from_slice(suffix);
            }
            self.shadows.insert(node, shadow);
            self.applied_by_node.insert(node, last_included.index);
            return Ok(());
        }
        let mut shadow = self.committed_shadow(node, last_included, quorum, disks)?;
        if keep_suffix {
            let old = &self.shadows[&node];
            if old.chain_at(last_included.index) != shadow.chain_at(last_included.index) {
                violation!(
                    "node {node} kept its log after a snapshot through {last_included}, but its entry there differs from the committed one"
                );
            }
            shadow
                .entries
                .extend_from_slice(&old.entries[last_included.index as usize..]);
        }
        self.shadows.insert(node, shadow);
        self.applied_by_node.insert(node, last_included.index);
        Ok(())
    }

    /// The committed prefix through `through`, which must be committed. A node may have
    /// committed and applied entries in a step whose checks never ran (it crashed halfway
    /// through carrying out its outputs): then its own log, as it wrote it, extends the
    /// committed prefix, provided a quorum of disks holds those entries.
    fn committed_shadow(
        &mut self,
        node: NodeId,
        through: LogId,
        quorum: usize,
        disks: &BTreeMap<NodeId, &[LogId]>,
    ) -> Result<Shadow, Violation> {
        if through.index == 0 {
            return Ok(Shadow::default());
        }
        let known = self.committed.len() as u64;
        if through.index > known {
            let own = &self.shadows[&node];
            if own
                .entries
                .get(through.index as usize - 1)
                .map(|(id, _)| *id)
                != Some(through)
                || (known > 0 && own.chain_at(known) != Some(self.committed[known as usize - 1].1))
            {
                violation!(
                    "node {node} holds {through} as applied, beyond the committed prefix ({known}), and its log does not extend that prefix"
                );
            }
            for index in known + 1..=through.index {
                let (id, _) = own.entries[index as usize - 1];
                let durable_on = disks
                    .values()
                    .filter(|log| log.get(index as usize - 1) == Some(&id))
                    .count();
                if durable_on < quorum {
                    violation!(
                        "node {node} applied {id} but it is durable on only {durable_on} nodes (quorum {quorum})"
                    );
                }
            }
            let extension = own.entries[known as usize..through.index as usize].to_vec();
            self.committed.extend(extension);
        }
        match self.committed.get(through.index as usize - 1) {
            Some((id, _)) if *id == through => Ok(Shadow {
                entries: self.committed[..through.index as usize].to_vec(),
            }),
            other => violation!(
                "node {node} holds {through} as applied or snapshotted, but the cluster committed {:?} there",
                other.map(|(id, _)| id)
            ),
        }
    }

    /// The ids of the committed entries through `through`.
    pub fn committed_ids(&self, through: LogIndex) -> Vec<LogId> {
        self.committed
            .iter()
            .take(through as usize)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn on_apply(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), Violation> {
        for entry in entries {
            let expected = self.applied_by_node[&node] + 1;
            if entry.index != expected {
                violation!(
                    "node {node} applied index {} where {expected} was next",
                    entry.index
                );
            }
            let hash = match self.engine {
                EngineKind::Raft => entry_hash(entry),
                EngineKind::MultiPaxos => value_hash(entry),
            };
            match self.applied.get(entry.index as usize - 1) {
                Some(known) if *known != hash => violation!(
                    "state machine safety: node {node} applied a different entry at index {} ({})",
                    entry.index,
                    entry.log_id()
                ),
                Some(_) => {}
                None => self.applied.push(hash),
            }
            self.applied_by_node.insert(node, entry.index);
        }
        Ok(())
    }

    /// Checks after `node` took a step. `disks` are every node's durable logs.
    pub fn observe(
        &mut self,
        node: NodeId,
        engine: &Engine,
        durable_hard_state: HardState,
        disks: &BTreeMap<NodeId, &[LogId]>,
    ) -> Result<(), Violation> {
        let shadow = &self.shadows[&node];
        if shadow.last() != engine.last_log_id() {
            violation!(
                "node {node} changed its log without a PersistEntries output (log ends {}, writes end {})",
                engine.last_log_id(),
                shadow.last()
            );
        }
        if engine.hard_state() != durable_hard_state {
            violation!(
                "node {node} holds term/vote {:?} but made {:?} durable",
                engine.hard_state(),
                durable_hard_state
            );
        }
        let (applied, commit, durable) = (
            engine.applied_index(),
            engine.commit_index(),
            engine.durable_index(),
        );
        if applied > commit || applied > durable || durable > engine.last_log_id().index {
            violation!(
                "node {node}: applied {applied}, commit {commit}, durable {durable} out of order"
            );
        }
        match engine.as_raft() {
            Some(raft) => {
                self.check_commit(node, raft, disks)?;
                self.check_leader_append_only(node, raft)
            }
            None => Ok(()),
        }
    }

    fn check_commit(
        &mut self,
        node: NodeId,
        raft: &Raft,
        disks: &BTreeMap<NodeId, &[LogId]>,
    ) -> Result<(), Violation> {
        let shadow = &self.shadows[&node];
        let commit = raft.commit_index();
        let known = self.committed.len() as u64;
        let overlap = commit.min(known);
        if overlap > 0 && shadow.chain_at(overlap) != Some(self.committed[overlap as usize - 1].1) {
            violation!(
                "node {node}: committed prefix through {overlap} differs from the cluster's"
            );
        }
        if commit > known {
            let (id, _) = shadow.entries[commit as usize - 1];
            let durable_on = disks
                .values()
                .filter(|log| log.get(commit as usize - 1) == Some(&id))
                .count();
            let quorum = quorum_of(raft);
            if durable_on < quorum {
                violation!(
                    "node {node} committed {id} but it is durable on only {durable_on} nodes (quorum {quorum})"
                );
            }
            self.committed
                .extend_from_slice(&shadow.entries[known as usize..commit as usize]);
            let slot = self.commit_terms.entry(raft.term()).or_default();
            *slot = (*slot).max(commit);
        }
        Ok(())
    }

    fn check_leader_append_only(&mut self, node: NodeId, raft: &Raft) -> Result<(), Violation> {
        if raft.role() != Role::Leader {
            self.leader_marks.remove(&node);
            return Ok(());
        }
        let shadow = &self.shadows[&node];
        let term = raft.term();
        if let Some(&(mark_term, index, chain)) = self.leader_marks.get(&node)
            && mark_term == term
            && shadow.chain_at(index) != Some(chain)
        {
            violation!("leader {node} of term {term} rewrote its log at or before index {index}");
        }
        let last = shadow.last().index;
        let chain = shadow.chain_at(last).expect("last exists");
        self.leader_marks.insert(node, (term, last, chain));
        Ok(())
    }

    /// Leader completeness: a leader of term T holds every entry committed in a term below T.
    pub fn check_leader_completeness(&self, node: NodeId, raft: &Raft) -> Result<(), Violation> {
        if raft.role() != Role::Leader {
            return Ok(());
        }
        let required = self
            .commit_terms
            .range(..raft.term())
            .map(|(_, index)| *index)
            .max();
        let Some(required) = required.filter(|index| *index > 0) else {
            return Ok(());
        };
        let expected = self.committed[required as usize - 1].1;
        if self.shadows[&node].chain_at(required) != Some(expected) {
            violation!(
                "leader completeness: leader {node} of term {} lacks committed entry {required}",
                raft.term()
            );
        }
        Ok(())
    }
}

/// What happened to one proposal, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProposalState {
    Pending,
    Acknowledged(LogIndex),
    /// Definitely not committed.
    Lost,
}

#[derive(Debug)]
struct ProposalRecord {
    /// The highest index acknowledged before this proposal was made.
    acknowledged_before: LogIndex,
    state: ProposalState,
}

/// The raw-proposal oracle: tracks raw proposals from invocation to answer and checks them
/// against what the state machines applied. (Batches and status reads have their own, in
/// [`crate::batches`].)
#[derive(Debug, Default)]
pub struct Oracle {
    proposals: HashMap<u64, ProposalRecord>,
    applied_at: HashMap<u64, LogIndex>,
    acknowledged_index_max: LogIndex,
    pub acknowledged: u64,
    pub lost: u64,
}

/// Raw proposals in the simulator start with their id, so the oracle can recognise them when
/// applied.
pub fn proposal_id_of(entry: &Entry) -> Option<u64> {
    let EntryPayload::Normal(bytes) = &entry.payload else {
        return None;
    };
    match Command::decode(bytes) {
        Ok(Command::Raw(payload)) if payload.len() >= 8 => Some(u64::from_le_bytes(
            payload[..8].try_into().expect("8 bytes"),
        )),
        _ => None,
    }
}

impl Oracle {
    pub fn invoke(&mut self, id: u64) {
        let record = ProposalRecord {
            acknowledged_before: self.acknowledged_index_max,
            state: ProposalState::Pending,
        };
        self.proposals.insert(id, record);
    }

    /// Entries applied for the first time anywhere (the checker ensures all nodes agree).
    pub fn on_first_apply(&mut self, entry: &Entry) -> Result<(), Violation> {
        let Some(id) = proposal_id_of(entry) else {
            return Ok(());
        };
        if let Some(index) = self.applied_at.insert(id, entry.index) {
            violation!(
                "proposal {id} applied twice: at {index} and {}",
                entry.index
            );
        }
        let Some(record) = self.proposals.get(&id) else {
            violation!("an entry nobody proposed was applied at {}", entry.index);
        };
        if record.state == ProposalState::Lost {
            violation!(
                "proposal {id} was reported lost but applied at {}",
                entry.index
            );
        }
        if entry.index <= record.acknowledged_before {
            violation!(
                "real-time order: proposal {id} applied at {} though {} was acknowledged before it was made",
                entry.index,
                record.acknowledged_before
            );
        }
        Ok(())
    }

    /// Proposal `id` was answered: committed at `Some(log_id)`, or definitely lost (`None`).
    pub fn on_result(&mut self, id: u64, result: Option<LogId>) -> Result<(), Violation> {
        let Some(record) = self.proposals.get_mut(&id) else {
            violation!("a result for unknown proposal {id}");
        };
        if record.state != ProposalState::Pending {
            violation!("proposal {id} got a second result");
        }
        match result {
            Some(log_id) => {
                if self.applied_at.get(&id) != Some(&log_id.index) {
                    violation!(
                        "proposal {id} acknowledged at {log_id} but applied at {:?}",
                        self.applied_at.get(&id)
                    );
                }
                record.state = ProposalState::Acknowledged(log_id.index);
                self.acknowledged += 1;
                self.acknowledged_index_max = self.acknowledged_index_max.max(log_id.index);
            }
            None => {
                if let Some(applied) = self.applied_at.get(&id) {
                    violation!("proposal {id} reported lost but applied at {applied}");
                }
                record.state = ProposalState::Lost;
                self.lost += 1;
            }
        }
        Ok(())
    }

    /// The highest index acknowledged to any raw proposal.
    pub fn acknowledged_index_max(&self) -> LogIndex {
        self.acknowledged_index_max
    }
}
