//! The messages coordinators exchange. Every message carries the sender's term; the receiver
//! learns the sender's id from the transport (which authenticated it), never from the message.

use ordo_common::{Entry, LogId, LogIndex, Term};
use serde::{Deserialize, Serialize};

/// One Raft message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's current term, except in a pre-vote request (the term the sender would
    /// campaign in) and a granted pre-vote response (the term that was asked about).
    pub term: Term,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A candidate (or pre-candidate) asks for a vote.
    Vote {
        /// The candidate's last log entry, for the "at least as up to date" rule (§5.4.1).
        last_log_id: LogId,
        /// A pre-vote (Raft thesis §9.6) changes no state on the voter.
        pre_vote: bool,
        /// Sent on the old leader's request (leader transfer): voters that have heard from that
        /// leader recently must not refuse on that ground.
        leader_transfer: bool,
    },
    VoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// Log replication. `entries` may be empty (a probe, or only a commit update).
    Append {
        prev_log_id: LogId,
        entries: Vec<Entry>,
        /// The leader's commit index. The follower commits up to min(this, its last index
        /// known to match the leader).
        commit_index: LogIndex,
    },
    AppendResponse(AppendResponse),
    /// Leader liveness, commit confirmation and read-index rounds.
    Heartbeat {
        /// min(leader commit, follower match): safe for the follower to commit.
        commit_index: LogIndex,
        /// The newest read round the leader has started; echoed back.
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// Leader transfer: "campaign now, without pre-vote".
    TimeoutNow,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `match_index`, and it is durable there.
    Accepted { match_index: LogIndex },
    /// The follower's log does not contain `rejected_prev_index` with the leader's term.
    Rejected {
        rejected_prev_index: LogIndex,
        hint: RejectHint,
    },
}

/// What a follower tells a leader about its log so the leader can skip a whole conflicting term
/// in one round trip instead of one index at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    /// The follower's last index.
    pub last_index: LogIndex,
    /// The term the follower has at the rejected index, with the first index it holds of that
    /// term. None when the follower's log is shorter than the rejected index.
    pub conflict: Option<ConflictHint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    pub term: Term,
    pub first_index: LogIndex,
}

impl Message {
    /// Bytes of entry payload carried, for flow control accounting.
    pub fn payload_bytes(&self) -> u64 {
        match &self.body {
            Body::Append { entries, .. } => entries.iter().map(Entry::payload_bytes).sum(),
            _ => 0,
        }
    }
}
