//! Node configuration: a TOML file, overridden by environment variables, overridden by flags.
//!
//! Durations are written with units ("150ms", "1s"), sizes too ("64MiB", "512KiB"); unknown keys
//! are errors at every layer. `ordo serve --print-default-config` prints [`default_config_text`],
//! every key commented with its unit and default; `--check-config` validates and exits.
//!
//! Environment variables: `ORDO_ID`, `ORDO_LISTEN`, `ORDO_PEERS` (`1=host:port,2=...`),
//! `ORDO_DATA_DIR`, `ORDO_TLS_DIR`, and `ORDO_<SECTION>_<KEY>` for keys in sections, e.g.
//! `ORDO_RAFT_ELECTION_TIMEOUT=500ms`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ordo_common::{EngineKind, NodeId};
use serde::{Deserialize, Serialize};

/// Why a configuration was refused. The message names the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML in {origin}: {detail}")]
    Syntax { origin: String, detail: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("unknown environment variable {0} (see `ordo serve --print-default-config`)")]
    UnknownEnv(String),
}

/// A duration written with a unit, e.g. "150ms".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// A size written with a unit, e.g. "64MiB".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanBytes(pub u64);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|error| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration like \"150ms\": {error}"
                ))
            })
    }
}

const BYTE_UNITS: [(&str, u64); 5] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
    ("", 1),
];

impl Serialize for HumanBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (unit, size) = BYTE_UNITS
            .iter()
            .find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size))
            .copied()
            .unwrap_or(("B", 1));
        let unit = if unit.is_empty() { "B" } else { unit };
        serializer.serialize_str(&format!("{}{unit}", self.0 / size))
    }
}

impl<'de> Deserialize<'de> for HumanBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }
}

/// Accepts a size with a unit ("64MiB") or a bare count of bytes, as a string or an integer
/// (`ballast = 0` in TOML, `ORDO_STORAGE_BALLAST=8388608` in the environment).
struct BytesVisitor;

impl serde::de::Visitor<'_> for BytesVisitor {
    type Value = HumanBytes;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a size like \"64MiB\" or \"512KiB\", or a number of bytes")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HumanBytes, E> {
        parse_bytes(text).map(HumanBytes).ok_or_else(|| {
            E::custom(format!(
                "{text:?} is not a size like \"64MiB\" or \"512KiB\""
            ))
        })
    }

    fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<HumanBytes, E> {
        Ok(HumanBytes(bytes))
    }

    fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<HumanBytes, E> {
        u64::try_from(bytes)
            .map(HumanBytes)
            .map_err(|_| E::custom(format!("{bytes} is not a size: it is negative")))
    }
}

fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (unit, size) = BYTE_UNITS.iter().find(|(unit, _)| text.ends_with(unit))?;
    let number: u64 = text[..text.len() - unit.len()].trim().parse().ok()?;
    number.checked_mul(*size)
}

/// The whole node configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// Every voter, this node included: id → address.
    pub peers: BTreeMap<String, String>,
    /// Addresses of running members of a cluster this node joins (instead of `peers`): it
    /// learns the cluster's identity and members from them, and waits to be added.
    pub join: Vec<String>,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub consensus: ConsensusSection,
    pub raft: RaftSection,
    pub storage: StorageSection,
    pub retention: RetentionSection,
    pub registry: RegistrySection,
    pub transport: TransportSection,
    pub http: HttpSection,
    pub runtime: RuntimeSection,
    /// Who may do what; absent: every client certificate of the CA may do everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::auth::AuthSection>,
}

/// The node's HTTP listener: metrics, health, status and the console.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `address:port` (TCP); "" = the port number of `listen`, on its address when that is a
    /// loopback one and on 127.0.0.1 otherwise (QUIC is UDP, so the two do not collide);
    /// "off" = no listener. Beyond loopback, clients must present a
    /// certificate of the cluster's CA.
    pub listen: String,
    /// Record metrics for `/metrics` (off: the recorder is not installed and metrics cost
    /// nothing).
    pub metrics: bool,
    /// `/readyz` answers 503 while this node has applied more than this many entries fewer
    /// than it knows committed.
    pub ready_lag_entries_max: u64,
}

/// Where the HTTP listener goes, as [`HttpSection::listen`] resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpListen {
    Off,
    At(SocketAddr),
}

impl NodeConfig {
    /// The consensus engine `consensus.engine` names.
    pub fn engine(&self) -> Result<EngineKind, ConfigError> {
        EngineKind::parse(&self.consensus.engine).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "consensus.engine: {:?} is not an engine; use {}",
                self.consensus.engine,
                EngineKind::ALL
                    .map(|kind| format!("\"{kind}\""))
                    .join(" or ")
            ))
        })
    }

    /// Where the HTTP listener binds, or that it is off.
    pub fn http_listen(&self) -> Result<HttpListen, ConfigError> {
        match self.http.listen.trim() {
            "off" => Ok(HttpListen::Off),
            "" => {
                let host = if self.listen.ip().is_loopback() {
                    self.listen.ip()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                };
                Ok(HttpListen::At(SocketAddr::new(host, self.listen.port())))
            }
            address => resolve(address).map(HttpListen::At).map_err(|detail| {
                ConfigError::Invalid(format!("http.listen: {detail} (or \"\" or \"off\")"))
            }),
        }
    }
}

/// How the node's process runs its work.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Async worker threads (QUIC connections, TLS, client and peer streams, and the driver that
    /// runs the node's logic); 0 picks [`RuntimeSection::auto_worker_threads`]. The log writer
    /// has a thread of its own.
    pub worker_threads: u64,
}

/// Most async worker threads a node may be configured with.
pub const WORKER_THREADS_MAX: u64 = 256;

impl RuntimeSection {
    /// The worker threads to start: the configured count, or for 0 one per CPU. On 2 vCPUs
    /// shared by 3 nodes, one worker per node instead of two made 64 submitters 4-10% faster at
    /// 10 messages per batch and 21% at 1, but a 64 MiB batch then kept a fresh cluster electing
    /// (its transfer starved the heartbeats), so the default stays one per CPU (README, Beside
    /// etcd).
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            0 => Self::auto_worker_threads(),
            count => count as usize,
        }
    }

    pub fn auto_worker_threads() -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        cpus.max(1)
    }
}

/// How the cluster agrees on its log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusSection {
    /// "raft" or "multi-paxos" (see [`ordo_common::EngineKind`]): fixed when the cluster
    /// bootstraps; a node refuses data written under the other.
    pub engine: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    pub tick_interval: HumanDuration,
    pub heartbeat_interval: HumanDuration,
    pub election_timeout: HumanDuration,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub append_bytes_max: HumanBytes,
    pub inflight_messages_max: u64,
    pub inflight_bytes_max: HumanBytes,
    pub uncommitted_bytes_max: HumanBytes,
    pub proposal_bytes_max: HumanBytes,
    pub log_window_bytes_max: HumanBytes,
    pub snapshot_timeout: HumanDuration,
    /// A learner is promoted only when at most this many entries behind the leader.
    pub promote_lag_entries_max: u64,
    /// How far apart the coordinators' clocks may be (sessions' TTLs carried over a leader
    /// change are extended by it).
    pub clock_skew_max: HumanDuration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub cache: HumanBytes,
    /// Below this much free space on the data directory's file system, proposals are refused.
    pub free_space_min: HumanBytes,
    /// An emergency reserve file, released when a write finds the disk full (0: none).
    pub ballast: HumanBytes,
}

/// What the log keeps for subscribers and for followers catching up, beyond what the state
/// machine needs (its state is in its tables and in snapshots).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    pub age: HumanDuration,
    pub bytes_max: HumanBytes,
    /// 0: no count limit.
    pub entries_max: u64,
    pub trailing_entries: u64,
}

/// The idempotency registry: for how long, and in how many bytes, it answers for batch ids.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    pub horizon: HumanDuration,
    pub bytes_max: HumanBytes,
    pub future_skew: HumanDuration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    pub peer_queue_messages_max: u64,
    /// Client connections open at once (peers have slots of their own).
    pub connections_max: u64,
    /// Connections from node certificates open at once.
    pub peer_connections_max: u64,
    /// Handshakes in progress at once; beyond half of it, unvalidated source addresses are
    /// asked to prove they are real (QUIC Retry) first.
    pub handshakes_max: u64,
    pub connections_per_identity_max: u64,
    pub connections_per_address_max: u64,
    pub client_streams_max: u64,
    /// Request bytes a connection may have being read and decoded at once.
    pub connection_request_bytes_max: HumanBytes,
    /// Request bytes the node may have being read and decoded at once, all clients together.
    pub request_bytes_max: HumanBytes,
    /// Unread bytes a client connection may have in flight (QUIC flow control).
    pub client_receive_window: HumanBytes,
    pub request_read_timeout: HumanDuration,
    /// A client connection with no open stream for this long is closed.
    pub client_idle_timeout: HumanDuration,
    /// A client connection older than this is closed (its client reconnects and presents its
    /// certificate again).
    pub connection_age_max: HumanDuration,
    pub subscriptions_per_connection_max: u64,
    pub subscriptions_max: u64,
    /// Subscriptions reading history (more than a window behind the newest batch) at once.
    pub catchups_max: u64,
    pub subscription_topics_max: u64,
    /// Submitted bytes one identity may have waiting for their outcome on this node.
    pub identity_uncommitted_bytes_max: HumanBytes,
    /// Topics an identity's write patterns may cover before its submits may create more.
    pub topics_per_identity_max: u64,
    /// PEM files of certificate revocation lists checked for every client and peer
    /// certificate (reloaded with the certificates on SIGHUP).
    pub crl_files: Vec<PathBuf>,
    pub handshake_timeout: HumanDuration,
    pub idle_timeout: HumanDuration,
    pub reconnect_backoff_min: HumanDuration,
    pub reconnect_backoff_max: HumanDuration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let ms = |millis| HumanDuration(Duration::from_millis(millis));
        let mib = |count: u64| HumanBytes(count << 20);
        Self {
            id: 1,
            listen: "127.0.0.1:7001".parse().expect("literal address"),
            peers: BTreeMap::from([("1".to_string(), "127.0.0.1:7001".to_string())]),
            join: Vec::new(),
            data_dir: PathBuf::from("ordo-data"),
            tls_dir: PathBuf::from("ordo-dev/tls"),
            consensus: ConsensusSection {
                engine: EngineKind::Raft.name().to_string(),
            },
            raft: RaftSection {
                tick_interval: ms(10),
                heartbeat_interval: ms(100),
                election_timeout: ms(1000),
                pre_vote: true,
                check_quorum: true,
                append_bytes_max: mib(1),
                inflight_messages_max: 64,
                inflight_bytes_max: mib(32),
                uncommitted_bytes_max: mib(256),
                proposal_bytes_max: HumanBytes(ordo_common::limits::ENTRY_PAYLOAD_BYTES_MAX),
                log_window_bytes_max: mib(64),
                snapshot_timeout: ms(30_000),
                promote_lag_entries_max: 1000,
                clock_skew_max: ms(1000),
            },
            storage: StorageSection {
                cache: mib(8),
                free_space_min: mib(512),
                ballast: mib(128),
            },
            retention: RetentionSection {
                age: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
                bytes_max: HumanBytes(1 << 30),
                entries_max: 0,
                trailing_entries: 10_000,
            },
            registry: RegistrySection {
                horizon: HumanDuration(Duration::from_millis(
                    ordo_core::state::REGISTRY_HORIZON_MS_DEFAULT,
                )),
                bytes_max: HumanBytes(ordo_core::state::REGISTRY_BYTES_MAX_DEFAULT),
                future_skew: HumanDuration(Duration::from_millis(
                    ordo_core::state::FUTURE_SKEW_MS_DEFAULT,
                )),
            },
            transport: TransportSection {
                peer_queue_messages_max: 4096,
                connections_max: 4096,
                peer_connections_max: 32,
                handshakes_max: 256,
                connections_per_identity_max: 256,
                connections_per_address_max: 1024,
                client_streams_max: 1024,
                connection_request_bytes_max: mib(96),
                request_bytes_max: mib(512),
                client_receive_window: mib(16),
                request_read_timeout: ms(30_000),
                client_idle_timeout: ms(300_000),
                connection_age_max: HumanDuration(Duration::from_secs(24 * 3600)),
                subscriptions_per_connection_max: 64,
                subscriptions_max: 4096,
                catchups_max: 16,
                subscription_topics_max: 1024,
                identity_uncommitted_bytes_max: mib(128),
                topics_per_identity_max: 100_000,
                crl_files: Vec::new(),
                handshake_timeout: ms(5000),
                idle_timeout: ms(10_000),
                reconnect_backoff_min: ms(50),
                reconnect_backoff_max: ms(2000),
            },
            http: HttpSection {
                listen: String::new(),
                metrics: true,
                ready_lag_entries_max: 1000,
            },
            runtime: RuntimeSection { worker_threads: 0 },
            auth: None,
        }
    }
}

/// Documentation for every key, in file order: (section, key, unit and meaning).
const KEY_DOCS: &[(&str, &str, &str)] = &[
    (
        "",
        "id",
        "this node's id, one of the keys of [peers] \
         (unique per node, never reused after `ordo member remove`)",
    ),
    (
        "",
        "listen",
        "address:port to listen on (UDP, QUIC) for peers and clients \
         (the address other nodes and clients reach this node at)",
    ),
    (
        "",
        "join",
        "addresses (host:port) of running members of a cluster to join; when set, [peers] is \
         ignored and `ordo member add` makes this node a member \
         (set it to add a node to a running cluster)",
    ),
    (
        "",
        "data_dir",
        "directory for this node's log (created if missing) \
         (put it on a disk with honest fsync; never share it between nodes)",
    ),
    (
        "",
        "tls_dir",
        "directory with ca.pem and node-<id>.pem/.key (see `ordo certs`) \
         (point it at your own CA's files in production)",
    ),
    (
        "consensus",
        "engine",
        "\"raft\" or \"multi-paxos\"; the algorithm that orders the log, the same on every node \
         and fixed when the cluster bootstraps: a node refuses data written under the other \
         (multi-paxos: to run the second engine; it keeps its bootstrap voters, node ids up to \
         65535)",
    ),
    (
        "raft",
        "tick_interval",
        "duration; the core's clock resolution \
         (rarely: coarser ticks cost less CPU but make timeouts coarser)",
    ),
    (
        "raft",
        "heartbeat_interval",
        "duration; how often a leader heartbeats \
         (keep it well under election_timeout; raise both on slow or distant links)",
    ),
    (
        "raft",
        "election_timeout",
        "duration; base election timeout (randomized up to 2x) \
         (raise it where the network or disks stall for long (fewer needless elections), lower it for faster failover)",
    ),
    (
        "raft",
        "clock_skew_max",
        "duration; how far apart coordinators' clocks may be; a new leader adds it to each session's remaining TTL \
         (raise it if your coordinators' clocks are not kept close by NTP)",
    ),
    (
        "raft",
        "pre_vote",
        "bool; campaign only after a pre-vote round succeeds \
         (leave on: a node that was cut off cannot disrupt the cluster when it returns)",
    ),
    (
        "raft",
        "check_quorum",
        "bool; a leader cut off from a majority steps down \
         (leave on: a leader that lost its majority stops answering as leader)",
    ),
    (
        "raft",
        "append_bytes_max",
        "size; payload bytes per append message \
         (raise it on fast links carrying large batches)",
    ),
    (
        "raft",
        "inflight_messages_max",
        "count; unacknowledged appends per follower \
         (raise it on links with a high round-trip time)",
    ),
    (
        "raft",
        "inflight_bytes_max",
        "size; unacknowledged payload bytes per follower \
         (bounds the memory a slow follower can make the leader hold)",
    ),
    (
        "raft",
        "uncommitted_bytes_max",
        "size; proposed but uncommitted bytes before refusing \
         (bounds the memory a burst of submits can take before clients see code backpressure)",
    ),
    (
        "raft",
        "proposal_bytes_max",
        "size; largest proposal (at most 64MiB) \
         (lower it to refuse large batches early)",
    ),
    (
        "raft",
        "log_window_bytes_max",
        "size; most entry bytes kept in memory (older ones are read back from disk) \
         (raise it so that lagging followers are served from memory, lower it to save memory)",
    ),
    (
        "raft",
        "snapshot_timeout",
        "duration; how long a leader waits for a follower to acknowledge a snapshot \
         (raise it for large states on slow links)",
    ),
    (
        "raft",
        "promote_lag_entries_max",
        "count; a learner becomes a voter only when at most this many entries behind the leader \
         (lower it for a tighter catch-up before a new voter counts)",
    ),
    (
        "storage",
        "cache",
        "size; redb page cache; half of it at most holds pages written since the last \
         checkpoint, which then trickle to the disk (a larger cache sends them in one burst \
         at each checkpoint, slowing every fsync on the disk meanwhile)",
    ),
    (
        "storage",
        "free_space_min",
        "size; below this much free disk space the node refuses new proposals (code \
         storage_full) and keeps serving reads; it resumes by itself when space returns \
         (keep room for the log to grow between checks; raise it on busy nodes)",
    ),
    (
        "storage",
        "ballast",
        "size; a reserve file deleted when a write finds the disk full, so that what was \
         accepted can still be written (0 = none) \
         (0 where the data directory's size is managed elsewhere)",
    ),
    (
        "retention",
        "age",
        "duration; entries older than this (by the log's time) are deleted \
         (how far back a new subscriber can start reading)",
    ),
    (
        "retention",
        "bytes_max",
        "size; most bytes of log records kept (oldest deleted first) \
         (the disk the log may take; size it to your disk)",
    ),
    (
        "retention",
        "entries_max",
        "count; most log entries kept (0 = no count limit) \
         (set it to bound the log by count instead of bytes)",
    ),
    (
        "retention",
        "trailing_entries",
        "count; entries just below the applied index always kept, so a lagging follower \
         catches up from the log rather than a snapshot \
         (raise it where followers are often down for a while)",
    ),
    (
        "registry",
        "horizon",
        "duration; a batch id is answered for (retries get the original outcome) for this long \
         after its UUID v7 time; older ids are refused, never committed twice \
         (the longest a client may keep retrying one batch id; raise it if clients retry for days)",
    ),
    (
        "registry",
        "bytes_max",
        "size; most bytes of outcomes kept (oldest ids evicted first; evicted ids are refused) \
         (raise it for more batches per horizon (the registry lives in memory))",
    ),
    (
        "registry",
        "future_skew",
        "duration; ids whose time is further ahead of the log's time are refused \
         (raise it only if clients' clocks run ahead of the coordinators')",
    ),
    (
        "transport",
        "peer_queue_messages_max",
        "count; messages queued per peer before dropping \
         (rarely: Raft retransmits what is dropped)",
    ),
    (
        "transport",
        "connections_max",
        "count; open client connections before refusing more (code quota) \
         (size it to your clients; each connection costs memory)",
    ),
    (
        "transport",
        "peer_connections_max",
        "count; open connections from node certificates (kept apart from clients' slots, so \
         clients can never keep a peer from reconnecting) \
         (at least twice the number of nodes)",
    ),
    (
        "transport",
        "handshakes_max",
        "count; handshakes in progress; beyond half of it new addresses must answer a QUIC \
         Retry first, beyond it connections are refused \
         (raise it if many clients connect at once after a restart)",
    ),
    (
        "transport",
        "connections_per_identity_max",
        "count; open client connections per certificate identity \
         (raise it for a service that opens many connections under one certificate)",
    ),
    (
        "transport",
        "connections_per_address_max",
        "count; open client connections per source IP address \
         (raise it behind NAT, where many clients share an address)",
    ),
    (
        "transport",
        "client_streams_max",
        "count; concurrent request streams per client connection \
         (raise it for clients with many requests in flight per connection)",
    ),
    (
        "transport",
        "connection_request_bytes_max",
        "size; request bytes one client connection may have being read at once (at least one \
         largest frame) \
         (bounds what one connection can make the node hold)",
    ),
    (
        "transport",
        "request_bytes_max",
        "size; request bytes all clients together may have being read at once \
         (bounds what all clients together can make the node hold)",
    ),
    (
        "transport",
        "client_receive_window",
        "size; unread bytes a client connection may have in flight (QUIC flow control) \
         (raise it for large batches over high-latency links)",
    ),
    (
        "transport",
        "request_read_timeout",
        "duration; a request frame not read whole within it is refused (slow senders) \
         (raise it for clients on very slow links)",
    ),
    (
        "transport",
        "client_idle_timeout",
        "duration; a client connection with no open stream for this long is closed \
         (lower it to free idle clients' slots sooner)",
    ),
    (
        "transport",
        "connection_age_max",
        "duration; client connections older than this are closed, so a rotated or revoked \
         certificate stops working \
         (lower it to make rotated or revoked certificates stop working sooner)",
    ),
    (
        "transport",
        "subscriptions_per_connection_max",
        "count; open subscriptions per client connection \
         (raise it for a client that follows many filters)",
    ),
    (
        "transport",
        "subscriptions_max",
        "count; open subscriptions on this node \
         (size it to your subscribers; each one costs memory)",
    ),
    (
        "transport",
        "catchups_max",
        "count; subscriptions reading history (rather than following the newest batches) at \
         once; others wait their turn \
         (raise it if many subscribers start from old positions at once (each reads the disk))",
    ),
    (
        "transport",
        "subscription_topics_max",
        "count; topics in one subscription's filter \
         (raise it for filters naming many topics)",
    ),
    (
        "transport",
        "identity_uncommitted_bytes_max",
        "size; submitted bytes one identity may have waiting for their outcome on this node \
         (its share of raft.uncommitted_bytes_max) \
         (keeps one busy service from taking every other service's share)",
    ),
    (
        "transport",
        "topics_per_identity_max",
        "count; topics an identity's write patterns cover (every topic without [auth]) before \
         its submits may create more (code quota); admins are not limited \
         (raise it for services that create many topics)",
    ),
    (
        "transport",
        "crl_files",
        "paths of PEM certificate revocation lists, checked for every certificate (reloaded \
         on SIGHUP) \
         (set it to refuse revoked certificates)",
    ),
    (
        "transport",
        "handshake_timeout",
        "duration; TLS handshake plus hello \
         (raise it for clients on very slow links)",
    ),
    (
        "transport",
        "idle_timeout",
        "duration; a silent connection is closed after it \
         (lower it to notice dead peers sooner (keep it above heartbeat_interval))",
    ),
    (
        "transport",
        "reconnect_backoff_min",
        "duration; first retry delay for peer links \
         (rarely)",
    ),
    (
        "transport",
        "reconnect_backoff_max",
        "duration; retry delay cap (with jitter) \
         (rarely)",
    ),
    (
        "http",
        "listen",
        "address:port (TCP) for /metrics, /livez, /readyz, /api/status and the console; \"\" = \
         loopback on the port number of `listen` (its address if loopback, else 127.0.0.1); \
         \"off\" = none; beyond loopback, clients need a certificate of the cluster's CA \
         (set it to where Prometheus and your browser reach the node)",
    ),
    (
        "http",
        "metrics",
        "true or false; record metrics for /metrics (false: no recorder, no cost) \
         (off only to measure what metrics cost)",
    ),
    (
        "http",
        "ready_lag_entries_max",
        "count; /readyz answers 503 while this node's applied index is further than this \
         behind its commit index \
         (raise it where followers may lag briefly without being taken out of rotation)",
    ),
    (
        "runtime",
        "worker_threads",
        "count; async worker threads (QUIC, TLS, streams); 0 = one per CPU \
         (set it when other processes share the machine)",
    ),
];

/// The default configuration as a commented TOML file.
pub fn default_config_text() -> String {
    let defaults = toml::Table::try_from(NodeConfig::default()).expect("defaults serialize");
    let mut text = String::from(
        "# Ordo node configuration. Every key is shown with its default.\n\
         # Overrides: environment (ORDO_ID, ORDO_RAFT_ELECTION_TIMEOUT, ...), then flags.\n\n",
    );
    let mut section = "";
    for (key_section, key, doc) in KEY_DOCS {
        if *key_section != section {
            if section.is_empty() {
                text.push_str(
                    "# every voter, this node included: id = \"address:port\"\n[peers]\n",
                );
                for (id, address) in &NodeConfig::default().peers {
                    text.push_str(&format!("{id} = \"{address}\"\n"));
                }
            }
            section = key_section;
            text.push_str(&format!("\n[{section}]\n"));
        }
        let table = if section.is_empty() {
            &defaults
        } else {
            defaults[section].as_table().expect("section table")
        };
        text.push_str(&format!("# {doc}\n{key} = {}\n", table[*key]));
    }
    text.push_str(AUTH_EXAMPLE);
    text
}

/// The `[auth]` section, shown commented out: without it every client certificate the CA
/// signed may do everything.
const AUTH_EXAMPLE: &str = "
# Who may do what, by client certificate identity (the NAME of `ordo certs --clients NAME`).
# Without this section every client certificate the cluster's CA signed may do everything;
# with it, each identity may do only what its rule grants, and admins everything. Node
# certificates never act as clients. Patterns are exact names or prefixes ending in '*'.
# [auth]
# admins = [\"ops\"]                  # membership, snapshots, raw proposals, everything
# [[auth.acl]]
# identity = \"orders-svc\"
# write = [\"orders\", \"audit.*\"]     # topics it may submit to (and test the offset of)
# read = [\"orders\", \"payments.*\"]   # topics it may subscribe to (\"*\": all, unfiltered)
# locks = [\"orders.*\"]              # lock and election names it may use
";

/// Command-line overrides, the last layer.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub id: Option<NodeId>,
    pub listen: Option<String>,
    pub peers: Option<String>,
    /// Comma-separated addresses of running members (`--join`).
    pub join: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub tls_dir: Option<PathBuf>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// `--consensus-engine`.
    pub consensus_engine: Option<String>,
}

impl NodeConfig {
    /// Defaults, then `file` (if any), then `ORDO_*` from `environment`, then `overrides`.
    pub fn load(
        file: Option<&std::path::Path>,
        environment: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = toml::Table::try_from(NodeConfig::default()).expect("defaults serialize");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file_table: toml::Table =
                text.parse()
                    .map_err(|error: toml::de::Error| ConfigError::Syntax {
                        origin: path.display().to_string(),
                        detail: error.to_string(),
                    })?;
            if file_table.contains_key("peers") {
                table.remove("peers");
            }
            merge(&mut table, file_table);
        }
        merge(&mut table, environment_table(environment)?);
        merge(&mut table, overrides_table(overrides)?);
        let config: NodeConfig = table
            .try_into()
            .map_err(|error: toml::de::Error| ConfigError::Invalid(error.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Every voter: id → address.
    pub fn voters(&self) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
        let mut voters = BTreeMap::new();
        for (id, address) in &self.peers {
            let id: NodeId = id
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("peers: {id:?} is not a node id")))?;
            let address = resolve(address)
                .map_err(|detail| ConfigError::Invalid(format!("peers.{id}: {detail}")))?;
            voters.insert(id, address);
        }
        Ok(voters)
    }

    /// Whether this node joins a running cluster (`join` is set) instead of bootstrapping one.
    pub fn joining(&self) -> bool {
        !self.join.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let voters = if self.joining() {
            BTreeMap::new()
        } else {
            self.voters()?
        };
        if self.joining() && self.id == 0 {
            return Err(ConfigError::Invalid("id 0 is not a valid node id".into()));
        }
        if !self.joining() && !voters.contains_key(&self.id) {
            return Err(ConfigError::Invalid(format!(
                "id {} is not among the peers {:?}; list every voter, this node included",
                self.id,
                voters.keys().collect::<Vec<_>>()
            )));
        }
        let engine = self.engine()?;
        if engine == EngineKind::MultiPaxos {
            if self.joining() {
                return Err(ConfigError::Invalid(
                    "consensus.engine = \"multi-paxos\" keeps the voters a cluster bootstraps \
                     with: a node cannot join one (list every voter in [peers] instead)"
                        .into(),
                ));
            }
            if let Some(id) = voters
                .keys()
                .find(|id| **id > ordo_core::paxos::NODE_ID_MAX)
            {
                return Err(ConfigError::Invalid(format!(
                    "node id {id} cannot name a Multi-Paxos ballot: under consensus.engine = \
                     \"multi-paxos\" node ids run from 1 to {}",
                    ordo_core::paxos::NODE_ID_MAX
                )));
            }
        }
        self.core_config(&voters)
            .validate()
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if self.retention.bytes_max.0 < 1 << 20 {
            return Err(ConfigError::Invalid(
                "retention.bytes_max must be at least 1MiB".into(),
            ));
        }
        if self.registry.horizon.0.is_zero() || self.registry.bytes_max.0 < 1 << 20 {
            return Err(ConfigError::Invalid(
                "registry.horizon must be positive and registry.bytes_max at least 1MiB".into(),
            ));
        }
        if self.runtime.worker_threads > WORKER_THREADS_MAX {
            return Err(ConfigError::Invalid(format!(
                "runtime.worker_threads is {}, above the most a node runs ({WORKER_THREADS_MAX}); \
                 0 picks one per CPU",
                self.runtime.worker_threads
            )));
        }
        let transport = &self.transport;
        if transport.reconnect_backoff_min.0 > transport.reconnect_backoff_max.0 {
            return Err(ConfigError::Invalid(
                "transport.reconnect_backoff_min exceeds reconnect_backoff_max".into(),
            ));
        }
        let counts = [
            ("peer_queue_messages_max", transport.peer_queue_messages_max),
            ("connections_max", transport.connections_max),
            ("peer_connections_max", transport.peer_connections_max),
            ("handshakes_max", transport.handshakes_max),
            (
                "connections_per_identity_max",
                transport.connections_per_identity_max,
            ),
            (
                "connections_per_address_max",
                transport.connections_per_address_max,
            ),
            ("client_streams_max", transport.client_streams_max),
            (
                "subscriptions_per_connection_max",
                transport.subscriptions_per_connection_max,
            ),
            ("subscriptions_max", transport.subscriptions_max),
            ("catchups_max", transport.catchups_max),
            ("subscription_topics_max", transport.subscription_topics_max),
            ("topics_per_identity_max", transport.topics_per_identity_max),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, count)| *count == 0) {
            return Err(ConfigError::Invalid(format!(
                "transport.{key} must be positive"
            )));
        }
        let frame = ordo_common::client::CLIENT_REQUEST_BYTES_MAX;
        if transport.connection_request_bytes_max.0 < frame
            || transport.request_bytes_max.0 < transport.connection_request_bytes_max.0
        {
            return Err(ConfigError::Invalid(format!(
                "transport.connection_request_bytes_max must hold the largest request frame \
                 ({frame} bytes), and transport.request_bytes_max at least that"
            )));
        }
        if transport.identity_uncommitted_bytes_max.0 < self.raft.proposal_bytes_max.0 {
            return Err(ConfigError::Invalid(
                "transport.identity_uncommitted_bytes_max must hold the largest proposal \
                 (raft.proposal_bytes_max)"
                    .into(),
            ));
        }
        if transport.client_receive_window.0 < 64 << 10
            || transport.client_receive_window.0 > (1 << 30)
        {
            return Err(ConfigError::Invalid(
                "transport.client_receive_window must be between 64KiB and 1GiB".into(),
            ));
        }
        let durations = [
            ("request_read_timeout", transport.request_read_timeout),
            ("client_idle_timeout", transport.client_idle_timeout),
            ("connection_age_max", transport.connection_age_max),
        ];
        if let Some((key, _)) = durations.iter().find(|(_, value)| value.0.is_zero()) {
            return Err(ConfigError::Invalid(format!(
                "transport.{key} must be positive"
            )));
        }
        crate::auth::Policy::new(self.auth.as_ref()).map_err(ConfigError::Invalid)?;
        self.http_listen()?;
        Ok(())
    }

    /// What bounds the idempotency registry.
    pub fn registry_limits(&self) -> ordo_core::state::RegistryLimits {
        let millis = |duration: HumanDuration| duration.0.as_millis().min(u64::MAX as u128) as u64;
        ordo_core::state::RegistryLimits {
            horizon_ms: millis(self.registry.horizon),
            bytes_max: self.registry.bytes_max.0,
            future_skew_ms: millis(self.registry.future_skew),
        }
    }

    /// The consensus core's configuration, with durations turned into ticks.
    pub fn core_config(&self, voters: &BTreeMap<NodeId, SocketAddr>) -> ordo_core::Config {
        let raft = &self.raft;
        let tick = raft.tick_interval.0.as_micros().max(1);
        let ticks = |duration: HumanDuration| (duration.0.as_micros() / tick).max(1) as u32;
        let mut config = ordo_core::Config::new(self.id, voters.keys().copied().collect());
        config.election_timeout_ticks = ticks(raft.election_timeout);
        config.heartbeat_interval_ticks = ticks(raft.heartbeat_interval);
        config.replication_stall_ticks = (config.election_timeout_ticks / 2).max(1);
        config.pre_vote = raft.pre_vote;
        config.check_quorum = raft.check_quorum;
        config.append_bytes_max = raft.append_bytes_max.0;
        config.inflight_messages_max = raft.inflight_messages_max as usize;
        config.inflight_bytes_max = raft.inflight_bytes_max.0;
        config.uncommitted_bytes_max = raft.uncommitted_bytes_max.0;
        config.proposal_bytes_max = raft.proposal_bytes_max.0;
        config.log_window_bytes_max = raft.log_window_bytes_max.0;
        config.snapshot_timeout_ticks = ticks(raft.snapshot_timeout);
        config.promote_lag_entries_max = raft.promote_lag_entries_max;
        config
    }

    /// What the log keeps.
    pub fn retention(&self) -> ordo_node::storage::Retention {
        let retention = &self.retention;
        ordo_node::storage::Retention {
            entries_max: std::num::NonZeroU64::new(retention.entries_max),
            bytes_max: std::num::NonZeroU64::new(retention.bytes_max.0),
            age_ms: std::num::NonZeroU64::new(retention.age.0.as_millis() as u64),
            trailing_entries: retention.trailing_entries,
        }
    }
}

/// Resolves "host:port" (a name such as localhost is allowed).
pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .map_err(|error| format!("{address:?} is not host:port ({error})"))?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to no address"))
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(new)) if key != "peers" => {
                merge(existing, new)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn peers_table(list: &str) -> Result<toml::Value, ConfigError> {
    let mut peers = toml::Table::new();
    for pair in list
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let (id, address) = pair
            .split_once('=')
            .ok_or_else(|| ConfigError::Invalid(format!("peers: {pair:?} is not id=host:port")))?;
        peers.insert(
            id.trim().to_string(),
            toml::Value::String(address.trim().to_string()),
        );
    }
    Ok(toml::Value::Table(peers))
}

/// A value as TOML would read it (number, bool), else as a string.
fn scalar(text: &str) -> toml::Value {
    text.parse::<i64>()
        .map(toml::Value::Integer)
        .or_else(|_| text.parse::<bool>().map(toml::Value::Boolean))
        .unwrap_or_else(|_| toml::Value::String(text.to_string()))
}

/// The sections of the configuration file, each with its keys (`ORDO_<SECTION>_<KEY>`).
const SECTIONS: [&str; 8] = [
    "consensus",
    "raft",
    "storage",
    "retention",
    "registry",
    "transport",
    "http",
    "runtime",
];

fn environment_table(
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    /// Client-side variables and the file path are not node keys.
    const NOT_KEYS: &[&str] = &[
        "ORDO_ENDPOINTS",
        "ORDO_CONFIG",
        "ORDO_CLIENT",
        "ORDO_LOG_FORMAT",
    ];
    let mut table = toml::Table::new();
    for (name, value) in environment {
        let Some(key) = name.strip_prefix("ORDO_") else {
            continue;
        };
        if NOT_KEYS.contains(&name.as_str()) {
            continue;
        }
        let key = key.to_ascii_lowercase();
        match key.as_str() {
            "peers" => {
                table.insert(key, peers_table(&value)?);
            }
            "id" | "listen" | "data_dir" | "tls_dir" => {
                table.insert(key, scalar(&value));
            }
            "join" | "transport_crl_files" => {
                let list = join_list(&value);
                match key.strip_prefix("transport_") {
                    Some(field) => {
                        let entry = table
                            .entry("transport")
                            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                        entry
                            .as_table_mut()
                            .expect("section")
                            .insert(field.to_string(), list);
                    }
                    None => {
                        table.insert(key, list);
                    }
                }
            }
            _ => {
                let section = SECTIONS
                    .into_iter()
                    .find(|section| key.starts_with(&format!("{section}_")))
                    .ok_or_else(|| ConfigError::UnknownEnv(name.clone()))?;
                let entry = table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let field = key[section.len() + 1..].to_string();
                entry
                    .as_table_mut()
                    .expect("section")
                    .insert(field, scalar(&value));
            }
        }
    }
    Ok(table)
}

/// `host:port,host:port` as a TOML array of strings.
fn join_list(list: &str) -> toml::Value {
    toml::Value::Array(
        list.split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(|address| toml::Value::String(address.to_string()))
            .collect(),
    )
}

fn overrides_table(overrides: &Overrides) -> Result<toml::Table, ConfigError> {
    let mut table = toml::Table::new();
    if let Some(id) = overrides.id {
        table.insert("id".into(), toml::Value::Integer(id as i64));
    }
    if let Some(listen) = &overrides.listen {
        table.insert("listen".into(), toml::Value::String(listen.clone()));
    }
    if let Some(peers) = &overrides.peers {
        table.insert("peers".into(), peers_table(peers)?);
    }
    if let Some(join) = &overrides.join {
        table.insert("join".into(), join_list(join));
    }
    if let Some(listen) = &overrides.http_listen {
        let mut http = toml::Table::new();
        http.insert("listen".into(), toml::Value::String(listen.clone()));
        table.insert("http".into(), toml::Value::Table(http));
    }
    if let Some(engine) = &overrides.consensus_engine {
        let mut consensus = toml::Table::new();
        consensus.insert("engine".into(), toml::Value::String(engine.clone()));
        table.insert("consensus".into(), toml::Value::Table(consensus));
    }
    for (key, path) in [
        ("data_dir", &overrides.data_dir),
        ("tls_dir", &overrides.tls_dir),
    ] {
        if let Some(path) = path {
            table.insert(key.into(), toml::Value::String(path.display().to_string()));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, environment: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ordo.toml");
        std::fs::write(&path, text).unwrap();
        let environment = environment
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()));
        NodeConfig::load(Some(&path), environment, &Overrides::default())
    }

    /// The commented template in the repository is what `--print-default-config` prints.
    #[test]
    fn the_template_in_the_repository_is_the_printed_default_config() {
        let template = include_str!("../../examples/ordo-node.toml");
        assert!(
            template == default_config_text(),
            "examples/ordo-node.toml is out of step with the configuration's keys or defaults; \
             regenerate it: cargo run -- serve --print-default-config > examples/ordo-node.toml"
        );
    }

    #[test]
    fn the_printed_default_config_parses_back_to_the_defaults() {
        let text = default_config_text();
        let config = load(&text, &[]).unwrap();
        assert_eq!(
            toml::Table::try_from(&config).unwrap(),
            toml::Table::try_from(NodeConfig::default()).unwrap()
        );
        let defaults = toml::Table::try_from(NodeConfig::default()).unwrap();
        let documented: usize = KEY_DOCS.len() + 1;
        let keys: usize = defaults
            .iter()
            .map(|(_, value)| match value {
                toml::Value::Table(table) if table.len() > 1 || !table.contains_key("1") => {
                    table.len()
                }
                _ => 1,
            })
            .sum();
        assert_eq!(documented, keys, "every key has a line in KEY_DOCS");
    }

    #[test]
    fn the_engine_comes_from_file_environment_or_flag_and_is_checked() {
        let text = "id = 1\n[peers]\n1 = \"127.0.0.1:7001\"\n";
        assert_eq!(load(text, &[]).unwrap().engine().unwrap(), EngineKind::Raft);
        let from_file = format!("{text}[consensus]\nengine = \"multi-paxos\"\n");
        assert_eq!(
            load(&from_file, &[]).unwrap().engine().unwrap(),
            EngineKind::MultiPaxos
        );
        let from_env = load(text, &[("ORDO_CONSENSUS_ENGINE", "multi-paxos")]).unwrap();
        assert_eq!(from_env.engine().unwrap(), EngineKind::MultiPaxos);
        let overrides = Overrides {
            consensus_engine: Some("raft".into()),
            ..Overrides::default()
        };
        let environment = [(
            "ORDO_CONSENSUS_ENGINE".to_string(),
            "multi-paxos".to_string(),
        )];
        let peers = [("ORDO_PEERS".to_string(), "1=127.0.0.1:7001".to_string())];
        let flagged =
            NodeConfig::load(None, environment.into_iter().chain(peers), &overrides).unwrap();
        assert_eq!(flagged.engine().unwrap(), EngineKind::Raft, "the flag wins");
        let error = load(text, &[("ORDO_CONSENSUS_ENGINE", "paxos")]).unwrap_err();
        assert!(
            error.to_string().contains("\"raft\" or \"multi-paxos\""),
            "{error}"
        );
        let wide = "id = 70000\n[peers]\n70000 = \"127.0.0.1:7001\"\n";
        assert!(load(wide, &[]).is_ok(), "Raft takes any id");
        let error = load(wide, &[("ORDO_CONSENSUS_ENGINE", "multi-paxos")]).unwrap_err();
        assert!(error.to_string().contains("ballot"), "{error}");
        let joining = "id = 4\njoin = [\"127.0.0.1:7001\"]\n";
        let error = load(joining, &[("ORDO_CONSENSUS_ENGINE", "multi-paxos")]).unwrap_err();
        assert!(error.to_string().contains("cannot join"), "{error}");
    }

    #[test]
    fn worker_threads_come_from_the_environment_and_are_bounded() {
        let text = "id = 1\n[peers]\n1 = \"127.0.0.1:7001\"\n";
        let auto = load(text, &[]).unwrap();
        assert_eq!(auto.runtime.worker_threads, 0);
        assert_eq!(
            auto.runtime.worker_threads(),
            RuntimeSection::auto_worker_threads()
        );
        assert!(RuntimeSection::auto_worker_threads() >= 1);
        let three = load(text, &[("ORDO_RUNTIME_WORKER_THREADS", "3")]).unwrap();
        assert_eq!(three.runtime.worker_threads(), 3);
        let error = load(text, &[("ORDO_RUNTIME_WORKER_THREADS", "100000")]).unwrap_err();
        assert!(
            error.to_string().contains("runtime.worker_threads"),
            "{error}"
        );
    }

    #[test]
    fn layers_override_in_order_file_env_flags() {
        let text = "id = 2\n[peers]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n3 = \"127.0.0.1:7003\"\n[raft]\nelection_timeout = \"2s\"\n";
        let config = load(
            text,
            &[
                ("ORDO_RAFT_ELECTION_TIMEOUT", "300ms"),
                ("ORDO_STORAGE_CACHE", "32MiB"),
            ],
        )
        .unwrap();
        assert_eq!(config.id, 2);
        assert_eq!(config.raft.election_timeout.0, Duration::from_millis(300));
        assert_eq!(config.storage.cache.0, 32 << 20);
        let overrides = Overrides {
            id: Some(3),
            ..Overrides::default()
        };
        let peers = "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3".to_string();
        let environment = [
            ("ORDO_ID".to_string(), "2".to_string()),
            ("ORDO_PEERS".to_string(), peers),
        ];
        let config = NodeConfig::load(None, environment, &overrides).unwrap();
        assert_eq!(config.id, 3, "the flag wins over the environment");
        assert_eq!(config.voters().unwrap().len(), 3);
    }

    #[test]
    fn unknown_keys_bad_units_and_bad_shapes_are_errors() {
        let peers = "[peers]\n1 = \"127.0.0.1:7001\"\n";
        let error = load(&format!("colour = 1\n{peers}"), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("colour"), "{error}");
        let error = load(
            &format!("{peers}[raft]\nelection_timeout = \"soon\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(error.to_string().contains("not a duration"), "{error}");
        let error = load(&format!("{peers}[storage]\ncache = \"lots\"\n"), &[]).unwrap_err();
        assert!(error.to_string().contains("not a size"), "{error}");
        let error = load(peers, &[("ORDO_RAFT_TYPO", "1")]).unwrap_err();
        assert!(error.to_string().contains("typo"), "{error}");
        let error = load(peers, &[("ORDO_NONSENSE", "1")]).unwrap_err();
        assert!(matches!(error, ConfigError::UnknownEnv(_)), "{error}");
        let error = load("id = 4\n[peers]\n1 = \"127.0.0.1:7001\"\n", &[]).unwrap_err();
        assert!(error.to_string().contains("not among the peers"), "{error}");
        let horizon = load(peers, &[("ORDO_REGISTRY_HORIZON", "2h")]).unwrap();
        assert_eq!(horizon.registry_limits().horizon_ms, 2 * 3600 * 1000);
        let kept = load(peers, &[("ORDO_RETENTION_ENTRIES_MAX", "1000")]).unwrap();
        assert_eq!(kept.retention().entries_max.map(u64::from), Some(1000));
        let ballast = load(peers, &[("ORDO_STORAGE_BALLAST", "8388608")]).unwrap();
        assert_eq!(ballast.storage.ballast.0, 8 << 20, "a bare number is bytes");
        let ballast = load(&format!("{peers}[storage]\nballast = 0\n"), &[]).unwrap();
        assert_eq!(ballast.storage.ballast.0, 0);
        let error = load(&format!("{peers}[storage]\nballast = -1\n"), &[]).unwrap_err();
        assert!(error.to_string().contains("negative"), "{error}");
        let error = load(peers, &[("ORDO_RETENTION_BYTES_MAX", "1KiB")]).unwrap_err();
        assert!(error.to_string().contains("retention.bytes_max"), "{error}");
        let two = "[peers]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n";
        let error = load(two, &[]).unwrap_err();
        assert!(error.to_string().contains("1, 3 or 5 voters"), "{error}");
    }

    #[test]
    fn sizes_and_durations_read_and_print_with_units() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("512KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("1.5MiB"), None);
        let printed = toml::Value::try_from(HumanBytes(3 << 20)).unwrap();
        assert_eq!(printed.as_str(), Some("3MiB"));
        let printed = toml::Value::try_from(HumanDuration(Duration::from_millis(150))).unwrap();
        assert_eq!(printed.as_str(), Some("150ms"));
    }
}
