//! The driver: the one task that owns the [`Node`] and connects it to the world. It feeds the
//! node its inputs — ticks from a real clock, peer messages, client requests, durability reports
//! from the log writer — and carries out the node's outputs in order: writes go to the
//! group-commit writer thread (a `sync` write is awaited before anything after it), messages to
//! the peer links, replies to the waiting client tasks, the servable seq to subscriptions.
//! Every decision is the node's; every queue here is bounded; no lock is held across an await.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_common::batch::CommittedBatch;
use ordo_common::client::ClientResponse;
use ordo_common::{Entry, LogIndex, Membership, NodeId, Term};
use ordo_core::Role;
use ordo_node::snapshot::encode_snapshot;
use ordo_node::{Durable, Fault, Node, NodeView, Output, RequestId, WriteId, committed_batch};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::snapshot_transfer::{InstallMarker, OutgoingSnapshot, ReceivedSnapshot};
use crate::storage::space::{Ballast, available_bytes};
use crate::storage::{
    GroupCommitWriter, LogRead, LogStore, StorageError, TrySubmitError, WriteBatch, WriterEvent,
};
use crate::transport::{
    Admission, BatchSource, ClientCall, Inbound, PeerLinks, SUBSCRIPTION_READ_BYTES_MAX,
};

/// Inputs drained in one round before outputs are carried out: proposals that arrive together
/// share one append message and one fsync.
pub const INPUTS_PER_ROUND_MAX: usize = 1024;
/// Writer reports waiting for the driver.
pub const WRITER_EVENTS_QUEUE_MAX: usize = 1024;

/// Most time one round spends taking client requests before the driver looks at its clock,
/// its peers and its writer again.
pub const CLIENT_ROUND_TIME_MAX: Duration = Duration::from_millis(2);

/// How often the node's view is published for observers (see [`Driver::publish_view`]).
pub const VIEW_INTERVAL: Duration = Duration::from_millis(100);

/// How long the window is over which [`NodeStatus::tick_gap_max_us`] is the longest tick gap.
///
/// [`NodeStatus::tick_gap_max_us`]: ordo_common::client::NodeStatus::tick_gap_max_us
pub const TICK_GAP_WINDOW: Duration = Duration::from_secs(10);

/// The longest gap between ticks over the current and the previous [`TICK_GAP_WINDOW`].
#[derive(Debug, Default)]
struct TickGaps {
    last: Option<Instant>,
    window_start: Option<Instant>,
    current: Duration,
    previous: Duration,
}

impl TickGaps {
    /// Records a tick at `now`; returns the longest gap of the two windows.
    fn tick(&mut self, now: Instant) -> Duration {
        if let Some(last) = self.last {
            self.current = self.current.max(now - last);
        }
        self.last = Some(now);
        let start = *self.window_start.get_or_insert(now);
        if now - start >= TICK_GAP_WINDOW {
            self.previous = std::mem::take(&mut self.current);
            self.window_start = Some(now);
        }
        metrics::gauge!("ordo_tick_gap_max_seconds")
            .set(self.current.max(self.previous).as_secs_f64());
        self.current.max(self.previous)
    }
}

/// Why the driver stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("storage failed; the node must restart: {0}")]
    Storage(#[from] StorageError),
    #[error(
        "the snapshot install marker could not be written or removed; the node must restart: {0}"
    )]
    InstallMarker(std::io::Error),
    #[error("the log writer stopped unexpectedly")]
    WriterGone,
    #[error("the node stopped itself: {0}")]
    Halted(#[from] Fault),
    /// A peer refused this node because it lost its data; it must not take part.
    #[error("a peer refused this node: {0}")]
    LostData(String),
}

/// Whether a snapshot reached the named peer, from the task that streamed it.
type SnapshotReport = (NodeId, bool);

/// How the driver runs.
pub struct DriverOptions {
    pub tick_interval: Duration,
    /// Most payload bytes read back from storage for one follower at a time.
    pub append_bytes_max: u64,
    /// Where snapshots are staged, and the install marker lives.
    pub data_dir: PathBuf,
    /// Watches the data directory's free space; `None` leaves proposals alone (tests on an
    /// in-memory store).
    pub disk: Option<DiskWatch>,
    /// Peer addresses known from the command line (`--peers`, or the membership a joining
    /// node was told): used for members the membership gives no address, and for every peer
    /// while this node knows no membership yet.
    pub known_addresses: BTreeMap<NodeId, SocketAddr>,
}

/// How the driver watches disk space (see [`crate::storage::space`]).
#[derive(Clone, Debug)]
pub struct DiskWatch {
    /// Below this many free bytes, proposals are refused.
    pub free_space_min: u64,
    /// Made again when there is room for it above the watermark.
    pub ballast: Option<Ballast>,
}

/// How often the driver measures free disk space.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Reads of entries back from storage, and snapshot transfers, finished and waiting for the
/// driver (at most one of each per follower is in flight).
pub const BACKGROUND_RESULTS_QUEUE_MAX: usize = 64;

type ReadResult = (NodeId, LogIndex, Result<(Term, Vec<Entry>), LogIndex>);

/// The channel the writer's sink reports into; pass the sender to [`GroupCommitWriter::start`].
pub fn writer_channel() -> (mpsc::Sender<WriterEvent>, mpsc::Receiver<WriterEvent>) {
    mpsc::channel(WRITER_EVENTS_QUEUE_MAX)
}

/// Subscriptions read committed batches from durable storage through this, up to the seq the
/// node last declared servable.
pub struct StoredBatches<R: LogRead> {
    reader: R,
    servable_seq: watch::Receiver<u64>,
    leaderless_since: watch::Receiver<Option<Instant>>,
}

impl<R: LogRead + Send + Sync + 'static> StoredBatches<R> {
    pub fn new(
        reader: R,
        servable_seq: watch::Receiver<u64>,
        leaderless_since: watch::Receiver<Option<Instant>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            reader,
            servable_seq,
            leaderless_since,
        })
    }
}

impl<R: LogRead + Send + Sync + 'static> BatchSource for StoredBatches<R> {
    fn committed_from(&self, from: u64, to: u64) -> Result<Vec<CommittedBatch>, StorageError> {
        let read = self
            .reader
            .batches_from(from, to, SUBSCRIPTION_READ_BYTES_MAX)?;
        read.iter()
            .map(|(seq, entry)| {
                committed_batch(*seq, entry).map_err(|fault| StorageError::Corrupt {
                    index: entry.index,
                    detail: fault.to_string(),
                })
            })
            .collect()
    }

    fn servable_seq(&self) -> watch::Receiver<u64> {
        self.servable_seq.clone()
    }

    fn leaderless_since(&self) -> watch::Receiver<Option<Instant>> {
        self.leaderless_since.clone()
    }

    fn first_seq(&self) -> u64 {
        // A failed read answers 1: the batch read that follows reports the storage error.
        self.reader.first_seq().unwrap_or(1)
    }

    fn backup(&self) -> Result<(ordo_common::LogId, Vec<u8>), StorageError> {
        let state = self.reader.snapshot()?;
        Ok((state.applied, encode_snapshot(&state)))
    }
}

/// The parts a driver is made of.
pub struct DriverParts<S: LogStore> {
    pub node: Node,
    pub writer: GroupCommitWriter<S>,
    pub writer_events: mpsc::Receiver<WriterEvent>,
    pub peers: PeerLinks,
    pub inbound: mpsc::Receiver<Inbound>,
    pub clients: mpsc::Receiver<ClientCall>,
    pub snapshots: mpsc::Receiver<ReceivedSnapshot>,
    pub servable_seq: watch::Sender<u64>,
    /// Since when this node has known no leader (`None` while it knows one).
    pub leaderless_since: watch::Sender<Option<Instant>>,
    /// What the transport answers proposals with before queueing them (see [`Admission`]).
    pub admission: watch::Sender<Admission>,
    /// Where the node's view is published for observers (HTTP, metrics), every
    /// [`VIEW_INTERVAL`].
    pub view: watch::Sender<Arc<NodeView>>,
    pub options: DriverOptions,
}

pub struct Driver<S: LogStore> {
    node: Node,
    writer: GroupCommitWriter<S>,
    writer_events: mpsc::Receiver<WriterEvent>,
    peers: PeerLinks,
    inbound: mpsc::Receiver<Inbound>,
    clients: mpsc::Receiver<ClientCall>,
    snapshots: mpsc::Receiver<ReceivedSnapshot>,
    servable_seq: watch::Sender<u64>,
    leaderless_since: watch::Sender<Option<Instant>>,
    admission: watch::Sender<Admission>,
    view: watch::Sender<Arc<NodeView>>,
    /// The last leader this node knew (for `ordo_leader_changes_total`).
    known_leader: Option<NodeId>,
    /// When the view was last published.
    viewed_at: Instant,
    options: DriverOptions,
    /// The longest gaps between ticks: in the current window, and in the one before.
    tick_gaps: TickGaps,
    /// Reads back from storage and snapshot transfers, done in the background.
    reads: (mpsc::Sender<ReadResult>, mpsc::Receiver<ReadResult>),
    snapshot_reports: (mpsc::Sender<SnapshotReport>, mpsc::Receiver<SnapshotReport>),
    /// Client tasks waiting for the node's reply.
    waiting: HashMap<RequestId, oneshot::Sender<ClientResponse>>,
    next_request: u64,
    /// The last write handed to the writer, and the applied index before the next state write.
    last_write: WriteId,
    applied_index: LogIndex,
    /// Free space is below the watermark, by the last check.
    disk_low: bool,
    /// The writer is waiting for space (it reported `NoSpace` and nothing durable since).
    writer_stalled: bool,
    /// A background task is making the ballast.
    ballast_pending: Arc<std::sync::atomic::AtomicBool>,
    /// The memberships (in force, and committed) the peer links were last set from.
    linked: Option<(Membership, Membership)>,
}

impl<S: LogStore> Driver<S> {
    pub fn new(parts: DriverParts<S>) -> Self {
        let applied_index = parts.node.engine().applied_index();
        Self {
            node: parts.node,
            writer: parts.writer,
            writer_events: parts.writer_events,
            peers: parts.peers,
            inbound: parts.inbound,
            clients: parts.clients,
            snapshots: parts.snapshots,
            servable_seq: parts.servable_seq,
            leaderless_since: parts.leaderless_since,
            admission: parts.admission,
            view: parts.view,
            known_leader: None,
            viewed_at: Instant::now(),
            options: parts.options,
            tick_gaps: TickGaps::default(),
            reads: mpsc::channel(BACKGROUND_RESULTS_QUEUE_MAX),
            snapshot_reports: mpsc::channel(BACKGROUND_RESULTS_QUEUE_MAX),
            waiting: HashMap::new(),
            next_request: 1,
            last_write: WriteId(0),
            applied_index,
            disk_low: false,
            writer_stalled: false,
            ballast_pending: Arc::default(),
            linked: None,
        }
    }

    /// Runs until `shutdown` fires, then stops gracefully: a leader hands leadership to the
    /// most up-to-date follower first (bounded by two election timeouts), every write already
    /// asked for is made durable, and every waiting client gets an answer.
    pub async fn run(mut self, mut shutdown: oneshot::Receiver<()>) -> Result<(), DriverError> {
        let mut ticks = tokio::time::interval(self.options.tick_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut disk_checks = tokio::time::interval(DISK_CHECK_INTERVAL);
        disk_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                // First: a round of client work must never hold back elections and heartbeats.
                _ = ticks.tick() => {
                    let gap = self.tick_gaps.tick(Instant::now());
                    self.node.set_tick_gap_max_us(gap.as_micros() as u64);
                    self.node.tick(wall_clock_ms());
                    if self.viewed_at.elapsed() >= VIEW_INTERVAL {
                        self.viewed_at = Instant::now();
                        self.publish_view();
                    }
                }
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    match self.node.stop() {
                        Ok(Some(target)) => info!(target, "stopping: transferring leadership"),
                        Ok(None) => info!("stopping"),
                        Err(error) => warn!(%error, "stopping without a leadership transfer"),
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
                call = self.clients.recv() => {
                    if let Some(call) = call {
                        let started = Instant::now();
                        self.on_client(call);
                        for _ in 0..INPUTS_PER_ROUND_MAX {
                            if started.elapsed() >= CLIENT_ROUND_TIME_MAX {
                                break;
                            }
                            let Ok(call) = self.clients.try_recv() else { break };
                            self.on_client(call);
                        }
                    }
                }
                Some((to, low, read)) = self.reads.1.recv() => {
                    self.node.handle_entries_read(to, low, read);
                }
                Some((to, delivered)) = self.snapshot_reports.1.recv() => {
                    self.node.handle_snapshot_report(to, delivered);
                }
                Some(snapshot) = self.snapshots.recv() => {
                    self.node.handle_snapshot(snapshot.from, snapshot.term, snapshot.state);
                }
                _ = disk_checks.tick(), if self.options.disk.is_some() => self.check_disk(),
            }
            self.carry_out().await?;
            self.link_members();
            if let Some(reason) = self.peers.refused_for_lost_data() {
                error!(%reason, "stopping: this node lost its data and must not take part");
                return Err(DriverError::LostData(reason));
            }
            if self.node.is_stopped() {
                info!(
                    handed_over = self.node.engine().role() != Role::Leader,
                    "stopped"
                );
                break;
            }
        }
        let Driver {
            mut node,
            writer,
            waiting: mut clients,
            last_write,
            ..
        } = self;
        writer.close()?;
        // Every write asked for is durable now: report it (subscribers' servable seq), and answer
        // everyone still waiting. Only replies matter any more.
        node.handle_durable(Durable {
            write: last_write,
            last_log_id: None,
            first_index: 0,
        });
        node.abandon();
        while let Some(output) = node.poll_output() {
            if let Output::Reply { request, response } = output
                && let Some(reply) = clients.remove(&request)
            {
                let _ = reply.send(response);
            }
        }
        Ok(())
    }

    /// Keeps the peer links in step with the membership: a link to every other member of the
    /// membership in force and of the last committed one (a node being removed, the leader
    /// say, keeps its links until its removal commits: it must hear the acknowledgements
    /// that commit it), none to anyone else, and connections from ids whose removal committed
    /// refused.
    fn link_members(&mut self) {
        let raft = self.node.engine();
        let (membership, committed) = (raft.membership(), raft.committed_membership());
        if self
            .linked
            .as_ref()
            .is_some_and(|(linked, linked_committed)| {
                linked == membership && linked_committed == committed
            })
        {
            return;
        }
        let known = &self.options.known_addresses;
        let peers: BTreeMap<NodeId, SocketAddr> = if membership.voters.is_empty() {
            // Joining: the membership arrives with the leader's first snapshot or entries.
            known.clone()
        } else {
            let mut ids: Vec<NodeId> = membership.members().chain(committed.members()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into_iter()
                .filter_map(|id| {
                    let recorded = membership
                        .addresses
                        .get(&id)
                        .or_else(|| committed.addresses.get(&id));
                    let address = match recorded {
                        Some(address) => resolve(address),
                        None => known.get(&id).copied(),
                    };
                    if address.is_none() {
                        warn!(
                            peer = id,
                            "no usable address for a member; not linking to it"
                        );
                    }
                    Some((id, address?))
                })
                .collect()
        };
        info!(
            members = ?membership.members().collect::<Vec<_>>(),
            retired = ?committed.retired,
            "membership in force"
        );
        self.peers.set_peers(&peers, &committed.retired);
        self.linked = Some((membership.clone(), committed.clone()));
    }

    fn on_peer_message(&mut self, Inbound { from, message }: Inbound) {
        if let Err(error) = self.node.handle_message(from, message) {
            warn!(peer = from, %error, "dropped a peer message");
        }
    }

    fn on_client(
        &mut self,
        ClientCall {
            request,
            reply,
            topic_quota,
        }: ClientCall,
    ) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.waiting.insert(id, reply);
        self.node
            .handle_request_within(id, request, topic_quota.as_ref());
    }

    /// Publishes what observers see of the node, and the gauges that follow from it. Observers
    /// read the published view: no HTTP request reaches this loop.
    fn publish_view(&mut self) {
        let view = self.node.view();
        let status = &view.status;
        metrics::gauge!("ordo_log_last_index").set(status.last_index as f64);
        metrics::gauge!("ordo_commit_index").set(status.commit_index as f64);
        metrics::gauge!("ordo_applied_index").set(status.applied_index as f64);
        metrics::gauge!("ordo_apply_lag_entries").set(status.apply_lag_entries() as f64);
        metrics::gauge!("ordo_reachable_peers").set(status.reachable_peers.len() as f64);
        metrics::gauge!("ordo_client_queue_requests")
            .set((self.clients.max_capacity() - self.clients.capacity()) as f64);
        metrics::gauge!("ordo_peer_inbound_queue_messages")
            .set((self.inbound.max_capacity() - self.inbound.capacity()) as f64);
        metrics::gauge!("ordo_waiting_requests").set(self.waiting.len() as f64);
        for member in &view.members {
            if let Some(lag) = member.lag_entries.filter(|_| member.id != status.id) {
                metrics::gauge!("ordo_replication_lag_entries", "follower" => member.id.to_string())
                    .set(lag as f64);
            }
        }
        self.view.send_replace(Arc::new(view));
    }

    /// Measures free space, refuses or resumes proposals, and makes the ballast when there is
    /// room for it.
    fn check_disk(&mut self) {
        let Some(watch) = self.options.disk.clone() else {
            return;
        };
        let available = match available_bytes(&self.options.data_dir) {
            Ok(available) => available,
            Err(error) => {
                warn!(%error, "cannot measure free disk space; keeping the last verdict");
                return;
            }
        };
        metrics::gauge!("ordo_disk_available_bytes").set(available as f64);
        let low = available < watch.free_space_min;
        if low != self.disk_low {
            if low {
                warn!(
                    available,
                    free_space_min = watch.free_space_min,
                    "free disk space is below storage.free_space_min: refusing new proposals \
                     (storage_full) until space is freed"
                );
            } else {
                info!(available, "free disk space is back above the watermark");
            }
            self.disk_low = low;
            self.update_storage_full();
        }
        if let Some(ballast) = &watch.ballast
            && !low
            && !self
                .ballast_pending
                .load(std::sync::atomic::Ordering::Relaxed)
            && !ballast.is_in_place()
        {
            let ballast = ballast.clone();
            let free_min = watch.free_space_min;
            let pending = self.ballast_pending.clone();
            pending.store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::task::spawn_blocking(move || {
                match ballast.ensure(free_min) {
                    Ok(true) => info!(path = %ballast.path.display(), "the ballast is in place"),
                    Ok(false) => {}
                    Err(error) => warn!(%error, "cannot make the ballast"),
                }
                pending.store(false, std::sync::atomic::Ordering::Relaxed);
            });
        }
    }

    fn update_storage_full(&mut self) {
        let full = self.disk_low || self.writer_stalled;
        metrics::gauge!("ordo_storage_full").set(if full { 1.0 } else { 0.0 });
        self.node.set_storage_full(full);
    }

    fn on_writer_event(&mut self, event: WriterEvent) -> Result<(), DriverError> {
        match event {
            WriterEvent::NoSpace { requests, error } => {
                if !self.writer_stalled {
                    warn!(
                        ?requests,
                        %error,
                        "the disk is full: writes wait for space, proposals are refused"
                    );
                    self.writer_stalled = true;
                    self.update_storage_full();
                }
                Ok(())
            }
            WriterEvent::Durable(report) => {
                if self.writer_stalled {
                    info!("writes resumed after the disk was full");
                    self.writer_stalled = false;
                    self.update_storage_full();
                }
                self.node.handle_durable(Durable {
                    write: WriteId(*report.requests.end()),
                    last_log_id: report.last_log_id,
                    first_index: report.first_index,
                });
                Ok(())
            }
            WriterEvent::Refused { requests, error } => {
                // The node asked for a write that breaks the log's rules: a bug. Stop rather
                // than continue with a log that disagrees with the node.
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
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Persist { write, batch, sync } => {
                    self.count_applied(&batch);
                    let marker = match &batch.install {
                        Some(install) => Some(
                            InstallMarker::begin(&self.options.data_dir, install.last_included)
                                .map_err(DriverError::InstallMarker)?,
                        ),
                        None => None,
                    };
                    self.submit(write, batch)?;
                    if sync {
                        self.wait_durable(write).await?;
                    }
                    if let Some(marker) = marker {
                        info!("installed a snapshot");
                        marker.finish().map_err(DriverError::InstallMarker)?;
                    }
                }
                Output::ReadEntries { to, low, high } => self.read_entries(to, low, high),
                Output::SendSnapshot { to, term } => self.send_snapshot(to, term),
                Output::Send { to, message } => self.peers.send(to, message),
                Output::Reply { request, response } => {
                    if let Some(reply) = self.waiting.remove(&request) {
                        // The client may have gone away; its answer is then nobody's business.
                        let _ = reply.send(response);
                    }
                }
                Output::Servable { seq } => {
                    self.servable_seq.send_replace(seq);
                }
                Output::RoleChanged { role, term, leader } => {
                    info!(?role, term, ?leader, "role changed");
                    metrics::counter!("ordo_role_changes_total").increment(1);
                    metrics::gauge!("ordo_raft_term").set(term as f64);
                    let leading = if role == Role::Leader { 1.0 } else { 0.0 };
                    metrics::gauge!("ordo_is_leader").set(leading);
                    for (name, this) in [
                        ("follower", Role::Follower),
                        ("precandidate", Role::PreCandidate),
                        ("candidate", Role::Candidate),
                        ("leader", Role::Leader),
                    ] {
                        let on = if role == this { 1.0 } else { 0.0 };
                        metrics::gauge!("ordo_role", "role" => name).set(on);
                    }
                    if role == Role::Candidate {
                        metrics::counter!("ordo_elections_total").increment(1);
                    }
                    if leader.is_some() && leader != self.known_leader {
                        metrics::counter!("ordo_leader_changes_total").increment(1);
                    }
                    if leader.is_some() {
                        self.known_leader = leader;
                    }
                    let answer = (role != Role::Leader).then(|| self.node.not_leader(leader));
                    self.admission
                        .send_replace(Admission { not_leader: answer });
                    self.leaderless_since.send_if_modified(|since| {
                        match (leader.is_some(), since.is_some()) {
                            (true, true) => *since = None,
                            (false, false) => *since = Some(Instant::now()),
                            _ => return false,
                        }
                        true
                    });
                }
                Output::Halt(fault) => {
                    error!(%fault, "the node stopped itself");
                    return Err(DriverError::Halted(fault));
                }
            }
        }
        Ok(())
    }

    /// Reads entries `[low, high)` back for follower `to` on a blocking thread.
    fn read_entries(&self, to: NodeId, low: LogIndex, high: LogIndex) {
        let reader = self.writer.reader();
        let results = self.reads.0.clone();
        let bytes_max = self.options.append_bytes_max;
        tokio::task::spawn_blocking(move || {
            let read = reader
                .term_at(low - 1)
                .and_then(|term| Ok((term, reader.entries(low, high, bytes_max)?)));
            let read = read.map_err(|error| {
                if !matches!(error, StorageError::Compacted { .. }) {
                    warn!(to, low, %error, "could not read entries back for a follower");
                }
                reader.first_index().unwrap_or(low)
            });
            let _ = results.blocking_send((to, low, read));
        });
    }

    /// Builds a snapshot of the state machine (one consistent read, on a blocking thread) and
    /// hands it to follower `to`'s link; the node hears how it went.
    fn send_snapshot(&self, to: NodeId, term: Term) {
        let reader = self.writer.reader();
        let links = self.peers.clone();
        let reports = self.snapshot_reports.0.clone();
        tokio::spawn(async move {
            let built = tokio::task::spawn_blocking(move || {
                reader
                    .snapshot()
                    .map(|state| (state.applied, encode_snapshot(&state)))
            })
            .await;
            let delivered = match built {
                Ok(Ok((last_included, bytes))) => {
                    let (done, delivered) = oneshot::channel();
                    let snapshot = OutgoingSnapshot {
                        term,
                        last_included,
                        bytes: Arc::new(bytes),
                        done,
                    };
                    links.send_snapshot(to, snapshot);
                    delivered.await.unwrap_or(false)
                }
                Ok(Err(error)) => {
                    warn!(to, %error, "could not build a snapshot");
                    false
                }
                Err(_) => false,
            };
            let _ = reports.send((to, delivered)).await;
        });
    }

    fn count_applied(&mut self, batch: &WriteBatch) {
        if let Some(state) = &batch.state {
            let applied = state.applied.index;
            let entries = applied.saturating_sub(self.applied_index);
            self.applied_index = applied;
            metrics::counter!("ordo_entries_applied_total").increment(entries);
            metrics::counter!("ordo_batches_committed_total").increment(state.seqs.len() as u64);
        }
    }

    /// Hands write `write` to the writer, which numbers requests in submission order from 1 —
    /// exactly as the node numbers its writes.
    fn submit(&mut self, write: WriteId, batch: WriteBatch) -> Result<(), DriverError> {
        let request = match self.writer.try_submit(batch) {
            Ok(request) => request,
            // The queue is full: wait for room (back-pressure) without stalling other tasks.
            Err(TrySubmitError::Full(batch)) => {
                tokio::task::block_in_place(|| self.writer.submit(*batch))?
            }
            Err(TrySubmitError::Stopped(_)) => return Err(DriverError::WriterGone),
        };
        assert_eq!(
            request, write.0,
            "the writer's request numbers follow the node's write numbers"
        );
        self.last_write = write;
        Ok(())
    }

    /// Feeds the node every writer report until write `write` is durable.
    async fn wait_durable(&mut self, write: WriteId) -> Result<(), DriverError> {
        loop {
            let event = self
                .writer_events
                .recv()
                .await
                .ok_or(DriverError::WriterGone)?;
            let covered =
                matches!(&event, WriterEvent::Durable(report) if *report.requests.end() >= write.0);
            self.on_writer_event(event)?;
            if covered {
                return Ok(());
            }
        }
    }
}

/// Every voter's client address as text, for the node's `NotLeader` hints.
/// A member's address as the membership records it (`host:port`), resolved.
pub fn resolve(address: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    address
        .parse()
        .ok()
        .or_else(|| address.to_socket_addrs().ok()?.next())
}

pub fn addresses(voters: &BTreeMap<NodeId, SocketAddr>) -> BTreeMap<NodeId, String> {
    voters
        .iter()
        .map(|(id, address)| (*id, address.to_string()))
        .collect()
}

/// The wall clock, in milliseconds since the Unix epoch: what a leader stamps proposals with.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
