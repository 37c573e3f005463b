//! The node's HTTP listener: `/metrics` (Prometheus text), `/livez`, `/readyz`, `/api/status`,
//! `/api/history`, `/api/batches`, `/api/coord` and a read-only console at `/`.
//!
//! Nothing here reaches the consensus loop on the hot path: the driver publishes the node's
//! view every [`crate::driver::VIEW_INTERVAL`] and handlers read that. Only `/api/coord` asks
//! the node (sessions and locks), at most once per [`COORD_CACHE_FOR`] whatever the number of
//! viewers. Connections, their age and their header reads are bounded by named limits.
//!
//! On loopback the listener speaks plain HTTP. Bound anywhere else it speaks HTTPS and asks
//! for a client certificate of the cluster's CA; a node certificate, or one the `[auth]` rules
//! give no status right, is refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ordo_common::batch::Outcome;
use ordo_common::client::{ClientRequest, ClientResponse};
use ordo_node::NodeView;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{info, warn};

use crate::auth::{Caller, Policy};
use crate::transport::{BatchSource, ClientCall};

/// HTTP connections open at once; more are closed as they arrive.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// How long a connection may take to send a request's headers (and, beyond loopback, its TLS
/// handshake).
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, however busy (a browser reconnects).
pub const HTTP_CONNECTION_AGE_MAX: Duration = Duration::from_secs(60);
/// Bytes of request headers one connection may send.
pub const HTTP_HEADER_BYTES_MAX: usize = 16 << 10;
/// Committed batches `/api/batches` lists, newest first.
pub const CONSOLE_BATCHES_MAX: u64 = 20;
/// Seconds of commit history `/api/history` keeps (one sample a second).
pub const HISTORY_SECONDS: usize = 600;
/// How long one answer of the node about sessions and locks serves `/api/coord`.
pub const COORD_CACHE_FOR: Duration = Duration::from_secs(1);
/// Rows of each kind `/api/coord` shows.
pub const CONSOLE_COORD_ROWS_MAX: usize = 100;
/// How long `/api/coord` waits for the node's answer about sessions and locks.
pub const COORD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read of the latest committed batches serves `/api/batches`.
pub const BATCHES_CACHE_FOR: Duration = Duration::from_secs(1);
/// The protocol the listener speaks over TLS.
pub const HTTP_ALPN: &[u8] = b"http/1.1";

/// The TLS configuration of a listener bound beyond loopback. SIGHUP replaces it (see
/// [`crate::node`]): connections accepted afterwards use the reloaded certificates and lists.
pub type TlsSlot = Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>;

/// The listener's TLS configuration from the node's certificates, asking for client
/// certificates of the CA.
pub fn tls_config(
    config: &crate::config::NodeConfig,
) -> Result<Arc<rustls::ServerConfig>, crate::transport::TransportError> {
    crate::transport::tls_server_config(config, vec![HTTP_ALPN.to_vec()]).map(Arc::new)
}

/// The histograms' bucket bounds, in seconds: 100 µs to 10 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Bucket bounds for group-commit sizes (requests, entries).
const COUNT_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Installs the process's Prometheus recorder. Call once, before the node starts; metrics
/// recorded before it go nowhere.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &SECONDS_BUCKETS,
        )
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Prefix("ordo_group_commit_".into()),
                &COUNT_BUCKETS,
            )
        })
        .map_err(|error| error.to_string())?;
    let handle = builder
        .install_recorder()
        .map_err(|error| format!("cannot install the metrics recorder: {error}"))?;
    describe();
    // The exporter keeps histogram samples until upkeep folds them in.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Help text for the metrics that are not self-explanatory.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "ordo_commit_latency_seconds",
        Unit::Seconds,
        "submit received to outcome answered, for batches that committed"
    );
    describe_histogram!(
        "ordo_disk_write_seconds",
        Unit::Seconds,
        "one group commit's durable write, fsync included"
    );
    describe_histogram!(
        "ordo_store_checkpoint_seconds",
        Unit::Seconds,
        "one checkpoint: redb made durable and the write-ahead file started again"
    );
    describe_histogram!(
        "ordo_group_commit_requests",
        "writes the log writer made durable together"
    );
    describe_histogram!(
        "ordo_group_commit_entries",
        "log entries the log writer made durable together"
    );
    describe_counter!(
        "ordo_batches_committed_total",
        "batches applied with outcome committed"
    );
    describe_counter!(
        "ordo_batches_rejected_total",
        "batches answered rejected (a precondition failed), by reason"
    );
    describe_counter!(
        "ordo_submits_refused_total",
        "submits answered without an outcome (busy, not leader, refused, invalid), by code"
    );
    describe_counter!(
        "ordo_elections_total",
        "elections this node started (it became a candidate)"
    );
    describe_counter!(
        "ordo_leader_changes_total",
        "times this node learned of a new leader"
    );
    describe_counter!(
        "ordo_disk_written_bytes_total",
        Unit::Bytes,
        "bytes this process caused to be written to storage (/proc/self/io)"
    );
    describe_gauge!(
        "ordo_replication_lag_entries",
        "entries a follower lacks of the leader's log (leader only)"
    );
    describe_gauge!(
        "ordo_apply_lag_entries",
        "entries this node knows committed and has not applied"
    );
    describe_histogram!(
        "ordo_peer_round_trip_time_seconds",
        Unit::Seconds,
        "QUIC's smoothed round-trip time to each peer, sampled once a second"
    );
    describe_gauge!("ordo_role", "1 for this node's current role");
    describe_gauge!(
        "ordo_client_connections",
        "client QUIC connections open to this node"
    );
    describe_gauge!("ordo_subscriptions", "subscriptions open on this node");
    describe_gauge!(
        "ordo_log_file_bytes",
        Unit::Bytes,
        "the size of the log's redb file"
    );
    describe_gauge!(
        "ordo_data_dir_bytes",
        Unit::Bytes,
        "everything in the data directory: log, write-ahead file, snapshots, ballast"
    );
    describe_gauge!(
        "ordo_http_connections",
        "HTTP connections open to this node"
    );
}

/// Commits as the console charts them: a count and a latency histogram, folded into one
/// sample a second.
pub struct CommitStats {
    committed: AtomicU64,
    /// Latencies by power-of-two bucket of microseconds, since the last sample.
    buckets: [AtomicU64; 32],
}

/// The process's commit statistics (one node per process).
pub static COMMITS: CommitStats = CommitStats {
    committed: AtomicU64::new(0),
    buckets: [const { AtomicU64::new(0) }; 32],
};

impl CommitStats {
    fn record(&self, latency: Duration) {
        self.committed.fetch_add(1, Ordering::Relaxed);
        let micros = latency.as_micros().max(1) as u64;
        let bucket = (63 - micros.leading_zeros() as usize).min(31);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The commits so far, and the 50th and 99th percentile (ms) of the latencies recorded
    /// since the last call (each the upper bound of its power-of-two bucket).
    fn sample(&self) -> (u64, Option<f64>, Option<f64>) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            if total == 0 {
                return None;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return Some((1u64 << (bucket + 1)) as f64 / 1000.0);
                }
            }
            None
        };
        (
            self.committed.load(Ordering::Relaxed),
            quantile(0.5),
            quantile(0.99),
        )
    }
}

/// Records what a submit was answered with: its latency if it committed, else why not.
pub fn observe_submit(elapsed: Duration, response: &ClientResponse) {
    match response {
        ClientResponse::Outcome(Outcome::Committed { .. }) => {
            COMMITS.record(elapsed);
            metrics::histogram!("ordo_commit_latency_seconds").record(elapsed.as_secs_f64());
        }
        ClientResponse::Outcome(Outcome::Rejected { reason }) => {
            metrics::counter!("ordo_batches_rejected_total", "reason" => reason.code())
                .increment(1);
        }
        other => {
            let code = other.error_code().unwrap_or("unexpected_answer");
            metrics::counter!("ordo_submits_refused_total", "code" => code).increment(1);
        }
    }
}

/// One second of the console's charts.
#[derive(Clone, Copy)]
struct Sample {
    at_ms: u64,
    committed: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// What the handlers share.
struct Shared {
    view: watch::Receiver<Arc<NodeView>>,
    metrics: Option<PrometheusHandle>,
    batches: Arc<dyn BatchSource>,
    calls: mpsc::Sender<ClientCall>,
    ready_lag_entries_max: u64,
    history: Mutex<std::collections::VecDeque<Sample>>,
    coord: Cached,
    batches_read: Cached,
    connections: Arc<Semaphore>,
    /// Beyond loopback: who may connect.
    policy: Policy,
    data_dir: std::path::PathBuf,
}

/// What the listener needs from the node.
pub struct HttpParts {
    pub view: watch::Receiver<Arc<NodeView>>,
    pub metrics: Option<PrometheusHandle>,
    pub batches: Arc<dyn BatchSource>,
    pub calls: mpsc::Sender<ClientCall>,
    pub ready_lag_entries_max: u64,
    pub policy: Policy,
    /// Beyond loopback: the TLS configuration that asks for client certificates.
    pub tls: Option<TlsSlot>,
    /// The node's data directory (its size is a metric).
    pub data_dir: std::path::PathBuf,
}

/// Binds `address` and serves until the process ends. Returns the bound address (the port may
/// have been 0).
pub async fn start(address: SocketAddr, parts: HttpParts) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {address} (http.listen): {error}"),
        )
    })?;
    let bound = listener.local_addr()?;
    let tls = parts.tls;
    let shared = Arc::new(Shared {
        view: parts.view,
        metrics: parts.metrics,
        batches: parts.batches,
        calls: parts.calls,
        ready_lag_entries_max: parts.ready_lag_entries_max,
        history: Mutex::new(std::collections::VecDeque::with_capacity(HISTORY_SECONDS)),
        coord: Cached::default(),
        batches_read: Cached::default(),
        connections: Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX)),
        policy: parts.policy,
        data_dir: parts.data_dir,
    });
    info!(
        url = %format!("{}://{bound}/", if tls.is_some() { "https" } else { "http" }),
        "console, /metrics, /livez, /readyz"
    );
    tokio::spawn(sample_history(shared.clone()));
    tokio::spawn(accept_loop(listener, tls, shared));
    Ok(bound)
}

async fn sample_history(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (committed, p50_ms, p99_ms) = COMMITS.sample();
        let mut history = shared.history.lock().expect("history lock");
        if history.len() == HISTORY_SECONDS {
            history.pop_front();
        }
        history.push_back(Sample {
            at_ms: now_ms(),
            committed,
            p50_ms,
            p99_ms,
        });
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsSlot>, shared: Arc<Shared>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            metrics::counter!("ordo_connections_refused_total", "limit" => "http_connections_max")
                .increment(1);
            continue;
        };
        // The configuration in force now: a reload applies to the connections after it.
        let acceptor = tls.as_ref().map(|slot| {
            tokio_rustls::TlsAcceptor::from(slot.read().expect("TLS slot lock").clone())
        });
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = crate::clients::Counted::new("ordo_http_connections");
            let _ = tokio::time::timeout(HTTP_CONNECTION_AGE_MAX, async {
                let Some(acceptor) = acceptor else {
                    // Loopback: whoever reaches it is trusted (see the README's threat model).
                    return serve_connection(stream, shared, None).await;
                };
                let accepted =
                    tokio::time::timeout(HTTP_HEADER_TIMEOUT, acceptor.accept(stream)).await;
                let Ok(Ok(stream)) = accepted else {
                    return;
                };
                let caller = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(Caller::from_certificate);
                let Some(caller) = caller else {
                    return;
                };
                if let Err(denied) = shared.policy.check(&caller, &ClientRequest::Status) {
                    warn!(%from, %denied, code = "forbidden", "http: refused a certificate");
                    return;
                }
                serve_connection(stream, shared, Some(caller)).await;
            })
            .await;
        });
    }
}

/// Serves one connection's requests; `caller` is the client certificate's identity beyond
/// loopback (each page is authorized for it), `None` on loopback.
async fn serve_connection<S>(stream: S, shared: Arc<Shared>, caller: Option<Caller>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let caller = Arc::new(caller);
    let service = hyper::service::service_fn(move |request| {
        let (shared, caller) = (shared.clone(), caller.clone());
        async move { Ok::<_, Infallible>(route(&shared, caller.as_ref().as_ref(), request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT)
        .max_buf_size(HTTP_HEADER_BYTES_MAX)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type Answer = Response<Full<Bytes>>;

/// What the caller must be allowed, as the client request it amounts to, to see `path`:
/// the lock table needs what `ordo lock list` needs, the latest batches' topics what an
/// unfiltered subscription needs; the rest, what `ordo status` needs (checked when the
/// connection was accepted).
fn page_needs(path: &str) -> Option<ClientRequest> {
    match path {
        "/api/coord" => Some(ClientRequest::CoordList),
        "/api/batches" => Some(ClientRequest::Subscribe {
            from_seq: 1,
            topics: Vec::new(),
        }),
        _ => None,
    }
}

async fn route(shared: &Shared, caller: Option<&Caller>, request: Request<Incoming>) -> Answer {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"code": "method_not_allowed", "error": "only GET is served"}),
        );
    }
    if let (Some(caller), Some(needs)) = (caller, page_needs(request.uri().path()))
        && let Err(denied) = shared.policy.check(caller, &needs)
    {
        return json_answer(
            StatusCode::FORBIDDEN,
            &json!({"code": "forbidden", "error": denied.0}),
        );
    }
    match request.uri().path() {
        "/" | "/index.html" => answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(CONSOLE_HTML.as_bytes()),
        ),
        "/metrics" => metrics_answer(shared).await,
        "/livez" => answer(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" => {
            let view = shared.view.borrow().clone();
            match readiness(&view, shared.ready_lag_entries_max) {
                Ok(()) => json_answer(StatusCode::OK, &json!({"ready": true})),
                Err((code, reason)) => json_answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ready": false, "code": code, "reason": reason}),
                ),
            }
        }
        "/api/status" => {
            let view = shared.view.borrow().clone();
            let mut body = view_json(&view);
            body["ready"] = json!(readiness(&view, shared.ready_lag_entries_max).is_ok());
            json_answer(StatusCode::OK, &body)
        }
        "/api/history" => {
            let history = shared.history.lock().expect("history lock").clone();
            json_answer(StatusCode::OK, &history_json(&history))
        }
        "/api/batches" => {
            let (status, body) = shared
                .batches_read
                .get(BATCHES_CACHE_FOR, batches_read(shared))
                .await;
            json_answer(status, &body)
        }
        "/api/coord" => {
            let (status, body) = shared.coord.get(COORD_CACHE_FOR, coord_read(shared)).await;
            json_answer(status, &body)
        }
        _ => json_answer(
            StatusCode::NOT_FOUND,
            &json!({"code": "not_found", "error": "no such page"}),
        ),
    }
}

fn answer(status: StatusCode, content_type: &str, body: Bytes) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(body))
        .expect("a valid response")
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    answer(
        status,
        "application/json",
        Bytes::from(serde_json::to_vec(body).expect("JSON")),
    )
}

async fn metrics_answer(shared: &Shared) -> Answer {
    let Some(handle) = &shared.metrics else {
        return json_answer(
            StatusCode::NOT_FOUND,
            &json!({"code": "metrics_off", "error": "metrics are off on this node (http.metrics)"}),
        );
    };
    // Files are measured on a blocking thread, not on the workers the node's driver runs on.
    let dir = shared.data_dir.clone();
    if let Ok((written, (log, all))) =
        tokio::task::spawn_blocking(move || (written_bytes(), data_dir_bytes(&dir))).await
    {
        if let Some(written) = written {
            metrics::counter!("ordo_disk_written_bytes_total").absolute(written);
        }
        metrics::gauge!("ordo_log_file_bytes").set(log as f64);
        metrics::gauge!("ordo_data_dir_bytes").set(all as f64);
    }
    answer(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(handle.render()),
    )
}

/// The log file's size, and the data directory's (the log, the write-ahead file, snapshots
/// received or being sent, the ballast), in bytes.
fn data_dir_bytes(dir: &std::path::Path) -> (u64, u64) {
    fn walk(dir: &std::path::Path, depth: u32) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() && depth < 4 => walk(&entry.path(), depth + 1),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            })
            .sum()
    }
    let log = std::fs::metadata(dir.join(crate::node::LOG_FILE_NAME)).map_or(0, |meta| meta.len());
    (log, walk(dir, 0))
}

/// What this process caused to be written to storage, from `/proc/self/io`.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Why this node is not ready, as a stable code and a sentence; `Ok` when it is.
pub fn readiness(view: &NodeView, lag_max: u64) -> Result<(), (&'static str, String)> {
    let status = &view.status;
    let Some(leader) = status.leader else {
        return Err((
            "no_leader",
            format!("node {} knows no leader of term {}", status.id, status.term),
        ));
    };
    if leader != status.id && !status.reachable_peers.contains(&leader) {
        return Err((
            "leader_unreachable",
            format!(
                "node {} has not heard from its leader, node {leader}, within an election \
                 timeout",
                status.id
            ),
        ));
    }
    let lag = status.apply_lag_entries();
    if lag > lag_max {
        return Err((
            "applying_behind",
            format!(
                "node {} has applied {lag} entries fewer than it knows committed \
                 (http.ready_lag_entries_max is {lag_max})",
                status.id
            ),
        ));
    }
    Ok(())
}

/// The view as JSON: what `ordo status --json` shows, and the members.
pub fn view_json(view: &NodeView) -> Value {
    let status = &view.status;
    let members: Vec<Value> = view
        .members
        .iter()
        .map(|member| {
            json!({
                "id": member.id,
                "address": member.address,
                "voter": member.voter,
                "role": member.role,
                "reachable": member.reachable,
                "match_index": member.match_index,
                "lag_entries": member.lag_entries,
            })
        })
        .collect();
    let mut body = status_json(status);
    body["apply_lag_entries"] = json!(status.apply_lag_entries());
    body["members"] = json!(members);
    body["now_ms"] = json!(now_ms());
    body
}

/// A node's status as JSON: one line of `ordo status --json`, and the core of `/api/status`.
pub fn status_json(status: &ordo_common::client::NodeStatus) -> Value {
    json!({
        "id": status.id,
        "address": status.address,
        "role": status.role.as_str(),
        "term": status.term,
        "leader": status.leader,
        "last_index": status.last_index,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "durable_index": status.durable_index,
        "reachable_peers": status.reachable_peers,
        "storage_full": status.storage_full,
        "tick_gap_max_us": status.tick_gap_max_us,
        "late_not_leader_refusals": status.late_not_leader_refusals,
        "applied_stamp_ms": status.applied_stamp_ms,
        "engine": status.engine.name(),
    })
}

fn history_json(history: &std::collections::VecDeque<Sample>) -> Value {
    let mut previous: Option<&Sample> = None;
    let mut points = Vec::with_capacity(history.len());
    for sample in history {
        if let Some(before) = previous {
            let seconds = (sample.at_ms.saturating_sub(before.at_ms)).max(1) as f64 / 1000.0;
            let rate = sample.committed.saturating_sub(before.committed) as f64 / seconds;
            points.push(json!({
                "at_ms": sample.at_ms,
                "commits_per_second": (rate * 10.0).round() / 10.0,
                "p50_ms": sample.p50_ms,
                "p99_ms": sample.p99_ms,
            }));
        }
        previous = Some(sample);
    }
    json!({ "seconds": HISTORY_SECONDS, "points": points })
}

async fn batches_read(shared: &Shared) -> (StatusCode, Value) {
    let source = shared.batches.clone();
    let last = *source.servable_seq().borrow();
    let read = tokio::task::spawn_blocking(move || {
        let first = source
            .first_seq()
            .max(last.saturating_sub(CONSOLE_BATCHES_MAX - 1));
        let mut rows = Vec::new();
        for seq in (first..=last).rev().filter(|seq| *seq > 0) {
            match source.committed(seq) {
                Ok(Some(batch)) => {
                    let mut topics: Vec<&str> = batch
                        .messages
                        .iter()
                        .map(|message| message.topic.as_str())
                        .collect();
                    topics.sort_unstable();
                    topics.dedup();
                    let bytes: usize = batch
                        .messages
                        .iter()
                        .map(|message| message.payload.len())
                        .sum();
                    rows.push(json!({
                        "seq": batch.seq,
                        "index": batch.index,
                        "id": batch.id.to_string(),
                        "messages": batch.messages.len(),
                        "payload_bytes": bytes,
                        "topics": topics,
                    }));
                }
                Ok(None) => break,
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(rows)
    })
    .await;
    match read {
        Ok(Ok(rows)) => (StatusCode::OK, json!({ "batches": rows })),
        Ok(Err(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"code": "storage", "error": error}),
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"code": "internal", "error": error.to_string()}),
        ),
    }
}

async fn coord_read(shared: &Shared) -> (StatusCode, Value) {
    let (reply, answered) = tokio::sync::oneshot::channel();
    let call = ClientCall {
        request: ClientRequest::CoordList,
        reply,
        topic_quota: None,
    };
    let response = match shared.calls.try_send(call) {
        Ok(()) => tokio::time::timeout(COORD_ANSWER_TIMEOUT, answered)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    let body = match response {
        Some(ClientResponse::CoordList { sessions, mutexes }) => {
            let sessions: Vec<Value> = sessions
                .iter()
                .take(CONSOLE_COORD_ROWS_MAX)
                .map(|session| {
                    json!({
                        "id": session.id.to_string(),
                        "owner": session.owner,
                        "ttl_ms": session.ttl_ms,
                    })
                })
                .collect();
            let mutexes: Vec<Value> = mutexes
                .iter()
                .take(CONSOLE_COORD_ROWS_MAX)
                .map(|mutex| {
                    json!({
                        "kind": mutex.kind.noun(),
                        "name": mutex.name,
                        "holder": mutex.holder.as_ref().map(|(session, _, _)| session.to_string()),
                        "token": mutex.holder.as_ref().map(|(_, token, _)| token),
                        "waiting": mutex.waiters.len(),
                    })
                })
                .collect();
            json!({"available": true, "sessions": sessions, "mutexes": mutexes})
        }
        Some(ClientResponse::NotLeader { leader, .. }) => json!({
            "available": false,
            "reason": match leader {
                Some(leader) => format!("sessions and locks are shown by the leader, node {leader}"),
                None => "no leader is known".to_string(),
            },
        }),
        _ => json!({"available": false, "reason": "the node did not answer"}),
    };
    (StatusCode::OK, body)
}

/// One page's latest answer, served to every viewer for a while: however many consoles are
/// open, the work behind the page is done at most once per period (and once at a time).
#[derive(Default)]
struct Cached(tokio::sync::Mutex<Option<(Instant, StatusCode, Value)>>);

impl Cached {
    async fn get(
        &self,
        fresh_for: Duration,
        read: impl std::future::Future<Output = (StatusCode, Value)>,
    ) -> (StatusCode, Value) {
        let mut cached = self.0.lock().await;
        if let Some((at, status, body)) = cached.as_ref()
            && at.elapsed() < fresh_for
        {
            return (*status, body.clone());
        }
        let (status, body) = read.await;
        *cached = Some((Instant::now(), status, body.clone()));
        (status, body)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The console: one page, its script and styles inline, no requests beyond this node's API.
const CONSOLE_HTML: &str = include_str!("console.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_quantiles_come_from_their_buckets() {
        let stats = CommitStats {
            committed: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; 32],
        };
        for _ in 0..98 {
            stats.record(Duration::from_micros(700)); // bucket 9: up to 1.024 ms
        }
        stats.record(Duration::from_millis(30)); // bucket 14: up to 32.768 ms
        stats.record(Duration::from_millis(30));
        let (committed, p50, p99) = stats.sample();
        assert_eq!(committed, 100);
        assert_eq!(p50, Some(1.024));
        assert_eq!(p99, Some(32.768));
        // A sample empties the buckets; the count goes on.
        assert_eq!(stats.sample(), (100, None, None));
    }
}
