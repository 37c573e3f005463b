//! The driver: the one task that owns the consensus core. It feeds the core its inputs — ticks
//! from a real clock, peer messages, client requests, durability reports from the log writer —
//! and carries out the outputs in the contract's order: persist (group commit, on the writer
//! thread) → send → apply → reply. A hard-state write is awaited before anything after it; an
//! entries write is not (the core waits for its report). Every queue it reads is bounded; it
//! holds no lock across an await.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ordo_common::client::{ClientResponse, NodeStatus};
use ordo_common::{LogId, NodeId};
use ordo_core::{Output, ProposalId, ProposeError, Raft, Role};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::storage::{
    GroupCommitWriter, LogStore, RequestId, StateUpdate, StorageError, TrySubmitError, WriteBatch,
    WriterEvent,
};
use crate::transport::{ClientCommand, Inbound, PeerLinks};

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

pub struct Driver<S: LogStore> {
    raft: Raft,
    writer: GroupCommitWriter<S>,
    writer_events: mpsc::Receiver<WriterEvent>,
    peers: PeerLinks,
    inbound: mpsc::Receiver<Inbound>,
    clients: mpsc::Receiver<ClientCommand>,
    options: DriverOptions,
    waiting: HashMap<ProposalId, oneshot::Sender<ClientResponse>>,
    next_proposal: u64,
    last_heard: BTreeMap<NodeId, Instant>,
}

/// The channel the writer's sink reports into; pass the sender to [`GroupCommitWriter::start`].
pub fn writer_channel() -> (mpsc::Sender<WriterEvent>, mpsc::Receiver<WriterEvent>) {
    mpsc::channel(WRITER_EVENTS_QUEUE_MAX)
}

impl<S: LogStore> Driver<S> {
    pub fn new(
        raft: Raft,
        writer: GroupCommitWriter<S>,
        writer_events: mpsc::Receiver<WriterEvent>,
        peers: PeerLinks,
        inbound: mpsc::Receiver<Inbound>,
        clients: mpsc::Receiver<ClientCommand>,
        options: DriverOptions,
    ) -> Self {
        Self {
            raft,
            writer,
            writer_events,
            peers,
            inbound,
            clients,
            options,
            waiting: HashMap::new(),
            next_proposal: 1,
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
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(ClientResponse::Refused {
                reason: "node stopped before the outcome was known; check with status".into(),
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
                if stopping {
                    let _ = reply.send(ClientResponse::Refused {
                        reason: "node is stopping".into(),
                    });
                    return;
                }
                let id = ProposalId(self.next_proposal);
                self.next_proposal += 1;
                match self.raft.propose(id, payload) {
                    Ok(_) => {
                        self.waiting.insert(id, reply);
                    }
                    Err(ProposeError::NotLeader { leader_hint }) => {
                        let leader_address = leader_hint
                            .and_then(|id| self.options.voters.get(&id))
                            .map(|a| a.to_string());
                        let _ = reply.send(ClientResponse::NotLeader {
                            leader: leader_hint,
                            leader_address,
                        });
                    }
                    Err(error) => {
                        let _ = reply.send(ClientResponse::Refused {
                            reason: error.to_string(),
                        });
                    }
                }
            }
        }
    }

    fn on_writer_event(&mut self, event: WriterEvent) -> Result<(), DriverError> {
        match event {
            WriterEvent::Durable(report) => {
                if let Some(last) = report.last_log_id {
                    self.raft.handle_durable(last);
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
                Output::Apply(entries) => {
                    let last = entries
                        .last()
                        .map(|entry| entry.log_id())
                        .expect("non-empty apply");
                    metrics::counter!("ordo_entries_applied_total").increment(entries.len() as u64);
                    self.record_applied(last)?;
                }
                Output::ProposalResult { id, result } => {
                    if let Some(reply) = self.waiting.remove(&id) {
                        let response = match result {
                            Ok(log_id) => ClientResponse::Committed {
                                index: log_id.index,
                                term: log_id.term,
                            },
                            Err(lost) => ClientResponse::Refused {
                                reason: lost.to_string(),
                            },
                        };
                        let _ = reply.send(response);
                    }
                }
                Output::ReadResult { .. } => {}
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

    /// Records apply progress; it lands in the same group commit as the log writes around it.
    fn record_applied(&mut self, last: LogId) -> Result<(), DriverError> {
        let batch = WriteBatch {
            committed: Some(last.index),
            state: Some(StateUpdate::applied(last)),
            ..WriteBatch::default()
        };
        self.submit(batch).map(|_| ())
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
