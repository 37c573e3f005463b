//! The node: the consensus core, the batch state machine and every client's bookkeeping, as one
//! deterministic state machine. See the crate documentation for the calling order.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use ordo_common::batch::{Batch, BatchId, CommittedBatch};
use ordo_common::client::COORD_LIST_ROWS_MAX;
use ordo_common::client::{
    BusyCode, ClientRequest, ClientResponse, MemberInfo, MemberList, NodeRole, NodeStatus,
    RefusedCode,
};
use ordo_common::coord::{CoordRefusal, MutexKind, SESSION_TTL_MS_MAX, SessionId};
use ordo_common::{
    ClusterId, EngineKind, Entry, EntryPayload, HardState, LogId, LogIndex, NodeId, Term,
};
use ordo_core::state::{
    BatchState, Command, CoordAnswer, CoordOp, IdStatus, Registered, RegistryLimits, StateTables,
    Verdict, content_hash,
};
use ordo_core::{
    Engine, InvalidMessage, MembershipChange, MembershipError, Message, ProposalId, ProposalLost,
    ProposeError, ReadError, ReadId, Restored, Role, TransferError,
};

use crate::sessions::{KEEPALIVES_PENDING_MAX, LOCK_WAITS_MAX, OBSERVERS_MAX, Sessions};
use crate::storage::{Install, SnapshotState, StateUpdate, StoreState, StoredTables, WriteBatch};
use ordo_common::limits::OUTCOME_BYTES_MAX;

/// The runtime's name for one client request, echoed in the request's [`Output::Reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A write's place in the order the node asked for writes: the first [`Output::Persist`] is
/// write 1, and each later one is the next number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// What a node needs to know that does not change while it runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The consensus core's configuration (this node's id and the voters among it).
    pub raft: ordo_core::Config,
    /// The consensus engine the cluster runs (fixed at bootstrap).
    pub engine: EngineKind,
    /// Every bootstrap voter's address, for `NotLeader` hints and status (the membership's
    /// addresses take precedence once one is in force).
    pub addresses: BTreeMap<NodeId, String>,
    /// The cluster this node belongs to (reported in member listings).
    pub cluster: ClusterId,
    /// What bounds the idempotency registry (see `ordo_core::state`).
    pub registry: RegistryLimits,
    /// Milliseconds between two ticks: how a leader turns session TTLs into ticks.
    pub tick_ms: u64,
    /// How far apart any two coordinators' clocks may be, in ms: a new leader adds it to what
    /// the log's time says remains of each session's TTL (the log's times come from earlier
    /// leaders' clocks).
    pub clock_skew_ms: u64,
}

/// What storage kept when the node last stopped.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The applied entry's id (the entry `entries` follow), or (0, 0).
    pub applied: LogId,
    /// The durable entries after the applied one: at most what was not yet applied, which
    /// the node applies again. Older entries stay on disk, read back when needed.
    pub entries: Vec<Entry>,
    /// The lowest index the log holds.
    pub first_index: LogIndex,
    /// The state the entries through `applied` made.
    pub tables: StateTables,
}

/// A storage report: every write up to and including `write` is durable, and the log now ends
/// at `last_log_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    pub write: WriteId,
    pub last_log_id: Option<LogId>,
    /// The lowest index the log holds after those writes (retention purges below it).
    pub first_index: LogIndex,
}

/// What the node asks its runtime to do, in the order it must be done.
// A `Persist` is larger than the other variants, but each output is made once and moved once to
// the runtime: boxing it would cost an allocation per write to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make `batch` durable, after every earlier write and before every later one; report it
    /// with [`Node::handle_durable`]. When `sync` is set the write must be durable **before any
    /// later output is carried out** (a term or vote the node is about to speak about);
    /// otherwise it may complete in the background.
    Persist {
        write: WriteId,
        batch: WriteBatch,
        sync: bool,
    },
    /// Send a message to a peer. Best effort.
    Send { to: NodeId, message: Message },
    /// Answer a client request.
    Reply {
        request: RequestId,
        response: ClientResponse,
    },
    /// Batches up to `seq` are applied and durable on this node: subscribers may read them.
    Servable { seq: u64 },
    /// Role, term or known leader changed (logs, metrics).
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
    /// Read entries `[low, high)` back from storage, with the term of entry `low - 1`, for
    /// follower `to`, and hand them to [`Node::handle_entries_read`] (bounded by the append
    /// budget: fewer is fine).
    ReadEntries {
        to: NodeId,
        low: LogIndex,
        high: LogIndex,
    },
    /// Send follower `to` a snapshot of this node's state machine as it is now
    /// ([`crate::storage::LogRead::snapshot`]), sent in `term`, and report the transfer with
    /// [`Node::handle_snapshot_report`].
    SendSnapshot { to: NodeId, term: Term },
    /// The node cannot go on; the runtime must stop it. Nothing follows.
    Halt(Fault),
}

/// Why a node stopped itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// A committed entry holds bytes that are not a command this build knows: the log is
    /// corrupt, or was written by a newer version.
    #[error(
        "committed entry {index} does not decode as a command ({detail}); the log is corrupt or \
         was written by a newer ordo: stop, then run the ordo release that wrote it"
    )]
    CorruptEntry { index: LogIndex, detail: String },
    /// A stored state record does not decode.
    #[error("stored state is corrupt ({detail}); stop, then run the ordo release that wrote it")]
    CorruptState { detail: String },
}

/// Why a node could not start from what storage kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Core(#[from] ordo_core::StartError),
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// A node and its members as an observer sees them: see [`Node::view`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub status: NodeStatus,
    pub members: Vec<MemberView>,
}

/// One member in a [`NodeView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub address: String,
    pub voter: bool,
    /// Its role as this node believes it ("leader", "follower", "learner"; itself: its own
    /// role's name).
    pub role: &'static str,
    /// Heard from within the last election timeout; `None` where this node cannot know (a
    /// follower hears only from its leader).
    pub reachable: Option<bool>,
    /// The last index its log is known to hold (known to the leader, and for itself).
    pub match_index: Option<LogIndex>,
    /// Entries it lacks of the leader's log (known to the leader only).
    pub lag_entries: Option<u64>,
}

/// One coordinator, without I/O. See the crate documentation.
#[derive(Debug)]
pub struct Node {
    engine: Engine,
    /// The writes asked for on the engine's behalf (its persist outputs), not yet durable, and
    /// how many of them were reported durable so far: the engine's own count of its writes.
    engine_writes: VecDeque<WriteId>,
    engine_writes_durable: u64,
    state: BatchState,
    config: NodeConfig,
    /// Submits and raw proposals waiting for their entry to apply.
    proposals: HashMap<ProposalId, RequestId>,
    /// Queries waiting for their linearizable read.
    reads: HashMap<ReadId, (RequestId, ReadQuery)>,
    next_proposal: u64,
    next_read: u64,
    /// The last write asked for, and the last one reported durable.
    last_write: WriteId,
    durable_write: WriteId,
    /// Answers for the entries of the latest apply, by index.
    recent_answers: HashMap<LogIndex, ClientResponse>,
    /// State writes not yet durable, with the seq each makes servable.
    state_writes: VecDeque<(WriteId, u64)>,
    servable_seq: u64,
    outputs: VecDeque<Output>,
    ticks: u64,
    /// The runtime's wall clock at the latest tick (ms since the Unix epoch), never going back:
    /// what a leader stamps its proposals with.
    clock_ms: u64,
    /// The tick at which each peer was last heard from.
    last_heard: BTreeMap<NodeId, u64>,
    /// Ticks since stopping began.
    stopping_ticks: Option<u64>,
    halted: bool,
    /// See [`Node::set_storage_full`].
    storage_full: bool,
    /// See [`Node::set_tick_gap_max_us`].
    tick_gap_max_us: u64,
    /// See [`NodeStatus::late_not_leader_refusals`].
    late_not_leader_refusals: u64,
    /// See [`NodeStatus::applied_stamp_ms`].
    applied_stamp_ms: u64,
    /// A snapshot handed to the core, kept until the core decides to install it.
    received_snapshot: Option<(LogId, SnapshotState, BatchState)>,
    /// Sessions, locks and elections: the leader's TTL clock and the clients waiting.
    sessions: Sessions,
    /// Acquires of the latest apply that wait for their grant, by index.
    recent_waits: HashMap<LogIndex, (MutexKind, String, SessionId)>,
    /// Sessions a keep-alive of the latest apply found gone, by index.
    recent_keepalives: HashMap<LogIndex, Vec<SessionId>>,
}

/// Most locks one wake entry names (the rest wait for the next).
const WAKES_PER_ENTRY_MAX: usize = 256;

/// What a linearizable read answers once the read index is applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ReadQuery {
    BatchStatus(BatchId),
    Observe { name: String, after: u64 },
    CoordList,
}

impl Node {
    // ----- construction and getters -----

    /// Starts a node from what storage kept: the core from the log and the term and vote, the
    /// batch state from its tables as of the applied index (no replay). `seed` drives the
    /// core's election timeouts.
    pub fn new(config: NodeConfig, recovered: Recovered, seed: u64) -> Result<Self, StartError> {
        let state = BatchState::restore(config.registry, recovered.tables).map_err(|error| {
            Fault::CorruptState {
                detail: format!("sessions, locks and elections: {error}"),
            }
        })?;
        let restored = Restored {
            hard_state: recovered.hard_state,
            prev_log_id: recovered.applied,
            entries: recovered.entries,
            applied: recovered.applied.index,
            stored_first: recovered.first_index,
            membership: state.coord().membership().cloned(),
        };
        let engine = Engine::new(config.engine, config.raft.clone(), restored, seed)?;
        let servable_seq = state.last_seq();
        Ok(Self {
            engine,
            engine_writes: VecDeque::new(),
            engine_writes_durable: 0,
            state,
            config,
            proposals: HashMap::new(),
            reads: HashMap::new(),
            next_proposal: 1,
            next_read: 1,
            last_write: WriteId(0),
            durable_write: WriteId(0),
            recent_answers: HashMap::new(),
            state_writes: VecDeque::new(),
            servable_seq,
            outputs: VecDeque::new(),
            ticks: 0,
            clock_ms: 0,
            last_heard: BTreeMap::new(),
            stopping_ticks: None,
            storage_full: false,
            tick_gap_max_us: 0,
            late_not_leader_refusals: 0,
            applied_stamp_ms: 0,
            halted: false,
            received_snapshot: None,
            sessions: Sessions::default(),
            recent_waits: HashMap::new(),
            recent_keepalives: HashMap::new(),
        })
    }

    /// The membership a snapshot without one was taken under: the bootstrap voters (no
    /// configuration entry had applied yet).
    fn bootstrap_membership(&self) -> ordo_common::Membership {
        ordo_common::Membership {
            voters: self.config.raft.voters.iter().copied().collect(),
            ..Default::default()
        }
    }

    pub fn id(&self) -> NodeId {
        self.engine.id()
    }

    /// The consensus engine, for observers (status pages, the simulator's checker).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The batch state as applied here (possibly ahead of what is durable).
    pub fn batch_state(&self) -> &BatchState {
        &self.state
    }

    /// The highest seq subscribers may read from this node: applied and durable.
    pub fn servable_seq(&self) -> u64 {
        self.servable_seq
    }

    /// This node's view, as `ordo status` shows it.
    pub fn status(&self) -> NodeStatus {
        let status = self.engine.status();
        let recent = u64::from(self.config.raft.election_timeout_ticks);
        NodeStatus {
            id: status.id,
            address: self.address(status.id).unwrap_or_default(),
            role: role_name(status.role),
            term: status.term,
            leader: status.leader,
            last_index: status.last_log_id.index,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            durable_index: status.durable_index,
            reachable_peers: self
                .last_heard
                .iter()
                .filter(|(_, heard)| self.ticks - **heard < recent)
                .map(|(id, _)| *id)
                .collect(),
            storage_full: self.storage_full,
            tick_gap_max_us: self.tick_gap_max_us,
            late_not_leader_refusals: self.late_not_leader_refusals,
            applied_stamp_ms: self.applied_stamp_ms,
            engine: self.engine.kind(),
        }
    }

    /// What an observer (the node's HTTP console, its metrics) sees of the node and of every
    /// member it knows of. A leader knows each member's progress; a follower knows only whom it
    /// heard from (the leader), so what it cannot know is `None`.
    pub fn view(&self) -> NodeView {
        let status = self.status();
        let membership = self.engine.membership();
        let leading = self.engine.role() == Role::Leader;
        let recent = u64::from(self.config.raft.election_timeout_ticks);
        let members = membership
            .members()
            .map(|id| {
                let own = id == self.id();
                let heard = self
                    .last_heard
                    .get(&id)
                    .is_some_and(|tick| self.ticks - tick < recent);
                let voter = membership.voters.contains(&id);
                let role = if own {
                    status.role.as_str()
                } else if status.leader == Some(id) {
                    "leader"
                } else if voter {
                    "follower"
                } else {
                    "learner"
                };
                let matched = if own {
                    Some(status.last_index)
                } else if leading {
                    Some(self.engine.matched(id).unwrap_or(0))
                } else {
                    None
                };
                MemberView {
                    id,
                    address: self.address(id).unwrap_or_default(),
                    voter,
                    role,
                    reachable: (own || leading || status.leader == Some(id))
                        .then_some(own || heard),
                    match_index: matched,
                    lag_entries: matched
                        .filter(|_| leading)
                        .map(|matched| status.last_index.saturating_sub(matched)),
                }
            })
            .collect();
        NodeView { status, members }
    }

    /// The longest recent gap between ticks, as the runtime measured it (status reports it).
    pub fn set_tick_gap_max_us(&mut self, gap_us: u64) {
        self.tick_gap_max_us = gap_us;
    }

    /// Whether this node's disk is below its free-space watermark (or a write found it full).
    /// While it is, proposals are refused with [`BusyCode::StorageFull`]; everything else —
    /// replication of what was already accepted, elections, status, reads — goes on.
    pub fn set_storage_full(&mut self, full: bool) {
        self.storage_full = full;
    }

    /// Whether a stop that [`Node::stop`] began is complete: leadership is handed over (or
    /// was never held), or two election timeouts passed trying.
    pub fn is_stopped(&self) -> bool {
        let patience = 2 * u64::from(self.config.raft.election_timeout_ticks);
        self.stopping_ticks
            .is_some_and(|ticks| self.engine.role() != Role::Leader || ticks > patience)
    }

    // ----- outputs -----

    /// The next thing for the runtime to do, in order. Call until `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.outputs.pop_front() {
                return Some(output);
            }
            if self.halted {
                return None;
            }
            let output = self.engine.poll_output()?;
            self.translate(output);
        }
    }

    // ----- inputs -----

    /// One unit of time has passed; the wall clock reads `now_ms` (ms since the Unix epoch).
    /// The node never reads a clock: this is the only time it knows, and it uses it only to
    /// stamp proposals (every decision reads the stamps, through the log).
    pub fn tick(&mut self, now_ms: u64) {
        if self.halted {
            return;
        }
        self.ticks += 1;
        self.clock_ms = self.clock_ms.max(now_ms);
        if let Some(ticks) = &mut self.stopping_ticks {
            *ticks += 1;
        }
        self.engine.tick();
        if self.engine.role() == Role::Leader && self.stopping_ticks.is_none() {
            self.lead_sessions();
        }
    }

    /// A message from peer `from`, as the transport authenticated it.
    pub fn handle_message(&mut self, from: NodeId, message: Message) -> Result<(), InvalidMessage> {
        if self.halted {
            return Ok(());
        }
        self.engine.handle_message(from, message)?;
        self.last_heard.insert(from, self.ticks);
        Ok(())
    }

    /// A client's request. Every request gets exactly one [`Output::Reply`], now or later
    /// (at the latest from [`Node::abandon`]).
    pub fn handle_request(&mut self, request: RequestId, body: ClientRequest) {
        self.handle_request_within(request, body, None)
    }

    /// [`Node::handle_request`] for a caller whose submits may create new topics only within
    /// `quota`.
    pub fn handle_request_within(
        &mut self,
        request: RequestId,
        body: ClientRequest,
        quota: Option<&TopicQuota>,
    ) {
        if let (ClientRequest::Submit { batch }, Some(quota)) = (&body, quota)
            && let Some(refusal) = self.topic_quota_refusal(batch, quota)
        {
            return self.reply(request, refusal);
        }
        let response = match body {
            ClientRequest::Hello => ClientResponse::Welcome { node: self.id() },
            ClientRequest::Status => ClientResponse::Status(Box::new(self.status())),
            ClientRequest::Propose { payload } => {
                return self.propose(request, Command::Raw(payload));
            }
            ClientRequest::Submit { batch } => match batch.validate() {
                // Surely refused at apply: answer now, without a round through the log.
                Ok(()) if self.state.is_beyond_horizon(&batch.id) => {
                    beyond_horizon(self.state.floor_ms())
                }
                Ok(()) => {
                    let stamp_ms = self.clock_ms;
                    return self.propose(request, Command::Batch { batch, stamp_ms });
                }
                Err(error) => ClientResponse::Invalid(error),
            },
            ClientRequest::BatchStatus { id } => {
                return self.read(request, ReadQuery::BatchStatus(id));
            }
            ClientRequest::OpenSession {
                session,
                ttl_ms,
                owner,
            } => {
                let min_ms = self.session_ttl_min_ms();
                if ttl_ms < min_ms || ttl_ms > SESSION_TTL_MS_MAX {
                    ClientResponse::CoordRefused(CoordRefusal::TtlOutOfRange {
                        ttl_ms,
                        min_ms,
                        max_ms: SESSION_TTL_MS_MAX,
                    })
                } else {
                    let op = CoordOp::Open {
                        session,
                        owner,
                        ttl_ms,
                    };
                    return self.propose_coord(request, op);
                }
            }
            ClientRequest::KeepAlive { session } => {
                if self.engine.role() != Role::Leader {
                    self.not_leader(self.engine.leader())
                } else if self.sessions.keepalives.len() >= KEEPALIVES_PENDING_MAX {
                    busy(
                        BusyCode::Backpressure,
                        "too many keep-alives pending; retry",
                    )
                } else {
                    self.sessions.keepalives.push((request, session));
                    return;
                }
            }
            ClientRequest::CloseSession { session } => {
                return self.propose_coord(request, CoordOp::Close { session });
            }
            ClientRequest::Acquire {
                kind,
                name,
                session,
                value,
                lock_delay_ms,
            } => {
                let op = CoordOp::Acquire {
                    kind,
                    name,
                    session,
                    value,
                    lock_delay_ms,
                };
                return self.propose_coord(request, op);
            }
            ClientRequest::Release {
                kind,
                name,
                session,
            } => {
                let op = CoordOp::Release {
                    kind,
                    name,
                    session,
                };
                return self.propose_coord(request, op);
            }
            ClientRequest::Proclaim {
                name,
                session,
                epoch,
                value,
            } => {
                let op = CoordOp::Proclaim {
                    name,
                    session,
                    epoch,
                    value,
                };
                return self.propose_coord(request, op);
            }
            ClientRequest::Observe {
                name,
                after_revision,
            } => {
                let after = after_revision;
                return self.read(request, ReadQuery::Observe { name, after });
            }
            ClientRequest::CoordList => return self.read(request, ReadQuery::CoordList),
            ClientRequest::MemberList => self.member_list(),
            ClientRequest::MemberChange { change } => {
                return self.member_change(request, change);
            }
            ClientRequest::Subscribe { .. } | ClientRequest::SnapshotSave => {
                ClientResponse::Refused {
                    code: RefusedCode::Unsupported,
                    reason: "subscriptions and snapshot saves are streamed by the transport, \
                             not answered by the node"
                        .into(),
                }
            }
        };
        self.reply(request, response);
    }

    /// Storage made writes durable (see [`Durable`]). Reports may cover several writes, arrive
    /// late, and repeat; they never go back.
    pub fn handle_durable(&mut self, report: Durable) {
        assert!(
            report.write <= self.last_write,
            "write {:?} reported durable, but the last write asked for is {:?}",
            report.write,
            self.last_write
        );
        while self
            .engine_writes
            .front()
            .is_some_and(|write| *write <= report.write)
        {
            self.engine_writes.pop_front();
            self.engine_writes_durable += 1;
        }
        self.engine
            .handle_durable(report.last_log_id, self.engine_writes_durable);
        self.engine.handle_purged(report.first_index);
        self.durable_write = self.durable_write.max(report.write);
        let mut servable = None;
        while let Some(&(write, seq)) = self.state_writes.front() {
            if write > self.durable_write {
                break;
            }
            self.state_writes.pop_front();
            servable = Some(seq);
        }
        if let Some(seq) = servable {
            assert!(seq >= self.servable_seq, "the servable seq went back");
            assert!(seq <= self.state.last_seq(), "servable beyond applied");
            self.servable_seq = seq;
            self.outputs.push_back(Output::Servable { seq });
        }
    }

    /// Storage read the entries an [`Output::ReadEntries`] asked for: the term of entry
    /// `low - 1` and the entries, or `Err` with the log's first index when they were purged.
    pub fn handle_entries_read(
        &mut self,
        to: NodeId,
        low: LogIndex,
        read: Result<(Term, Vec<Entry>), LogIndex>,
    ) {
        if !self.halted {
            self.engine.handle_entries_read(to, low, read);
        }
    }

    /// The snapshot an [`Output::SendSnapshot`] asked for reached follower `to` whole
    /// (`delivered`), or could not.
    pub fn handle_snapshot_report(&mut self, to: NodeId, delivered: bool) {
        if !self.halted {
            self.engine.handle_snapshot_report(to, delivered);
        }
    }

    /// A snapshot from leader `from`, sent in `term`, arrived whole and verified. The node
    /// installs it (an [`Output::Persist`] with the install, `sync`) if it carries it past its
    /// commit index; a snapshot whose tables do not decode halts the node.
    pub fn handle_snapshot(&mut self, from: NodeId, term: Term, snapshot: SnapshotState) {
        if self.halted {
            return;
        }
        let applied = snapshot.applied;
        let store_state = StoreState {
            last_seq: snapshot.last_seq,
            log_time_ms: snapshot.log_time_ms,
            registry_floor_ms: snapshot.registry_floor_ms,
            ..StoreState::default()
        };
        let stored = StoredTables {
            offsets: snapshot.offsets.clone(),
            registry: snapshot.registry.clone(),
            coord: snapshot.coord.clone(),
        };
        let restored = recovered_tables(&store_state, stored).and_then(|tables| {
            BatchState::restore(self.config.registry, tables).map_err(|error| Fault::CorruptState {
                detail: format!("snapshot's sessions, locks and elections: {error}"),
            })
        });
        let restored = match restored {
            Ok(restored) => restored,
            Err(fault) => return self.halt(fault),
        };
        let membership = restored
            .coord()
            .membership()
            .cloned()
            .unwrap_or_else(|| self.bootstrap_membership());
        self.received_snapshot = Some((applied, snapshot, restored));
        self.engine.handle_snapshot(from, term, applied, membership);
        if self.engine.applied_index() != applied.index {
            // Declined (stale, or nothing new): nothing to keep.
            self.received_snapshot = None;
        }
    }

    /// Proposes a membership change (leader only): the outcome is the configuration entry
    /// committing, which [`Node::raft`]'s membership then shows.
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogId, MembershipError> {
        if self.halted || self.stopping_ticks.is_some() {
            return Err(MembershipError::NotLeader { leader_hint: None });
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        self.engine.propose_membership(id, change)
    }

    /// Campaign now, as if the election timeout had fired.
    pub fn campaign(&mut self) {
        self.engine.campaign();
    }

    /// Hands leadership to `target`, or to the most up-to-date follower.
    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        self.engine.transfer_leadership(target)
    }

    /// Begins a graceful stop: new proposals are refused, and a leader hands leadership to
    /// its most up-to-date follower. Returns the transfer's target, if one started. Keep
    /// driving the node until [`Node::is_stopped`].
    pub fn stop(&mut self) -> Result<Option<NodeId>, TransferError> {
        if self.stopping_ticks.is_some() {
            return Ok(None);
        }
        self.stopping_ticks = Some(0);
        if self.engine.role() != Role::Leader {
            return Ok(None);
        }
        self.engine.transfer_leadership(None).map(Some)
    }

    /// The runtime is about to drop the node: answers every request still waiting with a
    /// `Busy` saying whether its outcome is unknown.
    pub fn abandon(&mut self) {
        let mut proposals: Vec<_> = self.proposals.drain().collect();
        proposals.sort();
        for (_, request) in proposals {
            let response = busy(
                BusyCode::OutcomeUnknown,
                "node stopped before the outcome was known; check with status",
            );
            self.reply(request, response);
        }
        let mut reads: Vec<_> = self.reads.drain().collect();
        reads.sort();
        for (_, (request, _)) in reads {
            self.reply(request, busy(BusyCode::ReadLost, "node stopped; retry"));
        }
        for request in self.sessions.drain() {
            self.reply(request, busy(BusyCode::Stopping, "node stopped; retry"));
        }
    }

    // ----- client requests -----

    fn propose(&mut self, request: RequestId, command: Command) {
        if self.stopping_ticks.is_some() {
            let response = busy(
                BusyCode::Stopping,
                "node is stopping; retry at the new leader",
            );
            return self.reply(request, response);
        }
        if self.storage_full && self.engine.role() == Role::Leader {
            let response = busy(
                BusyCode::StorageFull,
                format!(
                    "node {}'s disk is below its free-space watermark \
                     (storage.free_space_min); proposals resume when space is freed",
                    self.id()
                ),
            );
            return self.reply(request, response);
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        match self.engine.propose(id, Bytes::from(command.encode())) {
            Ok(_) => {
                self.proposals.insert(id, request);
            }
            Err(ProposeError::NotLeader { leader_hint }) => {
                self.late_not_leader_refusals += 1;
                let response = self.not_leader(leader_hint);
                self.reply(request, response);
            }
            Err(error @ ProposeError::TooLarge { .. }) => {
                let response = ClientResponse::Refused {
                    code: RefusedCode::TooLarge,
                    reason: error.to_string(),
                };
                self.reply(request, response);
            }
            Err(error @ ProposeError::Backpressure { .. }) => {
                self.reply(request, busy(BusyCode::Backpressure, error));
            }
            Err(error @ ProposeError::TransferInProgress) => {
                self.reply(request, busy(BusyCode::TransferInProgress, error));
            }
        }
    }

    /// Proposes a coordination op, stamped with this node's clock, if its sizes are valid.
    fn propose_coord(&mut self, request: RequestId, op: CoordOp) {
        if let Err(refusal) = ordo_core::state::coord::validate(&op) {
            return self.reply(request, ClientResponse::CoordRefused(refusal));
        }
        let stamp_ms = self.clock_ms;
        self.propose(request, Command::Coord { op, stamp_ms });
    }

    /// A proposal of the leader's own (an expiry, a wake, gathered keep-alives); `None` if it
    /// could not be proposed now.
    fn propose_own(&mut self, op: CoordOp) -> Option<ProposalId> {
        if self.storage_full {
            return None;
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        let command = Command::Coord {
            op,
            stamp_ms: self.clock_ms,
        };
        self.engine
            .propose(id, Bytes::from(command.encode()))
            .ok()
            .map(|_| id)
    }

    /// The shortest session TTL this node accepts: three election timeouts, so that a session
    /// outlives a failover, and never below the absolute minimum.
    fn session_ttl_min_ms(&self) -> u64 {
        let election_ms = u64::from(self.config.raft.election_timeout_ticks) * self.config.tick_ms;
        (3 * election_ms).max(ordo_common::coord::SESSION_TTL_MS_MIN)
    }

    /// A leader's duties for sessions at each tick: propose the keep-alives gathered, the
    /// expiries due on its clock, and the wakes of lock-delays that ended.
    fn lead_sessions(&mut self) {
        let pending = std::mem::take(&mut self.sessions.keepalives);
        for chunk in pending.chunks(ordo_common::coord::KEEPALIVE_SESSIONS_MAX as usize) {
            let mut sessions: Vec<SessionId> = chunk.iter().map(|(_, s)| *s).collect();
            sessions.sort();
            sessions.dedup();
            match self.propose_own(CoordOp::KeepAlive { sessions }) {
                Some(id) => {
                    self.sessions.keepalive_proposals.insert(id, chunk.to_vec());
                }
                None => {
                    for (request, _) in chunk {
                        let response =
                            busy(BusyCode::Backpressure, "keep-alive not proposed; retry");
                        self.reply(*request, response);
                    }
                }
            }
        }
        let retry_at = self.ticks + u64::from(self.config.raft.election_timeout_ticks);
        for (session, renewed_index) in self.sessions.due(self.ticks) {
            let proposal = self.propose_own(CoordOp::Expire {
                session,
                renewed_index,
            });
            self.sessions
                .expiry_proposed(session, renewed_index, proposal, retry_at);
        }
        if self.sessions.wake_in_flight.is_none() {
            let mut mutexes = self.state.coord().due(self.clock_ms);
            mutexes.truncate(WAKES_PER_ENTRY_MAX);
            if !mutexes.is_empty() {
                self.sessions.wake_in_flight = self.propose_own(CoordOp::Wake { mutexes });
            }
        }
    }

    /// The members as this node, the leader, sees them.
    fn member_list(&self) -> ClientResponse {
        if self.engine.role() != Role::Leader {
            return self.not_leader(self.engine.leader());
        }
        let membership = self.engine.membership();
        // The leader's view knows every member's reachability and progress.
        let view = self.view();
        let last_index = view.status.last_index;
        let members = view
            .members
            .into_iter()
            .map(|member| MemberInfo {
                promote_when_ready: membership.promote_when_ready.contains(&member.id),
                id: member.id,
                address: member.address,
                voter: member.voter,
                reachable: member.reachable.unwrap_or(false),
                match_index: member.match_index.unwrap_or(0),
            })
            .collect();
        ClientResponse::Members(Box::new(MemberList {
            cluster: self.config.cluster,
            leader: self.id(),
            term: self.engine.term(),
            last_index,
            membership_index: self.engine.membership_index(),
            membership_committed: self.engine.membership_index() <= self.engine.commit_index(),
            members,
            retired: membership.retired.iter().copied().collect(),
        }))
    }

    /// Proposes a membership change for a client; answered when its entry applies.
    fn member_change(&mut self, request: RequestId, change: MembershipChange) {
        if self.stopping_ticks.is_some() {
            let response = busy(
                BusyCode::Stopping,
                "node is stopping; retry at the new leader",
            );
            return self.reply(request, response);
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        match self.engine.propose_membership(id, change) {
            Ok(_) => {
                self.proposals.insert(id, request);
            }
            Err(MembershipError::NotLeader { leader_hint }) => {
                let response = self.not_leader(leader_hint);
                self.reply(request, response);
            }
            Err(error) => self.reply(request, ClientResponse::MembershipRefused(error)),
        }
    }

    fn read(&mut self, request: RequestId, query: ReadQuery) {
        let id = ReadId(self.next_read);
        self.next_read += 1;
        match self.engine.read_index(id) {
            Ok(()) => {
                self.reads.insert(id, (request, query));
            }
            Err(error) => {
                let response = self.read_failed(error);
                self.reply(request, response);
            }
        }
    }

    fn read_failed(&self, error: ReadError) -> ClientResponse {
        match error {
            ReadError::NotLeader { leader_hint } => self.not_leader(leader_hint),
            ReadError::LeadershipLost => busy(BusyCode::ReadLost, error),
            ReadError::TooManyPending { .. } => busy(BusyCode::TooManyReads, error),
        }
    }

    /// `Refused{limit_exceeded}` when `batch` would create topics beyond what `quota` allows: the topics
    /// its patterns cover may number at most `max`, counting those the batch creates.
    fn topic_quota_refusal(&self, batch: &Batch, quota: &TopicQuota) -> Option<ClientResponse> {
        let offsets = self.state.offsets();
        let mut new: Vec<&str> = batch
            .messages
            .iter()
            .map(|message| message.topic.as_str())
            .filter(|topic| !offsets.contains_key(*topic))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return None;
        }
        let covered = |topic: &str| {
            quota
                .patterns
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => topic.starts_with(prefix),
                    None => pattern == topic,
                })
        };
        let existing = if quota.patterns.iter().any(|pattern| pattern == "*") {
            offsets.len() as u64
        } else {
            offsets.keys().filter(|topic| covered(topic)).count() as u64
        };
        let total = existing + new.len() as u64;
        (total > quota.max).then(|| ClientResponse::Refused {
            code: RefusedCode::LimitExceeded,
            reason: format!(
                "identity {} may not create topic {:?}: the topics its write patterns {:?} \
                     cover would number {total}, over transport.topics_per_identity_max ({})",
                quota.identity, new[0], quota.patterns, quota.max
            ),
        })
    }

    /// The answer to a proposal made at a node that does not lead: the leader it knows of.
    pub fn not_leader(&self, leader: Option<NodeId>) -> ClientResponse {
        ClientResponse::NotLeader {
            leader,
            leader_address: leader.and_then(|id| self.address(id)),
        }
    }

    /// A member's address: from the membership in force, else from the configuration.
    fn address(&self, id: NodeId) -> Option<String> {
        let membership = self.engine.membership();
        membership
            .addresses
            .get(&id)
            .or_else(|| self.config.addresses.get(&id))
            .cloned()
    }

    fn reply(&mut self, request: RequestId, response: ClientResponse) {
        self.outputs.push_back(Output::Reply { request, response });
    }

    // ----- the core's outputs -----

    fn translate(&mut self, output: ordo_core::Output) {
        match output {
            ordo_core::Output::PersistHardState(hard_state) => {
                let write = self.persist(WriteBatch::hard_state(hard_state), true);
                self.engine_writes.push_back(write);
            }
            ordo_core::Output::PersistEntries(entries) => {
                let write = self.persist(WriteBatch::entries(entries), false);
                self.engine_writes.push_back(write);
            }
            ordo_core::Output::Send { to, message } => {
                self.outputs.push_back(Output::Send { to, message });
            }
            ordo_core::Output::Apply(entries) => self.apply(entries),
            ordo_core::Output::ProposalResult { id, result } => {
                self.sessions.own_result(id, result.is_ok(), self.ticks);
                if let Some(batch) = self.sessions.keepalive_proposals.remove(&id) {
                    return self.answer_keepalives(batch, result.ok().map(|id| id.index));
                }
                let Some(request) = self.proposals.remove(&id) else {
                    return;
                };
                match result {
                    Ok(log_id) if self.recent_waits.contains_key(&log_id.index) => {
                        let key = self.recent_waits.remove(&log_id.index).expect("checked");
                        self.wait_for_grant(request, key);
                    }
                    Ok(log_id) => {
                        // The entry is committed (durable on a majority) and applied here:
                        // its outcome is final, so it goes out now, before this node's state
                        // write is durable (a restart re-applies the entry from the log).
                        let response = self
                            .recent_answers
                            .remove(&log_id.index)
                            .expect("a proposal's result follows the apply of its entry");
                        self.reply(request, response);
                    }
                    Err(lost @ ProposalLost::Overwritten { .. }) => {
                        let reason = format!("{lost}; retry with the same batch id");
                        self.reply(request, busy(BusyCode::ProposalOverwritten, reason));
                    }
                    Err(lost @ ProposalLost::Unknowable { .. }) => {
                        let reason = format!("{lost}; ask for the batch's status");
                        self.reply(request, busy(BusyCode::OutcomeUnknown, reason));
                    }
                }
            }
            ordo_core::Output::ReadResult { id, result } => {
                let Some((request, query)) = self.reads.remove(&id) else {
                    return;
                };
                let response = match result {
                    Ok(_) => match self.answer_read(request, query) {
                        Some(response) => response,
                        None => return,
                    },
                    Err(error) => self.read_failed(error),
                };
                self.reply(request, response);
            }
            ordo_core::Output::RoleChanged { role, term, leader } => {
                if role == Role::Leader {
                    let (tick_ms, skew_ms) = (self.config.tick_ms, self.config.clock_skew_ms);
                    self.sessions
                        .lead(&self.state, self.ticks, tick_ms, skew_ms);
                } else {
                    let response = self.not_leader(leader);
                    for (request, response) in self.sessions.follow(&response) {
                        self.reply(request, response);
                    }
                }
                self.outputs
                    .push_back(Output::RoleChanged { role, term, leader });
            }
            ordo_core::Output::ReadEntries { to, low, high } => {
                self.outputs
                    .push_back(Output::ReadEntries { to, low, high });
            }
            ordo_core::Output::SendSnapshot { to } => {
                let term = self.engine.term();
                self.outputs.push_back(Output::SendSnapshot { to, term });
            }
            ordo_core::Output::InstallSnapshot {
                last_included,
                keep_suffix,
            } => self.install(last_included, keep_suffix),
        }
    }

    /// Makes the received snapshot the node's state: the batch state now, durably before
    /// anything else happens.
    fn install(&mut self, last_included: LogId, keep_suffix: bool) {
        let Some((applied, state, restored)) = self.received_snapshot.take() else {
            unreachable!("the core installs only the snapshot it was just handed");
        };
        assert_eq!(
            applied, last_included,
            "the core installs the snapshot it was handed"
        );
        self.state = restored;
        let last_seq = self.state.last_seq();
        let install = Install {
            last_included,
            keep_suffix,
            state,
        };
        let batch = WriteBatch {
            install: Some(install),
            ..WriteBatch::default()
        };
        let write = self.persist(batch, true);
        self.engine_writes.push_back(write);
        self.state_writes.push_back((write, last_seq));
    }

    fn persist(&mut self, batch: WriteBatch, sync: bool) -> WriteId {
        self.last_write = WriteId(self.last_write.0 + 1);
        let write = self.last_write;
        self.outputs
            .push_back(Output::Persist { write, batch, sync });
        write
    }

    /// Applies committed entries to the batch state and records what changed, with the apply
    /// progress, in one write: the state on disk never runs ahead of or behind its progress.
    fn apply(&mut self, entries: Vec<Entry>) {
        let last = entries.last().map(Entry::log_id).expect("non-empty apply");
        self.recent_answers.clear();
        self.recent_waits.clear();
        self.recent_keepalives.clear();
        let mut update = StateUpdate::applied(last);
        let mut offsets = BTreeMap::new();
        for entry in &entries {
            if let EntryPayload::Config(membership) = &entry.payload {
                self.state.apply_membership(membership.clone());
                let changed = ClientResponse::MembershipChanged {
                    index: entry.index,
                    membership: Box::new(membership.clone()),
                };
                self.recent_answers.insert(entry.index, changed);
                continue;
            }
            let command = match decode(entry) {
                Ok(command) => command,
                Err(fault) => return self.halt(fault),
            };
            let answer = match command {
                None => continue,
                Some(Command::Raw(_)) => ClientResponse::Committed {
                    index: entry.index,
                    term: entry.term,
                },
                Some(Command::Coord { op, stamp_ms }) => {
                    self.applied_stamp_ms = stamp_ms;
                    match self.state.apply_coord(entry.index, &op, stamp_ms) {
                        CoordAnswer::Queued { .. } => {
                            if let CoordOp::Acquire {
                                kind,
                                name,
                                session,
                                ..
                            } = op
                            {
                                self.recent_waits.insert(entry.index, (kind, name, session));
                            }
                            continue;
                        }
                        CoordAnswer::Renewed { gone } => {
                            self.recent_keepalives.insert(entry.index, gone);
                            continue;
                        }
                        answer => coord_response(answer),
                    }
                }
                Some(Command::Batch { batch, stamp_ms }) => {
                    self.applied_stamp_ms = stamp_ms;
                    let content = match &entry.payload {
                        EntryPayload::Normal(bytes) => content_hash(Command::batch_bytes(bytes)),
                        EntryPayload::Noop | EntryPayload::Config(_) => {
                            unreachable!("a batch entry has a payload")
                        }
                    };
                    let applied = self.state.apply(entry.index, &batch, stamp_ms, content);
                    if let Verdict::Decided(ordo_common::batch::Outcome::Committed { seq, index }) =
                        &applied.verdict
                    {
                        update.seqs.push((*seq, *index));
                    }
                    if let Some(record) = &applied.registered {
                        update
                            .registry
                            .push((batch.id.0, encode_registered(record)));
                    }
                    update
                        .registry_evicted
                        .extend(applied.evicted.iter().map(|id| id.0));
                    offsets.extend(applied.offsets);
                    match applied.verdict {
                        Verdict::Decided(outcome) | Verdict::Duplicate(outcome) => {
                            ClientResponse::Outcome(outcome)
                        }
                        Verdict::Conflict => ClientResponse::Refused {
                            code: RefusedCode::IdConflict,
                            reason: format!(
                                "batch id {} is registered with other content; ids are single-use",
                                batch.id
                            ),
                        },
                        Verdict::BeyondHorizon { floor_ms } => beyond_horizon(floor_ms),
                    }
                }
            };
            self.recent_answers.insert(entry.index, answer);
        }
        update.offsets = offsets.into_iter().collect();
        update.log_time_ms = self.state.log_time_ms();
        update.registry_floor_ms = self.state.registry_floor_ms();
        update.coord = self.state.take_coord_dirty();
        let batch = WriteBatch {
            committed: Some(last.index),
            state: Some(update),
            ..WriteBatch::default()
        };
        let write = self.persist(batch, false);
        self.state_writes.push_back((write, self.state.last_seq()));
        let events = self.state.take_coord_events();
        let leader = self.engine.role() == Role::Leader;
        let replies = self
            .sessions
            .applied(&events, leader, self.ticks, self.config.tick_ms);
        for (request, response) in replies {
            self.reply(request, response);
        }
    }

    /// Answers the keep-alives one proposed entry carried (`None`: it did not commit here).
    fn answer_keepalives(&mut self, batch: Vec<(RequestId, SessionId)>, index: Option<LogIndex>) {
        let gone = index.and_then(|index| self.recent_keepalives.get(&index).cloned());
        for (request, session) in batch {
            let response = match &gone {
                None => busy(
                    BusyCode::ProposalOverwritten,
                    "keep-alive lost in a leader change; retry",
                ),
                Some(gone) if gone.contains(&session) => ClientResponse::SessionGone { session },
                Some(_) => ClientResponse::SessionRenewed,
            };
            self.reply(request, response);
        }
    }

    /// An acquire that queued: answered when its grant applies, or at once if it already did.
    fn wait_for_grant(&mut self, request: RequestId, key: (MutexKind, String, SessionId)) {
        let (kind, name, session) = &key;
        let response = match self.state.coord().mutex(*kind, name) {
            _ if self.state.coord().session(session).is_none() => {
                Some(ClientResponse::SessionGone { session: *session })
            }
            Some(mutex) => match &mutex.holder {
                Some(holder) if holder.session == *session => Some(ClientResponse::Held {
                    token: holder.token,
                }),
                _ if mutex.waiters.iter().any(|w| w.session == *session) => None,
                _ => Some(ClientResponse::Released { held: false }),
            },
            None => Some(ClientResponse::Released { held: false }),
        };
        if let Some(response) = response {
            return self.reply(request, response);
        }
        if self.sessions.waits.len() >= LOCK_WAITS_MAX && !self.sessions.waits.contains_key(&key) {
            let response = busy(
                BusyCode::Backpressure,
                "too many acquires waiting on this node; retry",
            );
            return self.reply(request, response);
        }
        if let Some(previous) = self.sessions.waits.insert(key, request) {
            let response = busy(
                BusyCode::Backpressure,
                "replaced by a newer acquire of the same lock",
            );
            self.reply(previous, response);
        }
    }

    /// Answers a linearizable read; `None` if an observer now waits for the next change.
    fn answer_read(&mut self, request: RequestId, query: ReadQuery) -> Option<ClientResponse> {
        Some(match query {
            ReadQuery::BatchStatus(batch) => match self.state.status(&batch) {
                IdStatus::Known(outcome) => ClientResponse::Outcome(outcome.clone()),
                IdStatus::Unknown => ClientResponse::Unknown,
                IdStatus::BeyondHorizon { floor_ms } => ClientResponse::BeyondHorizon { floor_ms },
            },
            ReadQuery::CoordList => ClientResponse::CoordList {
                sessions: self.state.coord().session_infos(COORD_LIST_ROWS_MAX),
                mutexes: self.state.coord().mutex_infos(COORD_LIST_ROWS_MAX),
            },
            ReadQuery::Observe { name, after } => {
                let (changes, gap) = self.state.coord().changes_after(&name, after);
                if !changes.is_empty() || after == 0 {
                    return Some(ClientResponse::LeaderChanges { changes, gap });
                }
                if self.sessions.observers.len() >= OBSERVERS_MAX {
                    return Some(busy(
                        BusyCode::Backpressure,
                        "too many observers on this node; retry",
                    ));
                }
                self.sessions.observers.push((request, name, after));
                return None;
            }
        })
    }

    fn halt(&mut self, fault: Fault) {
        self.halted = true;
        self.outputs.push_back(Output::Halt(fault));
    }
}

/// The command an entry carries: `None` for a leader's no-op or a configuration.
fn decode(entry: &Entry) -> Result<Option<Command>, Fault> {
    match &entry.payload {
        EntryPayload::Noop | EntryPayload::Config(_) => Ok(None),
        EntryPayload::Normal(bytes) => {
            Command::decode(bytes)
                .map(Some)
                .map_err(|error| Fault::CorruptEntry {
                    index: entry.index,
                    detail: error.to_string(),
                })
        }
    }
}

/// The batch committed at `seq`, from the entry that carried it (subscriptions read this way).
pub fn committed_batch(seq: u64, entry: &Entry) -> Result<CommittedBatch, Fault> {
    match decode(entry)? {
        Some(Command::Batch { batch, .. }) => Ok(CommittedBatch {
            seq,
            index: entry.index,
            id: batch.id,
            messages: batch.messages,
        }),
        _ => Err(Fault::CorruptEntry {
            index: entry.index,
            detail: format!("seq {seq} points at this entry, which holds no batch"),
        }),
    }
}

/// How the registry record of an id is stored.
pub fn encode_registered(record: &Registered) -> Vec<u8> {
    ordo_common::codec::encode(record)
}

/// The batch state's tables as storage kept them, decoded.
pub fn recovered_tables(state: &StoreState, stored: StoredTables) -> Result<StateTables, Fault> {
    let registry = stored
        .registry
        .into_iter()
        .map(|(id, record)| {
            ordo_common::codec::decode::<Registered>(&record, OUTCOME_BYTES_MAX)
                .map(|record| (BatchId(id), record))
                .map_err(|error| Fault::CorruptState {
                    detail: format!("registry record of batch {}: {error}", BatchId(id)),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(StateTables {
        last_seq: state.last_seq,
        log_time_ms: state.log_time_ms,
        registry_floor_ms: state.registry_floor_ms,
        offsets: stored.offsets,
        registry,
        coord: stored.coord,
    })
}

/// What a client is told of a coordination op's apply.
fn coord_response(answer: CoordAnswer) -> ClientResponse {
    match answer {
        CoordAnswer::Opened { ttl_ms } => ClientResponse::SessionOpened { ttl_ms },
        CoordAnswer::Held { token } => ClientResponse::Held { token },
        CoordAnswer::Released(held) => ClientResponse::Released { held },
        CoordAnswer::Refused(CoordRefusal::SessionGone(session)) => {
            ClientResponse::SessionGone { session }
        }
        CoordAnswer::Refused(refusal) => ClientResponse::CoordRefused(refusal),
        CoordAnswer::Renewed { .. }
        | CoordAnswer::Queued { .. }
        | CoordAnswer::Expired(_)
        | CoordAnswer::Closed
        | CoordAnswer::Proclaimed
        | CoordAnswer::Woken => ClientResponse::Done,
    }
}

/// The refusal of an id the registry can no longer answer for.
fn beyond_horizon(floor_ms: u64) -> ClientResponse {
    ClientResponse::Refused {
        code: RefusedCode::BeyondHorizon,
        reason: format!(
            "the batch id is at or below the registry's horizon (ids up to {floor_ms} ms since \
             the epoch); it may have committed once and will never commit again: submit new \
             work with a fresh id, or ask for status"
        ),
    }
}

/// How many topics a caller's submits may bring into existence: the topics its write
/// `patterns` (names, or prefixes ending in `*`) cover may number at most `max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicQuota {
    /// How refusals name the caller.
    pub identity: String,
    pub patterns: Vec<String>,
    pub max: u64,
}

fn busy(code: BusyCode, reason: impl ToString) -> ClientResponse {
    ClientResponse::Busy {
        code,
        reason: reason.to_string(),
    }
}

fn role_name(role: Role) -> NodeRole {
    match role {
        Role::Follower => NodeRole::Follower,
        Role::PreCandidate => NodeRole::PreCandidate,
        Role::Candidate => NodeRole::Candidate,
        Role::Leader => NodeRole::Leader,
    }
}
