//! Multi-Paxos as a deterministic state machine, with the inputs and outputs of [`crate::Raft`]:
//! the same [`Output`]s, in the same order and under the same durability contract, and the
//! same [`Message`] type (its Paxos bodies), so that a driver cannot tell the engines apart.
//!
//! # The protocol
//!
//! A **ballot** is a pair (round, node), packed into a [`Term`] as `round << 16 | node`: higher
//! wins, and no two nodes ever use the same one. The durable **promise** (the hard state's term)
//! is the highest ballot this node promised; it never accepts a value below it.
//!
//! - **Phase 1** (prepare → promise). A node whose election timeout fires (randomized, so that
//!   duelling proposers drift apart) picks a round above every ballot it has seen, promises its
//!   own ballot durably and asks every voter to `Prepare` from its decided prefix on: the
//!   prepare covers every slot above that prefix, including slots beyond the candidate's own
//!   log. Each acceptor promises durably **before** it answers, and reports what it holds from
//!   there on (in parts when it is more than a message holds). With a majority of whole
//!   answers, the candidate adopts for every slot the value reported at the highest ballot (a
//!   value some acceptor has decided wins outright), fills holes with no-ops, writes them all
//!   at its own ballot and leads.
//! - **Phase 2** (accept → accepted). The leader streams `Accept`s to each acceptor, pipelined
//!   within a window of messages, every value at its own ballot. An acceptor takes them only
//!   in order after what it holds of the leader's values (or after its decided prefix), keeps
//!   any value it accepted before for slots the leader has not reached yet, and answers
//!   `Accepted` once the values are durable. A slot is **decided** when a majority holds the
//!   leader's value for it at the leader's ballot (the leader counting itself once durable).
//! - **Learning.** Every accept and heartbeat carries the leader's decided prefix; an acceptor
//!   learns the slots it holds the leader's values for up to there. Only the contiguous
//!   decided prefix is applied.
//!
//! Linearizable reads use read rounds, as in Raft: a read waits until the leader decided a
//! slot of its own ballot, then until a majority still answers to that ballot. A leader that
//! does not hear from a majority for an election timeout steps down, and an acceptor that
//! heard from a live leader within the election timeout ignores prepares, except the one a
//! leader asked for when it hands over. With `pre_vote` (the default) a node first **probes**:
//! it asks whether a majority would promise its next ballot, which changes nothing anywhere,
//! and raises its promise only then, so that a node cut off from a live leader cannot depose it
//! by refusing its accepts when it comes back.
//!
//! An acceptor that needs slots storage no longer holds gets a snapshot of the state machine
//! (the same [`Output::SendSnapshot`] / [`Output::InstallSnapshot`] contract as Raft's, the
//! install always keeping the slots after the snapshot). Membership changes are not built for
//! this engine: the cluster keeps the voters it was bootstrapped with.

mod log;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ordo_common::{Entry, EntryPayload, HardState, LogId, LogIndex, Membership, NodeId, Term};

use crate::raft::quorum::majority_value;
use crate::raft::{
    Body, Config, ConfigError, InvalidMessage, Message, Output, ProposalId, ProposalLost,
    ProposeError, ReadError, ReadId, Restored, Role, StartError, Status, TERM_MAX, TransferError,
};
use crate::raft::{ENTRY_OVERHEAD_BYTES, admit_proposal, admit_read, out_of_range_field};
use crate::rng::Prng;
use log::SlotLog;

/// Bits of a ballot that name its node.
pub const BALLOT_NODE_BITS: u32 = 16;

/// The largest node id a ballot can carry.
pub const NODE_ID_MAX: NodeId = (1 << BALLOT_NODE_BITS) - 1;

/// The ballot of `round` for `node`.
pub fn ballot(round: u64, node: NodeId) -> Term {
    (round << BALLOT_NODE_BITS) | node
}

/// The round of ballot `ballot`.
pub fn ballot_round(ballot: Term) -> u64 {
    ballot >> BALLOT_NODE_BITS
}

/// The node of ballot `ballot`.
pub fn ballot_node(ballot: Term) -> NodeId {
    ballot & NODE_ID_MAX
}

/// The classic Multi-Paxos bugs, planted on purpose to see the checkers catch them. Never set
/// outside tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// A new leader ignores the values other acceptors' promises report.
    IgnorePromisedValues,
    /// An acceptor accepts a ballot below the one it promised.
    AcceptBelowPromise,
    /// Accepts given to an earlier ballot count toward a decision in a later one: an acceptor
    /// carries the run of values it took from one leader into the next leader's ballot.
    DecideAcrossBallots,
    /// An acceptor learns slots past the ones it holds the leader's values for.
    ApplyPastHole,
    /// An acceptor sends its promise before the promise is durable.
    PromiseBeforeDurable,
}

/// A candidate's phase 1.
#[derive(Debug)]
struct Campaign {
    /// The first slot the prepare asks about: this node's decided prefix + 1.
    from: LogIndex,
    transfer: bool,
    /// Acceptors whose promise is whole (this node included).
    complete: BTreeSet<NodeId>,
    /// Acceptors that promised part of what they hold: the slot their next part starts at.
    partial: BTreeMap<NodeId, LogIndex>,
    /// Per slot: the value reported at the highest ballot, and whether an acceptor has it
    /// decided.
    adopted: BTreeMap<LogIndex, (Entry, bool)>,
}

/// The leader's view of one acceptor.
#[derive(Debug, Default)]
struct Peer {
    /// The next slot to send.
    next: LogIndex,
    /// The acceptor holds the leader's values durably through here.
    matched: LogIndex,
    /// The last slot of each accept in flight.
    inflight: VecDeque<LogIndex>,
    heard_ticks: u32,
    stalled_ticks: u32,
    read_round: u64,
    /// Waiting for storage to read slots below the window for it.
    reading: bool,
    /// Waiting for a snapshot to reach it: storage no longer holds the slots it lacks.
    snapshotting: bool,
    /// Ticks since the snapshot was asked for: past `snapshot_timeout_ticks` it is sent again.
    snapshot_ticks: u32,
    /// The last transfer failed: the next one waits until the acceptor shows it is alive, so
    /// that a dead acceptor costs no snapshots.
    snapshot_failed: bool,
    /// The slot the leader last resent from after a refusal: later refusals of accepts that
    /// were already in flight then ask for nothing new.
    resent_from: Option<LogIndex>,
}

impl Peer {
    /// The acceptor answered: a snapshot whose transfer failed may go again.
    fn rearm_snapshot(&mut self) {
        if self.snapshot_failed {
            self.snapshot_failed = false;
            self.snapshotting = false;
        }
    }
}

/// An acceptor's run of the current leader's values: it holds them for every slot up to
/// `through` (its decided slots, then what the leader sent in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    ballot: Term,
    through: LogIndex,
}

#[derive(Debug)]
struct Transfer {
    target: NodeId,
    elapsed_ticks: u32,
}

/// One Multi-Paxos node. All methods are synchronous and deterministic given the seed.
#[derive(Debug)]
pub struct MultiPaxos {
    config: Config,
    rng: Prng,
    /// The durable promise.
    promised: Term,
    /// The highest ballot seen anywhere: a new campaign goes above it.
    highest_seen: Term,
    role: Role,
    leader: Option<NodeId>,
    /// The ballot this node leads or campaigns in.
    ballot: Term,
    log: SlotLog,
    membership: Membership,
    election_elapsed_ticks: u32,
    election_timeout_randomized_ticks: u32,
    heartbeat_elapsed_ticks: u32,
    campaign: Option<Campaign>,
    /// Probing: the ballot asked about and who would promise it (this node included).
    probe: Option<(Term, BTreeSet<NodeId>)>,
    /// Leader: every other voter.
    peers: BTreeMap<NodeId, Peer>,
    /// Leader: the no-op that opens its ballot; reads wait until it is decided.
    start_index: LogIndex,
    undecided_bytes: u64,
    transfer: Option<Transfer>,
    read_round: u64,
    read_round_confirmed: u64,
    reads_waiting_start: VecDeque<ReadId>,
    reads_waiting_round: VecDeque<(ReadId, LogIndex, u64)>,
    reads_waiting_apply: VecDeque<(ReadId, LogIndex)>,
    /// Acceptor: what it holds of the current leader's values.
    run: Option<Run>,
    /// Acceptor: the last `through` acknowledged, and the leader's last read round.
    ack_sent: LogIndex,
    leader_read_round: u64,
    /// Proposals made on this node awaiting their outcome, by slot, with their payloads: the
    /// chosen value decides which one (if any) won.
    pending_proposals: BTreeMap<LogIndex, Vec<(Bytes, ProposalId)>>,
    outputs: VecDeque<Output>,
    last_reported_role: Option<(Role, Term, Option<NodeId>)>,
}

impl MultiPaxos {
    /// Starts a node from what it had made durable. `seed` drives its election timeouts.
    pub fn new(config: Config, restored: Restored, seed: u64) -> Result<Self, StartError> {
        config.validate()?;
        if let Some(id) = std::iter::once(config.id)
            .chain(config.voters.iter().copied())
            .find(|id| *id > NODE_ID_MAX || *id == 0)
        {
            return Err(StartError::Config(ConfigError::BallotNodeId(id)));
        }
        let Restored {
            hard_state,
            prev_log_id,
            entries,
            applied,
            stored_first,
            membership,
        } = restored;
        if entries
            .windows(2)
            .any(|pair| pair[1].index != pair[0].index + 1)
            || entries
                .first()
                .is_some_and(|entry| entry.index != prev_log_id.index + 1)
        {
            return Err(StartError::Restore("slots are not contiguous"));
        }
        if entries
            .iter()
            .any(|entry| entry.term > hard_state.term || entry.term == 0)
        {
            return Err(StartError::Restore(
                "a slot was accepted at a ballot above the durable promise",
            ));
        }
        let last = entries
            .last()
            .map_or(prev_log_id.index, |entry| entry.index);
        if applied > last || applied < prev_log_id.index {
            return Err(StartError::Restore(
                "applied index outside the restored log",
            ));
        }
        if stored_first > prev_log_id.index + 1 {
            return Err(StartError::Restore(
                "storage is missing slots after the applied index",
            ));
        }
        let membership = membership.unwrap_or_else(|| Membership {
            voters: config.voters.iter().copied().collect(),
            ..Membership::default()
        });
        let mut paxos = Self {
            rng: Prng::new(seed),
            promised: hard_state.term,
            highest_seen: hard_state.term,
            role: Role::Follower,
            leader: None,
            ballot: 0,
            log: SlotLog::restore(prev_log_id, entries, applied, stored_first),
            membership,
            election_elapsed_ticks: 0,
            election_timeout_randomized_ticks: config.election_timeout_ticks,
            heartbeat_elapsed_ticks: 0,
            campaign: None,
            probe: None,
            peers: BTreeMap::new(),
            start_index: 0,
            undecided_bytes: 0,
            transfer: None,
            read_round: 0,
            read_round_confirmed: 0,
            reads_waiting_start: VecDeque::new(),
            reads_waiting_round: VecDeque::new(),
            reads_waiting_apply: VecDeque::new(),
            run: None,
            ack_sent: 0,
            leader_read_round: 0,
            pending_proposals: BTreeMap::new(),
            outputs: VecDeque::new(),
            last_reported_role: None,
            config,
        };
        paxos.randomize_election_timeout();
        Ok(paxos)
    }

    // ----- getters -----

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The promised ballot (the engine's "term").
    pub fn term(&self) -> Term {
        self.promised
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.promised,
            vote: None,
        }
    }

    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }

    /// The contiguous decided prefix.
    pub fn commit_index(&self) -> LogIndex {
        self.log.decided
    }

    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    pub fn durable_index(&self) -> LogIndex {
        self.log.durable()
    }

    pub fn log_window_bytes(&self) -> u64 {
        self.log.window_bytes()
    }

    pub fn log_window_first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// The slot at `index`, if this node holds it in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Leader: acceptor `peer`'s next slot to send, the slot it holds this ballot's values
    /// through, and its accepts in flight.
    pub fn replication(&self, peer: NodeId) -> Option<(LogIndex, LogIndex, usize)> {
        let peer = self.peers.get(&peer)?;
        Some((peer.next, peer.matched, peer.inflight.len()))
    }

    /// Leader: how replication to `peer` stands, in words (for observers and failure reports).
    pub fn describe_peer(&self, peer: NodeId) -> Option<String> {
        let peer = self.peers.get(&peer)?;
        Some(format!(
            "next={} matched={} inflight={:?} reading={} snapshotting={} resent_from={:?} \
             stalled={} heard={}",
            peer.next,
            peer.matched,
            peer.inflight,
            peer.reading,
            peer.snapshotting,
            peer.resent_from,
            peer.stalled_ticks,
            peer.heard_ticks
        ))
    }

    /// Persist outputs emitted so far; see [`MultiPaxos::handle_durable_writes`].
    pub fn writes(&self) -> u64 {
        self.log.writes()
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.promised,
            vote: None,
            leader: self.leader,
            last_log_id: self.log.last_log_id(),
            durable_index: self.log.durable(),
            commit_index: self.log.decided,
            applied_index: self.log.applied,
        }
    }

    // ----- outputs -----

    /// The next thing for the driver to do, in order. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && self.role == Role::Leader {
            // Accepts are built when the driver asks, so that every proposal made since the
            // last poll travels in the same message.
            let peers: Vec<NodeId> = self.peers.keys().copied().collect();
            for peer in peers {
                self.replicate(peer);
            }
        }
        self.outputs.pop_front()
    }

    // ----- inputs -----

    /// One unit of time has passed.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.is_voter() {
            self.election_elapsed_ticks += 1;
            if self.election_elapsed_ticks >= self.election_timeout_randomized_ticks {
                if self.config.pre_vote {
                    self.start_probe();
                } else {
                    self.start_campaign(false);
                }
            }
        }
        self.finish_input();
    }

    /// Campaign now, as if the election timeout had fired.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.is_voter() {
            if self.config.pre_vote {
                self.start_probe();
            } else {
                self.start_campaign(false);
            }
        }
        self.finish_input();
    }

    /// Proposes `payload` for the next free slot. The outcome arrives as
    /// [`Output::ProposalResult`].
    pub fn propose(&mut self, id: ProposalId, payload: Bytes) -> Result<LogId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        admit_proposal(&self.config, payload.len() as u64, self.undecided_bytes)?;
        let log_id = self.append_as_leader(EntryPayload::Normal(payload.clone()));
        self.pending_proposals
            .entry(log_id.index)
            .or_default()
            .push((payload, id));
        self.finish_input();
        Ok(log_id)
    }

    /// Starts a linearizable read; see [`crate::Raft::read_index`].
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let pending = self.reads_waiting_start.len()
            + self.reads_waiting_round.len()
            + self.reads_waiting_apply.len();
        admit_read(&self.config, pending)?;
        if self.log.decided < self.start_index {
            self.reads_waiting_start.push_back(id);
        } else {
            self.register_read(id);
        }
        self.finish_input();
        Ok(())
    }

    /// Hands leadership to `target`, or to the acceptor holding most of this leader's values.
    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let target = match target {
            Some(target) if target == self.config.id => return Err(TransferError::TargetIsSelf),
            Some(target) if !self.peers.contains_key(&target) => {
                return Err(TransferError::UnknownNode(target));
            }
            Some(target) => target,
            None => self
                .peers
                .iter()
                .max_by_key(|(id, peer)| (peer.matched, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id)
                .ok_or(TransferError::NoFollower)?,
        };
        self.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
        });
        self.maybe_send_timeout_now();
        self.finish_input();
        Ok(target)
    }

    /// Storage made the first `writes` writes this engine asked for durable: each
    /// `PersistHardState`, `PersistEntries` and `InstallSnapshot` output counts one, in order
    /// (see [`MultiPaxos::writes`]). Reports may cover several writes and repeat.
    pub fn handle_durable_writes(&mut self, writes: u64) {
        let before = self.log.durable();
        self.log.writes_durable(writes);
        if self.log.durable() > before {
            match self.role {
                Role::Leader => self.maybe_decide(),
                _ => self.maybe_acknowledge(false),
            }
        }
        self.finish_input();
    }

    /// A message from peer `from` (as authenticated by the transport).
    pub fn handle_message(&mut self, from: NodeId, message: Message) -> Result<(), InvalidMessage> {
        self.validate_message(from, &message)?;
        let ballot = message.term;
        match message.body {
            Body::Prepare {
                transfer,
                probe: true,
                ..
            } => self.handle_probe(from, ballot, transfer),
            Body::Prepare {
                from: slot,
                transfer,
                probe: false,
            } => self.handle_prepare(from, ballot, slot, transfer),
            Body::ProbeAnswer { granted } => self.handle_probe_answer(from, ballot, granted),
            Body::Promise {
                decided,
                from: slot,
                entries,
                complete,
            } => self.handle_promise(from, ballot, decided, slot, entries, complete),
            Body::Accept {
                first,
                entries,
                decided,
                read_round,
            } => self.handle_accept(from, ballot, first, entries, decided, read_round),
            Body::Accepted {
                through,
                decided: _,
                read_round,
            } => self.handle_accepted(from, ballot, through, read_round),
            Body::Refused {
                decided,
                held_through,
            } => self.handle_refused(from, ballot, decided, held_through),
            Body::TimeoutNow => {
                if self.role == Role::Follower
                    && self.leader == Some(from)
                    && ballot == self.promised
                    && self.is_voter()
                {
                    self.start_campaign(true);
                }
            }
            _ => unreachable!("validate_message refuses Raft's messages"),
        }
        self.finish_input();
        Ok(())
    }

    /// Storage read the slots an [`Output::ReadEntries`] for acceptor `to` asked for, from
    /// `low`, or `Err` when they were purged meanwhile.
    pub fn handle_entries_read(
        &mut self,
        to: NodeId,
        low: LogIndex,
        read: Result<(Term, Vec<Entry>), LogIndex>,
    ) {
        let ballot = self.ballot;
        let decided = self.log.decided;
        let read_round = self.read_round;
        if self.role == Role::Leader
            && let Some(peer) = self.peers.get_mut(&to)
            && peer.reading
        {
            peer.reading = false;
            if let Err(stored_first) = read {
                self.log.stored_first = self.log.stored_first.max(stored_first);
            }
            if let Ok((_, entries)) = read
                && peer.next == low
                && let Some(last) = entries.last().map(|entry| entry.index)
            {
                let entries = restamp(entries, ballot);
                peer.next = last + 1;
                peer.inflight.push_back(last);
                self.send(
                    to,
                    ballot,
                    Body::Accept {
                        first: low,
                        entries,
                        decided,
                        read_round,
                    },
                );
            }
        }
        self.finish_input();
    }

    /// The driver finished (or gave up) sending acceptor `to` the snapshot an
    /// [`Output::SendSnapshot`] asked for. Its acknowledgement after installing it moves
    /// replication on; a failed transfer is tried again.
    pub fn handle_snapshot_report(&mut self, to: NodeId, delivered: bool) {
        if self.role == Role::Leader
            && !delivered
            && let Some(peer) = self.peers.get_mut(&to)
            && peer.snapshotting
        {
            peer.snapshot_failed = true;
        }
        self.finish_input();
    }

    /// A snapshot of leader `from`'s state, sent at `ballot` and covering the slots through
    /// `last_included`, arrived whole and verified. Installed (an [`Output::InstallSnapshot`]
    /// that keeps the slots after it) if it carries this node past its decided prefix.
    pub fn handle_snapshot(
        &mut self,
        from: NodeId,
        ballot: Term,
        last_included: LogId,
        _membership: Membership,
    ) {
        if from == self.config.id {
            return;
        }
        if !self.heed_leader(from, ballot, false) {
            self.finish_input();
            return;
        }
        if last_included.index > self.log.decided {
            // Proposals this node made in the replaced slots: it cannot learn their fate.
            let replaced = {
                let remaining = self.pending_proposals.split_off(&(last_included.index + 1));
                std::mem::replace(&mut self.pending_proposals, remaining)
            };
            for (index, proposals) in replaced {
                for (_, id) in proposals {
                    self.outputs.push_back(Output::ProposalResult {
                        id,
                        result: Err(ProposalLost::Unknowable { index }),
                    });
                }
            }
            self.log.count_sync_write();
            self.outputs.push_back(Output::InstallSnapshot {
                last_included,
                keep_suffix: true,
            });
            self.log.install(last_included);
        }
        // Installed or not, the decided slots are the leader's values: say how far it holds
        // them, so that replication moves on.
        let through = self
            .run
            .filter(|run| run.ballot == ballot)
            .map_or(0, |run| run.through)
            .max(self.log.decided);
        if self.run.is_none_or(|run| run.ballot != ballot) {
            self.ack_sent = 0;
        }
        self.run = Some(Run { ballot, through });
        self.maybe_acknowledge(true);
        self.finish_input();
    }

    /// Storage no longer holds slots below `stored_first` (its retention purged them).
    pub fn handle_purged(&mut self, stored_first: LogIndex) {
        self.log.stored_first = self.log.stored_first.max(stored_first);
        self.finish_input();
    }

    // ----- phase 1 -----

    /// The ballot after every ballot this node has seen, with the timer restarted and whatever
    /// this node was doing as leader or candidate given up; `None` past `TERM_MAX`.
    fn next_ballot(&mut self) -> Option<Term> {
        self.election_elapsed_ticks = 0;
        self.randomize_election_timeout();
        let round = ballot_round(self.promised.max(self.highest_seen)) + 1;
        let ballot = ballot(round, self.config.id);
        if ballot > TERM_MAX {
            return None;
        }
        self.fail_reads();
        self.peers.clear();
        self.transfer = None;
        Some(ballot)
    }

    fn start_campaign(&mut self, transfer: bool) {
        let Some(ballot) = self.next_ballot() else {
            return;
        };
        self.run = None;
        self.probe = None;
        self.promised = ballot;
        self.highest_seen = ballot;
        self.persist_hard_state();
        self.ballot = ballot;
        self.set_role(Role::Candidate, None);
        let from = self.log.decided + 1;
        let own: BTreeMap<LogIndex, (Entry, bool)> = self
            .log
            .slice(from, u64::MAX, u64::MAX, usize::MAX)
            .into_iter()
            .map(|entry| (entry.index, (entry, false)))
            .collect();
        self.campaign = Some(Campaign {
            from,
            transfer,
            complete: BTreeSet::from([self.config.id]),
            partial: BTreeMap::new(),
            adopted: own,
        });
        if self.quorum() == 1 {
            self.become_leader();
            return;
        }
        self.send_prepares(ballot, from, transfer, false);
    }

    /// Sends every other voter a prepare (or a probe) for `ballot` from slot `from` on.
    fn send_prepares(&mut self, ballot: Term, from: LogIndex, transfer: bool, probe: bool) {
        for peer in self.voter_peers() {
            self.send(
                peer,
                ballot,
                Body::Prepare {
                    from,
                    transfer,
                    probe,
                },
            );
        }
    }

    /// Asks the voters whether they would promise the next ballot, changing nothing yet.
    fn start_probe(&mut self) {
        let Some(ballot) = self.next_ballot() else {
            return;
        };
        self.campaign = None;
        self.set_role(Role::PreCandidate, None);
        self.probe = Some((ballot, BTreeSet::from([self.config.id])));
        if self.quorum() == 1 {
            self.start_campaign(false);
            return;
        }
        self.send_prepares(ballot, self.log.decided + 1, false, true);
    }

    /// Would this node promise `ballot` now? Not below its promise, and not while it hears a
    /// live leader (or is one), unless the leader asked for the hand-over.
    fn handle_probe(&mut self, from: NodeId, ballot: Term, transfer: bool) {
        let leading = self.role == Role::Leader && self.config.check_quorum;
        let granted = ballot > self.promised && (transfer || !(self.in_leader_lease() || leading));
        let answer_ballot = if ballot > self.promised {
            ballot
        } else {
            self.promised
        };
        self.send(from, answer_ballot, Body::ProbeAnswer { granted });
    }

    fn handle_probe_answer(&mut self, from: NodeId, ballot: Term, granted: bool) {
        self.highest_seen = self.highest_seen.max(ballot);
        let quorum = self.quorum();
        let Some((probed, granted_by)) = self.probe.as_mut() else {
            return;
        };
        if self.role != Role::PreCandidate || ballot != *probed || !granted {
            return;
        }
        granted_by.insert(from);
        if granted_by.len() >= quorum {
            self.start_campaign(false);
        }
    }

    fn handle_prepare(&mut self, from: NodeId, ballot: Term, slot: LogIndex, transfer: bool) {
        self.highest_seen = self.highest_seen.max(ballot);
        if ballot < self.promised {
            self.refuse(from, 0);
            return;
        }
        if ballot > self.promised {
            let leading = self.role == Role::Leader && self.config.check_quorum;
            if !transfer && (self.in_leader_lease() || leading) {
                // A live leader is heard (or is this node, which check-quorum deposes if it
                // loses its majority): a node that was cut off must not depose it.
                return;
            }
            self.promised = ballot;
            self.become_follower(None);
            if self.config.plant_paxos == Some(PlantedBug::PromiseBeforeDurable) {
                self.send_promise(from, ballot, slot);
                self.persist_hard_state();
                return;
            }
            self.persist_hard_state();
        }
        self.send_promise(from, ballot, slot);
    }

    fn send_promise(&mut self, to: NodeId, ballot: Term, slot: LogIndex) {
        let last = self.log.last_index();
        let first = if slot <= last {
            slot.max(self.log.first_index())
        } else {
            slot
        };
        // Bounded by bytes alone: a campaign that needs many round trips may not finish
        // within an election timeout.
        let entries = self
            .log
            .slice(first, u64::MAX, self.config.append_bytes_max, usize::MAX);
        let complete = entries.last().is_none_or(|entry| entry.index == last);
        self.send(
            to,
            ballot,
            Body::Promise {
                decided: self.log.decided,
                from: first,
                entries,
                complete,
            },
        );
    }

    fn handle_promise(
        &mut self,
        from: NodeId,
        ballot: Term,
        decided: LogIndex,
        slot: LogIndex,
        entries: Vec<Entry>,
        complete: bool,
    ) {
        if self.role != Role::Candidate || ballot != self.ballot {
            return;
        }
        let ignore_values = self.config.plant_paxos == Some(PlantedBug::IgnorePromisedValues);
        let Some(campaign) = self.campaign.as_mut() else {
            return;
        };
        if campaign.complete.contains(&from) {
            return;
        }
        let expected = campaign
            .partial
            .get(&from)
            .copied()
            .unwrap_or(campaign.from);
        if slot != expected {
            if slot > expected {
                // The acceptor no longer holds slots this node lacks: a better informed node
                // must lead. Step back and let the election timer pick someone else.
                self.become_follower(None);
            }
            return;
        }
        if !ignore_values {
            for entry in entries.iter() {
                let chosen = entry.index <= decided;
                match campaign.adopted.get(&entry.index) {
                    Some((_, true)) => {}
                    Some((held, false)) if !chosen && held.term >= entry.term => {}
                    _ => {
                        campaign
                            .adopted
                            .insert(entry.index, (entry.clone(), chosen));
                    }
                }
            }
        }
        // A campaign that hears promises is making progress: it is not restarted meanwhile.
        self.election_elapsed_ticks = 0;
        if complete {
            campaign.partial.remove(&from);
            campaign.complete.insert(from);
        } else {
            let next = entries.last().map_or(slot, |entry| entry.index + 1);
            campaign.partial.insert(from, next);
            let transfer = campaign.transfer;
            self.send(
                from,
                ballot,
                Body::Prepare {
                    from: next,
                    transfer,
                    probe: false,
                },
            );
            return;
        }
        if self.campaign.as_ref().map_or(0, |c| c.complete.len()) >= self.quorum() {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        let campaign = self.campaign.take().expect("a candidate campaigns");
        let ballot = self.ballot;
        let from = self.log.decided + 1;
        let last = campaign
            .adopted
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(from - 1);
        let mut entries = Vec::new();
        let mut decided = self.log.decided;
        for index in from..=last {
            let (payload, chosen) = match campaign.adopted.get(&index) {
                Some((entry, chosen)) => (entry.payload.clone(), *chosen),
                None => (EntryPayload::Noop, false),
            };
            if chosen && decided + 1 == index {
                decided = index;
            }
            entries.push(Entry {
                term: ballot,
                index,
                payload,
            });
        }
        self.start_index = last + 1;
        entries.push(Entry {
            term: ballot,
            index: self.start_index,
            payload: EntryPayload::Noop,
        });
        let write = self.log.overwrite(entries);
        self.emit_persist(write);
        self.log.decided = decided;
        self.undecided_bytes = self
            .log
            .slice(decided + 1, u64::MAX, u64::MAX, usize::MAX)
            .iter()
            .map(|entry| entry.payload_bytes() + ENTRY_OVERHEAD_BYTES)
            .sum();
        self.peers = self
            .voter_peers()
            .map(|id| {
                (
                    id,
                    Peer {
                        next: from,
                        ..Peer::default()
                    },
                )
            })
            .collect();
        self.heartbeat_elapsed_ticks = 0;
        self.set_role(Role::Leader, Some(self.config.id));
        if self.quorum() == 1 {
            self.maybe_decide();
        }
    }

    // ----- phase 2 -----

    fn append_as_leader(&mut self, payload: EntryPayload) -> LogId {
        let entry = Entry {
            term: self.ballot,
            index: self.log.last_index() + 1,
            payload,
        };
        let log_id = entry.log_id();
        self.undecided_bytes += entry.payload_bytes() + ENTRY_OVERHEAD_BYTES;
        let write = self.log.overwrite(vec![entry]);
        self.emit_persist(write);
        if self.quorum() == 1 {
            self.maybe_decide();
        }
        log_id
    }

    /// Leader: sends acceptor `to` what it lacks, within its window of accepts in flight.
    fn replicate(&mut self, to: NodeId) {
        let ballot = self.ballot;
        let decided = self.log.decided;
        let read_round = self.read_round;
        let last = self.log.last_index();
        let first_in_memory = self.log.first_index();
        let stored_first = self.log.stored_first;
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        if peer.reading || peer.snapshotting {
            return;
        }
        if peer.heard_ticks >= self.config.election_timeout_ticks {
            // Silent for an election timeout: down, or cut off. Accepts sent now would wait in
            // its link's queue and arrive, stale, after it restarts (read from storage over and
            // over meanwhile); it gets heartbeats only, and replication resumes from its answer.
            return;
        }
        let mut next = peer.next;
        let mut inflight = peer.inflight.len();
        let mut sends = Vec::new();
        let mut read = None;
        while next <= last && inflight < self.config.inflight_messages_max {
            if next < first_in_memory {
                read = Some((next, first_in_memory));
                break;
            }
            let entries = self.log.slice(
                next,
                last + 1,
                self.config.append_bytes_max,
                self.config.append_entries_max,
            );
            let Some(end) = entries.last().map(|entry| entry.index) else {
                break;
            };
            sends.push((next, restamp(entries, ballot), end));
            next = end + 1;
            inflight += 1;
        }
        let peer = self.peers.get_mut(&to).expect("checked above");
        for (_, _, end) in &sends {
            peer.inflight.push_back(*end);
        }
        peer.next = next;
        match read {
            Some((low, _)) if low < stored_first => {
                // Storage no longer holds what the acceptor lacks: it gets the state instead.
                peer.snapshotting = true;
                peer.snapshot_ticks = 0;
                self.outputs.push_back(Output::SendSnapshot { to });
            }
            Some((low, high)) => {
                peer.reading = true;
                self.outputs
                    .push_back(Output::ReadEntries { to, low, high });
            }
            None => {}
        }
        for (first, entries, _) in sends {
            self.send(
                to,
                ballot,
                Body::Accept {
                    first,
                    entries,
                    decided,
                    read_round,
                },
            );
        }
    }

    fn handle_accept(
        &mut self,
        from: NodeId,
        ballot: Term,
        first: LogIndex,
        entries: Vec<Entry>,
        leader_decided: LogIndex,
        read_round: u64,
    ) {
        let below = self.config.plant_paxos == Some(PlantedBug::AcceptBelowPromise);
        if !self.heed_leader(from, ballot, below) {
            return;
        }
        self.leader_read_round = read_round;
        let across_ballots = self.config.plant_paxos == Some(PlantedBug::DecideAcrossBallots);
        let run = self
            .run
            .filter(|run| run.ballot == ballot || across_ballots);
        let continues = run.is_some_and(|run| first <= run.through + 1);
        if !continues && first > self.log.decided + 1 {
            let held = run.map_or(0, |run| run.through);
            self.refuse_with(from, ballot, held);
            return;
        }
        let end = entries.last().map_or(first - 1, |entry| entry.index);
        let fresh: Vec<Entry> = entries
            .into_iter()
            .filter(|entry| entry.index > self.log.decided)
            .collect();
        if !fresh.is_empty() {
            let write = self.log.overwrite(fresh);
            self.emit_persist(write);
        }
        let base = match run {
            Some(run) if continues => run.through,
            _ => self.log.decided,
        };
        let through = base.max(end);
        if self.run.is_none_or(|run| run.ballot != ballot) {
            self.ack_sent = 0;
        }
        self.run = Some(Run { ballot, through });
        let learn_to = if self.config.plant_paxos == Some(PlantedBug::ApplyPastHole) {
            leader_decided.min(self.log.last_index())
        } else {
            leader_decided.min(through)
        };
        if learn_to > self.log.decided {
            self.log.decided = learn_to;
        }
        self.maybe_acknowledge(true);
    }

    /// A leader's accept or snapshot at `ballot`: refused below the promise (unless
    /// `below_promise_ok`, only ever a planted bug), else the promise rises to it, durably, and
    /// this node follows `from`. Returns whether the message is to be taken.
    fn heed_leader(&mut self, from: NodeId, ballot: Term, below_promise_ok: bool) -> bool {
        self.highest_seen = self.highest_seen.max(ballot);
        if ballot < self.promised && !below_promise_ok {
            self.refuse(from, 0);
            return false;
        }
        if ballot > self.promised {
            self.promised = ballot;
            self.persist_hard_state();
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(Some(from));
        }
        self.election_elapsed_ticks = 0;
        true
    }

    /// Acceptor: tells the leader how far it holds the leader's values durably; `always` for
    /// an answer to every accept (heartbeats and read rounds need one).
    fn maybe_acknowledge(&mut self, always: bool) {
        let (Some(run), Some(leader)) = (self.run, self.leader) else {
            return;
        };
        let below_promise = self.config.plant_paxos == Some(PlantedBug::AcceptBelowPromise);
        if self.role != Role::Follower || (run.ballot != self.promised && !below_promise) {
            return;
        }
        let through = run.through.min(self.log.durable());
        if !always && through <= self.ack_sent {
            return;
        }
        self.ack_sent = self.ack_sent.max(through);
        self.send(
            leader,
            run.ballot,
            Body::Accepted {
                through,
                decided: self.log.decided,
                read_round: self.leader_read_round,
            },
        );
    }

    fn handle_accepted(&mut self, from: NodeId, ballot: Term, through: LogIndex, read_round: u64) {
        if self.role != Role::Leader || ballot != self.ballot {
            return;
        }
        let last = self.log.last_index();
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.heard_ticks = 0;
        peer.rearm_snapshot();
        if through.min(last) > peer.matched {
            // Progress; an acknowledgement that moves nothing (a heartbeat's) does not count,
            // or lost accepts would never be noticed.
            peer.stalled_ticks = 0;
        }
        peer.matched = peer.matched.max(through.min(last));
        while peer.inflight.front().is_some_and(|end| *end <= through) {
            peer.inflight.pop_front();
        }
        if peer.next <= peer.matched {
            peer.next = peer.matched + 1;
        }
        if peer.snapshotting && peer.matched + 1 >= self.log.stored_first {
            peer.snapshotting = false;
        }
        if peer.resent_from.is_some_and(|from| from <= peer.matched) {
            peer.resent_from = None;
        }
        if ballot == self.ballot {
            peer.read_round = peer.read_round.max(read_round);
        }
        self.maybe_decide();
        self.confirm_reads();
        self.maybe_send_timeout_now();
    }

    fn handle_refused(
        &mut self,
        from: NodeId,
        ballot: Term,
        decided: LogIndex,
        held_through: LogIndex,
    ) {
        self.highest_seen = self.highest_seen.max(ballot);
        match self.role {
            Role::Leader | Role::Candidate if ballot > self.ballot => {
                // A higher ballot was promised: this one cannot win.
                self.become_follower(None);
            }
            Role::Leader if ballot == self.ballot => {
                let Some(peer) = self.peers.get_mut(&from) else {
                    return;
                };
                peer.heard_ticks = 0;
                peer.rearm_snapshot();
                // Not after `matched`: an acceptor that restarted still holds those values, but
                // no longer knows whose they are, and takes them again from its decided prefix.
                let resume = decided.max(held_through) + 1;
                if peer.resent_from.is_some_and(|from| from <= resume) && !peer.inflight.is_empty()
                {
                    // Accepts sent before the last resend, refused out of order: the resend
                    // already covers them.
                    return;
                }
                peer.stalled_ticks = 0;
                peer.inflight.clear();
                peer.resent_from = Some(resume);
                peer.next = resume;
                if resume >= self.log.stored_first {
                    // What it lacks is still stored: no snapshot needed (any more).
                    peer.snapshotting = false;
                }
            }
            _ => {}
        }
    }

    /// Leader: the slots a majority holds this ballot's values for, durably, are decided.
    fn maybe_decide(&mut self) {
        let decided = self.majority_of(self.log.durable(), |peer| peer.matched);
        if decided > self.log.decided {
            let newly: u64 = self
                .log
                .slice(self.log.decided + 1, decided + 1, u64::MAX, usize::MAX)
                .iter()
                .map(|entry| entry.payload_bytes() + ENTRY_OVERHEAD_BYTES)
                .sum();
            self.undecided_bytes = self.undecided_bytes.saturating_sub(newly);
            self.log.decided = decided;
            if self.log.decided >= self.start_index {
                while let Some(id) = self.reads_waiting_start.pop_front() {
                    self.register_read(id);
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        // Accepts in flight with no progress for this long were lost (a reconnect): resend.
        // Not sooner: a large value takes its time to travel and to be made durable, and an
        // acknowledgement that moves nothing only says the acceptor is alive.
        let stall = self
            .config
            .replication_stall_ticks
            .max(self.config.election_timeout_ticks);
        let snapshot_timeout = self.config.snapshot_timeout_ticks;
        for peer in self.peers.values_mut() {
            peer.heard_ticks = peer.heard_ticks.saturating_add(1);
            if peer.snapshotting {
                peer.snapshot_ticks += 1;
                if peer.snapshot_ticks >= snapshot_timeout && !peer.snapshot_failed {
                    // Lost on the way, or installed without a word back: try again.
                    peer.snapshotting = false;
                }
            }
            if peer.inflight.is_empty() {
                peer.stalled_ticks = 0;
            } else {
                peer.stalled_ticks += 1;
                if peer.stalled_ticks >= stall {
                    // Accepts were lost: start again after what the acceptor acknowledged.
                    peer.stalled_ticks = 0;
                    peer.inflight.clear();
                    peer.resent_from = None;
                    peer.next = peer.matched + 1;
                }
            }
        }
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks {
                self.transfer = None;
            }
        }
        if self.config.check_quorum {
            let heard = 1 + self
                .peers
                .values()
                .filter(|peer| peer.heard_ticks < self.config.election_timeout_ticks)
                .count();
            if heard < self.quorum() {
                self.become_follower(None);
                return;
            }
        }
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    fn broadcast_heartbeat(&mut self) {
        // From what the acceptor acknowledged: it holds the leader's values up to there, so the
        // heartbeat follows them even while accepts are in flight.
        let peers: Vec<(NodeId, LogIndex)> = self
            .peers
            .iter()
            .map(|(id, peer)| (*id, peer.next.min(peer.matched + 1)))
            .collect();
        for (to, next) in peers {
            self.send(
                to,
                self.ballot,
                Body::Accept {
                    first: next,
                    entries: Vec::new(),
                    decided: self.log.decided,
                    read_round: self.read_round,
                },
            );
        }
    }

    fn maybe_send_timeout_now(&mut self) {
        let Some(target) = self.transfer.as_ref().map(|t| t.target) else {
            return;
        };
        if self
            .peers
            .get(&target)
            .is_some_and(|peer| peer.matched >= self.log.last_index())
        {
            self.send(target, self.ballot, Body::TimeoutNow);
        }
    }

    // ----- reads -----

    fn register_read(&mut self, id: ReadId) {
        self.read_round += 1;
        self.reads_waiting_round
            .push_back((id, self.log.decided, self.read_round));
        if self.quorum() == 1 {
            self.read_round_confirmed = self.read_round;
            self.confirm_reads();
        } else {
            self.broadcast_heartbeat();
        }
    }

    /// The highest value a majority of the voters reach: this node's `own` and each
    /// acceptor's `value`.
    fn majority_of(&self, own: u64, value: impl Fn(&Peer) -> u64) -> u64 {
        let mut values: Vec<u64> = self
            .peers
            .iter()
            .filter(|(id, _)| self.membership.voters.contains(id))
            .map(|(_, peer)| value(peer))
            .chain(std::iter::once(own))
            .collect();
        majority_value(&mut values, self.quorum())
    }

    fn confirm_reads(&mut self) {
        let confirmed = self.majority_of(self.read_round, |peer| peer.read_round);
        self.read_round_confirmed = self.read_round_confirmed.max(confirmed);
        while let Some(&(id, index, round)) = self.reads_waiting_round.front() {
            if round > self.read_round_confirmed {
                break;
            }
            self.reads_waiting_round.pop_front();
            self.reads_waiting_apply.push_back((id, index));
        }
    }

    fn fail_reads(&mut self) {
        let waiting: Vec<ReadId> = self
            .reads_waiting_start
            .drain(..)
            .chain(self.reads_waiting_round.drain(..).map(|(id, _, _)| id))
            .chain(self.reads_waiting_apply.drain(..).map(|(id, _)| id))
            .collect();
        for id in waiting {
            self.outputs.push_back(Output::ReadResult {
                id,
                result: Err(ReadError::LeadershipLost),
            });
        }
    }

    // ----- roles -----

    fn become_follower(&mut self, leader: Option<NodeId>) {
        if self.role == Role::Leader {
            self.fail_reads();
        }
        self.campaign = None;
        self.probe = None;
        self.peers.clear();
        self.transfer = None;
        self.ballot = 0;
        self.election_elapsed_ticks = 0;
        self.randomize_election_timeout();
        self.set_role(Role::Follower, leader);
    }

    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.role == Role::Follower
            && self.leader.is_some()
            && self.election_elapsed_ticks < self.config.election_timeout_ticks
    }

    fn set_role(&mut self, role: Role, leader: Option<NodeId>) {
        self.role = role;
        self.leader = leader;
    }

    fn randomize_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks as u64;
        self.election_timeout_randomized_ticks = (base + self.rng.below(base)) as u32;
    }

    fn is_voter(&self) -> bool {
        self.membership.voters.contains(&self.config.id)
    }

    fn quorum(&self) -> usize {
        self.membership.voters.len() / 2 + 1
    }

    fn voter_peers(&self) -> impl Iterator<Item = NodeId> + use<> {
        let own = self.config.id;
        let voters: Vec<NodeId> = self.membership.voters.iter().copied().collect();
        voters.into_iter().filter(move |id| *id != own)
    }

    // ----- validation -----

    fn validate_message(&self, from: NodeId, message: &Message) -> Result<(), InvalidMessage> {
        if from == self.config.id {
            return Err(InvalidMessage::FromSelf);
        }
        if !self.membership.voters.contains(&from) {
            return Err(InvalidMessage::NotAVoter(from));
        }
        if !message.is_paxos() && message.body != Body::TimeoutNow {
            return Err(InvalidMessage::OtherEngine("raft"));
        }
        if let Some(field) = out_of_range_field(message) {
            return Err(InvalidMessage::OutOfRange(field));
        }
        let (first, entries) = match &message.body {
            Body::Accept { first, entries, .. } => (*first, entries),
            Body::Promise { from, entries, .. } => (*from, entries),
            _ => return Ok(()),
        };
        if first == 0 {
            return Err(InvalidMessage::MalformedAppend("slot 0 does not exist"));
        }
        for (expected, entry) in (first..).zip(entries) {
            if entry.index != expected {
                return Err(InvalidMessage::MalformedAppend("slots are not contiguous"));
            }
            if entry.term == 0 || entry.term > message.term {
                return Err(InvalidMessage::MalformedAppend(
                    "a value at a ballot above the message's",
                ));
            }
            if matches!(message.body, Body::Accept { .. }) && entry.term != message.term {
                return Err(InvalidMessage::MalformedAppend(
                    "an accepted value not at the leader's ballot",
                ));
            }
            if matches!(entry.payload, EntryPayload::Config(_)) {
                return Err(InvalidMessage::MalformedAppend(
                    "a membership change, which this engine does not make",
                ));
            }
        }
        Ok(())
    }

    // ----- bookkeeping -----

    fn finish_input(&mut self) {
        let target = self.log.decided.min(self.log.durable());
        while self.log.applied < target {
            let entries = self.log.slice(
                self.log.applied + 1,
                target + 1,
                self.config.apply_bytes_max,
                usize::MAX,
            );
            let last = entries.last().expect("non-empty range").index;
            let resolved = {
                let remaining = self.pending_proposals.split_off(&(last + 1));
                std::mem::replace(&mut self.pending_proposals, remaining)
            };
            let mut results = Vec::new();
            for (index, proposals) in resolved {
                let chosen = self.log.entry(index).expect("applied slot is held");
                for (payload, id) in proposals {
                    let result = match &chosen.payload {
                        EntryPayload::Normal(value) if *value == payload => {
                            Ok(LogId::new(chosen.term, index))
                        }
                        _ => Err(ProposalLost::Overwritten { index }),
                    };
                    results.push(Output::ProposalResult { id, result });
                }
            }
            self.outputs.push_back(Output::Apply(entries));
            self.log.applied = last;
            self.outputs.extend(results);
        }
        self.log.trim(self.config.log_window_bytes_max);
        while let Some(&(id, index)) = self.reads_waiting_apply.front() {
            if index > self.log.applied {
                break;
            }
            self.reads_waiting_apply.pop_front();
            self.outputs.push_back(Output::ReadResult {
                id,
                result: Ok(index),
            });
        }
        let now = (self.role, self.promised, self.leader);
        if self.last_reported_role != Some(now) {
            self.last_reported_role = Some(now);
            self.outputs.push_back(Output::RoleChanged {
                role: self.role,
                term: self.promised,
                leader: self.leader,
            });
        }
        if self.config.invariant_checks || cfg!(debug_assertions) {
            self.log.validate();
            assert!(
                (self.log.first_index()..=self.log.last_index())
                    .filter_map(|index| self.log.entry(index))
                    .all(|entry| entry.term <= self.promised),
                "a value accepted above the promise"
            );
            assert!(
                self.pending_proposals
                    .keys()
                    .all(|index| *index > self.log.applied),
                "a proposal at an applied slot has its result"
            );
        }
    }

    fn refuse(&mut self, to: NodeId, held_through: LogIndex) {
        self.refuse_with(to, self.promised, held_through);
    }

    fn refuse_with(&mut self, to: NodeId, ballot: Term, held_through: LogIndex) {
        self.send(
            to,
            ballot,
            Body::Refused {
                decided: self.log.decided,
                held_through,
            },
        );
    }

    fn emit_persist(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first().map(|entry| entry.index) else {
            return;
        };
        if let Some(Output::PersistEntries(pending)) = self.outputs.back_mut()
            && let Some(pending_first) = pending.first().map(|entry| entry.index)
            && pending_first <= first
            && first <= pending_first + pending.len() as u64
        {
            pending.truncate((first - pending_first) as usize);
            pending.extend(entries);
            self.log.count_entry_write(first, true);
            return;
        }
        self.log.count_entry_write(first, false);
        self.outputs.push_back(Output::PersistEntries(entries));
    }

    fn persist_hard_state(&mut self) {
        self.log.count_sync_write();
        self.outputs
            .push_back(Output::PersistHardState(self.hard_state()));
    }

    fn send(&mut self, to: NodeId, ballot: Term, body: Body) {
        let message = Message { term: ballot, body };
        self.outputs.push_back(Output::Send { to, message });
    }
}

/// `entries` as the leader of `ballot` proposes them: every value at its ballot.
fn restamp(mut entries: Vec<Entry>, ballot: Term) -> Vec<Entry> {
    for entry in &mut entries {
        entry.term = ballot;
    }
    entries
}
