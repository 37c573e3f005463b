//! The batch client: submit atomic batches, ask for their outcome, subscribe to the committed
//! sequence. It finds the leader itself, follows `NotLeader` hints, and retries on connection
//! loss with the **same** batch id, so a retried submit commits at most once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo_common::batch::{Batch, BatchError, BatchId, CommittedBatch, Outcome, RejectReason};
use ordo_common::client::{ClientRequest, ClientResponse, RefusedCode};
use tokio::sync::mpsc;

use crate::connection::{CLIENT_IDLE_TIMEOUT, ClientTls, ConnectError, NodeConnection};

/// Committed batches a subscription buffers before the consumer takes them; beyond it the
/// server's stream waits (QUIC flow control), so nothing grows without bound.
pub const SUBSCRIPTION_BUFFER_BATCHES: usize = 64;

/// A submit unanswered for this long starts asking the other nodes who leads (see
/// [`Client::request_watching_leader`]). Far above a loaded cluster's p99 commit latency, so
/// the probes are for failures, not for slow commits.
pub const LEADER_PROBE_AFTER: Duration = Duration::from_millis(500);
/// How often the waiting submit asks again, one node per turn.
pub const LEADER_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long one such question may take (a dead node is skipped after this).
pub const LEADER_PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// How a client reaches the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub endpoints: Vec<SocketAddr>,
    /// Directory with `ca.pem` and `client-NAME.pem/.key`.
    pub tls_dir: PathBuf,
    /// Which client identity to use; the first `client-*` in `tls_dir` when `None`.
    pub client_name: Option<String>,
    /// Connecting and one request round trip.
    pub request_timeout: Duration,
    /// How long `submit` and `status` keep retrying before giving up.
    pub retry_timeout: Duration,
    /// A connection that hears nothing from its node for this long is closed (QUIC's idle
    /// timeout, with keep-alives four times as often); default [`CLIENT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<SocketAddr>, tls_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoints,
            tls_dir: tls_dir.into(),
            client_name: None,
            request_timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(30),
            idle_timeout: CLIENT_IDLE_TIMEOUT,
        }
    }
}

/// A committed batch's place in the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub id: BatchId,
    pub seq: u64,
    pub index: u64,
}

/// Why a submit did not commit. Each variant says what the caller may do.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A precondition failed: definite, recorded, nothing of the batch is visible.
    #[error("rejected: {reason}")]
    Rejected { reason: RejectReason },
    /// The batch is over a size limit; split it.
    #[error("batch too large: {error}")]
    TooLarge { limit: u64, error: BatchError },
    /// The batch is malformed (no messages, bad topic name, too many topics, ...).
    #[error("invalid batch: {0}")]
    Invalid(BatchError),
    /// No node could take the batch; it was never appended. Safe to retry with the same id.
    #[error("cluster unavailable: {detail}")]
    Unavailable { detail: String },
    /// The batch may or may not have committed: resolve with [`Client::status`] (or retry with
    /// the same id, which never commits twice).
    #[error("no answer for batch {id} within the retry timeout; its outcome is unknown: {detail}")]
    Timeout { id: BatchId, detail: String },
    /// The id is registered with other content: ids are single-use. Nothing of this batch
    /// committed; submit new content with a fresh id.
    #[error("batch id {id} is already registered with other content")]
    IdConflict { id: BatchId },
    /// The id is older than the registry answers for (its horizon, 24 hours by default), or
    /// too far ahead of the cluster's clock: an earlier attempt may have committed, and this one
    /// never will. Ask [`Client::status`]; submit new work with a fresh id.
    #[error("batch id {id} is beyond the registry's horizon: {reason}")]
    BeyondHorizon { id: BatchId, reason: String },
    /// A coordinator refused the request outright; `code` says why (stable).
    #[error("refused ({code}): {reason}")]
    Refused { code: RefusedCode, reason: String },
}

/// What a status query learned of a batch id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchStatus {
    /// Committed at `seq`, carried by log entry `index`.
    Committed { seq: u64, index: u64 },
    /// Rejected: a precondition failed; nothing of it is visible.
    Rejected { reason: RejectReason },
    /// The registry has never seen the id, and would remember it if it had committed: it has
    /// not committed (yet: an attempt still in flight may).
    Unknown,
    /// The id is older than what the registry answers for (its time is at or below
    /// `floor_ms`, milliseconds since the Unix epoch): whether it committed is no longer known,
    /// but it will never commit again.
    BeyondHorizon { floor_ms: u64 },
}

impl BatchStatus {
    /// Whether the batch is known to have an outcome (committed or rejected).
    pub fn is_decided(&self) -> bool {
        matches!(self, Self::Committed { .. } | Self::Rejected { .. })
    }
}

/// How one subscription stream ended.
enum Fed {
    /// The consumer dropped the subscription.
    Done,
    /// That node no longer holds `next_seq`.
    Compacted { first_seq: u64 },
    /// The subscription was refused as it stands (say, an identity may not read a topic).
    Refused { code: RefusedCode, reason: String },
}

/// Why a status query or a subscription failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cluster unavailable: {detail}")]
    Unavailable { detail: String },
    /// No node holds the requested seqs any more (retention deleted them); the first seq
    /// still held is `first_seq`.
    #[error("no node holds seqs below {first_seq} any more (compacted by retention)")]
    Compacted { first_seq: u64 },
    #[error("refused ({code}): {reason}")]
    Refused { code: RefusedCode, reason: String },
}

/// A handle to the cluster. Cheap to clone; every clone shares the connections, and any
/// number of submits may be in flight at once (one QUIC stream each).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    tls: ClientTls,
    /// The node believed to lead, and open connections by address.
    leader: Mutex<Option<SocketAddr>>,
    connections: Mutex<Vec<NodeConnection>>,
    /// When each endpoint last failed: retries go to the others first.
    failures: Mutex<Vec<(SocketAddr, Instant)>>,
}

/// How long an endpoint that failed is tried only after the others: long enough to skip a dead
/// node while the cluster elects a new leader, short enough to come back to a restarted one.
pub const FAILED_ENDPOINT_AVOID: Duration = Duration::from_secs(3);

impl Client {
    /// Loads the TLS files and checks that at least one endpoint answers.
    pub async fn connect(config: ClientConfig) -> Result<Self, ConnectError> {
        let tls = ClientTls::load(&config.tls_dir, config.client_name.as_deref())?
            .with_idle_timeout(config.idle_timeout)?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                tls,
                leader: Mutex::new(None),
                connections: Mutex::new(Vec::new()),
                failures: Mutex::new(Vec::new()),
            }),
        };
        let mut last_error = None;
        for address in client.inner.config.endpoints.clone() {
            match client.connection(address).await {
                Ok(_) => return Ok(client),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(ConnectError::Connection {
            address: "0.0.0.0:0".parse().expect("literal"),
            detail: "no endpoints configured".into(),
        }))
    }

    /// Submits `batch` and waits for its outcome. Retries (same id) across leader changes and
    /// lost connections until `retry_timeout`.
    pub async fn submit(&self, batch: Batch) -> Result<Committed, SubmitError> {
        if let Err(error) = batch.validate() {
            return Err(match error {
                BatchError::TooLarge { limit, .. } | BatchError::TooManyMessages { limit, .. } => {
                    SubmitError::TooLarge { limit, error }
                }
                other => SubmitError::Invalid(other),
            });
        }
        let id = batch.id;
        let request = ClientRequest::Submit { batch };
        let deadline = Instant::now() + self.inner.config.retry_timeout;
        let mut may_have_reached_log = false;
        let mut last_problem = String::from("no attempt");
        let mut attempt = 0u32;
        while Instant::now() < deadline {
            attempt += 1;
            let address = self.target(attempt);
            let response = match self.connection(address).await {
                Ok(connection) => self.request_watching_leader(&connection, &request).await,
                Err(error) => Err(error),
            };
            match response {
                Ok(ClientResponse::Outcome(Outcome::Committed { seq, index })) => {
                    self.answered_as_leader(address);
                    return Ok(Committed { id, seq, index });
                }
                Ok(ClientResponse::Outcome(Outcome::Rejected { reason })) => {
                    self.answered_as_leader(address);
                    return Err(SubmitError::Rejected { reason });
                }
                Ok(ClientResponse::NotLeader { leader_address, .. }) => {
                    let hinted = leader_address.is_some();
                    self.follow_hint(leader_address.as_deref());
                    last_problem = format!("{address} is not the leader");
                    if hinted {
                        continue;
                    }
                }
                Ok(ClientResponse::Busy { code, reason }) => {
                    // Only an unknown outcome may still commit; back-pressure, a transfer, a
                    // stopping node or an overwritten attempt never will.
                    may_have_reached_log |= code.may_have_appended();
                    last_problem = format!("{address} is busy ({code}): {reason}");
                }
                Ok(ClientResponse::Invalid(error)) => return Err(SubmitError::Invalid(error)),
                Ok(ClientResponse::Refused {
                    code: RefusedCode::IdConflict,
                    ..
                }) => return Err(SubmitError::IdConflict { id }),
                Ok(ClientResponse::Refused {
                    code: RefusedCode::BeyondHorizon,
                    reason,
                }) => return Err(SubmitError::BeyondHorizon { id, reason }),
                Ok(ClientResponse::Refused { code, reason }) => {
                    return Err(SubmitError::Refused { code, reason });
                }
                Ok(other) => last_problem = format!("unexpected answer {other:?}"),
                Err(error) => {
                    // The request may have reached the leader before the connection failed.
                    may_have_reached_log |= matches!(
                        error,
                        ConnectError::Timeout { .. }
                            | ConnectError::Connection { .. }
                            | ConnectError::LeaderMoved { .. }
                    );
                    self.forget(address);
                    last_problem = error.to_string();
                    if matches!(error, ConnectError::LeaderMoved { .. }) {
                        // Straight to the new leader: the others already elected it.
                        continue;
                    }
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        if may_have_reached_log {
            Err(SubmitError::Timeout {
                id,
                detail: last_problem,
            })
        } else {
            Err(SubmitError::Unavailable {
                detail: last_problem,
            })
        }
    }

    /// What the cluster knows of batch `id`, read linearizably from the leader: committed,
    /// rejected, unknown (never seen), or beyond the registry's horizon.
    pub async fn status(&self, id: BatchId) -> Result<BatchStatus, QueryError> {
        let deadline = Instant::now() + self.inner.config.retry_timeout;
        let request = ClientRequest::BatchStatus { id };
        match self
            .leader_call(&request, deadline, Patience::Normal)
            .await?
        {
            ClientResponse::Outcome(Outcome::Committed { seq, index }) => {
                Ok(BatchStatus::Committed { seq, index })
            }
            ClientResponse::Outcome(Outcome::Rejected { reason }) => {
                Ok(BatchStatus::Rejected { reason })
            }
            ClientResponse::Unknown => Ok(BatchStatus::Unknown),
            ClientResponse::BeyondHorizon { floor_ms } => {
                Ok(BatchStatus::BeyondHorizon { floor_ms })
            }
            ClientResponse::Refused { code, reason } => Err(QueryError::Refused { code, reason }),
            other => Err(QueryError::Unavailable {
                detail: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Sends `request` to the leader, following leader hints and retrying across leader
    /// changes, lost connections and busy answers until `deadline`; returns the first other
    /// answer. `patience` says how long one attempt may take and what its timeout means.
    pub(crate) async fn leader_call(
        &self,
        request: &ClientRequest,
        deadline: Instant,
        patience: Patience,
    ) -> Result<ClientResponse, QueryError> {
        self.leader_call_timed(request, deadline, patience)
            .await
            .map(|(response, _)| response)
    }

    /// [`Client::leader_call`], also returning when the answered attempt was sent (a session's
    /// TTL runs from no earlier than that).
    pub(crate) async fn leader_call_timed(
        &self,
        request: &ClientRequest,
        deadline: Instant,
        patience: Patience,
    ) -> Result<(ClientResponse, Instant), QueryError> {
        let wait = match patience {
            Patience::Wait(wait) => Some(wait),
            _ => None,
        };
        let mut attempt = 0u32;
        let mut last_problem = String::from("no attempt");
        while Instant::now() < deadline {
            attempt += 1;
            let address = self.target(attempt);
            let sent = Instant::now();
            // A short attempt bounds the connect too: a handshake with a dead node (a follower
            // may still hint it as the leader) would otherwise take the whole request timeout.
            let connection = match patience {
                Patience::Short(timeout) => {
                    match tokio::time::timeout(timeout, self.connection(address)).await {
                        Ok(connection) => connection,
                        Err(_) => Err(ConnectError::Timeout { address, timeout }),
                    }
                }
                _ => self.connection(address).await,
            };
            let response = match connection {
                Ok(connection) => match patience {
                    Patience::Wait(timeout) | Patience::Short(timeout) => {
                        connection.request_within(request, timeout).await
                    }
                    Patience::Normal => self.request_watching_leader(&connection, request).await,
                },
                Err(error) => Err(error),
            };
            match response {
                Ok(ClientResponse::NotLeader { leader_address, .. }) => {
                    let hinted = leader_address.is_some();
                    self.follow_hint(leader_address.as_deref());
                    last_problem = format!("{address} is not the leader");
                    if hinted {
                        continue;
                    }
                }
                Ok(ClientResponse::Busy { code, reason }) => {
                    last_problem = format!("{address} is busy ({code}): {reason}");
                }
                // Every node applies the same rules: asking another would not help.
                Ok(ClientResponse::Refused {
                    code: code @ RefusedCode::Forbidden,
                    reason,
                }) => return Err(QueryError::Refused { code, reason }),
                Ok(response) => {
                    self.answered_as_leader(address);
                    return Ok((response, sent));
                }
                Err(ConnectError::Timeout { .. }) if wait.is_some() => {
                    // Nothing happened yet: ask again (the node keeps one wait per request key).
                    attempt = 0;
                    continue;
                }
                Err(error) => {
                    self.forget(address);
                    last_problem = error.to_string();
                    if matches!(error, ConnectError::LeaderMoved { .. }) {
                        continue;
                    }
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(QueryError::Unavailable {
            detail: last_problem,
        })
    }

    /// How long calls retry before giving up (see [`ClientConfig::retry_timeout`]).
    pub(crate) fn retry_timeout(&self) -> Duration {
        self.inner.config.retry_timeout
    }

    /// Committed batches from `from_seq` on, in seq order, with only the messages of `topics`
    /// (every topic when empty). Gap-free and duplicate-free across reconnects and leader
    /// changes: any node serves it, up to its own commit index.
    pub fn subscribe(&self, from_seq: u64, topics: Vec<String>) -> Subscription {
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BUFFER_BATCHES);
        let client = self.clone();
        tokio::spawn(async move { client.feed(from_seq.max(1), topics, sender).await });
        Subscription { receiver }
    }

    async fn feed(
        &self,
        mut next_seq: u64,
        topics: Vec<String>,
        sender: mpsc::Sender<Result<CommittedBatch, QueryError>>,
    ) {
        let mut attempt = 0u32;
        // Nodes compact on their own schedule, and a follower that installed a snapshot holds
        // less than one that did not: `Compacted` is reported only once every endpoint has
        // been asked since the first one said so (with the lowest first seq any offered).
        let mut compacted: Option<(u64, Vec<SocketAddr>)> = None;
        loop {
            attempt += 1;
            let address = self.endpoint(attempt);
            let streamed = async {
                let connection = self.connection(address).await.map_err(|e| e.to_string())?;
                let (mut send, mut receive) = connection
                    .raw()
                    .open_bi()
                    .await
                    .map_err(|e| e.to_string())?;
                let request = ClientRequest::Subscribe {
                    from_seq: next_seq,
                    topics: topics.clone(),
                };
                ordo_net::wire::write_frame(&mut send, &request)
                    .await
                    .map_err(|e| e.to_string())?;
                loop {
                    let limit = ordo_common::client::CLIENT_RESPONSE_BYTES_MAX;
                    match ordo_net::wire::read_frame(&mut receive, limit).await {
                        Ok(Some(ClientResponse::Batch(batch))) => {
                            if batch.seq < next_seq {
                                continue;
                            }
                            next_seq = batch.seq + 1;
                            attempt = 0;
                            compacted = None;
                            if sender.send(Ok(batch)).await.is_err() {
                                return Ok(Fed::Done);
                            }
                        }
                        Ok(Some(ClientResponse::Compacted { first_seq })) => {
                            return Ok(Fed::Compacted { first_seq });
                        }
                        Ok(Some(ClientResponse::Refused { code, reason })) => {
                            return Ok(Fed::Refused { code, reason });
                        }
                        // Cut off from the leader: avoid it a while, resume elsewhere.
                        Ok(Some(ClientResponse::Busy { code, reason })) => {
                            return Err(format!("{}: {reason}", code.as_str()));
                        }
                        Ok(Some(other)) => return Err(format!("unexpected frame {other:?}")),
                        Ok(None) => return Err("stream ended".to_string()),
                        Err(error) => return Err(error.to_string()),
                    }
                }
            };
            let result = streamed.await;
            if let Some((_, asked)) = compacted.as_mut()
                && !asked.contains(&address)
            {
                asked.push(address);
            }
            match result {
                Ok(Fed::Done) => return,
                Ok(Fed::Refused { code, reason }) => {
                    let _ = sender.send(Err(QueryError::Refused { code, reason })).await;
                    return;
                }
                Ok(Fed::Compacted { first_seq }) => {
                    let (lowest, _) = compacted.get_or_insert_with(|| (first_seq, vec![address]));
                    *lowest = (*lowest).min(first_seq);
                }
                Err(_) => self.forget(address),
            }
            if let Some((first_seq, asked)) = &compacted {
                let endpoints = &self.inner.config.endpoints;
                if endpoints.iter().all(|endpoint| asked.contains(endpoint)) {
                    let error = QueryError::Compacted {
                        first_seq: *first_seq,
                    };
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                // Straight on to the next node: this one answered, it is not down.
                continue;
            }
            if sender.is_closed() {
                return;
            }
            tokio::time::sleep(backoff(attempt.min(8))).await;
        }
    }

    /// Sends `request` to `connection`'s node and waits for its answer, as
    /// [`NodeConnection::request`] does (for submits, and for the calls that go to the leader
    /// with the normal request timeout). But while the answer is late (after
    /// [`LEADER_PROBE_AFTER`]), it asks the other nodes in turn who leads: once one names
    /// another leader, or is the leader itself, the wait ends with an error and the caller
    /// retries there at once. A leader killed, frozen or cut off mid-request answers nothing,
    /// and QUIC hears nothing from it either: without this, a waiting submit would sit out its
    /// request timeout or the idle timeout, long after the others elected a new leader.
    ///
    /// The request may still have reached the old leader's log; the retry carries the same
    /// batch id, which commits at most once.
    async fn request_watching_leader(
        &self,
        connection: &NodeConnection,
        request: &ClientRequest,
    ) -> Result<ClientResponse, ConnectError> {
        tokio::select! {
            biased;
            answer = connection.request(request) => answer,
            moved = self.leader_moved_from(connection) => Err(moved),
        }
    }

    /// Returns once another node than `waiting_on`'s leads, as far as another node knows;
    /// never if none does.
    async fn leader_moved_from(&self, waiting_on: &NodeConnection) -> ConnectError {
        // Nothing is done before the wait: most requests are answered within it, and this
        // runs beside every one of them.
        tokio::time::sleep(LEADER_PROBE_AFTER).await;
        let others: Vec<SocketAddr> = (self.inner.config.endpoints.iter())
            .filter(|address| **address != waiting_on.address())
            .copied()
            .collect();
        if others.is_empty() {
            return std::future::pending().await;
        }
        let mut turn = 0usize;
        loop {
            let address = others[turn % others.len()];
            turn += 1;
            let probe = async {
                let connection = self.connection(address).await.ok()?;
                match connection.request(&ClientRequest::Status).await {
                    Ok(ClientResponse::Status(status)) => Some(status),
                    _ => None,
                }
            };
            let status = tokio::time::timeout(LEADER_PROBE_TIMEOUT, probe).await;
            if let Ok(Some(status)) = status
                && let Some(leader) = status.leader
                && leader != waiting_on.node()
            {
                if leader == status.id {
                    self.answered_as_leader(address);
                } else {
                    self.follow_hint(None);
                }
                return ConnectError::LeaderMoved {
                    address: waiting_on.address(),
                    detail: format!(
                        "node {} says node {leader} now leads (term {})",
                        status.id, status.term
                    ),
                };
            }
            tokio::time::sleep(LEADER_PROBE_INTERVAL).await;
        }
    }

    /// Which node to try on this attempt: the believed leader, else the endpoints in turn.
    fn target(&self, attempt: u32) -> SocketAddr {
        let leader = *self.inner.leader.lock().expect("leader lock");
        leader.unwrap_or_else(|| self.endpoint(attempt))
    }

    /// The endpoints in turn, skipping those that failed within [`FAILED_ENDPOINT_AVOID`]
    /// (unless every one did).
    fn endpoint(&self, attempt: u32) -> SocketAddr {
        let endpoints = &self.inner.config.endpoints;
        let failures = self.inner.failures.lock().expect("failures lock");
        let failed_recently = |address: &SocketAddr| {
            failures
                .iter()
                .any(|(failed, at)| failed == address && at.elapsed() < FAILED_ENDPOINT_AVOID)
        };
        let start = attempt as usize;
        (0..endpoints.len())
            .map(|step| endpoints[(start + step) % endpoints.len()])
            .find(|address| !failed_recently(address))
            .unwrap_or(endpoints[start % endpoints.len()])
    }

    /// Only the leader answers submits and status queries with an outcome: go straight back to
    /// it next time, instead of trying the endpoints in turn (where a dead node costs a whole
    /// request timeout on every call).
    fn answered_as_leader(&self, address: SocketAddr) {
        *self.inner.leader.lock().expect("leader lock") = Some(address);
    }

    fn follow_hint(&self, address: Option<&str>) {
        let hinted = address.and_then(|address| address.parse().ok());
        *self.inner.leader.lock().expect("leader lock") = hinted;
    }

    fn forget(&self, address: SocketAddr) {
        let mut leader = self.inner.leader.lock().expect("leader lock");
        if *leader == Some(address) {
            *leader = None;
        }
        drop(leader);
        let mut failures = self.inner.failures.lock().expect("failures lock");
        failures.retain(|(failed, _)| *failed != address);
        failures.push((address, Instant::now()));
        drop(failures);
        self.inner
            .connections
            .lock()
            .expect("connections lock")
            .retain(|c| c.address() != address);
    }

    /// An open connection to `address`, reusing one when there is one.
    async fn connection(&self, address: SocketAddr) -> Result<NodeConnection, ConnectError> {
        let existing = self
            .inner
            .connections
            .lock()
            .expect("connections lock")
            .iter()
            .find(|connection| {
                connection.address() == address && connection.raw().close_reason().is_none()
            })
            .cloned();
        if let Some(connection) = existing {
            return Ok(connection);
        }
        let connection =
            NodeConnection::connect(address, &self.inner.tls, self.inner.config.request_timeout)
                .await?;
        let mut connections = self.inner.connections.lock().expect("connections lock");
        connections.retain(|c| c.address() != address);
        connections.push(connection.clone());
        Ok(connection)
    }
}

/// How long one attempt of [`Client::leader_call`] may take.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Patience {
    /// The client's request timeout; a timeout counts against the node.
    Normal,
    /// A shorter timeout (a keep-alive must reach a new leader well within its TTL); a timeout
    /// counts against the node.
    Short(Duration),
    /// The request may be answered only when something happens (a lock grant, a leadership
    /// change): an attempt that outlives this is sent again to the same node.
    Wait(Duration),
}

/// Exponential back-off between attempts: 20 ms doubling to 640 ms.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(20 << attempt.min(5))
}

/// A stream of committed batches (see [`Client::subscribe`]).
pub struct Subscription {
    receiver: mpsc::Receiver<Result<CommittedBatch, QueryError>>,
}

impl Subscription {
    /// The next committed batch; waits for one to commit. `None` only after an error ended it.
    pub async fn next(&mut self) -> Option<Result<CommittedBatch, QueryError>> {
        self.receiver.recv().await
    }
}

/// The client endpoints of a local `ordo dev` cluster (its defaults): what the CLI and the
/// examples use when not told otherwise.
pub const DEV_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";
/// The TLS directory `ordo dev` creates (CA and the `cli` client identity among others).
pub const DEV_TLS_DIR: &str = "ordo-dev/tls";

/// Parses a comma-separated list of `host:port` endpoints (as `ORDO_ENDPOINTS` and
/// `--endpoints` take them), resolving host names. An empty list is an error.
pub fn parse_endpoints(list: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let endpoints = list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let mut addresses = item
                .to_socket_addrs()
                .map_err(|error| format!("{item:?} is not host:port ({error})"))?;
            addresses
                .next()
                .ok_or_else(|| format!("{item:?} resolves to no address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(format!("no endpoints in {list:?}"));
    }
    Ok(endpoints)
}

/// A fresh batch id: a UUID v7 (time-ordered, random).
pub fn new_batch_id() -> BatchId {
    BatchId(uuid::Uuid::now_v7().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_parse_and_bad_ones_say_why() {
        let parsed = parse_endpoints(" 127.0.0.1:7001, localhost:7002 ,").unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], "127.0.0.1:7001".parse().unwrap());
        assert_eq!(parsed[1].port(), 7002);
        assert_eq!(parse_endpoints(DEV_ENDPOINTS).unwrap().len(), 3);
        let empty = parse_endpoints(" , ").unwrap_err();
        assert!(empty.contains("no endpoints"), "{empty}");
        let bad = parse_endpoints("127.0.0.1").unwrap_err();
        assert!(bad.contains("\"127.0.0.1\" is not host:port"), "{bad}");
    }
}
