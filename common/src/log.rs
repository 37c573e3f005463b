//! The Raft log's types: ids, entries and the durable term/vote.

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
/// Membership changes and snapshot markers will be further variants; the codec is versioned
/// by the frame that carries it, so adding variants at the end is compatible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader at the start of its term, so that it can commit entries
    /// of earlier terms (Raft §5.4.2) and serve linearizable reads.
    Noop,
    /// An application command (in Ordo, an encoded atomic batch). Opaque to Raft.
    Normal(Bytes),
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
        }
    }
}

/// The state Raft must make durable before it speaks: the current term and the vote cast in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}
