//! The client protocol: one request frame per bidirectional QUIC stream, answered by one
//! response frame.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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
    /// Append an opaque payload to the log and wait until it is committed and applied.
    Propose { payload: Bytes },
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
