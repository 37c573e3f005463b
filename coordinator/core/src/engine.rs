//! The boundary a driver sees: one of the two engines, behind one set of methods.
//!
//! Everything a driver calls is here, with the contract of [`Raft`]'s method of the same name.
//! The one input that differs between the engines is the durability report: Raft names the
//! last entry a write left durable, Multi-Paxos counts writes (see
//! [`MultiPaxos::handle_durable_writes`]); [`Engine::handle_durable`] takes both and gives each
//! engine its own.

use bytes::Bytes;
use ordo_common::membership::{MembershipChange, MembershipError};
use ordo_common::{EngineKind, Entry, HardState, LogId, LogIndex, Membership, NodeId, Term};

use crate::paxos::MultiPaxos;
use crate::raft::{
    Config, InvalidMessage, Message, Output, ProposalId, ProposeError, Raft, ReadError, ReadId,
    Restored, Role, StartError, Status, TransferError,
};

/// A consensus engine.
#[derive(Debug)]
pub enum Engine {
    Raft(Raft),
    MultiPaxos(MultiPaxos),
}

/// Calls `$method` on whichever engine runs.
macro_rules! either {
    ($engine:expr, $inner:ident => $call:expr) => {
        match $engine {
            Engine::Raft($inner) => $call,
            Engine::MultiPaxos($inner) => $call,
        }
    };
}

impl Engine {
    /// Starts the engine of `kind` from what the node had made durable.
    pub fn new(
        kind: EngineKind,
        config: Config,
        restored: Restored,
        seed: u64,
    ) -> Result<Self, StartError> {
        Ok(match kind {
            EngineKind::Raft => Engine::Raft(Raft::new(config, restored, seed)?),
            EngineKind::MultiPaxos => Engine::MultiPaxos(MultiPaxos::new(config, restored, seed)?),
        })
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Raft(_) => EngineKind::Raft,
            Engine::MultiPaxos(_) => EngineKind::MultiPaxos,
        }
    }

    /// The Raft engine, if it is the one that runs (for Raft-only observers).
    pub fn as_raft(&self) -> Option<&Raft> {
        match self {
            Engine::Raft(raft) => Some(raft),
            Engine::MultiPaxos(_) => None,
        }
    }

    /// The Multi-Paxos engine, if it is the one that runs.
    pub fn as_paxos(&self) -> Option<&MultiPaxos> {
        match self {
            Engine::MultiPaxos(paxos) => Some(paxos),
            Engine::Raft(_) => None,
        }
    }

    pub fn id(&self) -> NodeId {
        either!(self, engine => engine.id())
    }

    pub fn role(&self) -> Role {
        either!(self, engine => engine.role())
    }

    /// Raft's term, or the promised ballot.
    pub fn term(&self) -> Term {
        either!(self, engine => engine.term())
    }

    pub fn leader(&self) -> Option<NodeId> {
        either!(self, engine => engine.leader())
    }

    pub fn hard_state(&self) -> HardState {
        either!(self, engine => engine.hard_state())
    }

    pub fn last_log_id(&self) -> LogId {
        either!(self, engine => engine.last_log_id())
    }

    /// Raft's commit index, or the decided prefix.
    pub fn commit_index(&self) -> LogIndex {
        either!(self, engine => engine.commit_index())
    }

    pub fn applied_index(&self) -> LogIndex {
        either!(self, engine => engine.applied_index())
    }

    pub fn durable_index(&self) -> LogIndex {
        either!(self, engine => engine.durable_index())
    }

    pub fn log_window_bytes(&self) -> u64 {
        either!(self, engine => engine.log_window_bytes())
    }

    pub fn log_window_first_index(&self) -> LogIndex {
        either!(self, engine => engine.log_window_first_index())
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        either!(self, engine => engine.entry(index))
    }

    /// Leader: how far `peer`'s log is known to hold this leader's entries.
    pub fn matched(&self, peer: NodeId) -> Option<LogIndex> {
        match self {
            Engine::Raft(raft) => raft.replication(peer).map(|(_, matched, _)| matched),
            Engine::MultiPaxos(paxos) => paxos.replication(peer).map(|(_, matched, _)| matched),
        }
    }

    pub fn membership(&self) -> &Membership {
        either!(self, engine => engine.membership())
    }

    pub fn committed_membership(&self) -> &Membership {
        match self {
            Engine::Raft(raft) => raft.committed_membership(),
            Engine::MultiPaxos(paxos) => paxos.membership(),
        }
    }

    pub fn membership_index(&self) -> LogIndex {
        match self {
            Engine::Raft(raft) => raft.membership_index(),
            Engine::MultiPaxos(_) => 0,
        }
    }

    pub fn status(&self) -> Status {
        either!(self, engine => engine.status())
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        either!(self, engine => engine.poll_output())
    }

    pub fn tick(&mut self) {
        either!(self, engine => engine.tick())
    }

    pub fn campaign(&mut self) {
        either!(self, engine => engine.campaign())
    }

    pub fn propose(&mut self, id: ProposalId, payload: Bytes) -> Result<LogId, ProposeError> {
        either!(self, engine => engine.propose(id, payload))
    }

    /// Multi-Paxos keeps the voters it was bootstrapped with and refuses every change.
    pub fn propose_membership(
        &mut self,
        id: ProposalId,
        change: MembershipChange,
    ) -> Result<LogId, MembershipError> {
        match self {
            Engine::Raft(raft) => raft.propose_membership(id, change),
            Engine::MultiPaxos(_) => Err(MembershipError::EngineKeepsMembers {
                engine: EngineKind::MultiPaxos,
            }),
        }
    }

    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        either!(self, engine => engine.read_index(id))
    }

    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        either!(self, engine => engine.transfer_leadership(target))
    }

    /// Storage made writes durable: the first `writes` writes this engine asked for (each
    /// `PersistHardState`, `PersistEntries` and `InstallSnapshot` output counts one), after
    /// which the log's last entry is `last_log_id` (when the store holds any).
    pub fn handle_durable(&mut self, last_log_id: Option<LogId>, writes: u64) {
        match self {
            Engine::Raft(raft) => {
                if let Some(last) = last_log_id {
                    raft.handle_durable(last);
                }
            }
            Engine::MultiPaxos(paxos) => paxos.handle_durable_writes(writes),
        }
    }

    pub fn handle_message(&mut self, from: NodeId, message: Message) -> Result<(), InvalidMessage> {
        either!(self, engine => engine.handle_message(from, message))
    }

    pub fn handle_entries_read(
        &mut self,
        to: NodeId,
        low: LogIndex,
        read: Result<(Term, Vec<Entry>), LogIndex>,
    ) {
        either!(self, engine => engine.handle_entries_read(to, low, read))
    }

    pub fn handle_snapshot_report(&mut self, to: NodeId, delivered: bool) {
        either!(self, engine => engine.handle_snapshot_report(to, delivered))
    }

    pub fn handle_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        last_included: LogId,
        membership: Membership,
    ) {
        either!(self, engine => engine.handle_snapshot(from, term, last_included, membership))
    }

    pub fn handle_purged(&mut self, stored_first: LogIndex) {
        either!(self, engine => engine.handle_purged(stored_first))
    }
}
