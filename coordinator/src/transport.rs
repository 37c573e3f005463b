//! The QUIC transport: one endpoint per node serves peers (`ordo-peer/1`) and clients
//! (`ordo-client/1`), always with mutual TLS against the cluster CA.
//!
//! **Peers.** Each node dials every other node and only *sends* on the links it dialled; it
//! *receives* on the links others dialled. A link opens with a hello on a bidirectional control
//! stream: the dialled node checks that the certificate names the node id the hello claims
//! (`node-N.ordo`) — so a client certificate cannot speak the peer protocol and a node cannot
//! pose as another — and answers welcome or a refusal with its reason. Appends travel on a
//! separate unidirectional stream at lower priority, so a large append never holds a heartbeat
//! or a vote behind it. Links reconnect with capped, jittered exponential back-off.
//!
//! **Clients.** One request per bidirectional stream, answered by one response frame.
//!
//! Every frame's length is checked against a named limit before anything is allocated; a bad
//! frame closes that stream or link with a logged reason, and the node keeps serving the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_common::batch::CommittedBatch;
use ordo_common::client::{ClientRequest, ClientResponse};
use ordo_common::limits::FRAME_BYTES_MAX;
use ordo_common::{ClusterId, LogId, NodeId, Term};
use ordo_core::Message;
use ordo_net::tls::{self, Identity, TlsError, node_name};
use ordo_net::wire::{CLIENT_ALPN, FrameError, PEER_ALPN, read_frame, write_frame};
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::auth::{Caller, Policy};
use crate::clients::{self, ClientBudgets};
pub use crate::clients::{Admission, ClientQueue};
use crate::config::NodeConfig;
use crate::snapshot_transfer::{self, OutgoingSnapshot, ReceivedSnapshot};
use crate::storage::StorageError;

/// Largest peer frame: one append at the message budget, or one entry at the payload limit.
pub const PEER_FRAME_BYTES_MAX: u64 = FRAME_BYTES_MAX;
/// Largest hello frame: a few ids, read before the link is trusted.
pub const HELLO_FRAME_BYTES_MAX: u64 = 256;
/// Messages from peers queued for the driver.
pub const INBOUND_QUEUE_MESSAGES_MAX: usize = 4096;
/// Client requests waiting for the driver.
pub const CLIENT_QUEUE_REQUESTS_MAX: usize = 4096;
/// Application error codes used when closing a connection.
const CLOSE_REFUSED: u32 = 1;
const CLOSE_BAD_FRAME: u32 = 2;
const CLOSE_SHUTDOWN: u32 = 3;

/// What travels on a peer link.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerFrame {
    Hello {
        from: NodeId,
        to: NodeId,
        /// The cluster the dialling node belongs to; a node refuses peers of another one.
        cluster: ClusterId,
        /// The dialling node's incarnation (drawn when its data directory was first used); a
        /// node that lost its data comes back with another one and is refused.
        incarnation: u64,
    },
    Welcome,
    Refused {
        reason: String,
    },
    Raft(Message),
    /// Opens a snapshot stream: the sender's term, the snapshot's last entry, its size.
    SnapshotBegin {
        term: Term,
        last_included: LogId,
        bytes: u64,
    },
    /// The next bytes of the snapshot, with their CRC-32.
    SnapshotChunk {
        data: bytes::Bytes,
        crc: u32,
    },
    /// The snapshot is complete.
    SnapshotEnd,
}

/// A message from an authenticated peer, for the driver.
#[derive(Debug)]
pub struct Inbound {
    pub from: NodeId,
    pub message: Message,
}

/// A client's request, for the driver, with the way back for the node's one reply.
#[derive(Debug)]
pub struct ClientCall {
    pub request: ClientRequest,
    pub reply: oneshot::Sender<ClientResponse>,
    /// Within what the caller's submits may create topics (`None`: an admin, no limit).
    pub topic_quota: Option<ordo_node::TopicQuota>,
}

/// Where subscriptions read committed batches: durable storage, up to the seq the node last
/// declared servable.
pub trait BatchSource: Send + Sync + 'static {
    /// The batches committed at `from ..= to` still retained, in order and consecutive from
    /// `from`, within [`SUBSCRIPTION_READ_BYTES_MAX`] of payload (at least one batch); empty
    /// once `from` is compacted. The caller bounds `to - from`.
    fn committed_from(&self, from: u64, to: u64) -> Result<Vec<CommittedBatch>, StorageError>;
    /// The batch committed at `seq`, if still retained; `Ok(None)` once compacted.
    fn committed(&self, seq: u64) -> Result<Option<CommittedBatch>, StorageError> {
        Ok(self.committed_from(seq, seq)?.pop())
    }
    /// The highest seq applied here and durable, which subscriptions may serve up to.
    fn servable_seq(&self) -> watch::Receiver<u64>;
    /// Since when this node has known no leader; `None` while it knows one.
    fn leaderless_since(&self) -> watch::Receiver<Option<Instant>>;
    /// The lowest seq still retained.
    fn first_seq(&self) -> u64;
    /// A consistent snapshot of the applied state, encoded (a backup), and the entry it is
    /// as of.
    fn backup(&self) -> Result<(LogId, Vec<u8>), StorageError>;
}

/// Most batches a subscription reads from storage at once (one read of the store for all).
pub const SUBSCRIPTION_READ_BATCHES_MAX: u64 = 256;
/// Most payload bytes a subscription reads from storage at once; a larger batch is read alone.
/// Far below `BATCH_BYTES_MAX`, so a subscription holds no more than it did reading one batch at
/// a time: at most one batch at the size limit.
pub const SUBSCRIPTION_READ_BYTES_MAX: u64 = 256 << 10;
const _: () = assert!(SUBSCRIPTION_READ_BYTES_MAX < ordo_common::limits::BATCH_BYTES_MAX);

/// Snapshot saves one node streams at once; more are answered `Busy`: each holds a whole
/// encoded snapshot in memory.
pub const SNAPSHOT_SAVES_MAX: usize = 1;

/// Why a peer link (either direction) ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// The peer sent a frame that does not decode, is over its limit, or has another version.
    #[error("bad frame from node {from}: {error}")]
    BadFrame { from: NodeId, error: FrameError },
    /// The peer sent a well-formed frame that has no place on this stream.
    #[error("bad frame from node {from}: unexpected {frame}")]
    Unexpected { from: NodeId, frame: &'static str },
    /// This node is shutting down: its driver no longer takes or gives messages.
    #[error("this node is stopping")]
    Stopping,
    /// The peer closed the stream.
    #[error("stream closed")]
    Closed,
    /// The peer refused this node's hello, with its reason.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer answered the hello with something other than a welcome.
    #[error("no welcome")]
    NoWelcome,
    #[error("cannot dial: {0}")]
    Dial(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading or writing a frame failed in the stream beneath it.
    #[error("stream: {0}")]
    Stream(FrameError),
}

impl PeerFrame {
    fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "Hello",
            Self::Welcome => "Welcome",
            Self::Refused { .. } => "Refused",
            Self::Raft(_) => "Raft",
            Self::SnapshotBegin { .. } => "SnapshotBegin",
            Self::SnapshotChunk { .. } => "SnapshotChunk",
            Self::SnapshotEnd => "SnapshotEnd",
        }
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("QUIC configuration: {0}")]
    Quic(String),
    #[error("peer incarnations file {path}: {detail}")]
    Incarnations { path: String, detail: String },
    #[error("invalid [auth] section: {0}")]
    Auth(String),
    #[error("certificate revocation list {path}: {detail}")]
    Crl { path: String, detail: String },
}

/// The sending side of the peer links: per peer, bounded queues for control messages, appends
/// and one snapshot. The set of peers follows the membership ([`PeerLinks::set_peers`]).
/// Cheap to clone.
#[derive(Clone)]
pub struct PeerLinks {
    links: Arc<std::sync::Mutex<BTreeMap<NodeId, (SocketAddr, LinkQueues)>>>,
    dialer: Arc<Dialer>,
    /// Ids removed from the cluster: the accept loop refuses them.
    retired: Arc<std::sync::RwLock<BTreeSet<NodeId>>>,
}

/// What it takes to start a link to a new peer.
struct Dialer {
    id: NodeId,
    cluster: ClusterId,
    incarnation: u64,
    /// Why this node must stop, once a peer said it lost its data.
    fatal: Arc<std::sync::Mutex<Option<String>>>,
    endpoint: quinn::Endpoint,
    /// Replaced when the certificates are reloaded (SIGHUP); each dial reads the current one.
    client_config: SharedClientConfig,
    backoff_min: Duration,
    backoff_max: Duration,
    handshake_timeout: Duration,
    queue_messages_max: usize,
}

type SharedClientConfig = Arc<std::sync::RwLock<quinn::ClientConfig>>;

impl Dialer {
    fn spawn(&self, peer: NodeId, address: SocketAddr) -> LinkQueues {
        let (control_tx, control_rx) = mpsc::channel(self.queue_messages_max);
        let (append_tx, append_rx) = mpsc::channel(self.queue_messages_max);
        let (snapshot_tx, snapshot_rx) = mpsc::channel(1);
        let link = PeerLink {
            id: self.id,
            cluster: self.cluster,
            incarnation: self.incarnation,
            fatal: self.fatal.clone(),
            peer,
            address,
            endpoint: self.endpoint.clone(),
            client_config: self.client_config.clone(),
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            handshake_timeout: self.handshake_timeout,
        };
        tokio::spawn(link.run(control_rx, append_rx, snapshot_rx));
        LinkQueues {
            control: control_tx,
            appends: append_tx,
            snapshots: snapshot_tx,
        }
    }
}

#[derive(Clone)]
struct LinkQueues {
    control: mpsc::Sender<Message>,
    appends: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<OutgoingSnapshot>,
}

impl PeerLinks {
    /// Queues `message` for `to`. Raft tolerates loss, so a full queue drops the message (and
    /// counts it) rather than stall the driver.
    pub fn send(&self, to: NodeId, message: Message) {
        let links = self.links.lock().expect("peer links lock");
        let Some((_, queues)) = links.get(&to) else {
            return;
        };
        let queue = if message.is_bulk() {
            &queues.appends
        } else {
            &queues.control
        };
        if queue.try_send(message).is_err() {
            metrics::counter!("ordo_peer_messages_dropped_total").increment(1);
        }
    }

    /// Queues a snapshot for `to`; one at a time (the core asks for one per follower until it
    /// is acknowledged or times out). If one is already queued, this one fails at once.
    pub fn send_snapshot(&self, to: NodeId, snapshot: OutgoingSnapshot) {
        let links = self.links.lock().expect("peer links lock");
        let Some((_, queues)) = links.get(&to) else {
            let _ = snapshot.done.send(false);
            return;
        };
        if let Err(refused) = queues.snapshots.try_send(snapshot) {
            let snapshot = match refused {
                mpsc::error::TrySendError::Full(snapshot)
                | mpsc::error::TrySendError::Closed(snapshot) => snapshot,
            };
            let _ = snapshot.done.send(false);
        }
    }

    /// Links exactly to `peers` (this node excluded): a link starts for each new peer or new
    /// address, and the link of a peer no longer listed ends (its queues close). Connections
    /// from `retired` ids are refused from now on.
    pub fn set_peers(&self, peers: &BTreeMap<NodeId, SocketAddr>, retired: &BTreeSet<NodeId>) {
        *self.retired.write().expect("retired lock") = retired.clone();
        let mut links = self.links.lock().expect("peer links lock");
        links.retain(|peer, (address, _)| peers.get(peer) == Some(address));
        for (&peer, &address) in peers {
            if peer != self.dialer.id && !links.contains_key(&peer) {
                info!(peer, %address, "linking to a peer");
                links.insert(peer, (address, self.dialer.spawn(peer, address)));
            }
        }
    }

    /// Why this node must stop: a peer refused it because it lost its data (see
    /// [`PeerIncarnations`]). The node must not run on as if it remembered.
    pub fn refused_for_lost_data(&self) -> Option<String> {
        self.dialer.fatal.lock().expect("fatal lock").clone()
    }

    /// The peers linked to now, with their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        let links = self.links.lock().expect("peer links lock");
        links
            .iter()
            .map(|(peer, (address, _))| (*peer, *address))
            .collect()
    }
}

/// Starts the endpoint, the accept loop and one link per peer.
pub fn start(
    config: &NodeConfig,
    (cluster, incarnation): (ClusterId, u64),
    voters: &BTreeMap<NodeId, SocketAddr>,
    inbound: mpsc::Sender<Inbound>,
    snapshots: mpsc::Sender<ReceivedSnapshot>,
    clients: ClientQueue,
    batches: Arc<dyn BatchSource>,
) -> Result<(quinn::Endpoint, PeerLinks), TransportError> {
    let policy = Policy::new(config.auth.as_ref()).map_err(TransportError::Auth)?;
    if policy.is_open() {
        warn!(
            "no [auth] section: every client certificate the cluster's CA signed may do \
             everything (see `ordo serve --print-default-config` for the ACL format)"
        );
    }
    let server = server_config(config)?;
    let socket = bind_socket(config.listen)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let reset_key = StatelessResetKey::derive(&config.tls_dir, config.id)?;
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint_config.cid_generator(|| Box::new(RandomConnectionIds));
    let endpoint =
        quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime).map_err(|source| {
            TransportError::Bind {
                address: config.listen,
                source,
            }
        })?;
    let id = config.id;
    let retired = Arc::new(std::sync::RwLock::new(BTreeSet::new()));
    let incarnations = PeerIncarnations::load(&config.data_dir)?;
    let accepting = Accepting {
        id,
        cluster,
        incarnations,
        retired: retired.clone(),
        inbound,
        snapshots,
        receiving_snapshot: Arc::new(Semaphore::new(1)),
        snapshot_saves: Arc::new(Semaphore::new(SNAPSHOT_SAVES_MAX)),
        data_dir: config.data_dir.clone(),
        clients,
        batches,
        handshake_timeout: config.transport.handshake_timeout.0,
        handshakes: Arc::new(Semaphore::new(config.transport.handshakes_max as usize)),
        peer_connections: Arc::new(Semaphore::new(
            config.transport.peer_connections_max as usize,
        )),
        budgets: ClientBudgets::new(&config.transport),
        policy,
        subscription_leaderless_max: 2 * config.raft.election_timeout.0,
    };
    tokio::spawn(accept_loop(endpoint.clone(), Arc::new(accepting)));
    let dialer = Dialer {
        id,
        cluster,
        incarnation,
        fatal: Arc::default(),
        endpoint: endpoint.clone(),
        client_config: Arc::new(std::sync::RwLock::new(peer_client_config(config)?)),
        backoff_min: config.transport.reconnect_backoff_min.0,
        backoff_max: config.transport.reconnect_backoff_max.0,
        handshake_timeout: config.transport.handshake_timeout.0,
        queue_messages_max: config.transport.peer_queue_messages_max as usize,
    };
    let links = PeerLinks {
        links: Arc::default(),
        dialer: Arc::new(dialer),
        retired,
    };
    links.set_peers(voters, &BTreeSet::new());
    Ok((endpoint, links))
}

/// Records QUIC's round-trip estimate to `peer` in `ordo_peer_round_trip_time_seconds` once a
/// second while the connection lasts (a histogram, as etcd's peer round-trip time is).
async fn report_rtt(connection: quinn::Connection, peer: NodeId) {
    let histogram =
        metrics::histogram!("ordo_peer_round_trip_time_seconds", "peer" => peer.to_string());
    while connection.close_reason().is_none() {
        histogram.record(connection.rtt().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Closes every connection (peers see a clean shutdown, not a timeout).
pub fn close(endpoint: &quinn::Endpoint) {
    endpoint.close(
        quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
        b"node shutting down",
    );
}

// ----- TLS and QUIC configuration -----

/// Unread bytes a peer connection may have in flight: room for a full append window.
pub const PEER_RECEIVE_WINDOW_BYTES: u32 = 256 << 20;

/// QUIC settings. A connection accepted here starts with a client's receive window (the
/// handshake's transport parameters grant it before the certificate says who is calling, and
/// credit once granted cannot be taken back); a peer's is raised after its certificate is
/// checked.
fn transport_config(
    config: &NodeConfig,
    receive_window: u64,
) -> Result<quinn::TransportConfig, TransportError> {
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.transport.idle_timeout.0)
        .map_err(|error| TransportError::Quic(format!("idle_timeout: {error}")))?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(config.transport.idle_timeout.0 / 3));
    let streams = quinn::VarInt::from_u64(config.transport.client_streams_max)
        .map_err(|error| TransportError::Quic(format!("client_streams_max: {error}")))?;
    transport.max_concurrent_bidi_streams(streams);
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(8));
    // Room for a full append window in flight on one link.
    transport.stream_receive_window(quinn::VarInt::from_u32(64 << 20));
    transport.receive_window(
        quinn::VarInt::from_u64(receive_window)
            .map_err(|error| TransportError::Quic(format!("receive window: {error}")))?,
    );
    transport.send_window(256 << 20);
    Ok(transport)
}

fn server_config(config: &NodeConfig) -> Result<quinn::ServerConfig, TransportError> {
    let tls = tls_server_config(config, vec![PEER_ALPN.to_vec(), CLIENT_ALPN.to_vec()])?;
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|error| TransportError::Quic(error.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let window = config.transport.client_receive_window.0;
    server.transport_config(Arc::new(transport_config(config, window)?));
    Ok(server)
}

/// The node's TLS 1.3 server side: its certificate, and client certificates checked against
/// the CA and the revocation lists. QUIC and the HTTP listener (beyond loopback) share it.
pub(crate) fn tls_server_config(
    config: &NodeConfig,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, TransportError> {
    let dir = &config.tls_dir;
    let roots = Arc::new(tls::root_store(dir)?);
    let crls = load_crls(&config.transport.crl_files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, tls::provider())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|error| TransportError::Quic(format!("client verifier: {error}")))?;
    let identity = Identity::load(dir, &format!("node-{}", config.id))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = alpn;
    Ok(tls)
}

/// How this node dials its peers: as `node-ID`, checking their certificates against the CA and
/// the revocation lists.
fn peer_client_config(config: &NodeConfig) -> Result<quinn::ClientConfig, TransportError> {
    let dir = &config.tls_dir;
    let identity = Identity::load(dir, &format!("node-{}", config.id))?;
    let roots = Arc::new(tls::root_store(dir)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, tls::provider())
        .with_crls(load_crls(&config.transport.crl_files)?)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|error| TransportError::Quic(format!("server verifier: {error}")))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|error| TransportError::Quic(error.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let window = u64::from(PEER_RECEIVE_WINDOW_BYTES);
    client.transport_config(Arc::new(transport_config(config, window)?));
    Ok(client)
}

/// The certificate revocation lists in `paths` (PEM).
fn load_crls(
    paths: &[PathBuf],
) -> Result<Vec<rustls_pki_types::CertificateRevocationListDer<'static>>, TransportError> {
    use rustls_pki_types::pem::PemObject;
    let mut crls = Vec::new();
    for path in paths {
        let read = rustls_pki_types::CertificateRevocationListDer::pem_file_iter(path)
            .and_then(|crls| crls.collect::<Result<Vec<_>, _>>());
        let found = read.map_err(|error| TransportError::Crl {
            path: path.display().to_string(),
            detail: error.to_string(),
        })?;
        if found.is_empty() {
            return Err(TransportError::Crl {
                path: path.display().to_string(),
                detail: "no CRL in it".into(),
            });
        }
        crls.extend(found);
    }
    Ok(crls)
}

/// Loads the certificates, the CA and the revocation lists again (SIGHUP): new connections,
/// accepted and dialled, use them; open connections go on (client connections end at
/// `transport.connection_age_max`, then reconnect under the new ones).
pub fn reload(
    endpoint: &quinn::Endpoint,
    links: &PeerLinks,
    config: &NodeConfig,
) -> Result<(), TransportError> {
    let server = server_config(config)?;
    let client = peer_client_config(config)?;
    endpoint.set_server_config(Some(server));
    *links
        .dialer
        .client_config
        .write()
        .expect("client config lock") = client;
    Ok(())
}

/// The endpoint's key for QUIC stateless-reset tokens (RFC 9000 §10.3), derived from this node's
/// TLS private key so that it is secret and the same in every process of the node.
///
/// Why it must survive a restart: peers keep the connection they had with this node's previous
/// process and go on writing into it. With the same key, the new process answers those packets
/// with a stateless reset the peer recognises, and the peer drops the dead connection and redials
/// at once. With quinn's default (a random key per process) the peer cannot tell the reset from
/// noise and keeps the dead link until its idle timeout (10 s by default): a restarted node hears
/// nothing from that peer meanwhile, cannot catch up, and a leader elected in that window may be
/// unable to reach it.
struct StatelessResetKey {
    hkdf: &'static dyn rustls::crypto::tls13::Hkdf,
    key: rustls::crypto::tls13::OkmBlock,
    signature_len: usize,
}

impl StatelessResetKey {
    fn derive(dir: &Path, id: NodeId) -> Result<Self, TransportError> {
        let rustls::SupportedCipherSuite::Tls13(suite) =
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        else {
            unreachable!("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite");
        };
        let hkdf = suite.hkdf_provider;
        let identity = Identity::load(dir, &format!("node-{id}"))?;
        let key = hkdf
            .extract_from_secret(Some(b"ordo stateless reset v1"), identity.key.secret_der())
            .expand_block(&[b"quic stateless reset key"]);
        let signature_len = hkdf.hmac_sign(&key, b"").as_ref().len();
        Ok(Self {
            hkdf,
            key,
            signature_len,
        })
    }
}

impl quinn::crypto::HmacKey for StatelessResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let tag = self.hkdf.hmac_sign(&self.key, data);
        signature_out.copy_from_slice(tag.as_ref());
    }

    fn signature_len(&self) -> usize {
        self.signature_len
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let tag = self.hkdf.hmac_sign(&self.key, data);
        let expected = tag.as_ref();
        // Constant time: the comparison must not reveal how much of a guess was right.
        let difference = expected
            .iter()
            .zip(signature)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b));
        if expected.len() == signature.len() && difference == 0 {
            Ok(())
        } else {
            Err(quinn::crypto::CryptoError)
        }
    }
}

/// Connection ids of 8 random bytes. quinn's default generator tags its ids with a random key
/// per process and ignores packets whose id lacks its tag, so a restarted node would silently
/// drop its peers' packets for their old connections instead of answering them with the
/// stateless reset that [`StatelessResetKey`] makes recognisable. Untagged ids make every packet
/// for an unknown connection eligible for a reset; quinn rate-limits resets and keeps each one
/// smaller than the packet that caused it.
struct RandomConnectionIds;

impl quinn::ConnectionIdGenerator for RandomConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; 8];
        // The system's random source fails only on a system without one, where TLS cannot work
        // either.
        tls::provider()
            .secure_random
            .fill(&mut bytes)
            .expect("the system random source");
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Binds the UDP socket with large buffers: on loopback the default buffers dropped packets
/// under load.
fn bind_socket(address: SocketAddr) -> Result<std::net::UdpSocket, TransportError> {
    const SOCKET_BUFFER_BYTES: usize = 4 << 20;
    let bind = |source| TransportError::Bind { address, source };
    let domain = if address.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(bind)?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&address.into()).map_err(bind)?;
    Ok(socket.into())
}

/// Checks that the connection's client certificate names node `id`.
fn certificate_names_node(connection: &quinn::Connection, id: NodeId) -> Result<(), String> {
    let certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no client certificate")?;
    let leaf = certificates.first().ok_or("empty certificate chain")?;
    let certificate = webpki::EndEntityCert::try_from(leaf)
        .map_err(|error| format!("unreadable certificate: {error}"))?;
    let name = ServerName::try_from(node_name(id)).map_err(|error| error.to_string())?;
    certificate
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| {
            format!(
                "certificate does not name node {id} (a node certificate carries {})",
                node_name(id)
            )
        })
}

// ----- incarnations -----

/// The words every refusal of a node that lost its data contains (the refused node stops on
/// them).
pub const LOST_DATA_REFUSAL: &str = "lost its data";

/// The file, in the data directory, where a node keeps its peers' incarnations.
pub const PEER_INCARNATIONS_FILE: &str = "peer-incarnations";

/// What each peer's incarnation was when this node first heard from it, kept durably: a peer
/// that comes back with another one lost its data directory (or had it replaced). It forgot
/// the votes it cast and the entries it acknowledged, so letting it vote again could elect two
/// leaders in one term or lose an acknowledged batch: it is refused, and told how to replace
/// it. The file holds one `id incarnation` line per peer.
pub struct PeerIncarnations {
    path: PathBuf,
    known: std::sync::Mutex<BTreeMap<NodeId, u64>>,
}

impl PeerIncarnations {
    /// Reads the file in `data_dir` (none yet: no peer heard from).
    pub fn load(data_dir: &Path) -> Result<Self, TransportError> {
        let path = data_dir.join(PEER_INCARNATIONS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(incarnations_error(&path, error.to_string())),
        };
        let mut known = BTreeMap::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let parsed = line
                .split_once(' ')
                .and_then(|(id, incarnation)| Some((id.parse().ok()?, incarnation.parse().ok()?)));
            let (id, incarnation) = parsed.ok_or_else(|| {
                incarnations_error(&path, format!("line {line:?} is not `id incarnation`"))
            })?;
            known.insert(id, incarnation);
        }
        Ok(Self {
            path,
            known: std::sync::Mutex::new(known),
        })
    }

    /// Accepts `from` if it is heard from for the first time (its incarnation is recorded, on
    /// disk, before the answer) or with the incarnation recorded; refuses it otherwise.
    fn check(&self, from: NodeId, incarnation: u64) -> Result<(), String> {
        let mut known = self.known.lock().expect("incarnations lock");
        match known.get(&from) {
            Some(recorded) if *recorded == incarnation => Ok(()),
            Some(_) => Err(format!(
                "node {from} {LOST_DATA_REFUSAL}: it comes back with an empty or replaced data \
                 directory, so it forgot the votes it cast and the entries it acknowledged and \
                 must never vote again. Replace it: `ordo member remove {from}`, then `ordo \
                 member add NEW_ID ADDRESS` and start the new node with `ordo serve --id NEW_ID \
                 --join ...` on an empty data directory"
            )),
            None => {
                known.insert(from, incarnation);
                let text: String = known
                    .iter()
                    .map(|(id, incarnation)| format!("{id} {incarnation}\n"))
                    .collect();
                write_durably(&self.path, text.as_bytes()).map_err(|error| {
                    known.remove(&from);
                    format!("cannot record node {from}'s incarnation: {error}")
                })
            }
        }
    }
}

fn incarnations_error(path: &Path, detail: String) -> TransportError {
    TransportError::Incarnations {
        path: path.display().to_string(),
        detail,
    }
}

/// Replaces `path` with `bytes`: written to a temporary file, synced, renamed over, and the
/// directory synced, so a crash leaves the old file or the new one.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

// ----- accepting -----

/// What the accept loop hands every connection.
pub(crate) struct Accepting {
    pub(crate) id: NodeId,
    cluster: ClusterId,
    /// Ids removed from the cluster (shared with [`PeerLinks::set_peers`]). Any other node of
    /// this cluster's CA and identity may connect: a node added a moment ago is not in every
    /// member's configuration yet, and Raft decides what its messages count for.
    retired: Arc<std::sync::RwLock<BTreeSet<NodeId>>>,
    /// Every peer's incarnation when this node first heard from it.
    incarnations: PeerIncarnations,
    inbound: mpsc::Sender<Inbound>,
    /// Snapshots received whole, for the driver; one is received at a time.
    snapshots: mpsc::Sender<ReceivedSnapshot>,
    receiving_snapshot: Arc<Semaphore>,
    /// See [`SNAPSHOT_SAVES_MAX`].
    pub(crate) snapshot_saves: Arc<Semaphore>,
    data_dir: std::path::PathBuf,
    pub(crate) clients: ClientQueue,
    pub(crate) batches: Arc<dyn BatchSource>,
    handshake_timeout: Duration,
    /// One permit per handshake in progress (`transport.handshakes_max`).
    handshakes: Arc<Semaphore>,
    /// One permit per connection from a node certificate (`transport.peer_connections_max`):
    /// clients never take these, so they can never keep a peer from reconnecting.
    peer_connections: Arc<Semaphore>,
    pub(crate) budgets: ClientBudgets,
    pub(crate) policy: Policy,
    /// How long a node may know no leader before it ends its subscriptions with
    /// [`BusyCode::NoLeader`]: two election timeouts, a full randomized election round.
    pub(crate) subscription_leaderless_max: Duration,
}

async fn accept_loop(endpoint: quinn::Endpoint, accepting: Arc<Accepting>) {
    let handshakes_max = accepting.handshakes_max();
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        // Under load, an address must prove it is real (it receives our packets) before it
        // may hold a handshake slot: spoofed Initial packets then cost nothing.
        let in_progress = handshakes_max - accepting.handshakes.available_permits() as u64;
        if !incoming.remote_address_validated() && 2 * in_progress >= handshakes_max {
            metrics::counter!("ordo_handshake_retries_total").increment(1);
            if let Err(error) = incoming.retry() {
                error.into_incoming().ignore();
            }
            continue;
        }
        let Ok(permit) = accepting.handshakes.clone().try_acquire_owned() else {
            accepting.budgets_refused_handshake(remote);
            incoming.refuse();
            continue;
        };
        let accepting = accepting.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(accepting.handshake_timeout, incoming).await;
            drop(permit);
            let connection = match handshake {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => {
                    warn!(%remote, reason = %error, "refused connection: TLS handshake failed");
                    metrics::counter!("ordo_connections_refused_total").increment(1);
                    return;
                }
                Err(_) => {
                    warn!(%remote, "refused connection: handshake timed out");
                    return;
                }
            };
            let protocol = connection
                .handshake_data()
                .and_then(|data| data.downcast::<HandshakeData>().ok())
                .and_then(|data| data.protocol);
            let leaf = clients::leaf_certificate(&connection);
            let caller = leaf
                .as_ref()
                .map_or(Caller::Client(None), Caller::from_certificate);
            match protocol.as_deref() {
                Some(PEER_ALPN) if !matches!(caller, Caller::Node(_)) => {
                    // Not a node: it is refused at its hello (read with a small limit) with the
                    // reason, holding a client's slots meanwhile, never a peer's.
                    let key = clients::budget_key(&caller, leaf.as_ref());
                    let slots =
                        clients::take_connection_slots(&accepting.budgets, &key, remote.ip());
                    match slots {
                        Ok(_slots) => serve_peer(connection, accepting).await,
                        Err(reason) => {
                            let code = quinn::VarInt::from_u32(clients::CLOSE_QUOTA);
                            connection.close(code, reason.as_bytes());
                        }
                    }
                }
                Some(PEER_ALPN) => {
                    let Ok(_slot) = accepting.peer_connections.clone().try_acquire_owned() else {
                        warn!(%remote, "refused peer: transport.peer_connections_max reached");
                        metrics::counter!("ordo_connections_refused_total").increment(1);
                        let reason = b"transport.peer_connections_max reached";
                        connection.close(quinn::VarInt::from_u32(clients::CLOSE_QUOTA), reason);
                        return;
                    };
                    let window = quinn::VarInt::from_u32(PEER_RECEIVE_WINDOW_BYTES);
                    connection.set_receive_window(window);
                    serve_peer(connection, accepting).await
                }
                Some(CLIENT_ALPN) => {
                    let key = clients::budget_key(&caller, leaf.as_ref());
                    let slots =
                        clients::take_connection_slots(&accepting.budgets, &key, remote.ip());
                    match slots {
                        Ok(slots) => {
                            clients::serve(connection, accepting, caller, key, slots).await
                        }
                        Err(reason) => {
                            metrics::counter!("ordo_connections_refused_total").increment(1);
                            let code = quinn::VarInt::from_u32(clients::CLOSE_QUOTA);
                            connection.close(code, reason.as_bytes());
                        }
                    }
                }
                _ => connection.close(quinn::VarInt::from_u32(CLOSE_REFUSED), b"unknown protocol"),
            }
        });
    }
}

impl Accepting {
    fn handshakes_max(&self) -> u64 {
        self.budgets.limits.handshakes_max
    }

    fn budgets_refused_handshake(&self, remote: SocketAddr) {
        debug!(%remote, "refused connection: transport.handshakes_max handshakes in progress");
        metrics::counter!("ordo_connections_refused_total").increment(1);
        metrics::counter!("ordo_client_refusals_total", "limit" => "handshakes_max").increment(1);
    }
}

async fn serve_peer(connection: quinn::Connection, accepting: Arc<Accepting>) {
    let (id, handshake_timeout) = (accepting.id, accepting.handshake_timeout);
    let inbound = accepting.inbound.clone();
    let remote = connection.remote_address();
    let hello = tokio::time::timeout(handshake_timeout, async {
        let (send, mut receive) = connection
            .accept_bi()
            .await
            .map_err(|error| error.to_string())?;
        let hello: Option<PeerFrame> = read_frame(&mut receive, HELLO_FRAME_BYTES_MAX)
            .await
            .map_err(|error| error.to_string())?;
        Ok::<_, String>((hello, send, receive))
    })
    .await;
    let (hello, mut send, mut receive) = match hello {
        Ok(Ok(parts)) => parts,
        Ok(Err(reason)) => return refuse_quietly(&connection, remote, &reason),
        Err(_) => {
            return refuse_quietly(&connection, remote, "no hello before the handshake timeout");
        }
    };
    let from = match hello {
        Some(PeerFrame::Hello {
            from,
            to,
            cluster,
            incarnation,
        }) => {
            let ours = accepting.cluster;
            let retired = accepting.retired.read().expect("retired lock").clone();
            let checked = check_hello(&connection, (id, ours), &retired, (from, to, cluster))
                .and_then(|()| accepting.incarnations.check(from, incarnation));
            match checked {
                Ok(()) => from,
                Err(reason) => {
                    warn!(%remote, claimed = from, %reason, "refused peer");
                    metrics::counter!("ordo_peers_refused_total").increment(1);
                    let _ = write_frame(
                        &mut send,
                        &PeerFrame::Refused {
                            reason: reason.clone(),
                        },
                    )
                    .await;
                    let _ = send.finish();
                    let _ = tokio::time::timeout(Duration::from_millis(200), send.stopped()).await;
                    connection.close(quinn::VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
                    return;
                }
            }
        }
        _ => return refuse_quietly(&connection, remote, "the first frame was not a hello"),
    };
    if write_frame(&mut send, &PeerFrame::Welcome).await.is_err() {
        return;
    }
    info!(peer = from, %remote, "peer connected (inbound)");
    metrics::counter!("ordo_peer_connects_total").increment(1);
    tokio::spawn(report_rtt(connection.clone(), from));
    let control = relay(&mut receive, from, inbound.clone());
    let appends = async {
        loop {
            let stream = match connection.accept_uni().await {
                Ok(stream) => stream,
                Err(error) => return LinkError::from(error),
            };
            tokio::spawn(serve_uni(stream, from, accepting.clone()));
        }
    };
    let error = tokio::select! {
        error = control => error,
        error = appends => error,
    };
    match &error {
        LinkError::BadFrame { .. } | LinkError::Unexpected { .. } => {
            warn!(peer = from, %error, "closing the link from a peer that sent a bad frame");
            let reason = error.to_string();
            connection.close(quinn::VarInt::from_u32(CLOSE_BAD_FRAME), reason.as_bytes());
        }
        _ => info!(peer = from, %error, "peer disconnected (inbound)"),
    }
    metrics::counter!("ordo_peer_disconnects_total").increment(1);
}

fn refuse_quietly(connection: &quinn::Connection, remote: SocketAddr, reason: &str) {
    warn!(%remote, %reason, "refused peer");
    connection.close(quinn::VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
}

fn check_hello(
    connection: &quinn::Connection,
    (id, ours): (NodeId, ClusterId),
    retired: &BTreeSet<NodeId>,
    (from, to, cluster): (NodeId, NodeId, ClusterId),
) -> Result<(), String> {
    if to != id {
        return Err(format!("this is node {id}, not node {to}"));
    }
    if cluster != ours {
        return Err(format!(
            "node {id} belongs to cluster {ours}, and node {from} to cluster {cluster}: nodes of \
             different clusters (say, one restored from a backup and the one it was taken \
             from) never exchange messages"
        ));
    }
    if from == id {
        return Err(format!("node {id} does not connect to itself"));
    }
    if retired.contains(&from) {
        return Err(format!(
            "node {from} was removed from this cluster; ids are never reused (add the machine \
             back under a new id, on an empty data directory)"
        ));
    }
    certificate_names_node(connection, from)
}

/// One unidirectional stream from peer `from`: appends (relayed to the driver) or a snapshot
/// (received whole, then handed to the driver), as its first frame says.
async fn serve_uni(mut stream: quinn::RecvStream, from: NodeId, accepting: Arc<Accepting>) {
    let first = read_frame::<PeerFrame, _>(&mut stream, PEER_FRAME_BYTES_MAX).await;
    let error = match first {
        Ok(Some(PeerFrame::Raft(message))) => {
            let inbound = accepting.inbound.clone();
            if inbound.send(Inbound { from, message }).await.is_err() {
                return;
            }
            relay(&mut stream, from, inbound).await
        }
        Ok(Some(PeerFrame::SnapshotBegin {
            term,
            last_included,
            bytes,
        })) => {
            let Ok(_permit) = accepting.receiving_snapshot.clone().try_acquire_owned() else {
                info!(peer = from, "refused a snapshot: another is being received");
                let _ = stream.stop(quinn::VarInt::from_u32(CLOSE_REFUSED));
                return;
            };
            let data_dir = accepting.data_dir.clone();
            let received = snapshot_transfer::receive(
                &mut stream,
                from,
                term,
                last_included,
                bytes,
                &data_dir,
            )
            .await;
            match received {
                Ok(snapshot) => {
                    info!(peer = from, %last_included, bytes, "received a snapshot");
                    let _ = stream.stop(quinn::VarInt::from_u32(0));
                    let _ = accepting.snapshots.send(snapshot).await;
                }
                Err(error) => {
                    warn!(peer = from, %error, "a snapshot transfer failed");
                    let _ = stream.stop(quinn::VarInt::from_u32(CLOSE_BAD_FRAME));
                }
            }
            return;
        }
        Ok(Some(other)) => {
            metrics::counter!("ordo_bad_frames_total").increment(1);
            LinkError::Unexpected {
                from,
                frame: other.kind(),
            }
        }
        Ok(None) => LinkError::Closed,
        Err(error) => LinkError::Stream(error),
    };
    info!(peer = from, %error, "append stream closed");
}

/// Forwards frames from one stream to the driver until the stream ends or a frame is bad;
/// returns why it ended.
async fn relay(
    stream: &mut quinn::RecvStream,
    from: NodeId,
    inbound: mpsc::Sender<Inbound>,
) -> LinkError {
    loop {
        match read_frame::<PeerFrame, _>(stream, PEER_FRAME_BYTES_MAX).await {
            Ok(Some(PeerFrame::Raft(message))) => {
                if inbound.send(Inbound { from, message }).await.is_err() {
                    return LinkError::Stopping;
                }
            }
            Ok(Some(other)) => {
                metrics::counter!("ordo_bad_frames_total").increment(1);
                let frame = other.kind();
                return LinkError::Unexpected { from, frame };
            }
            Ok(None) => return LinkError::Closed,
            Err(error @ FrameError::Io(_)) => return LinkError::Stream(error),
            Err(error) => {
                metrics::counter!("ordo_bad_frames_total").increment(1);
                return LinkError::BadFrame { from, error };
            }
        }
    }
}

// ----- dialling -----

struct PeerLink {
    id: NodeId,
    cluster: ClusterId,
    incarnation: u64,
    fatal: Arc<std::sync::Mutex<Option<String>>>,
    peer: NodeId,
    address: SocketAddr,
    endpoint: quinn::Endpoint,
    client_config: SharedClientConfig,
    backoff_min: Duration,
    backoff_max: Duration,
    handshake_timeout: Duration,
}

impl PeerLink {
    async fn run(
        self,
        mut control: mpsc::Receiver<Message>,
        mut appends: mpsc::Receiver<Message>,
        mut snapshots: mpsc::Receiver<OutgoingSnapshot>,
    ) {
        let mut backoff = self.backoff_min;
        let mut jitter = ordo_core::rng::Prng::new(jitter_seed(self.id, self.peer));
        let mut logged_failure = false;
        loop {
            match tokio::time::timeout(self.handshake_timeout, self.establish()).await {
                Ok(Ok((connection, control_stream))) => {
                    info!(peer = self.peer, address = %self.address, "peer connected (outbound)");
                    backoff = self.backoff_min;
                    logged_failure = false;
                    let queues = (&mut control, &mut appends, &mut snapshots);
                    let reason = self.pump(&connection, control_stream, queues).await;
                    if let LinkError::Stopping = reason {
                        return;
                    }
                    info!(peer = self.peer, %reason, "peer disconnected (outbound)");
                }
                outcome => {
                    let reason = match outcome {
                        Ok(Err(reason)) => reason.to_string(),
                        Err(_) => "handshake timed out".to_string(),
                        Ok(Ok(_)) => unreachable!("matched above"),
                    };
                    if logged_failure {
                        debug!(peer = self.peer, %reason, "still cannot reach peer");
                    } else {
                        logged_failure = true;
                        warn!(peer = self.peer, address = %self.address, %reason, "cannot reach peer; retrying");
                    }
                }
            }
            // Capped exponential back-off with jitter in [backoff/2, backoff].
            let half = backoff.as_micros() as u64 / 2;
            let delay = Duration::from_micros(half + jitter.below(half.max(1)));
            tokio::time::sleep(delay).await;
            backoff = (backoff * 2).min(self.backoff_max);
            if control.is_closed() {
                return;
            }
        }
    }

    async fn establish(&self) -> Result<(quinn::Connection, quinn::SendStream), LinkError> {
        let client_config = self
            .client_config
            .read()
            .expect("client config lock")
            .clone();
        let connecting =
            self.endpoint
                .connect_with(client_config, self.address, &node_name(self.peer))?;
        let connection = connecting.await?;
        let (mut send, mut receive) = connection.open_bi().await?;
        let hello = PeerFrame::Hello {
            from: self.id,
            to: self.peer,
            cluster: self.cluster,
            incarnation: self.incarnation,
        };
        write_frame(&mut send, &hello)
            .await
            .map_err(LinkError::Stream)?;
        match read_frame::<PeerFrame, _>(&mut receive, PEER_FRAME_BYTES_MAX).await {
            Ok(Some(PeerFrame::Welcome)) => Ok((connection, send)),
            Ok(Some(PeerFrame::Refused { reason })) => {
                if reason.contains(LOST_DATA_REFUSAL) {
                    // This node lost its data: it must not take part at all. The driver stops.
                    let mut fatal = self.fatal.lock().expect("fatal lock");
                    fatal.get_or_insert_with(|| reason.clone());
                }
                Err(LinkError::Refused(reason))
            }
            Ok(_) => Err(LinkError::NoWelcome),
            Err(error) => Err(LinkError::Stream(error)),
        }
    }

    /// Writes queued messages until the link fails; returns why it ended.
    async fn pump(
        &self,
        connection: &quinn::Connection,
        mut control_stream: quinn::SendStream,
        (control, appends, snapshots): (
            &mut mpsc::Receiver<Message>,
            &mut mpsc::Receiver<Message>,
            &mut mpsc::Receiver<OutgoingSnapshot>,
        ),
    ) -> LinkError {
        let mut append_stream = match connection.open_uni().await {
            Ok(stream) => stream,
            Err(error) => return error.into(),
        };
        let _ = control_stream.set_priority(1);
        let _ = append_stream.set_priority(0);
        let peer = self.peer;
        tokio::select! {
            reason = forward(&mut control_stream, control) => reason,
            reason = forward(&mut append_stream, appends) => reason,
            reason = send_snapshots(connection, snapshots, peer) => reason,
            error = connection.closed() => error.into(),
        }
    }
}

/// Sends every snapshot queued for `peer` on its own stream of `connection`, reporting each.
async fn send_snapshots(
    connection: &quinn::Connection,
    snapshots: &mut mpsc::Receiver<OutgoingSnapshot>,
    peer: NodeId,
) -> LinkError {
    loop {
        let Some(snapshot) = snapshots.recv().await else {
            return LinkError::Stopping;
        };
        let connection = connection.clone();
        tokio::spawn(async move {
            let sent = snapshot_transfer::send(&connection, &snapshot).await;
            match &sent {
                Ok(()) => info!(
                    peer,
                    last_included = %snapshot.last_included,
                    bytes = snapshot.bytes.len(),
                    "sent a snapshot"
                ),
                Err(error) => warn!(peer, %error, "could not send a snapshot"),
            }
            let _ = snapshot.done.send(sent.is_ok());
        });
    }
}

/// Writes queued messages to one stream until the queue closes or the stream fails; returns
/// why it ended.
async fn forward(stream: &mut quinn::SendStream, queue: &mut mpsc::Receiver<Message>) -> LinkError {
    loop {
        let Some(message) = queue.recv().await else {
            return LinkError::Stopping;
        };
        if let Err(error) = write_frame(stream, &PeerFrame::Raft(message)).await {
            return LinkError::Stream(error);
        }
    }
}

fn jitter_seed(id: NodeId, peer: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ (id << 32) ^ peer
}

#[cfg(test)]
mod tests {
    use quinn::ConnectionIdGenerator;
    use quinn::crypto::HmacKey;

    use super::*;

    #[test]
    fn the_stateless_reset_key_is_the_same_in_every_process_of_a_node_and_differs_between_nodes() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::generate(dir.path(), 2, &[]).unwrap();
        let first = StatelessResetKey::derive(dir.path(), 1).unwrap();
        let again = StatelessResetKey::derive(dir.path(), 1).unwrap();
        let other = StatelessResetKey::derive(dir.path(), 2).unwrap();
        let sign = |key: &StatelessResetKey| {
            let mut signature = vec![0; key.signature_len()];
            key.sign(b"connection id", &mut signature);
            signature
        };
        assert_eq!(first.signature_len(), 32);
        assert_eq!(
            sign(&first),
            sign(&again),
            "a restarted node must sign alike"
        );
        assert_ne!(sign(&first), sign(&other));
        assert!(first.verify(b"connection id", &sign(&again)).is_ok());
        assert!(first.verify(b"connection id", &sign(&other)).is_err());
        assert!(first.verify(b"connection id", &sign(&first)[..16]).is_err());
    }

    #[test]
    fn connection_ids_are_random_and_of_the_declared_length() {
        let mut generator = RandomConnectionIds;
        let (a, b) = (generator.generate_cid(), generator.generate_cid());
        assert_eq!(a.len(), generator.cid_len());
        assert_ne!(a, b);
    }
}
