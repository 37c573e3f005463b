//! The client protocol: one request frame per bidirectional QUIC stream, answered by one
//! response frame.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, BatchError, BatchId, CommittedBatch, Outcome};
use crate::{LogIndex, NodeId, Term};

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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    Welcome {
        node: NodeId,
    },
    Status(NodeStatus),
    Committed {
        index: LogIndex,
        term: Term,
    },
    /// This node does not lead; try the hinted node.
    NotLeader {
        leader: Option<NodeId>,
        leader_address: Option<String>,
    },
    /// The request was refused; `reason` says why and what to do.
    Refused {
        reason: String,
    },
    /// A submitted batch's outcome, or a status query's answer.
    Outcome(Outcome),
    /// No outcome is registered for this batch id.
    Unknown,
    /// The batch breaks a limit or is malformed; it never reached the log.
    Invalid(BatchError),
    /// Back-pressure or a leadership change in progress: retry, with the same batch id.
    Busy {
        reason: String,
    },
    /// One committed batch of a subscription.
    Batch(CommittedBatch),
    /// The requested seq is below the retained history.
    Compacted {
        first_seq: u64,
    },
}

/// One node's view, as `ordo status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub address: String,
    pub role: String,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub last_index: LogIndex,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub durable_index: LogIndex,
    /// Peers this node heard from within the last election timeout.
    pub reachable_peers: Vec<NodeId>,
}
