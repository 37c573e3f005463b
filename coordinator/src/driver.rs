//! The driver: the one task that owns the consensus core and the batch state machine. It feeds
//! the core its inputs — ticks from a real clock, peer messages, client requests, durability
//! reports from the log writer — and carries out the outputs in the contract's order: persist
//! (group commit, on the writer thread) → send → apply → reply. A hard-state write is awaited
//! before anything after it; an entries write is not (the core waits for its report). Every
//! queue it reads is bounded; it holds no lock across an await.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_common::batch::{BatchId, CommittedBatch, Outcome};
use ordo_common::client::{ClientResponse, NodeStatus};
use ordo_common::{Entry, EntryPayload, LogId, LogIndex, NodeId};
use ordo_core::state::{BatchState, Command};
use ordo_core::{Output, ProposalId, ProposeError, Raft, ReadError, ReadId, Role};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::storage::{
    GroupCommitWriter, LogRead, LogStore, RequestId, StateUpdate, StorageError, TrySubmitError,
    WriteBatch, WriterEvent,
};
use crate::transport::{BatchSource, ClientCommand, Inbound, PeerLinks};

/// Inputs drained in one round before outputs are carried out: proposals that arrive together
/// share one append message and one fsync.
pub const INPUTS_PER_ROUND_MAX: usize = 1024;
/// Writer reports waiting for the driver.
pub const WRITER_EVENTS_QUEUE_MAX: usize = 1024;

/// Why the driver stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("storage failed; the node must restart: {0}")]
    Storage(#[from] StorageError),
    #[error("the log writer stopped unexpectedly")]
    WriterGone,
}

/// How the driver runs.
pub struct DriverOptions {
    pub tick_interval: Duration,
    pub election_timeout: Duration,
    pub address: SocketAddr,
    pub voters: BTreeMap<NodeId, SocketAddr>,
}

/// Rebuilds the batch state from the log's applied prefix: the log is the durable form of the
/// idempotency registry, so a restarted node answers duplicates exactly as before.
pub fn rebuild_state(
    entries: &[Entry],
    applied: LogIndex,
    registry_entries_max: usize,
) -> BatchState {
    let mut state = BatchState::new(registry_entries_max);
    for entry in entries.iter().take_while(|entry| entry.index <= applied) {
        if let Some(Command::Batch(batch)) = decode_command(entry) {
            state.apply(entry.index, &batch);
        }
    }
    state
}

fn decode_command(entry: &Entry) -> Option<Command> {
    match &entry.payload {
        EntryPayload::Normal(bytes) => Command::decode(bytes).ok(),
        EntryPayload::Noop => None,
    }
}

pub struct Driver<S: LogStore> {
    raft: Raft,
    state: BatchState,
    writer: GroupCommitWriter<S>,
    writer_events: mpsc::Receiver<WriterEvent>,
    peers: PeerLinks,
    inbound: mpsc::Receiver<Inbound>,
    clients: mpsc::Receiver<ClientCommand>,
    options: DriverOptions,
    waiting: HashMap<ProposalId, oneshot::Sender<ClientResponse>>,
    reads: HashMap<ReadId, (BatchId, oneshot::Sender<ClientResponse>)>,
    /// Outcomes of the entries applied in the latest Apply output, for the replies after it.
    recent_outcomes: HashMap<LogIndex, Outcome>,
    /// State writes not yet durable, with the seq each makes servable to subscribers.
    state_writes: VecDeque<(RequestId, u64)>,
    applied_seq: watch::Sender<u64>,
    next_request: u64,
    last_heard: BTreeMap<NodeId, Instant>,
}

/// The channel the writer's sink reports into; pass the sender to [`GroupCommitWriter::start`].
pub fn writer_channel() -> (mpsc::Sender<WriterEvent>, mpsc::Receiver<WriterEvent>) {
    mpsc::channel(WRITER_EVENTS_QUEUE_MAX)
}

/// Subscriptions read committed batches from durable storage through this.
pub struct StoredBatches<R: LogRead> {
    reader: R,
    applied_seq: watch::Receiver<u64>,
}

impl<R: LogRead + Send + Sync + 'static> StoredBatches<R> {
    pub fn new(reader: R, applied_seq: watch::Receiver<u64>) -> Arc<Self> {
        Arc::new(Self {
            reader,
            applied_seq,
        })
    }
}

impl<R: LogRead + Send + Sync + 'static> BatchSource for StoredBatches<R> {
    fn committed(&self, seq: u64) -> Result<Option<CommittedBatch>, String> {
        let Some(index) = self
            .reader
            .batch_index(seq)
            .map_err(|error| error.to_string())?
        else {
            return Ok(None);
        };
        let entries = match self.reader.entries(index, index + 1, u64::MAX) {
            Ok(entries) => entries,
            Err(StorageError::Compacted { .. }) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        match entries.first().and_then(decode_command) {
            Some(Command::Batch(batch)) => Ok(Some(CommittedBatch {
                seq,
                index,
                id: batch.id,
                messages: batch.messages,
            })),
            None => Err(format!(
                "seq {seq} points at entry {index}, which holds no batch"
            )),
        }
    }

    fn applied_seq(&self) -> watch::Receiver<u64> {
        self.applied_seq.clone()
    }

    fn first_seq(&self) -> u64 {
        // Until compaction of the batch history exists, every seq is retained.
        1
    }
}

/// The parts a driver is made of.
pub struct DriverParts<S: LogStore> {
    pub raft: Raft,
    pub state: BatchState,
    pub writer: GroupCommitWriter<S>,
    pub writer_events: mpsc::Receiver<WriterEvent>,
    pub peers: PeerLinks,
    pub inbound: mpsc::Receiver<Inbound>,
    pub clients: mpsc::Receiver<ClientCommand>,
    pub applied_seq: watch::Sender<u64>,
    pub options: DriverOptions,
}

impl<S: LogStore> Driver<S> {
    pub fn new(parts: DriverParts<S>) -> Self {
        Self {
            raft: parts.raft,
            state: parts.state,
            writer: parts.writer,
            writer_events: parts.writer_events,
            peers: parts.peers,
            inbound: parts.inbound,
            clients: parts.clients,
            options: parts.options,
            waiting: HashMap::new(),
            reads: HashMap::new(),
            recent_outcomes: HashMap::new(),
            state_writes: VecDeque::new(),
            applied_seq: parts.applied_seq,
            next_request: 1,
            last_heard: BTreeMap::new(),
        }
    }

    /// Runs until `shutdown` fires, then stops gracefully: a leader hands leadership to the
    /// most up-to-date follower first (bounded by two election timeouts), and every write
    /// already submitted is made durable before returning.
    pub async fn run(mut self, mut shutdown: oneshot::Receiver<()>) -> Result<(), DriverError> {
        let mut ticks = tokio::time::interval(self.options.tick_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown, if stopping.is_none() => {
                    stopping = Some(Instant::now());
                    if self.raft.role() == Role::Leader {
                        match self.raft.transfer_leadership(None) {
                            Ok(target) => info!(target, "stopping: transferring leadership"),
                            Err(error) => warn!(%error, "stopping without a leadership transfer"),
                        }
                    }
                }
                event = self.writer_events.recv() => {
                    self.on_writer_event(event.ok_or(DriverError::WriterGone)?)?;
                }
                message = self.inbound.recv() => {
                    if let Some(message) = message {
                        self.on_peer_message(message);
                        for _ in 0..INPUTS_PER_ROUND_MAX {
                            let Ok(message) = self.inbound.try_recv() else { break };
                            self.on_peer_message(message);
                        }
                    }
                }
                command = self.clients.recv() => {
                    if let Some(command) = command {
                        self.on_client(command, stopping.is_some());
                        for _ in 0..INPUTS_PER_ROUND_MAX {
                            let Ok(command) = self.clients.try_recv() else { break };
                            self.on_client(command, stopping.is_some());
                        }
                    }
                }
                _ = ticks.tick() => self.raft.tick(),
            }
            self.carry_out().await?;
            if let Some(since) = stopping {
                let handed_over = self.raft.role() != Role::Leader;
                if handed_over || since.elapsed() > 2 * self.options.election_timeout {
                    info!(handed_over, "stopping");
                    break;
                }
            }
        }
        let unknown = "node stopped before the outcome was known; check with status".to_string();
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(ClientResponse::Busy {
                reason: unknown.clone(),
            });
        }
        self.writer.close()?;
        Ok(())
    }

    fn on_peer_message(&mut self, Inbound { from, message }: Inbound) {
        self.last_heard.insert(from, Instant::now());
        if let Err(error) = self.raft.handle_message(from, message) {
            warn!(peer = from, %error, "dropped a peer message");
        }
    }

    fn on_client(&mut self, command: ClientCommand, stopping: bool) {
        match command {
            ClientCommand::Status { reply } => {
                let _ = reply.send(self.status());
            }
            ClientCommand::Propose { payload, reply } => {
                // Raw payloads are for diagnostics; one that decodes as a command would skip the
                // batch checks, so it must come through Submit.
                if Command::decode(&payload).is_ok() {
                    let reason = "payload decodes as a command; submit batches with Submit".into();
                    let _ = reply.send(ClientResponse::Refused { reason });
                    return;
                }
                self.propose(payload, reply, stopping)
            }
            ClientCommand::Submit { batch, reply } => {
                if let Err(error) = batch.validate() {
                    let _ = reply.send(ClientResponse::Invalid(error));
                    return;
                }
                let payload = Bytes::from(Command::Batch(batch).encode());
                self.propose(payload, reply, stopping);
            }
            ClientCommand::BatchStatus { id, reply } => {
                let read = ReadId(self.next_request);
                self.next_request += 1;
                match self.raft.read_index(read) {
                    Ok(()) => {
                        self.reads.insert(read, (id, reply));
                    }
                    Err(ReadError::NotLeader { leader_hint }) => {
                        let _ = reply.send(self.not_leader(leader_hint));
                    }
                    Err(error) => {
                        let _ = reply.send(ClientResponse::Busy {
                            reason: error.to_string(),
                        });
                    }
                }
            }
        }
    }

    fn propose(&mut self, payload: Bytes, reply: oneshot::Sender<ClientResponse>, stopping: bool) {
        if stopping {
            let reason = "node is stopping; retry at the new leader".to_string();
            let _ = reply.send(ClientResponse::Busy { reason });
            return;
        }
        let id = ProposalId(self.next_request);
        self.next_request += 1;
        match self.raft.propose(id, payload) {
            Ok(_) => {
                self.waiting.insert(id, reply);
            }
            Err(ProposeError::NotLeader { leader_hint }) => {
                let _ = reply.send(self.not_leader(leader_hint));
            }
            Err(error @ ProposeError::TooLarge { .. }) => {
                let _ = reply.send(ClientResponse::Refused {
                    reason: error.to_string(),
                });
            }
            Err(error) => {
                let _ = reply.send(ClientResponse::Busy {
                    reason: error.to_string(),
                });
            }
        }
    }

    fn not_leader(&self, leader: Option<NodeId>) -> ClientResponse {
        let leader_address = leader
            .and_then(|id| self.options.voters.get(&id))
            .map(|a| a.to_string());
        ClientResponse::NotLeader {
            leader,
            leader_address,
        }
    }

    fn on_writer_event(&mut self, event: WriterEvent) -> Result<(), DriverError> {
        match event {
            WriterEvent::Durable(report) => {
                if let Some(last) = report.last_log_id {
                    self.raft.handle_durable(last);
                }
                while let Some(&(request, seq)) = self.state_writes.front() {
                    if request > *report.requests.end() {
                        break;
                    }
                    self.state_writes.pop_front();
                    self.applied_seq.send_replace(seq);
                }
                Ok(())
            }
            WriterEvent::Refused { requests, error } => {
                // The core asked for a write that breaks the log's rules: a bug. Stop rather than
                // continue with a log that disagrees with the core.
                error!(?requests, %error, "the log refused a write");
                Err(DriverError::Storage(error))
            }
            WriterEvent::Failed { requests, error } => {
                error!(?requests, %error, "the log writer failed");
                Err(DriverError::Storage(error))
            }
        }
    }

    /// Carries out every output, in order.
    async fn carry_out(&mut self) -> Result<(), DriverError> {
        while let Some(output) = self.raft.poll_output() {
            match output {
                Output::PersistHardState(hard_state) => {
                    let request = self.submit(WriteBatch::hard_state(hard_state))?;
                    self.wait_durable(request).await?;
                }
                Output::PersistEntries(entries) => {
                    self.submit(WriteBatch::entries(entries))?;
                }
                Output::Send { to, message } => self.peers.send(to, message),
                Output::Apply(entries) => self.apply(&entries)?,
                Output::ProposalResult { id, result } => {
                    let Some(reply) = self.waiting.remove(&id) else {
                        continue;
                    };
                    let response = match result {
                        Ok(log_id) => match self.recent_outcomes.get(&log_id.index) {
                            Some(outcome) => ClientResponse::Outcome(outcome.clone()),
                            None => ClientResponse::Committed {
                                index: log_id.index,
                                term: log_id.term,
                            },
                        },
                        Err(lost) => ClientResponse::Busy {
                            reason: format!("{lost}; retry with the same batch id"),
                        },
                    };
                    let _ = reply.send(response);
                }
                Output::ReadResult { id, result } => {
                    let Some((batch, reply)) = self.reads.remove(&id) else {
                        continue;
                    };
                    let response = match result {
                        Ok(_) => match self.state.outcome(&batch) {
                            Some(outcome) => ClientResponse::Outcome(outcome.clone()),
                            None => ClientResponse::Unknown,
                        },
                        Err(error) => ClientResponse::Busy {
                            reason: error.to_string(),
                        },
                    };
                    let _ = reply.send(response);
                }
                Output::RoleChanged { role, term, leader } => {
                    info!(?role, term, ?leader, "role changed");
                    metrics::counter!("ordo_role_changes_total").increment(1);
                    metrics::gauge!("ordo_raft_term").set(term as f64);
                    metrics::gauge!("ordo_is_leader").set(if role == Role::Leader {
                        1.0
                    } else {
                        0.0
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies committed entries to the batch state and records the changes, with the apply
    /// progress, in the same group commit as the log writes around them.
    fn apply(&mut self, entries: &[Entry]) -> Result<(), DriverError> {
        let last: LogId = entries.last().map(Entry::log_id).expect("non-empty apply");
        self.recent_outcomes.clear();
        let mut update = StateUpdate::applied(last);
        let mut offsets = BTreeMap::new();
        for entry in entries {
            let Some(Command::Batch(batch)) = decode_command(entry) else {
                continue;
            };
            let applied = self.state.apply(entry.index, &batch);
            if let (Outcome::Committed { seq, index }, false) =
                (&applied.outcome, applied.duplicate)
            {
                update.seqs.push((*seq, *index));
                metrics::counter!("ordo_batches_committed_total").increment(1);
            }
            offsets.extend(applied.offsets);
            self.recent_outcomes.insert(entry.index, applied.outcome);
        }
        update.offsets = offsets.into_iter().collect();
        metrics::counter!("ordo_entries_applied_total").increment(entries.len() as u64);
        let batch = WriteBatch {
            committed: Some(last.index),
            state: Some(update),
            ..WriteBatch::default()
        };
        let request = self.submit(batch)?;
        self.state_writes
            .push_back((request, self.state.last_seq()));
        Ok(())
    }

    fn submit(&self, batch: WriteBatch) -> Result<RequestId, DriverError> {
        match self.writer.try_submit(batch) {
            Ok(request) => Ok(request),
            // The queue is full: wait for room (back-pressure) without stalling other tasks.
            Err(TrySubmitError::Full(batch)) => {
                Ok(tokio::task::block_in_place(|| self.writer.submit(*batch))?)
            }
            Err(TrySubmitError::Stopped(_)) => Err(DriverError::WriterGone),
        }
    }

    async fn wait_durable(&mut self, request: RequestId) -> Result<(), DriverError> {
        loop {
            let event = self
                .writer_events
                .recv()
                .await
                .ok_or(DriverError::WriterGone)?;
            let covered = matches!(&event, WriterEvent::Durable(report) if report.requests.contains(&request));
            self.on_writer_event(event)?;
            if covered {
                return Ok(());
            }
        }
    }

    fn status(&self) -> NodeStatus {
        let status = self.raft.status();
        let recent = self.options.election_timeout;
        NodeStatus {
            id: status.id,
            address: self.options.address.to_string(),
            role: format!("{:?}", status.role).to_lowercase(),
            term: status.term,
            leader: status.leader,
            last_index: status.last_log_id.index,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            durable_index: status.durable_index,
            reachable_peers: self
                .last_heard
                .iter()
                .filter(|(_, heard)| heard.elapsed() < recent)
                .map(|(id, _)| *id)
                .collect(),
        }
    }
}
