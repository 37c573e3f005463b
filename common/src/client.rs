//! The client protocol: one request frame per bidirectional QUIC stream, answered by one
//! response frame.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, BatchError, BatchId, CommittedBatch, Outcome};
use crate::coord::{CoordRefusal, LeaderChange, MutexInfo, MutexKind, SessionId, SessionInfo};
use crate::membership::{MembershipChange, MembershipError};
use crate::{ClusterId, LogIndex, Membership, NodeId, Term};

/// Largest client request frame: one proposal at the payload limit, plus framing.
pub const CLIENT_REQUEST_BYTES_MAX: u64 = crate::limits::FRAME_BYTES_MAX;
/// Largest client response frame.
pub const CLIENT_RESPONSE_BYTES_MAX: u64 = crate::limits::FRAME_BYTES_MAX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// The application-level hello: a refused certificate surfaces here, not later.
    Hello,
    /// This node's view of the cluster.
    Status,
    /// Append an opaque payload to the log and wait until it is committed and applied
    /// (diagnostics and transport tests; applications submit batches).
    Propose { payload: Bytes },
    /// Submit an atomic batch; answered with its [`Outcome`] once applied.
    Submit { batch: Batch },
    /// The outcome of a batch, read linearizably (leader only).
    BatchStatus { id: BatchId },
    /// Stream committed batches from `from_seq` on, in seq order, keeping only messages of
    /// `topics` (all when empty; batches with no matching message are skipped). Answered with
    /// [`ClientResponse::Batch`] frames on the same stream until the client closes it.
    Subscribe { from_seq: u64, topics: Vec<String> },
    /// Stream a consistent snapshot of this node's applied state (a backup): answered with
    /// [`ClientResponse::SnapshotChunk`] frames, then one [`ClientResponse::SnapshotEnd`].
    SnapshotSave,
    /// Open (or, retried, renew) a session with this TTL. `owner` is filled in by the node from
    /// the client's certificate; what the client sends there is ignored.
    OpenSession {
        session: SessionId,
        ttl_ms: u64,
        owner: String,
    },
    /// Renew a session: answered once the renewal committed.
    KeepAlive { session: SessionId },
    /// End a session, releasing everything it holds.
    CloseSession { session: SessionId },
    /// Acquire a lock (or campaign in an election, with `value`): answered with
    /// [`ClientResponse::Held`] once granted, however long the wait. Asking again while waiting
    /// is safe (after a leader change, say).
    Acquire {
        kind: MutexKind,
        name: String,
        session: SessionId,
        value: Vec<u8>,
        lock_delay_ms: u64,
    },
    /// Release a lock (resign), or stop waiting for it.
    Release {
        kind: MutexKind,
        name: String,
        session: SessionId,
    },
    /// An election's leader publishes a new value.
    Proclaim {
        name: String,
        session: SessionId,
        epoch: u64,
        value: Vec<u8>,
    },
    /// Leadership changes of an election after `after_revision`: answered at once if there are
    /// any, else when the next one commits.
    Observe { name: String, after_revision: u64 },
    /// Sessions, locks and elections, read linearizably (operators' listings).
    CoordList,
    /// The cluster's members as the leader sees them (leader only).
    MemberList,
    /// Change the membership (an operator's action): answered once the change committed.
    MemberChange { change: MembershipChange },
}

/// Most bytes of snapshot in one [`ClientResponse::SnapshotChunk`].
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    Welcome {
        node: NodeId,
    },
    Status(Box<NodeStatus>),
    Committed {
        index: LogIndex,
        term: Term,
    },
    /// This node does not lead; try the hinted node.
    NotLeader {
        leader: Option<NodeId>,
        leader_address: Option<String>,
    },
    /// The request was refused and will be refused again as it is: `code` says why (stable),
    /// `reason` says it in words, with what to do.
    Refused {
        code: RefusedCode,
        reason: String,
    },
    /// A submitted batch's outcome, or a status query's answer.
    Outcome(Outcome),
    /// No outcome is registered for this batch id.
    Unknown,
    /// The batch breaks a limit or is malformed; it never reached the log.
    Invalid(BatchError),
    /// Not now: retry, with the same batch id. `code` says whether this attempt may have reached
    /// the log ([`BusyCode::may_have_appended`]).
    Busy {
        code: BusyCode,
        reason: String,
    },
    /// One committed batch of a subscription.
    Batch(CommittedBatch),
    /// The requested seq is below the retained history.
    Compacted {
        first_seq: u64,
    },
    /// A status query's answer for an id the registry can no longer answer for: its time is at
    /// or below the registry's floor (milliseconds since the Unix epoch). It may have committed
    /// once; it will never commit again.
    BeyondHorizon {
        floor_ms: u64,
    },
    /// The next bytes of a snapshot being saved.
    SnapshotChunk {
        data: Bytes,
    },
    /// The snapshot is complete: `bytes` in all, of the state as of applied entry `applied`
    /// (its index and term).
    SnapshotEnd {
        applied_index: LogIndex,
        applied_term: Term,
        bytes: u64,
    },
    /// The session is open (or renewed) with this TTL.
    SessionOpened {
        ttl_ms: u64,
    },
    /// The renewal committed.
    SessionRenewed,
    /// The session expired or was closed: everything it held is released.
    SessionGone {
        session: SessionId,
    },
    /// The lock (election) is held with this token (epoch).
    Held {
        token: u64,
    },
    /// A release: whether the session held or waited for the lock.
    Released {
        held: bool,
    },
    /// A session, lock or election request refused as it stands (see [`CoordRefusal`]).
    CoordRefused(CoordRefusal),
    /// Leadership changes of an election, oldest first; `gap` when some after the asked
    /// revision are no longer remembered (the latest is always included).
    LeaderChanges {
        changes: Vec<LeaderChange>,
        gap: bool,
    },
    /// Sessions and locks, for operators (at most [`COORD_LIST_ROWS_MAX`] of each).
    CoordList {
        sessions: Vec<SessionInfo>,
        mutexes: Vec<MutexInfo>,
    },
    /// The close committed, or the proclaim.
    Done,
    /// The members, as the leader sees them (boxed: larger than every other answer).
    Members(Box<MemberList>),
    /// A membership change committed at `index`: the membership from then on.
    MembershipChanged {
        index: LogIndex,
        membership: Box<Membership>,
    },
    /// A membership change refused as it stands (the variant is the stable reason).
    MembershipRefused(MembershipError),
}

/// The cluster's members as its leader sees them (`ordo member list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    pub cluster: ClusterId,
    pub leader: NodeId,
    pub term: Term,
    /// The leader's last log index: what "behind" is measured against.
    pub last_index: LogIndex,
    /// The configuration entry in force, and whether it has committed yet.
    pub membership_index: LogIndex,
    pub membership_committed: bool,
    pub members: Vec<MemberInfo>,
    /// Ids removed from the cluster: never members again.
    pub retired: Vec<NodeId>,
}

/// One member in a [`MemberList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub address: String,
    pub voter: bool,
    /// The leader heard from it within the last election timeout (the leader itself: true).
    pub reachable: bool,
    /// The last index its log is known to hold (the leader: its own last index).
    pub match_index: LogIndex,
    /// A learner the leader promotes by itself once caught up.
    pub promote_when_ready: bool,
}

/// Most rows of each kind a [`ClientResponse::CoordList`] carries.
pub const COORD_LIST_ROWS_MAX: usize = 10_000;

/// One node's view, as `ordo status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub address: String,
    pub role: NodeRole,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub last_index: LogIndex,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub durable_index: LogIndex,
    /// Peers this node heard from within the last election timeout.
    pub reachable_peers: Vec<NodeId>,
    /// The node's disk is below its free-space watermark (or full): it refuses new proposals
    /// with [`BusyCode::StorageFull`] and goes on serving reads.
    pub storage_full: bool,
    /// The longest wait between two ticks of this node's consensus clock over the last 10-20
    /// seconds, in microseconds: client floods must never delay elections and heartbeats.
    pub tick_gap_max_us: u64,
    /// Proposals this node's consensus loop refused because the node did not lead, since it
    /// started. A node answers proposals (batches, raw proposals, session and lock operations)
    /// itself, before they queue for the loop, whenever it knows it does not lead; only those
    /// racing a change of role get this far. A count that
    /// climbs while the role stays put means client work is reaching the loop it must not.
    pub late_not_leader_refusals: u64,
    /// The leader's clock (ms since the Unix epoch) when the last entry this node applied was
    /// proposed; 0 until it applies one after starting. The leader's stamp minus a follower's
    /// is how far, in time, the follower is behind.
    pub applied_stamp_ms: u64,
    /// The consensus engine this node runs (fixed when its cluster bootstrapped). Under
    /// Multi-Paxos, `term` is the promised ballot and `commit_index` the decided prefix.
    pub engine: crate::EngineKind,
}

impl NodeStatus {
    /// Entries this node knows committed and has not applied yet.
    pub fn apply_lag_entries(&self) -> u64 {
        self.commit_index.saturating_sub(self.applied_index)
    }
}

/// Why a node answered [`ClientResponse::Busy`]. The names ([`BusyCode::as_str`]) are stable:
/// scripts and dashboards may match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BusyCode {
    /// Too much is proposed and not yet committed; the request was not appended.
    Backpressure,
    /// Leadership is moving to another node; the request was not appended.
    TransferInProgress,
    /// The node is shutting down; the request was not appended.
    Stopping,
    /// The attempt was appended, but another leader's entry was committed in its place: this
    /// attempt will never commit (an earlier attempt with the same id still may).
    ProposalOverwritten,
    /// Leadership was lost before a linearizable read was confirmed; nothing was read.
    ReadLost,
    /// Too many linearizable reads are waiting; nothing was read.
    TooManyReads,
    /// The node stopped, or lost track of the request, after it may have been appended: its
    /// outcome is unknown until a status query answers it.
    OutcomeUnknown,
    /// The leader's disk is below its free-space watermark; the request was not appended.
    /// Proposals resume by themselves when space returns.
    StorageFull,
    /// This node has known no leader for longer than two election timeouts (it is cut off, or
    /// the cluster has no quorum): it has nothing new to serve, so a subscription moves to
    /// another node rather than wait here while the log is compacted behind it.
    NoLeader,
    /// A budget this node keeps per client identity, connection or node (connections,
    /// request bytes, subscriptions, uncommitted bytes, topics) is used up; the reason names the
    /// limit's configuration key. Nothing was appended: retry later, or with less at once.
    Quota,
}

impl BusyCode {
    /// The stable name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backpressure => "backpressure",
            Self::TransferInProgress => "transfer_in_progress",
            Self::Stopping => "stopping",
            Self::ProposalOverwritten => "proposal_overwritten",
            Self::ReadLost => "read_lost",
            Self::TooManyReads => "too_many_reads",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::StorageFull => "storage_full",
            Self::NoLeader => "no_leader",
            Self::Quota => "quota",
        }
    }

    /// Whether the attempt that got this answer may still commit. Only an unknown outcome may:
    /// every other code names a request that was never appended, or an appended attempt that
    /// can no longer commit.
    pub fn may_have_appended(self) -> bool {
        self == Self::OutcomeUnknown
    }
}

impl std::fmt::Display for BusyCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a node answered [`ClientResponse::Refused`]: the same request will be refused again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusedCode {
    /// The request frame was malformed, over its limit, or of another wire version.
    BadFrame,
    /// The proposal is larger than this node's `proposal_bytes_max`.
    TooLarge,
    /// The request is not one this endpoint answers (a programming error in the client).
    Unsupported,
    /// A committed batch could not be read from this node's storage; try another node.
    StorageFailed,
    /// The batch id is registered with other content: ids are single-use.
    IdConflict,
    /// The batch id is older than the registry answers for (or too far in the future): it may
    /// have committed once, and will never commit again. Submit new work with a fresh id.
    BeyondHorizon,
    /// The caller's certificate identity is not allowed this request by the node's `[auth]`
    /// configuration; the reason names the identity and the rule that refused it.
    Forbidden,
    /// A limit that does not free up by itself would be exceeded (say, the topics an identity
    /// may create); the reason names its configuration key.
    LimitExceeded,
}

impl RefusedCode {
    /// The stable name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::TooLarge => "too_large",
            Self::Unsupported => "unsupported",
            Self::StorageFailed => "storage_failed",
            Self::IdConflict => "id_conflict",
            Self::BeyondHorizon => "beyond_horizon",
            Self::Forbidden => "forbidden",
            Self::LimitExceeded => "limit_exceeded",
        }
    }
}

impl std::fmt::Display for RefusedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's role in the consensus protocol, as status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeRole {
    Follower,
    /// Asking for pre-votes before a real election.
    PreCandidate,
    Candidate,
    Leader,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Follower => "follower",
            Self::PreCandidate => "precandidate",
            Self::Candidate => "candidate",
            Self::Leader => "leader",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
