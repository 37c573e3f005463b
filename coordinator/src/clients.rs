//! Serving client connections: authorization, budgets, and the requests themselves.
//!
//! A client can make a node hold connections, streams, request bytes, subscriptions and
//! proposals. Each has a named limit in `[transport]` (see the README's security section), is
//! taken *before* what it bounds is allocated, and a refusal is an answer with a stable code
//! (`quota` for a budget, `forbidden` for a rule) and a metric, never a stall of the node:
//!
//! - connection slots: per node (`connections_max`), per identity and per source address, taken
//!   after the handshake (peers have slots of their own, see [`crate::transport`]);
//! - no unidirectional streams (they would be buffered and never read);
//! - request bytes: a connection's budget and the node's, each taken for the whole frame
//!   before its body is read (or the request is refused at once), with the body's buffer
//!   growing as it arrives, all within `request_read_timeout`;
//! - subscriptions per connection and per node, catch-ups reading history at once, and topics
//!   per filter;
//! - topics: the topics an identity's write patterns cover (all of them without `[auth]`) may
//!   number at most `topics_per_identity_max` before its submits may create more
//!   (`Refused{limit_exceeded}`; admins are not limited), so one client cannot fill every
//!   node's state with names;
//! - submitted bytes per identity waiting for their outcome, so one identity cannot take the
//!   whole `raft.uncommitted_bytes_max`; a proposal at a node that does not lead is answered
//!   at once, without queueing it for the driver;
//! - idle connections and old connections are closed (a rotated or revoked certificate stops
//!   working when its connections end).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo_common::batch::CommittedBatch;
use ordo_common::client::{
    BusyCode, CLIENT_REQUEST_BYTES_MAX, ClientRequest, ClientResponse, RefusedCode,
    SNAPSHOT_CHUNK_BYTES_MAX,
};
use ordo_net::wire::{FrameError, decode_frame_body, read_frame_length, write_frame};
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::auth::Caller;
use crate::config::TransportSection;
use crate::storage::StorageError;
use crate::transport::{Accepting, BatchSource, ClientCall, SUBSCRIPTION_READ_BATCHES_MAX};

/// Close code: a budget refused the connection (the reason names the limit).
pub const CLOSE_QUOTA: u32 = 4;
/// Close code: the connection was idle for `transport.client_idle_timeout`.
pub const CLOSE_IDLE: u32 = 5;
/// Close code: the connection reached `transport.connection_age_max`; reconnect.
pub const CLOSE_AGED: u32 = 6;
const STOP_REFUSED: u32 = 1;
const STOP_BAD_FRAME: u32 = 2;

/// A subscription further behind the newest servable batch than this reads history: it takes
/// one of `transport.catchups_max` while it does.
pub const CATCHUP_LAG_BATCHES: u64 = 1024;
/// Batches a subscription reads before it lets other tasks run, whether or not it sent any.
pub const SUBSCRIPTION_READS_PER_YIELD: u64 = 64;
/// The first slice of a request body's buffer; it doubles as the body arrives.
const REQUEST_CHUNK_BYTES: u64 = 64 << 10;
/// Bodies larger than this are decoded on a blocking thread, not an async worker.
const DECODE_INLINE_BYTES_MAX: u64 = 256 << 10;

/// What a proposal is answered with before it is queued for the driver.
#[derive(Clone, Debug)]
pub struct Admission {
    /// `Some(NotLeader { .. })` while this node does not lead.
    pub not_leader: Option<ClientResponse>,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            not_leader: Some(ClientResponse::NotLeader {
                leader: None,
                leader_address: None,
            }),
        }
    }
}

/// Where client requests go: the driver's queue, and what it says about proposals.
#[derive(Clone, Debug)]
pub struct ClientQueue {
    pub calls: mpsc::Sender<ClientCall>,
    pub admission: watch::Receiver<Admission>,
}

/// Counts per key (identity, address) with a limit each; a [`Taken`] gives its share back
/// when dropped, and a key at zero is forgotten, so the map holds only what is in use.
pub struct Tally<K: Hash + Eq + Clone>(Arc<Mutex<HashMap<K, u64>>>);

impl<K: Hash + Eq + Clone> Default for Tally<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<K: Hash + Eq + Clone> Tally<K> {
    /// Takes `amount` for `key` if that keeps it at most `max`.
    pub fn take(&self, key: &K, amount: u64, max: u64) -> Option<Taken<K>> {
        let mut counts = self.0.lock().expect("tally lock");
        let count = counts.entry(key.clone()).or_insert(0);
        if count.saturating_add(amount) > max {
            if *count == 0 {
                counts.remove(key);
            }
            return None;
        }
        *count += amount;
        Some(Taken {
            tally: self.0.clone(),
            key: key.clone(),
            amount,
        })
    }

    /// What `key` holds now.
    pub fn held(&self, key: &K) -> u64 {
        self.0
            .lock()
            .expect("tally lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// A share of a [`Tally`], given back on drop.
pub struct Taken<K: Hash + Eq + Clone> {
    tally: Arc<Mutex<HashMap<K, u64>>>,
    key: K,
    amount: u64,
}

impl<K: Hash + Eq + Clone> Drop for Taken<K> {
    fn drop(&mut self) {
        let mut counts = self.tally.lock().expect("tally lock");
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(self.amount);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Every budget the node keeps for its clients.
pub struct ClientBudgets {
    pub limits: TransportSection,
    pub connections: Arc<Semaphore>,
    pub per_identity: Tally<Arc<str>>,
    pub per_address: Tally<IpAddr>,
    pub request_bytes: Arc<Semaphore>,
    pub subscriptions: Arc<Semaphore>,
    pub catchups: Arc<Semaphore>,
    pub uncommitted: Tally<Arc<str>>,
    /// When a budget refusal was last logged (seconds since start), so a flood logs once a
    /// second, not once per refusal; the metrics count each.
    logged: AtomicU64,
    started: Instant,
}

impl ClientBudgets {
    pub fn new(limits: &TransportSection) -> Self {
        let permits = |count: u64| Arc::new(Semaphore::new(count as usize));
        Self {
            connections: permits(limits.connections_max),
            per_identity: Tally::default(),
            per_address: Tally::default(),
            request_bytes: permits(limits.request_bytes_max.0),
            subscriptions: permits(limits.subscriptions_max),
            catchups: permits(limits.catchups_max),
            uncommitted: Tally::default(),
            limits: limits.clone(),
            logged: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// Counts a refusal by `limit` (its configuration key) and logs it at most once a second.
    fn refused(&self, limit: &'static str, detail: &str) {
        metrics::counter!("ordo_client_refusals_total", "limit" => limit).increment(1);
        let now = self.started.elapsed().as_secs();
        if self.logged.swap(now, Ordering::Relaxed) != now {
            warn!(
                code = BusyCode::Quota.as_str(),
                limit, detail, "refused a client: transport.{limit} reached (logged once a second)"
            );
        }
    }
}

/// The identity a client's sessions are recorded under: a digest of its certificate.
fn certificate_digest(leaf: Option<&CertificateDer<'_>>) -> Arc<str> {
    leaf.map(|leaf| ordo_common::certificate_identity(leaf))
        .unwrap_or_else(|| "anonymous".to_string())
        .into()
}

/// The leaf certificate a connection was authenticated with.
pub fn leaf_certificate(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().cloned())
}

/// The slots a client connection holds while it is open.
pub struct ConnectionSlots {
    _node: OwnedSemaphorePermit,
    _identity: Taken<Arc<str>>,
    _address: Taken<IpAddr>,
    _counted: Counted,
}

/// Takes a client connection's slots, or says which limit refused it.
pub fn take_connection_slots(
    budgets: &ClientBudgets,
    identity: &Arc<str>,
    address: IpAddr,
) -> Result<ConnectionSlots, String> {
    let limits = &budgets.limits;
    let refuse = |limit: &'static str, max: u64| {
        let detail = format!("transport.{limit} ({max}) reached");
        budgets.refused(limit, &format!("{identity} from {address}"));
        Err(detail)
    };
    let Ok(node) = budgets.connections.clone().try_acquire_owned() else {
        return refuse("connections_max", limits.connections_max);
    };
    let Some(per_identity) =
        budgets
            .per_identity
            .take(identity, 1, limits.connections_per_identity_max)
    else {
        return refuse(
            "connections_per_identity_max",
            limits.connections_per_identity_max,
        );
    };
    let Some(per_address) =
        budgets
            .per_address
            .take(&address, 1, limits.connections_per_address_max)
    else {
        return refuse(
            "connections_per_address_max",
            limits.connections_per_address_max,
        );
    };
    Ok(ConnectionSlots {
        _node: node,
        _identity: per_identity,
        _address: per_address,
        _counted: Counted::new("ordo_client_connections"),
    })
}

/// Adds one to a gauge while it lives: what is open right now.
pub struct Counted(metrics::Gauge);

impl Counted {
    pub fn new(name: &'static str) -> Self {
        let gauge = metrics::gauge!(name);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The name budgets count a caller under: its identity's NAME, or its certificate's digest.
pub fn budget_key(caller: &Caller, leaf: Option<&CertificateDer<'_>>) -> Arc<str> {
    match caller {
        Caller::Client(Some(name)) => name.as_str().into(),
        Caller::Node(id) => format!("node-{id}").into(),
        Caller::Client(None) => certificate_digest(leaf),
    }
}

/// One client connection's state, shared by its stream tasks.
struct ClientConnection {
    caller: Caller,
    /// Sessions' owner: the certificate's digest.
    owner: Arc<str>,
    /// What budgets count this connection under.
    key: Arc<str>,
    request_bytes: Arc<Semaphore>,
    subscriptions: Arc<Semaphore>,
    open_streams: AtomicUsize,
    stream_ended: Notify,
}

/// Decrements the open-stream count when a request's task ends.
struct OpenStream(Arc<ClientConnection>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
        self.0.stream_ended.notify_one();
    }
}

/// Serves one authenticated client connection until it closes, idles out or ages out.
pub(crate) async fn serve(
    connection: quinn::Connection,
    accepting: Arc<Accepting>,
    caller: Caller,
    key: Arc<str>,
    slots: ConnectionSlots,
) {
    let _slots = slots;
    let remote = connection.remote_address();
    let limits = &accepting.budgets.limits;
    // Clients never need unidirectional streams (the connection's receive window is already
    // the client's, see `transport_config`).
    connection.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    let leaf = leaf_certificate(&connection);
    let client = Arc::new(ClientConnection {
        owner: certificate_digest(leaf.as_ref()),
        caller,
        key,
        request_bytes: Arc::new(Semaphore::new(
            limits.connection_request_bytes_max.0 as usize,
        )),
        subscriptions: Arc::new(Semaphore::new(
            limits.subscriptions_per_connection_max as usize,
        )),
        open_streams: AtomicUsize::new(0),
        stream_ended: Notify::new(),
    });
    debug!(%remote, identity = %client.key, "client connected");
    let aged = tokio::time::Instant::now() + limits.connection_age_max.0;
    let idle_max = limits.client_idle_timeout.0;
    let mut active = tokio::time::Instant::now();
    loop {
        let idle = client.open_streams.load(Ordering::Relaxed) == 0;
        tokio::select! {
            accepted = connection.accept_bi() => {
                let (send, receive) = match accepted {
                    Ok(streams) => streams,
                    Err(error) => {
                        debug!(%remote, %error, "client disconnected");
                        return;
                    }
                };
                active = tokio::time::Instant::now();
                client.open_streams.fetch_add(1, Ordering::Relaxed);
                let open = OpenStream(client.clone());
                tokio::spawn(serve_request(send, receive, accepting.clone(), open));
            }
            accepted = connection.accept_uni() => {
                // Allowed by the handshake's transport parameters (peers need them), refused
                // here: their data is dropped unread.
                let Ok(mut stream) = accepted else { return };
                let _ = stream.stop(quinn::VarInt::from_u32(STOP_REFUSED));
                metrics::counter!("ordo_client_refusals_total", "limit" => "uni_streams")
                    .increment(1);
            }
            () = client.stream_ended.notified() => active = tokio::time::Instant::now(),
            () = tokio::time::sleep_until(active + idle_max), if idle => {
                debug!(%remote, "closing an idle client connection");
                metrics::counter!("ordo_client_connections_closed_total", "why" => "idle")
                    .increment(1);
                connection.close(
                    quinn::VarInt::from_u32(CLOSE_IDLE),
                    b"idle for transport.client_idle_timeout",
                );
                return;
            }
            () = tokio::time::sleep_until(aged) => {
                info!(%remote, identity = %client.key, "closing a client connection at transport.connection_age_max");
                metrics::counter!("ordo_client_connections_closed_total", "why" => "age")
                    .increment(1);
                connection.close(
                    quinn::VarInt::from_u32(CLOSE_AGED),
                    b"connection reached transport.connection_age_max; reconnect",
                );
                return;
            }
        }
    }
}

/// The bytes a request holds of its connection's and the node's budgets, until it is answered.
struct RequestBytes {
    _connection: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
    length: u64,
}

fn quota(reason: String) -> ClientResponse {
    ClientResponse::Busy {
        code: BusyCode::Quota,
        reason,
    }
}

/// Reads one request frame within the connection's and the node's byte budgets and the read
/// deadline. `Err` is the answer to give instead.
async fn read_request(
    receive: &mut quinn::RecvStream,
    client: &ClientConnection,
    budgets: &ClientBudgets,
) -> Result<Option<(ClientRequest, RequestBytes)>, ClientResponse> {
    let limits = &budgets.limits;
    let deadline = tokio::time::Instant::now() + limits.request_read_timeout.0;
    let late = || {
        budgets.refused("request_read_timeout", &client.key);
        quota(format!(
            "the request was not read whole within transport.request_read_timeout ({:?})",
            limits.request_read_timeout.0
        ))
    };
    let bad = |error: FrameError| {
        metrics::counter!("ordo_bad_frames_total").increment(1);
        warn!(code = RefusedCode::BadFrame.as_str(), identity = %client.key, %error, "refused a client request: bad frame");
        ClientResponse::Refused {
            code: RefusedCode::BadFrame,
            reason: format!("bad request frame: {error}"),
        }
    };
    let length = match tokio::time::timeout_at(
        deadline,
        read_frame_length(receive, CLIENT_REQUEST_BYTES_MAX),
    )
    .await
    {
        Err(_) => return Err(late()),
        Ok(Err(error)) => return Err(bad(error)),
        Ok(Ok(None)) => return Ok(None),
        Ok(Ok(Some(length))) => length,
    };
    // Both budgets are taken for the whole frame at once, or the request is refused at once:
    // a stream that waited for room without reading would hold its part of the connection's
    // flow-control window, and its neighbours' bodies (the ones holding the room) could then
    // never arrive.
    let Ok(connection) = client
        .request_bytes
        .clone()
        .try_acquire_many_owned(length as u32)
    else {
        budgets.refused("connection_request_bytes_max", &client.key);
        return Err(quota(format!(
            "this connection's requests being read hold transport.connection_request_bytes_max \
             ({} bytes); a request of {length} bytes does not fit: retry when they are answered",
            limits.connection_request_bytes_max.0
        )));
    };
    let Ok(node) = budgets
        .request_bytes
        .clone()
        .try_acquire_many_owned(length as u32)
    else {
        budgets.refused("request_bytes_max", &client.key);
        return Err(quota(format!(
            "this node's requests being read hold transport.request_bytes_max ({} bytes); a \
             request of {length} bytes does not fit: retry",
            limits.request_bytes_max.0
        )));
    };
    // The buffer grows as the body arrives (doubling): a slow sender's memory is what it sent.
    let mut body: Vec<u8> = Vec::new();
    while (body.len() as u64) < length {
        if body.len() == body.capacity() {
            let capacity = body.capacity() as u64;
            let grow = capacity.max(REQUEST_CHUNK_BYTES).min(length - capacity);
            body.reserve_exact(grow as usize);
        }
        let room = (body.capacity() - body.len()) as u64;
        let mut part = (&mut *receive).take(room.min(length - body.len() as u64));
        match tokio::time::timeout_at(deadline, part.read_buf(&mut body)).await {
            Err(_) => return Err(late()),
            Ok(Err(error)) => return Err(bad(FrameError::Io(error))),
            Ok(Ok(0)) => return Err(bad(FrameError::Truncated)),
            Ok(Ok(_)) => {}
        }
    }
    let decoded = if length > DECODE_INLINE_BYTES_MAX {
        tokio::task::spawn_blocking(move || {
            decode_frame_body::<ClientRequest>(&body, CLIENT_REQUEST_BYTES_MAX)
        })
        .await
        .map_err(|error| bad(FrameError::Io(std::io::Error::other(error))))?
    } else {
        decode_frame_body::<ClientRequest>(&body, CLIENT_REQUEST_BYTES_MAX)
    };
    let request = decoded.map_err(bad)?;
    Ok(Some((
        request,
        RequestBytes {
            _connection: connection,
            _node: node,
            length,
        },
    )))
}

async fn answer(send: &mut quinn::SendStream, response: &ClientResponse) {
    let _ = write_frame(send, response).await;
    let _ = send.finish();
}

/// One request stream: read, authorize, budget, then serve.
async fn serve_request(
    mut send: quinn::SendStream,
    mut receive: quinn::RecvStream,
    accepting: Arc<Accepting>,
    open: OpenStream,
) {
    let client = open.0.clone();
    let budgets = &accepting.budgets;
    let limits = &budgets.limits;
    let (mut request, bytes) = match read_request(&mut receive, &client, budgets).await {
        Ok(Some(read)) => read,
        Ok(None) => return,
        Err(response) => {
            let _ = receive.stop(quinn::VarInt::from_u32(STOP_BAD_FRAME));
            return answer(&mut send, &response).await;
        }
    };
    // A session belongs to the certificate that opened it, whatever the client says.
    if let ClientRequest::OpenSession { owner, .. } = &mut request {
        *owner = client.owner.to_string();
    }
    if let Err(denied) = accepting.policy.check(&client.caller, &request) {
        metrics::counter!("ordo_requests_forbidden_total").increment(1);
        warn!(code = RefusedCode::Forbidden.as_str(), identity = %client.key, reason = %denied, "refused a client request: forbidden");
        let refused = ClientResponse::Refused {
            code: RefusedCode::Forbidden,
            reason: denied.0,
        };
        return answer(&mut send, &refused).await;
    }
    let response = match request {
        ClientRequest::Subscribe { from_seq, topics } => {
            let topics_max = limits.subscription_topics_max;
            if topics.len() as u64 > topics_max {
                let refused = ClientResponse::Refused {
                    code: RefusedCode::TooLarge,
                    reason: format!(
                        "the filter names {} topics; transport.subscription_topics_max is \
                         {topics_max}",
                        topics.len()
                    ),
                };
                return answer(&mut send, &refused).await;
            }
            let Ok(_mine) = client.subscriptions.clone().try_acquire_owned() else {
                budgets.refused("subscriptions_per_connection_max", &client.key);
                let busy = quota(format!(
                    "this connection has transport.subscriptions_per_connection_max ({}) \
                     subscriptions open",
                    limits.subscriptions_per_connection_max
                ));
                return answer(&mut send, &busy).await;
            };
            let Ok(_node) = budgets.subscriptions.clone().try_acquire_owned() else {
                budgets.refused("subscriptions_max", &client.key);
                let busy = quota(format!(
                    "this node has transport.subscriptions_max ({}) subscriptions open; \
                     subscribe through another node",
                    limits.subscriptions_max
                ));
                return answer(&mut send, &busy).await;
            };
            let _counted = Counted::new("ordo_subscriptions");
            drop(bytes);
            let subscription = Subscription {
                source: accepting.batches.clone(),
                topics: topics.into_iter().collect(),
                leaderless_max: accepting.subscription_leaderless_max,
                catchups: budgets.catchups.clone(),
            };
            if let Err(error) = subscription.stream(&mut send, from_seq).await {
                debug!(identity = %client.key, %error, "subscription ended");
            }
            return;
        }
        ClientRequest::SnapshotSave => {
            drop(bytes);
            let saves = accepting.snapshot_saves.clone();
            let Ok(_permit) = saves.try_acquire_owned() else {
                let busy = ClientResponse::Busy {
                    code: BusyCode::Backpressure,
                    reason: "another snapshot save is streaming from this node; retry when it \
                             is done"
                        .into(),
                };
                return answer(&mut send, &busy).await;
            };
            let source = accepting.batches.clone();
            match stream_backup(&mut send, source).await {
                Ok(bytes) => info!(identity = %client.key, bytes, "streamed a snapshot save"),
                Err(error) => warn!(identity = %client.key, %error, "a snapshot save failed"),
            }
            let _ = send.finish();
            return;
        }
        ClientRequest::Hello => ClientResponse::Welcome { node: accepting.id },
        request @ (ClientRequest::Submit { .. } | ClientRequest::Propose { .. }) => {
            // Validated here, on this stream's task, not on the driver's; and answered here
            // when this node does not lead, so a flood of proposals at a follower never reaches
            // its driver.
            let invalid = match &request {
                ClientRequest::Submit { batch } => batch.validate().err(),
                _ => None,
            };
            let not_leader = accepting.clients.admission.borrow().not_leader.clone();
            if let Some(error) = invalid {
                ClientResponse::Invalid(error)
            } else if let Some(not_leader) = not_leader {
                not_leader
            } else {
                let max = limits.identity_uncommitted_bytes_max.0;
                let topic_quota = accepting
                    .policy
                    .write_patterns(&client.caller)
                    .map(|patterns| ordo_node::TopicQuota {
                        identity: client.key.to_string(),
                        patterns,
                        max: limits.topics_per_identity_max,
                    });
                match budgets.uncommitted.take(&client.key, bytes.length, max) {
                    Some(_share) => {
                        let submit = matches!(request, ClientRequest::Submit { .. });
                        let started = tokio::time::Instant::now();
                        let response =
                            call_node_within(request, topic_quota, &accepting.clients.calls).await;
                        if submit {
                            crate::http::observe_submit(started.elapsed(), &response);
                        }
                        response
                    }
                    None => {
                        budgets.refused("identity_uncommitted_bytes_max", &client.key);
                        quota(format!(
                            "identity {} has {} submitted bytes waiting for their outcome here; \
                             transport.identity_uncommitted_bytes_max is {max}",
                            client.key,
                            budgets.uncommitted.held(&client.key)
                        ))
                    }
                }
            }
        }
        // Session and lock operations are proposals too: a follower answers them here.
        request @ (ClientRequest::OpenSession { .. }
        | ClientRequest::CloseSession { .. }
        | ClientRequest::Acquire { .. }
        | ClientRequest::Release { .. }
        | ClientRequest::Proclaim { .. }) => {
            let not_leader = accepting.clients.admission.borrow().not_leader.clone();
            match not_leader {
                Some(not_leader) => not_leader,
                None => call_node(request, &accepting.clients.calls).await,
            }
        }
        request => call_node(request, &accepting.clients.calls).await,
    };
    answer(&mut send, &response).await;
}

/// Hands `request` to the node and waits for its reply.
async fn call_node(request: ClientRequest, clients: &mpsc::Sender<ClientCall>) -> ClientResponse {
    call_node_within(request, None, clients).await
}

/// [`call_node`] for a submit whose new topics count against `topic_quota`.
async fn call_node_within(
    request: ClientRequest,
    topic_quota: Option<ordo_node::TopicQuota>,
    clients: &mpsc::Sender<ClientCall>,
) -> ClientResponse {
    let (reply, answer) = oneshot::channel();
    let call = ClientCall {
        request,
        reply,
        topic_quota,
    };
    if clients.send(call).await.is_err() {
        return ClientResponse::Busy {
            code: BusyCode::Stopping,
            reason: "node is shutting down; retry at another node".into(),
        };
    }
    answer.await.unwrap_or_else(|_| ClientResponse::Busy {
        // The node took the request and stopped before answering: a submit may have been
        // appended.
        code: BusyCode::OutcomeUnknown,
        reason: "node stopped before answering; check the outcome with status".into(),
    })
}

/// One subscription's stream of committed batches.
struct Subscription {
    source: Arc<dyn BatchSource>,
    /// Only these topics' messages (all when empty).
    topics: HashSet<String>,
    /// How long a node may know no leader before it ends its subscriptions with
    /// [`BusyCode::NoLeader`].
    leaderless_max: Duration,
    catchups: Arc<Semaphore>,
}

/// Why a subscription stream ended.
#[derive(Debug, thiserror::Error)]
enum SubscriptionEnd {
    #[error("the subscriber left")]
    Left,
    #[error("this node is stopping")]
    Stopping,
    #[error("writing to the subscriber failed: {0}")]
    Write(FrameError),
    #[error("reading the batch failed: {0}")]
    Storage(StorageError),
}

impl Subscription {
    /// Streams committed batches in seq order, waiting for new ones, until the client goes
    /// away. Writes wait for QUIC flow control, so a slow subscriber slows its own stream and
    /// holds no unbounded buffer here.
    async fn stream(
        &self,
        send: &mut quinn::SendStream,
        from_seq: u64,
    ) -> Result<(), SubscriptionEnd> {
        let source = &self.source;
        let mut next = from_seq.max(1);
        let first = source.first_seq();
        if next < first {
            answer(send, &ClientResponse::Compacted { first_seq: first }).await;
            return Ok(());
        }
        let mut servable = source.servable_seq();
        let mut leaderless = source.leaderless_since();
        let mut catching_up: Option<OwnedSemaphorePermit> = None;
        loop {
            // A node cut off from the leader has nothing new to serve, and the rest of the
            // cluster goes on committing and compacting: the subscriber is better served
            // elsewhere.
            let leaderless_since = *leaderless.borrow_and_update();
            if let Some(since) = leaderless_since
                && since.elapsed() >= self.leaderless_max
            {
                let busy = ClientResponse::Busy {
                    code: BusyCode::NoLeader,
                    reason: format!(
                        "this node has known no leader for {:.1}s; subscribe through another \
                         node",
                        since.elapsed().as_secs_f64()
                    ),
                };
                answer(send, &busy).await;
                return Ok(());
            }
            let last = *servable.borrow_and_update();
            let mut reads = 0u64;
            while next <= last {
                // Reading history takes a turn among `transport.catchups_max`.
                if last - next > CATCHUP_LAG_BATCHES && catching_up.is_none() {
                    let permit = self.catchups.clone().acquire_owned();
                    tokio::select! {
                        permit = permit => {
                            catching_up =
                                Some(permit.map_err(|_| SubscriptionEnd::Stopping)?);
                        }
                        _ = send.stopped() => return Err(SubscriptionEnd::Left),
                    }
                }
                let to = last.min(next.saturating_add(SUBSCRIPTION_READ_BATCHES_MAX - 1));
                let read = tokio::task::block_in_place(|| source.committed_from(next, to));
                let batches = match read {
                    Ok(batches) if batches.is_empty() => {
                        let first_seq = source.first_seq();
                        let _ = write_frame(send, &ClientResponse::Compacted { first_seq }).await;
                        return Ok(());
                    }
                    Ok(batches) => batches,
                    Err(error) => {
                        let refused = ClientResponse::Refused {
                            code: RefusedCode::StorageFailed,
                            reason: format!("this node cannot read seq {next}: {error}"),
                        };
                        let _ = write_frame(send, &refused).await;
                        return Err(SubscriptionEnd::Storage(error));
                    }
                };
                for batch in batches {
                    reads += 1;
                    if reads.is_multiple_of(SUBSCRIPTION_READS_PER_YIELD) {
                        tokio::task::yield_now().await;
                    }
                    next += 1;
                    if let Some(batch) = filter_topics(batch, &self.topics) {
                        let frame = ClientResponse::Batch(batch);
                        write_frame(send, &frame)
                            .await
                            .map_err(SubscriptionEnd::Write)?;
                    }
                }
            }
            catching_up = None;
            let deadline = leaderless_since
                .map(|since| tokio::time::Instant::from_std(since + self.leaderless_max));
            tokio::select! {
                changed = servable.changed() => changed.map_err(|_| SubscriptionEnd::Stopping)?,
                changed = leaderless.changed() => changed.map_err(|_| SubscriptionEnd::Stopping)?,
                _ = sleep_until_some(deadline) => {}
                _ = send.stopped() => return Err(SubscriptionEnd::Left),
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Keeps only the messages of `topics` (all when empty); `None` when nothing is left.
fn filter_topics(mut batch: CommittedBatch, topics: &HashSet<String>) -> Option<CommittedBatch> {
    if topics.is_empty() {
        return Some(batch);
    }
    batch
        .messages
        .retain(|message| topics.contains(&message.topic));
    (!batch.messages.is_empty()).then_some(batch)
}

/// Streams a snapshot of the applied state in chunks, then its end frame. Returns its size.
async fn stream_backup(
    send: &mut quinn::SendStream,
    source: Arc<dyn BatchSource>,
) -> Result<u64, String> {
    let read = tokio::task::spawn_blocking(move || source.backup())
        .await
        .map_err(|error| error.to_string())?;
    let (applied, bytes) = match read {
        Ok(read) => read,
        Err(error) => {
            let refused = ClientResponse::Refused {
                code: RefusedCode::StorageFailed,
                reason: format!("this node cannot read its state for a snapshot: {error}"),
            };
            let _ = write_frame(send, &refused).await;
            return Err(error.to_string());
        }
    };
    for chunk in bytes.chunks(SNAPSHOT_CHUNK_BYTES_MAX) {
        let frame = ClientResponse::SnapshotChunk {
            data: bytes::Bytes::copy_from_slice(chunk),
        };
        write_frame(send, &frame)
            .await
            .map_err(|error| error.to_string())?;
    }
    let end = ClientResponse::SnapshotEnd {
        applied_index: applied.index,
        applied_term: applied.term,
        bytes: bytes.len() as u64,
    };
    write_frame(send, &end)
        .await
        .map_err(|error| error.to_string())?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_keeps_each_key_within_its_limit_and_forgets_idle_keys() {
        let tally: Tally<&'static str> = Tally::default();
        let first = tally.take(&"a", 2, 3).expect("room");
        assert!(tally.take(&"a", 2, 3).is_none(), "over the limit");
        let second = tally.take(&"a", 1, 3).expect("exactly at the limit");
        assert!(tally.take(&"b", 3, 3).is_some(), "keys are counted apart");
        drop(first);
        assert_eq!(tally.held(&"a"), 1);
        drop(second);
        assert_eq!(tally.held(&"a"), 0);
        assert!(
            tally.0.lock().unwrap().is_empty(),
            "idle keys are forgotten"
        );
    }
}
