//! Hostile clients for the budget tests and the flood benchmark: many connections from one
//! identity on one QUIC endpoint, unread unidirectional streams, request bodies that stall,
//! 64 MiB submits, idle subscriptions; and what a well-behaved client sees meanwhile.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_common::client::{CLIENT_RESPONSE_BYTES_MAX, ClientRequest, ClientResponse};
use ordo_net::tls::{CLUSTER_SERVER_NAME, Identity};
use ordo_net::wire::{CLIENT_ALPN, encode_frame, read_frame};
use ordo_participant::{Batch, Client, Message, new_batch_id};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::task::JoinSet;

use super::raw;

/// How long a node's reported longest tick gap remembers a gap (two windows of 10 s): wait this
/// long after one flood before measuring the next.
pub const TICK_GAP_SETTLE: Duration = Duration::from_secs(21);

/// One client endpoint (one UDP socket) that opens connections as identity `client-NAME`.
pub struct Flooder {
    endpoint: quinn::Endpoint,
}

impl Flooder {
    pub fn new(tls_dir: &Path, name: &str) -> Self {
        let identity = Identity::load(tls_dir, &format!("client-{name}")).expect("identity");
        let tls = raw::tls_config(tls_dir, Some(identity), CLIENT_ALPN);
        let crypto = QuicClientConfig::try_from(tls).expect("QUIC TLS");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(1)));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(60)).expect("idle timeout"),
        ));
        config.transport_config(Arc::new(transport));
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("literal")).expect("endpoint");
        endpoint.set_default_client_config(config);
        Self { endpoint }
    }

    pub async fn connect(&self, address: SocketAddr) -> Result<quinn::Connection, String> {
        let connecting = self
            .endpoint
            .connect(address, CLUSTER_SERVER_NAME)
            .map_err(|error| error.to_string())?;
        tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|error| error.to_string())
    }

    /// Opens `count` connections to `address`, `parallel` at a time, and keeps those the node
    /// kept open (TLS 1.3 lets the client finish its handshake before the node decides, so each
    /// is checked with one request). Returns the connections held and how many were refused.
    pub async fn hold(
        self: &Arc<Self>,
        address: SocketAddr,
        count: usize,
        parallel: usize,
    ) -> (Vec<quinn::Connection>, usize) {
        let mut held = Vec::new();
        let mut refused = 0;
        let mut tasks = JoinSet::new();
        for started in 0..count {
            if tasks.len() >= parallel {
                match tasks.join_next().await.expect("a task").expect("no panic") {
                    Some(connection) => held.push(connection),
                    None => refused += 1,
                }
            }
            let _ = started;
            let flooder = self.clone();
            tasks.spawn(async move {
                let connection = flooder.connect(address).await.ok()?;
                let hello = encode_frame(&ClientRequest::Hello);
                match raw::client_exchange(&connection, &hello).await {
                    Ok(Some(ClientResponse::Welcome { .. })) => Some(connection),
                    _ => None,
                }
            });
        }
        while let Some(result) = tasks.join_next().await {
            match result.expect("no panic") {
                Some(connection) => held.push(connection),
                None => refused += 1,
            }
        }
        (held, refused)
    }
}

/// A node process's resident memory, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Tracks the highest RSS of a process while it runs.
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    pub fn watch(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self { stop, peak, task }
    }

    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// Writes `bytes` of zeros on each of `streams` unidirectional streams per connection, never
/// finishing them: a node that buffered what it never reads would hold all of it.
pub fn unread_uni_streams(
    connections: &[quinn::Connection],
    streams: usize,
    bytes: usize,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let chunk = Bytes::from(vec![0u8; 1 << 20]);
    for connection in connections {
        for _ in 0..streams {
            let (connection, chunk) = (connection.clone(), chunk.clone());
            tasks.spawn(async move {
                let Ok(mut stream) = connection.open_uni().await else {
                    return;
                };
                let mut sent = 0;
                while sent < bytes {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                // Never finished: hold the stream open.
                std::future::pending::<()>().await;
            });
        }
    }
    tasks
}

/// On each of `streams` request streams per connection, declares a request of `declared`
/// bytes, sends `sent` of them, then one byte a second: a slow body.
pub fn stalled_bodies(
    connections: &[quinn::Connection],
    streams: usize,
    declared: u32,
    sent: usize,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let chunk = Bytes::from(vec![0u8; 1 << 20]);
    for connection in connections {
        for _ in 0..streams {
            let (connection, chunk) = (connection.clone(), chunk.clone());
            tasks.spawn(async move {
                let Ok((mut send, _receive)) = connection.open_bi().await else {
                    return;
                };
                if send.write_all(&declared.to_le_bytes()).await.is_err() {
                    return;
                }
                let mut written = 0;
                while written < sent {
                    let part = chunk.slice(..chunk.len().min(sent - written));
                    if send.write_all(&part).await.is_err() {
                        return;
                    }
                    written += part.len();
                }
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if send.write_all(&[0]).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    tasks
}

/// A submit frame of about `bytes` bytes (one message), encoded once and sent many times.
pub fn large_submit_frame(bytes: usize) -> Bytes {
    let request = ClientRequest::Submit {
        batch: Batch {
            id: new_batch_id(),
            messages: vec![Message::new("flood", vec![7u8; bytes])],
            preconditions: Vec::new(),
        },
    };
    Bytes::from(encode_frame(&request))
}

/// Sends `frame` on `streams` request streams per connection, over and over, reading each
/// answer, until `stop`. Returns how many were answered.
pub fn repeat_requests(
    connections: &[quinn::Connection],
    streams: usize,
    frame: Bytes,
    stop: Arc<AtomicBool>,
) -> (JoinSet<()>, Arc<AtomicU64>) {
    let mut tasks = JoinSet::new();
    let answered = Arc::new(AtomicU64::new(0));
    for connection in connections {
        for _ in 0..streams {
            let (connection, frame) = (connection.clone(), frame.clone());
            let (stop, answered) = (stop.clone(), answered.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut send, mut receive)) = connection.open_bi().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let _ = send.write_all(&frame).await;
                    let _ = send.finish();
                    let read =
                        read_frame::<ClientResponse, _>(&mut receive, CLIENT_RESPONSE_BYTES_MAX);
                    if let Ok(Ok(Some(_))) =
                        tokio::time::timeout(Duration::from_secs(30), read).await
                    {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
    (tasks, answered)
}

/// Commit latencies of a well-behaved client: `count` small batches, one at a time.
pub async fn commit_latencies(client: &Client, count: usize) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let batch = Batch {
            id: new_batch_id(),
            messages: vec![Message::new("probe", format!("probe-{i}").into_bytes())],
            preconditions: Vec::new(),
        };
        let started = Instant::now();
        client
            .submit(batch)
            .await
            .map_err(|error| format!("probe {i}: {error}"))?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// The `q` quantile (0..=1) of `latencies`, in milliseconds.
pub fn quantile_ms(latencies: &[Duration], q: f64) -> f64 {
    let mut sorted: Vec<_> = latencies.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

/// Up to `count` QUIC Initial packets, each opening a handshake with its own connection id, as
/// a client of `tls_dir`'s CA would send them; captured on a socket that never answers.
pub async fn captured_initials(tls_dir: &Path, count: usize) -> Vec<Vec<u8>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("sink");
    let sink_address = sink.local_addr().expect("sink address");
    let flooder = Flooder::new(tls_dir, "flood");
    let mut pending = Vec::new();
    for _ in 0..count {
        let connecting = flooder
            .endpoint
            .connect(sink_address, CLUSTER_SERVER_NAME)
            .expect("connect");
        pending.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(3), connecting).await;
        }));
    }
    // Some datagrams may overflow the sink's buffer; their retransmissions come within the
    // connection attempts' 3 s, and the capture ends then whatever it holds.
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut buffer = vec![0u8; 2048];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while packets.len() < count {
        let received = tokio::time::timeout_at(deadline, sink.recv_from(&mut buffer)).await;
        let Ok(Ok((length, _))) = received else {
            break;
        };
        let packet = buffer[..length].to_vec();
        // A long header: flags, version (4), then the destination connection id.
        let dcid = |packet: &[u8]| {
            packet
                .get(6..6 + *packet.get(5)? as usize)
                .map(<[u8]>::to_vec)
        };
        if !packets.iter().any(|seen| dcid(seen) == dcid(&packet)) {
            packets.push(packet);
        }
    }
    for task in pending {
        task.abort();
    }
    packets
}

/// Sends each packet from a socket of its own (a distinct source address) that never reads
/// an answer: handshakes that a node would hold open until they time out, unless it asks the
/// address to prove itself first (QUIC Retry).
pub async fn replay_initials(
    target: SocketAddr,
    packets: &[Vec<u8>],
) -> Vec<tokio::net::UdpSocket> {
    let mut sockets = Vec::new();
    for packet in packets {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("socket");
        let _ = socket.send_to(packet, target).await;
        sockets.push(socket);
    }
    sockets
}

/// Issues a client certificate `name` in the cluster's TLS directory (`ordo certs`).
pub fn issue_client(cluster: &super::TestCluster, name: &str) {
    super::run_ordo_checked(&[
        "certs",
        "--dir",
        super::path_str(cluster.tls_dir()),
        "--nodes",
        "0",
        "--clients",
        name,
    ]);
}

/// Commits `count` one-message batches on topic `history`, 64 submitters at a time: a log for
/// subscriptions to scan.
pub async fn write_history(client: &Client, count: u64) {
    let mut writers = JoinSet::new();
    for writer in 0..64 {
        let client = client.clone();
        writers.spawn(async move {
            for i in (writer..count).step_by(64) {
                let batch = Batch {
                    id: new_batch_id(),
                    messages: vec![Message::new("history", format!("history-{i}").into_bytes())],
                    preconditions: Vec::new(),
                };
                client.submit(batch).await.expect("history");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer");
    }
}

/// Opens `per_connection` subscriptions from seq 1 on each connection whose filter matches no
/// topic, and holds them open; the counter says how many were answered at all (a refusal, or
/// the end of the stream).
pub fn idle_subscriptions(
    connections: &[quinn::Connection],
    per_connection: usize,
) -> (JoinSet<()>, Arc<AtomicU64>) {
    let subscribe = encode_frame(&ClientRequest::Subscribe {
        from_seq: 1,
        topics: vec!["matches-nothing".into()],
    });
    let answered = Arc::new(AtomicU64::new(0));
    let mut subscriptions = JoinSet::new();
    for connection in connections {
        for _ in 0..per_connection {
            let (connection, subscribe) = (connection.clone(), subscribe.clone());
            let answered = answered.clone();
            subscriptions.spawn(async move {
                let Ok((mut send, mut receive)) = connection.open_bi().await else {
                    return;
                };
                if send.write_all(&subscribe).await.is_err() {
                    return;
                }
                let frame =
                    read_frame::<ClientResponse, _>(&mut receive, CLIENT_RESPONSE_BYTES_MAX).await;
                eprintln!("a subscription was answered: {frame:?}");
                answered.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
    (subscriptions, answered)
}
