//! The Raft log's types: ids, entries and the durable term/vote.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A coordinator's id within its cluster. Ids are small positive integers chosen by the operator.
pub type NodeId = u64;

/// Raft's epoch. Starts at 0 on a fresh node, never decreases.
pub type Term = u64;

/// A position in the Raft log. The first entry has index 1; index 0 means "before the log".
pub type LogIndex = u64;

/// An entry's identity: in Raft, (index, term) names at most one entry across the cluster.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct LogId {
    pub term: Term,
    pub index: LogIndex,
}

impl LogId {
    pub const fn new(term: Term, index: LogIndex) -> Self {
        Self { term, index }
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.index, self.term)
    }
}

/// What an entry carries.
///
/// The codec is versioned by the frame that carries it, so adding variants at the end is
/// compatible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader at the start of its term, so that it can commit entries
    /// of earlier terms (Raft §5.4.2) and serve linearizable reads.
    Noop,
    /// An application command (in Ordo, an encoded atomic batch). Opaque to Raft.
    Normal(Bytes),
    /// The cluster's membership from this entry on: in force on every node as soon as the
    /// node appends it (not when it commits), and undone if the entry is truncated.
    Config(Membership),
}

/// Who belongs to a cluster, as one configuration entry records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Voting members: they elect leaders, and a majority of them makes every quorum.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members: they receive the log and count toward nothing.
    pub learners: BTreeSet<NodeId>,
    /// Every member's peer address, as the operator gave it.
    pub addresses: BTreeMap<NodeId, String>,
    /// Learners the leader promotes by itself once they have caught up.
    pub promote_when_ready: BTreeSet<NodeId>,
    /// Ids that were members once and were removed: never accepted again.
    pub retired: BTreeSet<NodeId>,
}

impl Membership {
    /// A cluster's first membership: these voters at these addresses.
    pub fn initial(addresses: BTreeMap<NodeId, String>) -> Self {
        Self {
            voters: addresses.keys().copied().collect(),
            learners: BTreeSet::new(),
            addresses,
            promote_when_ready: BTreeSet::new(),
            retired: BTreeSet::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners, in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let mut all: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// Bytes the membership holds, for the limits that count payload bytes.
    pub fn bytes(&self) -> u64 {
        let ids = self.voters.len() + self.learners.len() + self.retired.len();
        let addresses: usize = self.addresses.values().map(|a| a.len() + 8).sum();
        (ids * 8 + addresses) as u64
    }
}

/// One Raft log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

impl Entry {
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }

    /// Bytes of application payload, the unit of the in-flight and uncommitted limits.
    pub fn payload_bytes(&self) -> u64 {
        match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Normal(bytes) => bytes.len() as u64,
            EntryPayload::Config(membership) => membership.bytes(),
        }
    }
}

/// The state Raft must make durable before it speaks: the current term and the vote cast in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}
