//! Raft as a deterministic state machine: inputs in, ordered outputs out, no I/O.
//!
//! See the crate documentation for the driving loop and the durability contract.

mod config;
mod log;
mod membership;
mod message;
mod progress;
pub(crate) mod quorum;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use ordo_common::{Entry, EntryPayload, HardState, LogId, LogIndex, Membership, NodeId, Term};

pub use config::{Config, ConfigError};
pub use message::{AppendResponse, Body, ConflictHint, Message, RejectHint};
pub use ordo_common::membership::{
    LEARNERS_MAX, MEMBER_ADDRESS_BYTES_MAX, MembershipChange, MembershipError, VOTERS_MAX,
};
pub use progress::ReplicationMode;

use crate::rng::Prng;
use log::RaftLog;
pub(crate) use log::slice_window;
use membership::Configs;
use progress::Progress;
use quorum::{VoteResult, is_quorum, majority_value, vote_result};

/// Bytes charged per entry on top of its payload in the uncommitted budget, so that empty
/// proposals cannot grow memory without bound either.
pub(crate) const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// The admission checks every engine makes on a proposal of `bytes` at a leader holding
/// `uncommitted` bytes not yet committed: returns what the proposal is charged.
pub(crate) fn admit_proposal(
    config: &Config,
    bytes: u64,
    uncommitted: u64,
) -> Result<u64, ProposeError> {
    if bytes > config.proposal_bytes_max {
        return Err(ProposeError::TooLarge {
            bytes,
            limit: config.proposal_bytes_max,
        });
    }
    let charged = bytes + ENTRY_OVERHEAD_BYTES;
    if uncommitted > 0 && uncommitted + charged > config.uncommitted_bytes_max {
        return Err(ProposeError::Backpressure {
            limit: config.uncommitted_bytes_max,
        });
    }
    Ok(charged)
}

/// The admission check every engine makes on a read while `pending` reads wait.
pub(crate) fn admit_read(config: &Config, pending: usize) -> Result<(), ReadError> {
    if pending >= config.pending_reads_max {
        return Err(ReadError::TooManyPending {
            limit: config.pending_reads_max,
        });
    }
    Ok(())
}

/// The highest term a message may carry. A cluster electing a leader every millisecond would
/// need 146 million years to reach it; anything above is refused as hostile or corrupt.
pub const TERM_MAX: Term = u64::MAX / 2;
/// The highest log index a message may name (the same reasoning as [`TERM_MAX`]).
pub const INDEX_MAX: LogIndex = u64::MAX / 2;

/// The name of the first term or index field of `message` beyond [`TERM_MAX`] / [`INDEX_MAX`].
pub(crate) fn out_of_range_field(message: &Message) -> Option<&'static str> {
    let terms_and_indexes: Vec<(&'static str, u64, u64)> = match &message.body {
        Body::Vote { last_log_id, .. } => vec![
            ("last log term", last_log_id.term, TERM_MAX),
            ("last log index", last_log_id.index, INDEX_MAX),
        ],
        Body::Append {
            prev_log_id,
            entries,
            commit_index,
        } => {
            let mut fields = vec![
                ("previous term", prev_log_id.term, TERM_MAX),
                (
                    "previous index",
                    prev_log_id.index,
                    INDEX_MAX - entries.len() as u64,
                ),
                ("commit index", *commit_index, INDEX_MAX),
            ];
            fields.extend(
                entries
                    .iter()
                    .map(|entry| ("entry term", entry.term, TERM_MAX)),
            );
            fields
        }
        Body::AppendResponse(AppendResponse::Accepted { match_index }) => {
            vec![("match index", *match_index, INDEX_MAX)]
        }
        Body::AppendResponse(AppendResponse::Rejected {
            rejected_prev_index,
            hint,
        }) => {
            let mut fields = vec![
                ("rejected index", *rejected_prev_index, INDEX_MAX),
                ("hint last index", hint.last_index, INDEX_MAX),
            ];
            if let Some(conflict) = hint.conflict {
                fields.push(("conflict term", conflict.term, TERM_MAX));
                fields.push(("conflict index", conflict.first_index, INDEX_MAX));
            }
            fields
        }
        Body::Heartbeat { commit_index, .. } => vec![("commit index", *commit_index, INDEX_MAX)],
        Body::VoteResponse { .. } | Body::HeartbeatResponse { .. } | Body::TimeoutNow => Vec::new(),
        Body::Prepare { from, .. } => vec![("prepare from", *from, INDEX_MAX)],
        Body::ProbeAnswer { .. } => Vec::new(),
        Body::Promise {
            decided,
            from,
            entries,
            ..
        }
        | Body::Accept {
            first: from,
            entries,
            decided,
            ..
        } => {
            let mut fields = vec![
                ("decided index", *decided, INDEX_MAX),
                ("first slot", *from, INDEX_MAX - entries.len() as u64),
            ];
            fields.extend(
                entries
                    .iter()
                    .map(|entry| ("entry ballot", entry.term, TERM_MAX)),
            );
            fields
        }
        Body::Accepted {
            through, decided, ..
        } => vec![
            ("accepted through", *through, INDEX_MAX),
            ("decided index", *decided, INDEX_MAX),
        ],
        Body::Refused {
            decided,
            held_through,
        } => vec![
            ("decided index", *decided, INDEX_MAX),
            ("held through", *held_through, INDEX_MAX),
        ],
    };
    std::iter::once(("term", message.term, TERM_MAX))
        .chain(terms_and_indexes)
        .find(|(_, value, max)| value > max)
        .map(|(name, _, _)| name)
}

/// The caller's name for a proposal, echoed in its [`Output::ProposalResult`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId(pub u64);

/// The caller's name for a linearizable read, echoed in its [`Output::ReadResult`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Asking for pre-votes: has not bumped its term.
    PreCandidate,
    Candidate,
    Leader,
}

/// What the core asks its driver to do, in the order it must be done. See the crate docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make term and vote durable. Must complete before any later output is carried out.
    PersistHardState(HardState),
    /// Write these entries, first removing every stored entry at or after the first one's
    /// index. May complete asynchronously, but writes must land in the order given; report
    /// completion with [`Raft::handle_durable`] and the last entry's id.
    PersistEntries(Vec<Entry>),
    /// Send a message to a peer. Best effort: the core tolerates loss, duplication, reordering.
    Send { to: NodeId, message: Message },
    /// Apply these committed (and locally durable) entries to the state machine, in order.
    Apply(Vec<Entry>),
    /// The outcome of a proposal, given after its entry was applied (or once it is certain that
    /// it never will be).
    ProposalResult {
        id: ProposalId,
        result: Result<LogId, ProposalLost>,
    },
    /// A linearizable read may be served from the state machine: everything up to `index` has
    /// been applied (by an earlier `Apply`).
    ReadResult {
        id: ReadId,
        result: Result<LogIndex, ReadError>,
    },
    /// Role, term or known leader changed (for logs, metrics and client redirection).
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
    /// Leader: read entries `[low, high)` back from storage for follower `to` (they have left
    /// the in-memory window), with the term of entry `low - 1`, and hand them to
    /// [`Raft::handle_entries_read`]. Nothing else is sent to `to` until then.
    ReadEntries {
        to: NodeId,
        low: LogIndex,
        high: LogIndex,
    },
    /// Leader: follower `to` needs entries storage no longer holds. Send it a snapshot of the
    /// state machine as it is now, and report how the transfer went with
    /// [`Raft::handle_snapshot_report`].
    SendSnapshot { to: NodeId },
    /// Follower: make the received snapshot this node's state, durably, **before any later
    /// output is carried out**: it covers the log up to `last_included`. Keep the stored
    /// entries after it when `keep_suffix`; drop the whole stored log otherwise.
    InstallSnapshot {
        last_included: LogId,
        keep_suffix: bool,
    },
}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals; retry at the hinted node.
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// Leadership is moving to another node; retry shortly at the new leader.
    #[error("leadership transfer in progress; retry at the new leader")]
    TransferInProgress,
    /// The payload is larger than `proposal_bytes_max`.
    #[error("proposal of {bytes} bytes exceeds proposal_bytes_max ({limit} bytes)")]
    TooLarge { bytes: u64, limit: u64 },
    /// Too much is proposed and not yet committed; back off and retry.
    #[error(
        "uncommitted proposals would exceed uncommitted_bytes_max ({limit} bytes); retry later"
    )]
    Backpressure { limit: u64 },
}

/// A proposal that will never commit. (A proposal whose leader simply crashes gets no result:
/// its outcome is unknown and must be resolved by the caller, e.g. by an idempotent retry.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalLost {
    /// Another entry was committed at the proposal's index.
    #[error("another leader's entry was committed at index {index}")]
    Overwritten { index: LogIndex },
    /// A snapshot replaced the log through the proposal's index before this node learned
    /// which entry committed there: the proposal's fate is unknown here (ask for its status).
    #[error("a snapshot replaced index {index} before this node learned its fate")]
    Unknowable { index: LogIndex },
}

/// Why a linearizable read could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// Leadership was lost before the read was confirmed; retry at the new leader.
    #[error("leadership lost before the read was confirmed; retry")]
    LeadershipLost,
    #[error("too many reads pending (pending_reads_max = {limit}); retry later")]
    TooManyPending { limit: usize },
}

/// Why a leadership transfer could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("node {0} is not a voter of this cluster")]
    UnknownNode(NodeId),
    #[error("this node is already the leader")]
    TargetIsSelf,
    #[error("a single-node cluster has no one to transfer leadership to")]
    NoFollower,
}

/// Why a message was dropped without effect. Network input never panics the core.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// The sender was removed from the cluster: whatever it still believes, it is not heard.
    #[error("message from node {0}, which was removed from this cluster")]
    RetiredSender(NodeId),
    #[error("message from this node's own id")]
    FromSelf,
    #[error("malformed append: {0}")]
    MalformedAppend(&'static str),
    /// A term above [`TERM_MAX`] or an index above [`INDEX_MAX`]: no real cluster reaches
    /// them, and refusing them keeps every term and index sum in the core from overflowing.
    #[error("{0} is beyond the range a cluster can reach (TERM_MAX / INDEX_MAX)")]
    OutOfRange(&'static str),
    /// Multi-Paxos: a message from a node that is not among the voters it keeps.
    #[error("message from node {0}, which is not a voter of this cluster")]
    NotAVoter(NodeId),
    /// A message of the other consensus engine: the peers do not run the same one.
    #[error("a message of the {0} engine, which this node does not run")]
    OtherEngine(&'static str),
    #[error("acknowledgement of index {match_index} beyond the leader's last index {last_index}")]
    AcknowledgedBeyondLog {
        match_index: LogIndex,
        last_index: LogIndex,
    },
}

/// Why the core could not start from the state it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("restored state is inconsistent: {0}")]
    Restore(&'static str),
}

/// What the node had made durable before it (re)started.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    /// The entry just before `entries`: the applied index and its term, or (0, 0).
    pub prev_log_id: LogId,
    /// The durable entries after `prev_log_id`, contiguous (at least every unapplied one).
    pub entries: Vec<Entry>,
    /// Entries up to here were applied to a durable state machine; at least `prev_log_id`.
    pub applied: LogIndex,
    /// The lowest index storage holds (1 if it never purged).
    pub stored_first: LogIndex,
    /// The membership as of `applied` (the state machine keeps it), or `None` before any
    /// configuration entry applied: then the bootstrap voters of [`Config::voters`] rule.
    pub membership: Option<Membership>,
}

/// A point-in-time summary, for status pages and observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub last_log_id: LogId,
    pub durable_index: LogIndex,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
}

#[derive(Debug)]
struct Transfer {
    target: NodeId,
    elapsed_ticks: u32,
}

#[derive(Debug)]
struct PendingRead {
    id: ReadId,
    index: LogIndex,
    round: u64,
}

/// One Raft node. All methods are synchronous and deterministic given the seed.
#[derive(Debug)]
pub struct Raft {
    config: Config,
    rng: Prng,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    /// The configurations of the log: the one in force is the latest.
    configs: Configs,

    election_elapsed_ticks: u32,
    election_timeout_randomized_ticks: u32,
    heartbeat_elapsed_ticks: u32,

    /// Candidate or pre-candidate: the answers received (true = granted).
    votes: BTreeMap<NodeId, bool>,

    /// Leader: one entry per other voter.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: index of this term's no-op; reads wait until it commits.
    term_start_index: LogIndex,
    uncommitted_bytes: u64,
    transfer: Option<Transfer>,
    read_round: u64,
    read_round_confirmed: u64,
    reads_waiting_commit: VecDeque<ReadId>,
    reads_waiting_round: VecDeque<PendingRead>,
    reads_waiting_apply: VecDeque<(ReadId, LogIndex)>,

    /// Follower: highest index known to match the current leader's log, and the highest
    /// index acknowledged to it (acknowledgements wait for durability).
    ack_matched: LogIndex,
    ack_sent: LogIndex,

    /// Proposals made on this node awaiting their outcome, by index. An index can hold several
    /// (proposed in different terms): whichever term is committed there wins, the rest are lost.
    pending_proposals: BTreeMap<LogIndex, Vec<(Term, ProposalId)>>,
    outputs: VecDeque<Output>,
    last_reported_role: Option<(Role, Term, Option<NodeId>)>,
}

impl Raft {
    // ----- construction and getters -----

    /// Starts a node from what it had made durable. `seed` drives its election timeouts.
    pub fn new(config: Config, restored: Restored, seed: u64) -> Result<Self, StartError> {
        config.validate()?;
        let Restored {
            hard_state,
            prev_log_id,
            entries,
            applied,
            stored_first,
            membership,
        } = restored;
        if entries
            .windows(2)
            .any(|pair| pair[1].index != pair[0].index + 1)
        {
            return Err(StartError::Restore("entries are not contiguous"));
        }
        if entries.windows(2).any(|pair| pair[1].term < pair[0].term) {
            return Err(StartError::Restore("entry terms decrease along the log"));
        }
        if entries
            .last()
            .is_some_and(|entry| entry.term > hard_state.term)
        {
            return Err(StartError::Restore(
                "the log holds a term above the durable term",
            ));
        }
        if entries
            .first()
            .is_some_and(|entry| entry.index != prev_log_id.index + 1)
        {
            return Err(StartError::Restore(
                "the entries do not follow the entry before them",
            ));
        }
        if entries
            .first()
            .is_some_and(|entry| entry.term < prev_log_id.term)
            || prev_log_id.term > hard_state.term
        {
            return Err(StartError::Restore("entry terms decrease along the log"));
        }
        if applied
            > entries
                .last()
                .map_or(prev_log_id.index, |entry| entry.index)
            || applied < prev_log_id.index
        {
            return Err(StartError::Restore(
                "applied index outside the restored log",
            ));
        }
        if stored_first > prev_log_id.index + 1 {
            return Err(StartError::Restore(
                "storage is missing entries after the applied index",
            ));
        }
        let mut configs = Configs::new(
            applied,
            membership.unwrap_or_else(|| Membership {
                voters: config.voters.iter().copied().collect(),
                ..Membership::default()
            }),
        );
        for entry in entries.iter().filter(|entry| entry.index > applied) {
            if let EntryPayload::Config(membership) = &entry.payload {
                configs.append(entry.index, membership.clone());
            }
        }
        let mut raft = Self {
            rng: Prng::new(seed),
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log: RaftLog::restore(prev_log_id, entries, applied, stored_first),
            configs,
            election_elapsed_ticks: 0,
            election_timeout_randomized_ticks: config.election_timeout_ticks,
            heartbeat_elapsed_ticks: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start_index: 0,
            uncommitted_bytes: 0,
            transfer: None,
            read_round: 0,
            read_round_confirmed: 0,
            reads_waiting_commit: VecDeque::new(),
            reads_waiting_round: VecDeque::new(),
            reads_waiting_apply: VecDeque::new(),
            ack_matched: 0,
            ack_sent: 0,
            pending_proposals: BTreeMap::new(),
            outputs: VecDeque::new(),
            last_reported_role: None,
            config,
        };
        raft.randomize_election_timeout();
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }

    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    pub fn durable_index(&self) -> LogIndex {
        self.log.durable
    }

    /// Payload bytes of the entries the core holds in memory (bounded by
    /// `Config::log_window_bytes_max` plus what is not yet applied).
    pub fn log_window_bytes(&self) -> u64 {
        self.log.window_bytes()
    }

    /// The first index the core holds in memory.
    pub fn log_window_first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// The entry at `index`, if this node holds it (for observers and tests).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The membership in force: the latest configuration in this node's log.
    pub fn membership(&self) -> &Membership {
        self.configs.effective()
    }

    /// The latest membership at or below the commit index (known committed here): its
    /// removals are final.
    pub fn committed_membership(&self) -> &Membership {
        self.configs.committed()
    }

    /// The index of the configuration entry in force (the applied index it was restored at,
    /// or 0, for a membership that came from a snapshot or the bootstrap voters).
    pub fn membership_index(&self) -> LogIndex {
        self.configs.effective_index()
    }

    /// Whether this node votes in its own membership.
    pub fn is_voter(&self) -> bool {
        self.membership().voters.contains(&self.config.id)
    }

    /// The follower's replication state as the leader sees it (leader only).
    pub fn replication(&self, follower: NodeId) -> Option<(ReplicationMode, LogIndex, LogIndex)> {
        let progress = self.progress.get(&follower)?;
        Some((progress.mode, progress.match_index, progress.next_index))
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            last_log_id: self.log.last_log_id(),
            durable_index: self.log.durable,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
        }
    }

    // ----- outputs -----

    /// The next thing for the driver to do, in order. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && self.role == Role::Leader {
            // Appends are built lazily, when the driver asks, so that every proposal made since
            // the last poll travels in the same message.
            self.replicate_to_all();
        }
        self.outputs.pop_front()
    }

    // ----- inputs -----

    /// One unit of time has passed. The driver calls this every tick interval (e.g. 50 ms).
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.is_voter() {
            self.election_elapsed_ticks += 1;
            if self.election_elapsed_ticks >= self.election_timeout_randomized_ticks {
                self.start_election(self.config.pre_vote, false);
            }
        } else {
            // A learner, a removed node or one that has not learned the membership yet never
            // campaigns: it cannot win, and trying would only disturb the voters.
            self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
        }
        self.finish_input();
    }

    /// Campaign now (pre-vote first when enabled), as if the election timeout had fired.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.is_voter() {
            self.start_election(self.config.pre_vote, false);
        }
        self.finish_input();
    }

    /// Proposes `payload` for the log. On success returns the entry's id; the outcome arrives
    /// later as [`Output::ProposalResult`].
    pub fn propose(&mut self, id: ProposalId, payload: Bytes) -> Result<LogId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let charged = admit_proposal(&self.config, payload.len() as u64, self.uncommitted_bytes)?;
        Ok(self.propose_entry(id, EntryPayload::Normal(payload), charged))
    }

    /// Appends a proposal's entry, charges it to the uncommitted budget and awaits its outcome.
    fn propose_entry(&mut self, id: ProposalId, payload: EntryPayload, charged: u64) -> LogId {
        let log_id = self.append_as_leader(payload);
        self.uncommitted_bytes += charged;
        self.pending_proposals
            .entry(log_id.index)
            .or_default()
            .push((log_id.term, id));
        self.finish_input();
        log_id
    }

    /// Proposes a membership change. On success returns the configuration entry's id; the
    /// outcome arrives later as [`Output::ProposalResult`] like any proposal's. Refused while
    /// this term has committed nothing yet or another change is uncommitted (Ongaro's rules),
    /// and when the change would leave the cluster without a quorum of reachable voters or
    /// would promote a learner that has not caught up (etcd's strict reconfiguration check).
    pub fn propose_membership(
        &mut self,
        id: ProposalId,
        change: MembershipChange,
    ) -> Result<LogId, MembershipError> {
        let next = self.check_membership_change(&change)?;
        let charged = next.bytes() + ENTRY_OVERHEAD_BYTES;
        Ok(self.propose_entry(id, EntryPayload::Config(next), charged))
    }

    fn check_membership_change(
        &self,
        change: &MembershipChange,
    ) -> Result<Membership, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(MembershipError::TransferInProgress);
        }
        if self.log.committed < self.term_start_index
            && !self.config.plant_config_before_term_commit
        {
            return Err(MembershipError::TermNotStarted);
        }
        if let Some(index) = self.configs.uncommitted() {
            return Err(MembershipError::ChangeInProgress { index });
        }
        let next = change.apply(self.membership())?;
        if let MembershipChange::Promote { id } = change {
            let progress = self.progress.get(id).expect("a learner has progress");
            let last_index = self.log.last_index();
            if progress.mode != ReplicationMode::Replicate
                || progress.match_index + self.config.promote_lag_entries_max < last_index
            {
                return Err(MembershipError::LearnerBehind {
                    id: *id,
                    match_index: progress.match_index,
                    last_index,
                });
            }
        }
        // The voters of the new membership that this leader hears from now (itself included)
        // must make the new quorum, or the change could leave the cluster unable to commit.
        let reachable = next
            .voters
            .iter()
            .filter(|voter| **voter == self.config.id || self.reachable(**voter))
            .count();
        let quorum = next.voters.len() / 2 + 1;
        if reachable < quorum {
            return Err(MembershipError::WouldLoseQuorum { reachable, quorum });
        }
        Ok(next)
    }

    /// Leader: whether `peer` answered within the last election timeout.
    fn reachable(&self, peer: NodeId) -> bool {
        self.progress
            .get(&peer)
            .is_some_and(|progress| progress.heard_ticks < self.config.election_timeout_ticks)
    }

    /// Starts a linearizable read. When it is safe, an [`Output::ReadResult`] names the index
    /// the state machine has applied through; serve the read from that state.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let pending = self.reads_waiting_commit.len()
            + self.reads_waiting_round.len()
            + self.reads_waiting_apply.len();
        admit_read(&self.config, pending)?;
        if self.log.committed < self.term_start_index {
            // The commit index of a new leader may be stale until its no-op commits.
            self.reads_waiting_commit.push_back(id);
        } else {
            self.register_read(id);
        }
        self.finish_input();
        Ok(())
    }

    /// Hands leadership to `target`, or to the most up-to-date follower. Proposals are refused
    /// until the transfer completes or times out (after an election timeout).
    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let target = match target {
            Some(target) if target == self.config.id => return Err(TransferError::TargetIsSelf),
            Some(target)
                if !self.progress.contains_key(&target)
                    || !self.membership().voters.contains(&target) =>
            {
                return Err(TransferError::UnknownNode(target));
            }
            Some(target) => target,
            None => self.best_follower().ok_or(TransferError::NoFollower)?,
        };
        self.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
        });
        self.maybe_send_timeout_now(target);
        self.finish_input();
        Ok(target)
    }

    /// Leader: the voter (other than itself) whose log matches furthest, lowest id first.
    fn best_follower(&self) -> Option<NodeId> {
        let voters = &self.configs.effective().voters;
        self.progress
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .max_by_key(|(id, progress)| (progress.match_index, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// The driver's storage made entries through `log_id` durable (the last entry of a
    /// completed [`Output::PersistEntries`]). Stale reports are ignored.
    pub fn handle_durable(&mut self, log_id: LogId) {
        if log_id.index > self.log.durable && self.log.matches(log_id) {
            self.log.durable = log_id.index;
            match self.role {
                Role::Leader => self.maybe_commit(),
                _ => self.maybe_acknowledge(false),
            }
        }
        self.finish_input();
    }

    /// A message from peer `from` (as authenticated by the transport).
    pub fn handle_message(&mut self, from: NodeId, message: Message) -> Result<(), InvalidMessage> {
        self.validate_message(from, &message)?;
        self.step(from, message);
        self.finish_input();
        Ok(())
    }

    /// Storage read the entries an [`Output::ReadEntries`] for follower `to` asked for, from
    /// `low`: the term of entry `low - 1` and the entries (at least one), or `Err` with the
    /// lowest index storage still holds when they were purged meanwhile.
    pub fn handle_entries_read(
        &mut self,
        to: NodeId,
        low: LogIndex,
        read: Result<(Term, Vec<Entry>), LogIndex>,
    ) {
        self.entries_read(to, low, read);
        self.finish_input();
    }

    /// The runtime finished (or gave up) sending follower `to` the snapshot an
    /// [`Output::SendSnapshot`] asked for (etcd's `ReportSnapshot`). Success only means the
    /// bytes arrived; the follower's acknowledgement after installing it moves replication on.
    pub fn handle_snapshot_report(&mut self, to: NodeId, delivered: bool) {
        if self.role == Role::Leader
            && let Some(progress) = self.progress.get_mut(&to)
            && progress.mode == ReplicationMode::Snapshot
            && !delivered
        {
            progress.snapshot_failed();
        }
        self.finish_input();
    }

    /// A snapshot of leader `from`'s state, sent in `term` and covering the log through
    /// `last_included`, arrived whole and verified. The core installs it (an
    /// [`Output::InstallSnapshot`]) if it carries this node past its commit index.
    /// `membership` is the configuration the snapshot was taken under (its state machine's).
    pub fn handle_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        last_included: LogId,
        membership: Membership,
    ) {
        if from == self.config.id {
            return;
        }
        if term < self.term {
            self.send(from, Body::HeartbeatResponse { read_round: 0 });
        } else {
            if term > self.term {
                self.become_follower(term, Some(from));
            }
            self.follow(from);
            self.install_snapshot(from, last_included, membership);
        }
        self.finish_input();
    }

    /// Storage no longer holds entries below `stored_first` (its retention purged them).
    pub fn handle_purged(&mut self, stored_first: LogIndex) {
        self.log.stored_first = self.log.stored_first.max(stored_first);
        self.finish_input();
    }

    // ----- message handling -----

    fn validate_message(&self, from: NodeId, message: &Message) -> Result<(), InvalidMessage> {
        // Any authenticated peer not removed may speak: Raft processes requests without
        // consulting its configuration (thesis §4.1), so a node not yet told of a new member
        // still answers it. What counts toward a quorum is decided by the membership.
        if from == self.config.id {
            return Err(InvalidMessage::FromSelf);
        }
        // Only a committed removal is final: an uncommitted one may still be truncated by the
        // very node it removes, which must then be heard.
        if self.committed_membership().retired.contains(&from) {
            return Err(InvalidMessage::RetiredSender(from));
        }
        if message.is_paxos() {
            return Err(InvalidMessage::OtherEngine("multi-paxos"));
        }
        if let Some(field) = out_of_range_field(message) {
            return Err(InvalidMessage::OutOfRange(field));
        }
        if let Body::Append {
            prev_log_id,
            entries,
            ..
        } = &message.body
        {
            let mut expected = LogId::new(prev_log_id.term, prev_log_id.index);
            for entry in entries {
                if entry.index != expected.index + 1 {
                    return Err(InvalidMessage::MalformedAppend(
                        "entries are not contiguous",
                    ));
                }
                if entry.term < expected.term || entry.term > message.term {
                    return Err(InvalidMessage::MalformedAppend("entry terms out of order"));
                }
                expected = entry.log_id();
            }
            if prev_log_id.term > message.term {
                return Err(InvalidMessage::MalformedAppend(
                    "previous term above leader term",
                ));
            }
        }
        if let Body::AppendResponse(AppendResponse::Accepted { match_index }) = message.body
            && message.term == self.term
            && self.role == Role::Leader
            && match_index > self.log.last_index()
        {
            return Err(InvalidMessage::AcknowledgedBeyondLog {
                match_index,
                last_index: self.log.last_index(),
            });
        }
        Ok(())
    }

    fn step(&mut self, from: NodeId, message: Message) {
        if message.term > self.term {
            match &message.body {
                Body::Vote {
                    pre_vote,
                    leader_transfer,
                    ..
                } => {
                    if self.in_leader_lease() && !leader_transfer {
                        // Raft §9.6 / thesis §4.2.3: a node that has heard from a live leader
                        // within the minimum election timeout ignores the vote entirely, so a
                        // rejoining node cannot depose a healthy leader.
                        return;
                    }
                    if !pre_vote {
                        self.become_follower(message.term, None);
                    }
                }
                Body::VoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                Body::Append { .. } | Body::Heartbeat { .. } | Body::TimeoutNow => {
                    self.become_follower(message.term, Some(from));
                }
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < self.term {
            match message.body {
                Body::Append { .. } | Body::Heartbeat { .. } => {
                    // A stale leader: answer with our term so it steps down. Without this, a
                    // node whose term rose while cut off could never rejoin.
                    self.send(from, Body::HeartbeatResponse { read_round: 0 });
                }
                Body::Vote { pre_vote: true, .. } => {
                    self.send(
                        from,
                        Body::VoteResponse {
                            pre_vote: true,
                            granted: false,
                        },
                    );
                }
                _ => {}
            }
            return;
        }
        match message.body {
            Body::Vote {
                last_log_id,
                pre_vote,
                leader_transfer,
            } => self.handle_vote(from, message.term, last_log_id, pre_vote, leader_transfer),
            Body::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(from, message.term, pre_vote, granted)
            }
            Body::Append {
                prev_log_id,
                entries,
                commit_index,
            } => self.handle_append(from, prev_log_id, entries, commit_index),
            Body::AppendResponse(response) => self.handle_append_response(from, response),
            Body::Heartbeat {
                commit_index,
                read_round,
            } => self.handle_heartbeat(from, commit_index, read_round),
            Body::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round)
            }
            Body::TimeoutNow => {
                if self.role == Role::Follower && self.is_voter() {
                    self.start_election(false, true);
                }
            }
            // Refused by `validate_message`.
            Body::Prepare { .. }
            | Body::Promise { .. }
            | Body::Accept { .. }
            | Body::Accepted { .. }
            | Body::Refused { .. }
            | Body::ProbeAnswer { .. } => {}
        }
    }

    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed_ticks < self.config.election_timeout_ticks
    }

    fn handle_vote(
        &mut self,
        from: NodeId,
        term: Term,
        candidate_last: LogId,
        pre_vote: bool,
        leader_transfer: bool,
    ) {
        if pre_vote && !leader_transfer && self.in_leader_lease() {
            return;
        }
        // Votes go to any candidate, whatever this node's membership says (thesis §4.1): a node
        // whose log lags may not know yet that the candidate was promoted, or that it is a
        // voter itself, and refusing would leave the new majority unable to elect. A removed
        // node cannot disrupt: pre-vote and the leader lease keep it from raising the term, and
        // once its removal is known its messages are refused outright.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let own_last = self.log.last_log_id();
        let up_to_date =
            (candidate_last.term, candidate_last.index) >= (own_last.term, own_last.index);
        let granted = can_vote && up_to_date;
        if granted && !pre_vote {
            self.vote = Some(from);
            self.election_elapsed_ticks = 0;
            self.persist_hard_state();
        }
        let response_term = if granted && pre_vote { term } else { self.term };
        self.send_with_term(
            from,
            response_term,
            Body::VoteResponse { pre_vote, granted },
        );
    }

    fn handle_vote_response(&mut self, from: NodeId, term: Term, pre_vote: bool, granted: bool) {
        let counts = match (self.role, pre_vote) {
            (Role::PreCandidate, true) => !granted || term == self.term + 1,
            (Role::Candidate, false) => term == self.term,
            _ => false,
        };
        if !counts || !self.membership().voters.contains(&from) {
            return;
        }
        self.votes.insert(from, granted);
        let yes = self.votes.values().filter(|granted| **granted).count();
        let no = self.votes.len() - yes;
        let voters = self.membership().voters.len();
        match vote_result(yes, no, self.quorum(), voters) {
            VoteResult::Won if pre_vote => self.start_election(false, false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_id: LogId,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        self.follow(from);
        let mut prev_log_id = prev_log_id;
        let committed = self.log.committed;
        if prev_log_id.index < committed {
            // Entries up to our commit index are the leader's too (Raft safety); skip them so a
            // late or duplicated append can never reach back into committed entries (which may
            // have left the window, or the log, already).
            if prev_log_id.index + entries.len() as u64 <= committed {
                self.ack_matched = self.ack_matched.max(committed);
                self.maybe_acknowledge(true);
                return;
            }
            entries.drain(..(committed - prev_log_id.index) as usize);
            let term = self
                .log
                .term_at(committed)
                .expect("the commit index is at or after the window's start");
            prev_log_id = LogId::new(term, committed);
        }
        if !self.log.matches(prev_log_id) {
            let hint = self.reject_hint(prev_log_id.index);
            let response = AppendResponse::Rejected {
                rejected_prev_index: prev_log_id.index,
                hint,
            };
            self.send(from, Body::AppendResponse(response));
            return;
        }
        let last_new = prev_log_id.index + entries.len() as u64;
        self.append_as_follower(entries);
        self.log.committed = self.log.committed.max(leader_commit.min(last_new));
        self.ack_matched = self.ack_matched.max(last_new);
        let fully_durable = self.log.durable >= last_new;
        self.maybe_acknowledge(fully_durable);
    }

    /// Appends the part of `entries` this log does not already hold, truncating a conflicting
    /// suffix first. `entries` are known to follow a matching previous entry.
    fn append_as_follower(&mut self, entries: Vec<Entry>) {
        let first_new = entries
            .iter()
            .position(|entry| !self.log.matches(entry.log_id()));
        let Some(first_new) = first_new else { return };
        let first_index = entries[first_new].index;
        if first_index <= self.log.last_index() {
            // Proposals in the removed suffix stay pending: another node may still hold their
            // entries and commit them. Only applying the index settles their fate.
            self.log.truncate_from(first_index);
            self.configs.truncate_from(first_index);
        }
        let new_entries = entries[first_new..].to_vec();
        for entry in entries.into_iter().skip(first_new) {
            if let EntryPayload::Config(membership) = &entry.payload {
                self.configs.append(entry.index, membership.clone());
            }
            self.log.push(entry);
        }
        self.emit_persist(new_entries);
    }

    fn reject_hint(&self, rejected_prev_index: LogIndex) -> RejectHint {
        let last_index = self.log.last_index();
        let conflict = (rejected_prev_index <= last_index).then(|| ConflictHint {
            term: self.log.term_at(rejected_prev_index).unwrap_or(0),
            first_index: self.log.first_index_of_term_at(rejected_prev_index),
        });
        RejectHint {
            last_index,
            conflict,
        }
    }

    /// Follower: acknowledge what is both durable and known to match the leader. With `force`,
    /// acknowledge even when nothing new is covered (the leader may have lost the last one).
    fn maybe_acknowledge(&mut self, force: bool) {
        let Some(leader) = self.leader else { return };
        if self.role != Role::Follower {
            return;
        }
        let match_index = self.ack_matched.min(self.log.durable);
        if match_index > self.ack_sent || force {
            self.ack_sent = self.ack_sent.max(match_index);
            let response = AppendResponse::Accepted { match_index };
            self.send(leader, Body::AppendResponse(response));
        }
    }

    fn handle_heartbeat(&mut self, from: NodeId, commit_index: LogIndex, read_round: u64) {
        self.follow(from);
        // The leader sends min(commit, our match), and our log matches it up to our match.
        let commit = commit_index.min(self.log.last_index());
        self.log.committed = self.log.committed.max(commit);
        self.send(from, Body::HeartbeatResponse { read_round });
    }

    /// Recognise `leader` as this term's leader (called on its appends and heartbeats).
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(self.term, Some(leader));
        }
        self.election_elapsed_ticks = 0;
    }

    fn handle_append_response(&mut self, from: NodeId, response: AppendResponse) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let next_guess = match response {
            AppendResponse::Rejected {
                rejected_prev_index,
                hint,
            } => Some((
                rejected_prev_index,
                self.next_index_guess(rejected_prev_index, hint),
            )),
            AppendResponse::Accepted { .. } => None,
        };
        let Some(progress) = self.progress.get_mut(&from) else {
            return; // not (or no longer) a member
        };
        progress.recently_active = true;
        progress.heard_ticks = 0;
        match (response, next_guess) {
            (AppendResponse::Accepted { match_index }, _) => {
                if progress.acknowledge(match_index) {
                    self.maybe_commit();
                }
                if self
                    .transfer
                    .as_ref()
                    .is_some_and(|transfer| transfer.target == from)
                {
                    self.maybe_send_timeout_now(from);
                }
            }
            (AppendResponse::Rejected { .. }, Some((rejected, guess))) => {
                progress.reject(rejected, guess.min(last_index + 1));
            }
            (AppendResponse::Rejected { .. }, None) => unreachable!("guess computed above"),
        }
    }

    /// Where to probe next after a rejection, using the follower's hint to skip whole terms.
    fn next_index_guess(&self, rejected_prev_index: LogIndex, hint: RejectHint) -> LogIndex {
        if hint.last_index < rejected_prev_index {
            return hint.last_index + 1;
        }
        match hint.conflict {
            Some(conflict) => match self.log.last_index_of_term(conflict.term) {
                Some(index) => (index + 1).min(rejected_prev_index),
                None => conflict.first_index,
            },
            None => rejected_prev_index,
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return; // not (or no longer) a member
        };
        progress.recently_active = true;
        progress.heard_ticks = 0;
        progress.read_round_acked = progress.read_round_acked.max(read_round);
        if progress.mode == ReplicationMode::Probe {
            // The follower is alive: the probe (or its answer) was lost, so send it again.
            progress.probe_sent = false;
        }
        self.advance_read_rounds();
    }

    // ----- elections -----

    fn randomize_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks as u64;
        self.election_timeout_randomized_ticks = (base + self.rng.below(base)) as u32;
    }

    fn start_election(&mut self, pre_vote: bool, leader_transfer: bool) {
        self.election_elapsed_ticks = 0;
        self.randomize_election_timeout();
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        let request_term = if pre_vote {
            self.set_role(Role::PreCandidate, None);
            self.term + 1
        } else {
            self.set_term(self.term + 1);
            self.vote = Some(self.config.id);
            self.persist_hard_state();
            self.set_role(Role::Candidate, None);
            self.term
        };
        if self.quorum() == 1 {
            if pre_vote {
                self.start_election(false, leader_transfer);
            } else {
                self.become_leader();
            }
            return;
        }
        let body = Body::Vote {
            last_log_id: self.log.last_log_id(),
            pre_vote,
            leader_transfer,
        };
        for peer in self.voter_peers() {
            self.send_with_term(peer, request_term, body.clone());
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.set_term(term);
            self.persist_hard_state();
        }
        if self.role == Role::Leader {
            self.step_down_as_leader();
        }
        self.election_elapsed_ticks = 0;
        self.randomize_election_timeout();
        self.set_role(Role::Follower, leader);
    }

    fn step_down_as_leader(&mut self) {
        self.progress.clear();
        self.transfer = None;
        let waiting: Vec<ReadId> = self
            .reads_waiting_commit
            .drain(..)
            .chain(self.reads_waiting_round.drain(..).map(|read| read.id))
            .chain(self.reads_waiting_apply.drain(..).map(|(id, _)| id))
            .collect();
        for id in waiting {
            let result = Err(ReadError::LeadershipLost);
            self.outputs.push_back(Output::ReadResult { id, result });
        }
    }

    fn become_leader(&mut self) {
        let next_index = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .map(|peer| (peer, Progress::new(next_index)))
            .collect();
        for progress in self.progress.values_mut() {
            // Give every follower one check-quorum window before counting it as silent.
            progress.recently_active = true;
        }
        self.heartbeat_elapsed_ticks = 0;
        self.election_elapsed_ticks = 0;
        self.uncommitted_bytes = 0;
        self.transfer = None;
        self.read_round = 0;
        self.read_round_confirmed = 0;
        self.set_role(Role::Leader, Some(self.config.id));
        self.term_start_index = self.append_as_leader(EntryPayload::Noop).index;
    }

    fn set_role(&mut self, role: Role, leader: Option<NodeId>) {
        match role {
            Role::Leader => {
                assert_eq!(leader, Some(self.config.id), "a leader leads itself");
                assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
                assert!(
                    self.progress.keys().copied().eq(self.peers()),
                    "a leader tracks every other member"
                );
            }
            Role::Candidate => {
                assert_eq!(
                    self.vote,
                    Some(self.config.id),
                    "a candidate votes for itself"
                );
                assert_eq!(leader, None, "a candidate knows no leader");
            }
            Role::PreCandidate => assert_eq!(leader, None, "a pre-candidate knows no leader"),
            Role::Follower => {
                assert!(self.progress.is_empty(), "a follower tracks no followers");
                assert_ne!(leader, Some(self.config.id), "a follower does not lead");
            }
        }
        self.role = role;
        self.leader = leader;
        let now = (role, self.term, leader);
        if self.last_reported_role != Some(now) {
            self.last_reported_role = Some(now);
            self.outputs.push_back(Output::RoleChanged {
                role,
                term: self.term,
                leader,
            });
        }
    }

    /// Enters a newer term: no vote cast in it yet, nothing acknowledged to its leader yet.
    fn set_term(&mut self, term: Term) {
        assert!(term > self.term, "terms only increase");
        self.term = term;
        self.vote = None;
        self.ack_matched = 0;
        self.ack_sent = 0;
    }

    // ----- leader duties -----

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks {
                self.transfer = None;
            }
        }
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum {
                let voters = &self.configs.effective().voters;
                let active = self
                    .progress
                    .iter()
                    .filter(|(id, progress)| voters.contains(id) && progress.recently_active)
                    .count()
                    + usize::from(voters.contains(&self.config.id));
                if !is_quorum(active, self.quorum()) {
                    self.become_follower(self.term, None);
                    return;
                }
                for progress in self.progress.values_mut() {
                    progress.recently_active = false;
                }
            }
        }
        let (last_index, stall_ticks) =
            (self.log.last_index(), self.config.replication_stall_ticks);
        let snapshot_timeout = self.config.snapshot_timeout_ticks;
        for progress in self.progress.values_mut() {
            progress.heard_ticks = progress.heard_ticks.saturating_add(1);
            // A follower that is behind and acknowledged nothing for a while has lost appends
            // (or their answers): probe again from its match point instead of waiting forever.
            if progress.mode == ReplicationMode::Replicate && progress.match_index < last_index {
                progress.stalled_ticks += 1;
                if progress.stalled_ticks >= stall_ticks {
                    progress.restart_probe();
                }
            }
            // A snapshot never acknowledged (the follower died, or the transfer was lost):
            // try again rather than wait forever.
            if progress.mode == ReplicationMode::Snapshot {
                progress.stalled_ticks += 1;
                if progress.stalled_ticks >= snapshot_timeout {
                    progress.restart_probe();
                }
            }
        }
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
        self.promote_ready_learner();
    }

    /// Promotes a learner added with `promote` once it has caught up (the checks of
    /// [`Raft::propose_membership`] decide when; until they pass, it waits).
    fn promote_ready_learner(&mut self) {
        let ready = self
            .membership()
            .promote_when_ready
            .iter()
            .copied()
            .find(|id| {
                self.check_membership_change(&MembershipChange::Promote { id: *id })
                    .is_ok()
            });
        if let Some(id) = ready {
            let next = MembershipChange::Promote { id }
                .apply(self.membership())
                .expect("checked");
            self.uncommitted_bytes += next.bytes() + ENTRY_OVERHEAD_BYTES;
            self.append_as_leader(EntryPayload::Config(next));
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|(id, progress)| (*id, progress.match_index))
            .collect();
        for (peer, match_index) in peers {
            let commit_index = self.log.committed.min(match_index);
            let read_round = self.read_round;
            self.send(
                peer,
                Body::Heartbeat {
                    commit_index,
                    read_round,
                },
            );
        }
    }

    fn append_as_leader(&mut self, payload: EntryPayload) -> LogId {
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            payload,
        };
        let log_id = entry.log_id();
        if let EntryPayload::Config(membership) = &entry.payload {
            self.configs.append(log_id.index, membership.clone());
            self.track_members();
        }
        self.log.push(entry.clone());
        self.emit_persist(vec![entry]);
        if self.quorum() == 1 {
            self.maybe_commit();
        }
        log_id
    }

    /// Leader: replication progress for exactly the members of the membership in force.
    fn track_members(&mut self) {
        let members: Vec<NodeId> = self.peers().collect();
        self.progress.retain(|id, _| members.contains(id));
        let next_index = self.log.last_index() + 1;
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                let mut progress = Progress::new(next_index);
                progress.recently_active = true;
                progress
            });
        }
    }

    /// Sends every follower what it is missing, within its flow-control window.
    fn replicate_to_all(&mut self) {
        for peer in self.peers().collect::<Vec<_>>() {
            loop {
                let progress = &self.progress[&peer];
                let has_entries = progress.next_index <= self.log.last_index();
                let needs_commit = progress.commit_sent < self.log.committed;
                let paused = progress.is_paused(
                    self.config.inflight_messages_max,
                    self.config.inflight_bytes_max,
                );
                if paused || !(has_entries || needs_commit) {
                    break;
                }
                self.send_append(peer);
            }
        }
    }

    /// Sends follower `peer` what comes next for it: from the window, or (for entries that
    /// left it) a read from storage, or (for entries storage no longer holds) a snapshot.
    fn send_append(&mut self, peer: NodeId) {
        let next = self.progress[&peer].next_index;
        if next <= self.log.prev_log_id().index {
            let progress = self.progress.get_mut(&peer).expect("peer has progress");
            if next >= self.log.stored_first {
                let high = self.log.first_index();
                progress.fetching = Some(next);
                self.outputs.push_back(Output::ReadEntries {
                    to: peer,
                    low: next,
                    high,
                });
            } else {
                progress.send_snapshot();
                self.outputs.push_back(Output::SendSnapshot { to: peer });
            }
            return;
        }
        let prev_index = next - 1;
        let prev_term = self
            .log
            .term_at(prev_index)
            .expect("the entry before the window or in it");
        let entries = self.log.slice(
            next,
            self.log.last_index() + 1,
            self.config.append_bytes_max,
            self.config.append_entries_max,
        );
        self.send_entries(peer, LogId::new(prev_term, prev_index), entries);
    }

    fn send_entries(&mut self, peer: NodeId, prev_log_id: LogId, entries: Vec<Entry>) {
        let bytes: u64 = entries.iter().map(Entry::payload_bytes).sum();
        let last_sent = prev_log_id.index + entries.len() as u64;
        let commit_index = self.log.committed;
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        progress.sent(last_sent, bytes, !entries.is_empty());
        progress.commit_sent = commit_index;
        self.send(
            peer,
            Body::Append {
                prev_log_id,
                entries,
                commit_index,
            },
        );
    }

    fn entries_read(
        &mut self,
        to: NodeId,
        low: LogIndex,
        read: Result<(Term, Vec<Entry>), LogIndex>,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        if progress.fetching != Some(low) {
            return;
        }
        progress.fetching = None;
        match read {
            Ok((prev_term, entries)) if !entries.is_empty() && progress.next_index == low => {
                assert!(
                    entries
                        .last()
                        .is_some_and(|e| e.index < self.log.first_index()),
                    "entries read back are below the window"
                );
                let entries: Vec<Entry> = entries
                    .into_iter()
                    .take(self.config.append_entries_max)
                    .collect();
                self.send_entries(to, LogId::new(prev_term, low - 1), entries);
            }
            Ok(_) => {}
            Err(stored_first) => self.log.stored_first = self.log.stored_first.max(stored_first),
        }
    }

    /// Follower: installs a snapshot through `last_included` if it is news, and acknowledges.
    fn install_snapshot(&mut self, from: NodeId, last_included: LogId, membership: Membership) {
        if last_included.index > self.log.committed {
            let keep_suffix = self.log.matches(last_included);
            // Proposals this node made in the replaced range: it cannot learn their fate.
            let replaced = {
                let remaining = self.pending_proposals.split_off(&(last_included.index + 1));
                std::mem::replace(&mut self.pending_proposals, remaining)
            };
            for (index, proposals) in replaced {
                for (_, id) in proposals {
                    let result = Err(ProposalLost::Unknowable { index });
                    self.outputs
                        .push_back(Output::ProposalResult { id, result });
                }
            }
            self.log.install(last_included, keep_suffix);
            self.configs
                .install(last_included.index, membership, keep_suffix);
            self.outputs.push_back(Output::InstallSnapshot {
                last_included,
                keep_suffix,
            });
        }
        // Everything up to the commit index (now at least the snapshot) matches the leader.
        self.ack_matched = self.ack_matched.max(self.log.committed);
        let match_index = self.ack_matched.min(self.log.durable);
        self.ack_sent = self.ack_sent.max(match_index);
        self.send(
            from,
            Body::AppendResponse(AppendResponse::Accepted { match_index }),
        );
    }

    /// Advances the commit index to the highest index durable on a majority — counting this
    /// node only through its own durable index — if that entry is of the current term
    /// (Raft §5.4.2: never commit an older term's entry by counting replicas).
    fn maybe_commit(&mut self) {
        let voters = &self.configs.effective().voters;
        let own_vote = voters.contains(&self.config.id);
        let mut matches: Vec<LogIndex> = self
            .progress
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .map(|(_, progress)| progress.match_index)
            .collect();
        if own_vote {
            matches.push(self.log.durable);
        }
        let quorum_index = majority_value(&mut matches, self.quorum());
        assert!(
            quorum_index <= self.log.durable.max(self.log.committed)
                || self.quorum() > 1
                || !own_vote,
            "a single node commits only what it made durable"
        );
        if quorum_index > self.log.committed && self.log.term_at(quorum_index) == Some(self.term) {
            let newly_committed: u64 = (self.log.committed + 1..=quorum_index)
                .filter_map(|index| self.log.entry(index))
                .map(|entry| entry.payload_bytes() + ENTRY_OVERHEAD_BYTES)
                .sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(newly_committed);
            self.log.committed = quorum_index;
            self.configs.commit_to(quorum_index);
            if quorum_index >= self.term_start_index {
                for id in std::mem::take(&mut self.reads_waiting_commit) {
                    self.register_read(id);
                }
            }
            self.maybe_leave_leadership();
        }
    }

    /// A leader that removed itself leads until the removal commits (thesis §4.2.2), then
    /// asks the most caught-up voter to campaign at once and steps down. Not a voter any more,
    /// it never campaigns again.
    fn maybe_leave_leadership(&mut self) {
        if self.role != Role::Leader || self.is_voter() || self.configs.uncommitted().is_some() {
            return;
        }
        if let Some(successor) = self.best_follower()
            && self.progress[&successor].match_index == self.log.last_index()
        {
            self.send(successor, Body::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }

    /// Leader: the term's quorum, a majority of the voters in force.
    fn quorum(&self) -> usize {
        self.membership().voters.len() / 2 + 1
    }

    fn maybe_send_timeout_now(&mut self, target: NodeId) {
        if self.progress[&target].match_index == self.log.last_index() {
            self.send(target, Body::TimeoutNow);
        }
    }

    // ----- reads -----

    fn register_read(&mut self, id: ReadId) {
        let index = self.log.committed;
        if self.quorum() == 1 && self.is_voter() {
            self.reads_waiting_apply.push_back((id, index));
            return;
        }
        let round = self.read_round + 1;
        self.reads_waiting_round
            .push_back(PendingRead { id, index, round });
        if self.read_round == self.read_round_confirmed {
            self.start_read_round();
        }
    }

    /// Starts a heartbeat round; reads registered before it are confirmed when a majority
    /// echoes it (proving no newer leader existed when they were registered).
    fn start_read_round(&mut self) {
        self.read_round += 1;
        self.heartbeat_elapsed_ticks = 0;
        self.broadcast_heartbeat();
    }

    fn advance_read_rounds(&mut self) {
        let voters = &self.configs.effective().voters;
        let mut acked: Vec<u64> = self
            .progress
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .map(|(_, progress)| progress.read_round_acked)
            .collect();
        if voters.contains(&self.config.id) {
            acked.push(self.read_round);
        }
        let confirmed = majority_value(&mut acked, self.quorum());
        assert!(
            confirmed <= self.read_round,
            "a read round is confirmed only after it started"
        );
        if confirmed <= self.read_round_confirmed {
            return;
        }
        self.read_round_confirmed = confirmed;
        while let Some(read) = self.reads_waiting_round.front() {
            if read.round > confirmed {
                break;
            }
            let read = self.reads_waiting_round.pop_front().expect("front exists");
            self.reads_waiting_apply.push_back((read.id, read.index));
        }
        if !self.reads_waiting_round.is_empty() && self.read_round == self.read_round_confirmed {
            self.start_read_round();
        }
    }

    // ----- apply and bookkeeping -----

    /// Runs after every input: applies what is committed and durable, answers what it can.
    fn finish_input(&mut self) {
        self.configs.commit_to(self.log.committed);
        let target = self.log.committed.min(self.log.durable);
        while self.log.applied < target {
            let entries = self.log.slice(
                self.log.applied + 1,
                target + 1,
                self.config.apply_bytes_max,
                usize::MAX,
            );
            let last = entries.last().expect("non-empty range").log_id();
            let resolved: Vec<_> = {
                let remaining = self.pending_proposals.split_off(&(last.index + 1));
                std::mem::replace(&mut self.pending_proposals, remaining)
                    .into_iter()
                    .collect()
            };
            self.outputs.push_back(Output::Apply(entries));
            self.log.applied = last.index;
            for (index, proposals) in resolved {
                let entry_term = self
                    .log
                    .term_at(index)
                    .expect("applied entry is in the log");
                for (term, id) in proposals {
                    let result = if entry_term == term {
                        Ok(LogId::new(term, index))
                    } else {
                        Err(ProposalLost::Overwritten { index })
                    };
                    self.outputs
                        .push_back(Output::ProposalResult { id, result });
                }
            }
        }
        self.log.trim(self.config.log_window_bytes_max);
        while let Some(&(id, index)) = self.reads_waiting_apply.front() {
            if index > self.log.applied {
                break;
            }
            self.reads_waiting_apply.pop_front();
            self.outputs.push_back(Output::ReadResult {
                id,
                result: Ok(index),
            });
        }
        if self.config.invariant_checks || cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// The whole invariant chain, in one place. Walks the in-memory log: for the simulator and
    /// debug builds (see [`Config::invariant_checks`]).
    fn check_invariants(&self) {
        self.log.validate();
        let leading = self.role == Role::Leader;
        assert!(
            if leading {
                self.progress.keys().copied().eq(self.peers())
            } else {
                self.progress.is_empty()
            },
            "a leader, and only a leader, tracks every other member"
        );
        for progress in self.progress.values() {
            progress.validate(self.log.last_index());
        }
        let reads = self.reads_waiting_commit.len()
            + self.reads_waiting_round.len()
            + self.reads_waiting_apply.len();
        assert!(leading || reads == 0, "only a leader holds reads");
        assert!(
            leading || self.transfer.is_none(),
            "only a leader transfers leadership"
        );
        assert!(
            self.read_round_confirmed <= self.read_round,
            "read rounds are confirmed in order"
        );
        assert!(
            self.pending_proposals
                .keys()
                .all(|index| *index > self.log.applied),
            "a proposal at an applied index has its result"
        );
    }

    fn emit_persist(&mut self, entries: Vec<Entry>) {
        if let Some(Output::PersistEntries(pending)) = self.outputs.back_mut()
            && pending.last().map(|entry| entry.index + 1) == entries.first().map(|e| e.index)
        {
            pending.extend(entries);
            return;
        }
        self.outputs.push_back(Output::PersistEntries(entries));
    }

    fn persist_hard_state(&mut self) {
        self.outputs
            .push_back(Output::PersistHardState(self.hard_state()));
    }

    /// Every other member, voters and learners, in id order.
    fn peers(&self) -> impl Iterator<Item = NodeId> + use<> {
        let own = self.config.id;
        let members: Vec<NodeId> = self.membership().members().collect();
        members.into_iter().filter(move |id| *id != own)
    }

    /// Every other voter, in id order.
    fn voter_peers(&self) -> impl Iterator<Item = NodeId> + use<> {
        let own = self.config.id;
        let voters: Vec<NodeId> = self.membership().voters.iter().copied().collect();
        voters.into_iter().filter(move |id| *id != own)
    }

    fn send(&mut self, to: NodeId, body: Body) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: Body) {
        let message = Message { term, body };
        self.outputs.push_back(Output::Send { to, message });
    }
}
