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
    // ----- Multi-Paxos (`crate::paxos`): `Message::term` carries a ballot -----
    /// Phase 1a. "Promise not to accept below this ballot, and report every slot you hold from
    /// `from` on." Sent again, with a higher `from`, when a promise came in parts.
    Prepare {
        from: LogIndex,
        /// Sent on the leader's request (leader transfer): acceptors that heard from that
        /// leader recently must not ignore it on that ground.
        transfer: bool,
        /// A probe (Multi-Paxos's pre-vote): "would you promise this ballot now?" It changes
        /// nothing on the acceptor, which answers with [`Body::ProbeAnswer`]. Only a candidate
        /// a majority would follow raises its promise, so a node cut off from a live leader
        /// cannot depose it when it comes back.
        probe: bool,
    },
    /// Phase 1b, for the ballot in `term`: the acceptor's slots from `from` on (each entry's
    /// term is the ballot it was accepted at), at most a message's worth of them. Slots up to
    /// `decided` are decided at the acceptor. `complete` when nothing the acceptor holds
    /// follows the last one.
    Promise {
        decided: LogIndex,
        from: LogIndex,
        entries: Vec<Entry>,
        complete: bool,
    },
    /// Phase 2a: accept these values for the slots from `first` on, at the ballot in `term`.
    /// Empty, it is the leader's heartbeat. `decided` (the leader's decided prefix) is phase 3:
    /// the acceptor learns every slot it holds the leader's value for up to there.
    Accept {
        first: LogIndex,
        entries: Vec<Entry>,
        decided: LogIndex,
        /// The newest read round the leader has started; echoed back.
        read_round: u64,
    },
    /// Phase 2b: the acceptor holds the leader's value, durably, for every slot up to
    /// `through`, and has decided its slots up to `decided`.
    Accepted {
        through: LogIndex,
        decided: LogIndex,
        read_round: u64,
    },
    /// An acceptor refuses: the ballot is below its promise (`term` is the promise), or, at
    /// the same ballot, the accepts do not follow what it holds (`decided`, and `held_through`
    /// of the leader's values) and must resume from there.
    Refused {
        decided: LogIndex,
        held_through: LogIndex,
    },
    /// The answer to a probe for the ballot in `term` (or, refused because the acceptor
    /// promised more, its promise).
    ProbeAnswer {
        granted: bool,
    },
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
    /// Whether the message carries log entries for replication (a Raft append, a Multi-Paxos
    /// accept with values): the transport sends those on a lower-priority stream, so that
    /// heartbeats, votes and acknowledgements never queue behind megabytes of entries and a
    /// busy leader is not deposed for it. Heartbeats (a Multi-Paxos heartbeat is an empty accept)
    /// may then overtake entries; both engines take messages in any order.
    pub fn is_bulk(&self) -> bool {
        match &self.body {
            Body::Append { .. } => true,
            Body::Accept { entries, .. } => !entries.is_empty(),
            _ => false,
        }
    }

    /// Whether the message belongs to the Multi-Paxos engine (`crate::paxos`).
    pub fn is_paxos(&self) -> bool {
        matches!(
            self.body,
            Body::Prepare { .. }
                | Body::Promise { .. }
                | Body::Accept { .. }
                | Body::Accepted { .. }
                | Body::Refused { .. }
                | Body::ProbeAnswer { .. }
        )
    }

    /// Bytes of entry payload carried, for flow control accounting.
    pub fn payload_bytes(&self) -> u64 {
        match &self.body {
            Body::Append { entries, .. }
            | Body::Accept { entries, .. }
            | Body::Promise { entries, .. } => entries.iter().map(Entry::payload_bytes).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_bulk_and_heartbeats_do_not() {
        let entry = Entry {
            index: 7,
            term: 2,
            payload: ordo_common::EntryPayload::Noop,
        };
        let message = |body| Message { term: 2, body };
        let accept = |entries| Body::Accept {
            first: 7,
            entries,
            decided: 6,
            read_round: 1,
        };
        assert!(message(accept(vec![entry.clone()])).is_bulk());
        assert!(!message(accept(Vec::new())).is_bulk(), "a Paxos heartbeat");
        assert!(
            message(Body::Append {
                prev_log_id: LogId::new(2, 6),
                entries: vec![entry.clone()],
                commit_index: 6,
            })
            .is_bulk()
        );
        assert!(
            !message(Body::Heartbeat {
                commit_index: 6,
                read_round: 1
            })
            .is_bulk()
        );
        assert!(
            !message(Body::Promise {
                decided: 6,
                from: 7,
                entries: vec![entry],
                complete: true,
            })
            .is_bulk(),
            "an election's answer goes ahead of replication"
        );
    }
}
