//! Membership changes as clients ask for them: one server at a time (Raft thesis §4.3), what
//! each change does to a [`Membership`], and why one is refused. The consensus core decides
//! when a change may enter the log; this module only knows what it means.

use crate::{LogIndex, Membership, NodeId};

/// Most voters a membership may reach: 5 in steady state, one more while a node is replaced,
/// one more for headroom.
pub const VOTERS_MAX: usize = 7;

/// Most learners at once. A learner costs the leader a replication stream.
pub const LEARNERS_MAX: usize = 2;

/// Longest peer address a membership records, in bytes.
pub const MEMBER_ADDRESS_BYTES_MAX: usize = 256;

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    /// Add node `id`, reachable at `address`, as a learner. With `promote`, the leader makes
    /// it a voter by itself once it has caught up.
    AddLearner {
        id: NodeId,
        address: String,
        promote: bool,
    },
    /// Make learner `id` a voter.
    Promote { id: NodeId },
    /// Remove voter or learner `id`; its id is retired for good.
    Remove { id: NodeId },
}

impl MembershipChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            Self::AddLearner { id, .. } | Self::Promote { id } | Self::Remove { id } => *id,
        }
    }

    /// The membership after this change, or why it does not apply to `membership`. Checks only
    /// what the membership itself decides; the leader checks reachability and catch-up.
    pub fn apply(&self, membership: &Membership) -> Result<Membership, MembershipError> {
        let mut next = membership.clone();
        match self {
            Self::AddLearner {
                id,
                address,
                promote,
            } => {
                if *id == 0 {
                    return Err(MembershipError::InvalidId);
                }
                if membership.retired.contains(id) {
                    return Err(MembershipError::Retired(*id));
                }
                if membership.contains(*id) {
                    return Err(MembershipError::AlreadyMember(*id));
                }
                if address.is_empty() || address.len() > MEMBER_ADDRESS_BYTES_MAX {
                    return Err(MembershipError::InvalidAddress {
                        bytes: address.len(),
                        limit: MEMBER_ADDRESS_BYTES_MAX,
                    });
                }
                if membership.learners.len() >= LEARNERS_MAX {
                    return Err(MembershipError::TooManyLearners {
                        limit: LEARNERS_MAX,
                    });
                }
                next.learners.insert(*id);
                next.addresses.insert(*id, address.clone());
                if *promote {
                    next.promote_when_ready.insert(*id);
                }
            }
            Self::Promote { id } => {
                if !membership.learners.contains(id) {
                    return Err(MembershipError::NotALearner(*id));
                }
                if membership.voters.len() >= VOTERS_MAX {
                    return Err(MembershipError::TooManyVoters { limit: VOTERS_MAX });
                }
                next.learners.remove(id);
                next.promote_when_ready.remove(id);
                next.voters.insert(*id);
            }
            Self::Remove { id } => {
                if !membership.contains(*id) {
                    return Err(MembershipError::NotAMember(*id));
                }
                if membership.voters.len() == 1 && membership.voters.contains(id) {
                    return Err(MembershipError::LastVoter(*id));
                }
                next.voters.remove(id);
                next.learners.remove(id);
                next.promote_when_ready.remove(id);
                next.addresses.remove(id);
                next.retired.insert(*id);
            }
        }
        Ok(next)
    }
}

/// Why a membership change was refused. Each variant is a stable reason a client can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MembershipError {
    #[error("this node is not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("leadership transfer in progress; retry at the new leader")]
    TransferInProgress,
    #[error("the leader has not yet committed an entry of its term; retry shortly")]
    TermNotStarted,
    #[error("the change at index {index} has not committed yet; one change at a time")]
    ChangeInProgress { index: LogIndex },
    #[error("node id 0 is not a valid id")]
    InvalidId,
    #[error("node {0} was removed from this cluster; ids are never reused, pick a new one")]
    Retired(NodeId),
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("node {0} is not a learner")]
    NotALearner(NodeId),
    #[error("node {0} is the last voter; a cluster cannot remove its last voter")]
    LastVoter(NodeId),
    #[error("an address of {bytes} bytes (1 to {limit} bytes)")]
    InvalidAddress { bytes: usize, limit: usize },
    #[error("a membership holds at most {limit} learners (LEARNERS_MAX)")]
    TooManyLearners { limit: usize },
    #[error("a membership holds at most {limit} voters (VOTERS_MAX)")]
    TooManyVoters { limit: usize },
    #[error(
        "learner {id} has not caught up (it holds the log through {match_index}, the leader \
         through {last_index}); retry when it has"
    )]
    LearnerBehind {
        id: NodeId,
        match_index: LogIndex,
        last_index: LogIndex,
    },
    #[error(
        "the change would leave {reachable} reachable voters where a quorum needs {quorum}; \
         bring the other voters back first"
    )]
    WouldLoseQuorum { reachable: usize, quorum: usize },
    #[error(
        "this cluster runs the {engine} consensus engine, which does not change membership: \
         the cluster keeps the voters it was bootstrapped with"
    )]
    EngineKeepsMembers { engine: crate::EngineKind },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn three() -> Membership {
        Membership::initial(BTreeMap::from([
            (1, "a:1".to_string()),
            (2, "a:2".to_string()),
            (3, "a:3".to_string()),
        ]))
    }

    #[test]
    fn a_node_joins_as_a_learner_becomes_a_voter_and_leaves_for_good() {
        let add = MembershipChange::AddLearner {
            id: 4,
            address: "a:4".into(),
            promote: true,
        };
        let with_learner = add.apply(&three()).unwrap();
        assert!(with_learner.learners.contains(&4));
        assert!(with_learner.promote_when_ready.contains(&4));
        assert_eq!(
            add.apply(&with_learner),
            Err(MembershipError::AlreadyMember(4))
        );
        let promoted = MembershipChange::Promote { id: 4 }
            .apply(&with_learner)
            .unwrap();
        assert_eq!(promoted.voters.len(), 4);
        assert!(promoted.promote_when_ready.is_empty());
        let removed = MembershipChange::Remove { id: 4 }.apply(&promoted).unwrap();
        assert!(!removed.contains(4) && removed.retired.contains(&4));
        assert!(!removed.addresses.contains_key(&4));
        assert_eq!(add.apply(&removed), Err(MembershipError::Retired(4)));
    }

    #[test]
    fn changes_that_make_no_sense_are_refused_by_name() {
        let m = three();
        assert_eq!(
            MembershipChange::Promote { id: 2 }.apply(&m),
            Err(MembershipError::NotALearner(2))
        );
        assert_eq!(
            MembershipChange::Remove { id: 9 }.apply(&m),
            Err(MembershipError::NotAMember(9))
        );
        let add = |id, address: &str| MembershipChange::AddLearner {
            id,
            address: address.into(),
            promote: false,
        };
        assert_eq!(add(0, "x").apply(&m), Err(MembershipError::InvalidId));
        assert!(matches!(
            add(4, "").apply(&m),
            Err(MembershipError::InvalidAddress { .. })
        ));
        let full = add(5, "x").apply(&add(4, "x").apply(&m).unwrap()).unwrap();
        assert_eq!(
            add(6, "x").apply(&full),
            Err(MembershipError::TooManyLearners {
                limit: LEARNERS_MAX
            })
        );
        let mut one = m.clone();
        one.voters = [1].into();
        assert_eq!(
            MembershipChange::Remove { id: 1 }.apply(&one),
            Err(MembershipError::LastVoter(1))
        );
    }
}
