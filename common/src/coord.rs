//! Sessions, locks and elections: the vocabulary clients and coordinators share.
//!
//! A **session** is a lease a client keeps alive: it names the session (a UUID v7 it draws, so a
//! retried open is the same session), asks for a TTL, and renews it. Only the coordinator leader
//! decides that a session expired, by committing an expiry to the log; an expiry takes effect only
//! if no renewal committed since. Everything a session holds goes with it.
//!
//! A **lock** is held by one session at a time; waiters queue in FIFO order. Each grant carries a
//! **fencing token**: the log index of the grant, so tokens strictly increase per lock name over
//! every grant ever made, across restarts and leader changes. An **election** is a lock whose
//! holder also publishes a value; its token is the leader's **epoch**.

use serde::{Deserialize, Serialize};

use crate::batch::BatchId;

/// A session's name: a UUID v7 the client draws when it opens the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        BatchId(self.0).fmt(f)
    }
}

impl std::str::FromStr for SessionId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.parse::<BatchId>().map(|id| Self(id.0))
    }
}

/// Which namespace a name lives in: locks and elections of the same name are unrelated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MutexKind {
    Lock,
    Election,
}

impl MutexKind {
    pub fn noun(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::Election => "election",
        }
    }
}

/// Longest lock or election name, in bytes.
pub const MUTEX_NAME_BYTES_MAX: u64 = 255;
/// Largest value an election's leader publishes, in bytes.
pub const ELECTION_VALUE_BYTES_MAX: u64 = 4096;
/// Longest owner (client identity) recorded on a session, in bytes.
pub const SESSION_OWNER_BYTES_MAX: u64 = 255;
/// Most locks and elections one session holds or waits for at once.
pub const SESSION_MUTEXES_MAX: u64 = 64;
/// Most live sessions one client identity may hold.
pub const SESSIONS_PER_OWNER_MAX: u64 = 256;
/// Most live sessions in the cluster.
pub const SESSIONS_MAX: u64 = 100_000;
/// Most waiters queued on one lock or election.
pub const MUTEX_WAITERS_MAX: u64 = 1024;
/// Longest lock-delay a grant may ask for (Chubby's is at most a minute).
pub const LOCK_DELAY_MS_MAX: u64 = 60_000;
/// Shortest and longest session TTLs any node accepts when it applies an open. A leader also
/// refuses a TTL below three election timeouts, so that a session outlives a failover.
pub const SESSION_TTL_MS_MIN: u64 = 1_000;
pub const SESSION_TTL_MS_MAX: u64 = 60 * 60 * 1000;
/// Sessions renewed by one keep-alive entry.
pub const KEEPALIVE_SESSIONS_MAX: u64 = 4096;
/// Leadership changes an election remembers for observers that resume.
pub const ELECTION_HISTORY_MAX: u64 = 64;
/// Elections left with neither a leader nor a candidate that are remembered by their last
/// change ("no leader"), so an observer between two calls still sees it; beyond this many the
/// oldest is forgotten.
pub const ELECTION_TOMBSTONES_MAX: u64 = 4096;

/// A session as `ordo lease list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub owner: String,
    pub ttl_ms: u64,
    /// Log time of the latest committed renewal (ms since the Unix epoch, the leaders' clocks).
    pub renewed_ms: u64,
    /// Locks and elections the session holds or waits for.
    pub mutexes: Vec<(MutexKind, String)>,
}

/// One holder or waiter of a lock or election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexInfo {
    pub kind: MutexKind,
    pub name: String,
    /// The holder's session, token (epoch) and value.
    pub holder: Option<(SessionId, u64, Vec<u8>)>,
    /// Waiting sessions, first in line first.
    pub waiters: Vec<SessionId>,
    /// While an expired holder's lock-delay runs: the log time it ends.
    pub free_at_ms: u64,
}

/// One leadership change of an election, as observers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderChange {
    /// Log index of the change: observers resume after it.
    pub revision: u64,
    /// The leader's epoch and value, or `None` when the election has no leader.
    pub leader: Option<(u64, Vec<u8>)>,
}

/// Why an operation was refused. Each has a stable code in the client protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CoordRefusal {
    #[error("session {0} is not open (it expired or was closed)")]
    SessionGone(SessionId),
    #[error("session {session} belongs to {owner:?}")]
    NotOwner { session: SessionId, owner: String },
    #[error("a TTL of {ttl_ms} ms is outside [{min_ms}, {max_ms}] ms")]
    TtlOutOfRange {
        ttl_ms: u64,
        min_ms: u64,
        max_ms: u64,
    },
    #[error("{what} exceeds {limit_name} ({limit})")]
    Limit {
        what: String,
        limit_name: String,
        limit: u64,
    },
    #[error("session {session} does not lead election {name:?} at epoch {epoch}")]
    NotLeader {
        name: String,
        session: SessionId,
        epoch: u64,
    },
}
