//! `ordo serve`: opens the log, starts the transport and runs the driver until SIGTERM or
//! Ctrl-C, then stops gracefully.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ordo_common::{ClusterId, EngineKind, NodeId};
use ordo_node::{Node, NodeConfig as NodeLogicConfig, Recovered, recovered_tables};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::config::{ConfigError, NodeConfig};
use crate::driver::{
    DiskWatch, Driver, DriverError, DriverOptions, DriverParts, StoredBatches, addresses, resolve,
    writer_channel,
};
use crate::join;
use crate::snapshot_transfer;
use crate::storage::space::Ballast;
use crate::storage::{GroupCommitWriter, LogRead, RedbLogStore, RedbOptions, StorageError};
use crate::transport::{
    self, CLIENT_QUEUE_REQUESTS_MAX, INBOUND_QUEUE_MESSAGES_MAX, TransportError,
};

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("the stored state cannot start the node: {0}")]
    Restore(#[from] ordo_node::StartError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Joining a cluster failed, or this node must not start as it is.
    #[error("{0}")]
    Join(String),
    /// The HTTP listener could not start (`http.listen`).
    #[error("http: {0}")]
    Http(String),
    /// The runtime dropped the driver's task before it ended (the runtime shut down).
    #[error("the node's driver was cancelled: {0}")]
    DriverLost(String),
    /// The data directory holds a log another consensus engine wrote.
    #[error(
        "the data in {path} was written by the {stored} consensus engine, but this node is \
         configured for {configured} (consensus.engine); a cluster's engine is fixed when it \
         bootstraps: start with consensus.engine = \"{stored}\", or give this node an empty \
         data directory"
    )]
    EngineMismatch {
        path: String,
        stored: EngineKind,
        configured: EngineKind,
    },
}

impl ordo_common::errors::ErrorCode for NodeError {
    fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::DataDir { .. } => "data_dir",
            Self::Storage(_) | Self::Restore(_) => "storage",
            Self::Transport(_) => "transport",
            Self::Driver(DriverError::LostData(_)) => "lost_data",
            Self::Driver(_) | Self::DriverLost(_) => "internal",
            Self::Join(_) => "join",
            Self::Http(_) => "http",
            Self::EngineMismatch { .. } => "engine_mismatch",
        }
    }
}

/// The log file inside a data directory.
pub const LOG_FILE_NAME: &str = "ordo-log.redb";

/// Runs a node until it is told to stop.
pub async fn serve(config: NodeConfig) -> Result<(), NodeError> {
    // Before anything that records: a handle taken before the recorder exists (the peer
    // round-trip histogram of a peer that connects at once, say) stays a no-op for good.
    let metrics = install_metrics(&config)?;
    // A joining node bootstraps nothing: it learns the membership from the cluster.
    let voters = if config.joining() {
        BTreeMap::new()
    } else {
        config.voters()?
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let options = RedbOptions {
        retention: config.retention(),
        cache_bytes: config.storage.cache.0 as usize,
        ..RedbOptions::default()
    };
    let opening = std::time::Instant::now();
    let ballast = Ballast::in_dir(&config.data_dir, config.storage.ballast.0);
    let path = config.data_dir.join(LOG_FILE_NAME);
    let mut store = match RedbLogStore::open(&path, options) {
        // Opening may have to write (recovering from a crash): give it the reserve.
        Err(StorageError::NoSpace { .. }) if ballast.release() => {
            warn!("the disk is full: released the ballast to open the log");
            RedbLogStore::open(&path, options)?
        }
        opened => opened?,
    };
    if ballast.bytes > 0 {
        store.set_ballast(ballast.clone());
    }
    // The first start of a fresh store names its cluster from the voters (or, joining, takes
    // the identity of the cluster it joins); a restored store carries the identity its restore
    // gave it.
    let stored_cluster = store.cluster_id()?;
    let (cluster, known_addresses) = if config.joining() {
        join_cluster(&config, stored_cluster).await?
    } else {
        let cluster = stored_cluster.unwrap_or_else(|| ClusterId::initial(voters.keys().copied()));
        (cluster, voters.clone())
    };
    if stored_cluster.is_none() {
        store.set_cluster_id(cluster)?;
    }
    // The engine is fixed when the store first starts a node: a log written by one engine
    // means nothing to the other.
    // A store that holds data but names no engine predates the choice: Raft wrote it.
    let engine = config.engine()?;
    let recorded = store.engine()?;
    let written_by = recorded.or_else(|| {
        store
            .store_state()
            .ok()
            .filter(|state| {
                state.hard_state != ordo_common::HardState::default() || state.log.last_index() > 0
            })
            .map(|_| EngineKind::Raft)
    });
    if let Some(stored) = written_by
        && stored != engine
    {
        return Err(NodeError::EngineMismatch {
            path: config.data_dir.display().to_string(),
            stored,
            configured: engine,
        });
    }
    if recorded.is_none() {
        store.set_engine(engine)?;
    }
    let incarnation = store.incarnation_or_draw(|| draw_incarnation(config.id))?;
    let state = store.store_state()?;
    let applied = state.progress.applied.unwrap_or_default();
    snapshot_transfer::recover(&config.data_dir, applied.index).map_err(|source| {
        NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        }
    })?;
    // The state is in the tables as of the applied entry; only what follows it is read (the
    // rest stays on disk, read back for a follower that needs it).
    let entries = store.entries(applied.index + 1, state.log.last_index() + 1, u64::MAX)?;
    let tables = recovered_tables(&state, store.tables()?).map_err(ordo_node::StartError::from)?;
    let recovered = Recovered {
        hard_state: state.hard_state,
        applied,
        entries,
        first_index: state.log.first_index,
        tables,
    };
    info!(
        id = config.id,
        %cluster,
        term = state.hard_state.term,
        first_index = state.log.first_index,
        last_index = state.log.last_index(),
        applied = applied.index,
        registry = recovered.tables.registry.len(),
        took = ?opening.elapsed(),
        "opened the log"
    );
    // The only randomness in a node: its election timeouts. Nothing needs to replay them.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
        ^ config.id;
    let node_config = NodeLogicConfig {
        raft: config.core_config(&voters),
        engine,
        addresses: addresses(&voters),
        cluster,
        registry: config.registry_limits(),
        tick_ms: config.raft.tick_interval.0.as_millis().max(1) as u64,
        clock_skew_ms: config.raft.clock_skew_max.0.as_millis() as u64,
    };
    let node = Node::new(node_config, recovered, seed)?;
    let (servable_tx, servable_rx) = watch::channel(node.servable_seq());
    let (view_tx, view_rx) = watch::channel(std::sync::Arc::new(node.view()));

    let (events_tx, events_rx) = writer_channel();
    let writer = GroupCommitWriter::start(store, move |event| {
        // Blocking here holds the writer back when the driver falls behind: back-pressure.
        let _ = events_tx.blocking_send(event);
    })?;
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE_MESSAGES_MAX);
    let (snapshots_tx, snapshots_rx) = mpsc::channel(1);
    let (clients_tx, clients_rx) = mpsc::channel(CLIENT_QUEUE_REQUESTS_MAX);
    let (admission_tx, admission_rx) = watch::channel(transport::Admission::default());
    // A node starts knowing no leader; it learns one from the first heartbeat or election.
    let (leaderless_tx, leaderless_rx) = watch::channel(Some(std::time::Instant::now()));
    let batches = StoredBatches::new(writer.reader(), servable_rx, leaderless_rx);
    let (endpoint, peers) = transport::start(
        &config,
        (cluster, incarnation),
        &voters,
        inbound_tx,
        snapshots_tx,
        transport::ClientQueue {
            calls: clients_tx.clone(),
            admission: admission_rx,
        },
        batches.clone(),
    )?;
    info!(id = config.id, listen = %config.listen, peers = ?voters, %engine, "serving");
    let http_tls = start_http(&config, metrics, view_rx, batches, clients_tx).await?;

    let reload_links = peers.clone();
    let driver = Driver::new(DriverParts {
        node,
        writer,
        writer_events: events_rx,
        peers,
        inbound: inbound_rx,
        clients: clients_rx,
        snapshots: snapshots_rx,
        servable_seq: servable_tx,
        leaderless_since: leaderless_tx,
        admission: admission_tx,
        view: view_tx,
        options: DriverOptions {
            tick_interval: config.raft.tick_interval.0,
            append_bytes_max: config.raft.append_bytes_max.0,
            data_dir: config.data_dir.clone(),
            disk: Some(DiskWatch {
                free_space_min: config.storage.free_space_min.0,
                ballast: (ballast.bytes > 0).then_some(ballast),
            }),
            known_addresses,
        },
    });
    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(
        endpoint.clone(),
        reload_links,
        http_tls,
        config.clone(),
    ));
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(());
    });
    // The driver runs as a task on the runtime's workers, beside the QUIC tasks that feed it and
    // the ones it feeds: a message handed from one to the other is then picked up by the same
    // worker (tokio runs the task just woken next), not by waking another thread.
    let result = match tokio::spawn(driver.run(stop_rx)).await {
        Ok(result) => result,
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        Err(failed) => return Err(NodeError::DriverLost(failed.to_string())),
    };
    transport::close(&endpoint);
    endpoint.wait_idle().await;
    info!("stopped");
    Ok(result?)
}

/// Installs the Prometheus recorder when `/metrics` will be served: `http.listen` on and
/// `http.metrics` set. Its handle renders the page.
fn install_metrics(
    config: &NodeConfig,
) -> Result<Option<metrics_exporter_prometheus::PrometheusHandle>, NodeError> {
    if !config.http.metrics || config.http_listen()? == crate::config::HttpListen::Off {
        return Ok(None);
    }
    match crate::http::install_recorder() {
        Ok(handle) => Ok(Some(handle)),
        Err(error) => {
            warn!(%error, "metrics are off");
            Ok(None)
        }
    }
}

/// Starts the HTTP listener `http.listen` names (metrics, health, the console), unless it is
/// off, serving `metrics` (the recorder [`install_metrics`] installed) at `/metrics`. Returns
/// the listener's TLS configuration when it is bound beyond loopback, for SIGHUP to replace.
async fn start_http(
    config: &NodeConfig,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    view: watch::Receiver<std::sync::Arc<ordo_node::NodeView>>,
    batches: std::sync::Arc<dyn transport::BatchSource>,
    calls: mpsc::Sender<transport::ClientCall>,
) -> Result<Option<crate::http::TlsSlot>, NodeError> {
    let crate::config::HttpListen::At(address) = config.http_listen()? else {
        info!("http.listen is off: no metrics, health endpoints or console");
        return Ok(None);
    };
    let tls = if address.ip().is_loopback() {
        None
    } else {
        let tls = crate::http::tls_config(config)?;
        Some(std::sync::Arc::new(std::sync::RwLock::new(tls)))
    };
    let policy = crate::auth::Policy::new(config.auth.as_ref()).map_err(NodeError::Http)?;
    let parts = crate::http::HttpParts {
        view,
        metrics,
        batches,
        calls,
        ready_lag_entries_max: config.http.ready_lag_entries_max,
        policy,
        tls: tls.clone(),
        data_dir: config.data_dir.clone(),
    };
    crate::http::start(address, parts)
        .await
        .map_err(|error| NodeError::Http(error.to_string()))?;
    Ok(tls)
}

/// Asks the cluster at `config.join` who its members are: its identity and the addresses to
/// link to. A node removed from that cluster, or whose data belongs to another cluster, does
/// not start. A node that already stored its cluster starts from what it stored when the
/// cluster cannot be reached.
async fn join_cluster(
    config: &NodeConfig,
    stored: Option<ClusterId>,
) -> Result<(ClusterId, BTreeMap<NodeId, SocketAddr>), NodeError> {
    let id = config.id;
    // A node with a stored cluster can start from it when nobody answers (a whole cluster
    // restarting at once); one with nothing stored waits for an answer.
    let patience = match stored {
        Some(_) => std::time::Duration::ZERO,
        None => join::JOIN_PATIENCE,
    };
    let list = match join::ask_members(id, &config.tls_dir, &config.join, patience).await {
        Ok(list) => list,
        Err(error) => match stored {
            Some(stored) => {
                warn!(%error, "cannot reach the cluster to join; starting from what this node stored");
                return Ok((stored, BTreeMap::new()));
            }
            None => return Err(NodeError::Join(format!("cannot join: {error}"))),
        },
    };
    if let Some(stored) = stored
        && stored != list.cluster
    {
        return Err(NodeError::Join(format!(
            "this data directory ({}) belongs to cluster {stored}, and the nodes at {:?} to \
             cluster {}: a node never moves between clusters. Start it with an empty data \
             directory to join that cluster",
            config.data_dir.display(),
            config.join,
            list.cluster
        )));
    }
    if list.retired.contains(&id) {
        return Err(NodeError::Join(format!(
            "node {id} was removed from cluster {}; ids are never reused. Add this machine under \
             a new id: `ordo member add NEW_ID {}`, then start it with `--id NEW_ID --join ...` \
             on an empty data directory",
            list.cluster, config.listen
        )));
    }
    if !list.members.iter().any(|member| member.id == id) {
        info!(
            id,
            cluster = %list.cluster,
            "not a member yet: waiting for `ordo member add {id} {}`",
            config.listen
        );
    }
    let addresses = list
        .members
        .iter()
        .filter(|member| member.id != id)
        .filter_map(|member| Some((member.id, resolve(&member.address)?)))
        .collect();
    info!(cluster = %list.cluster, leader = list.leader, "joining");
    Ok((list.cluster, addresses))
}

/// A fresh incarnation: the clock's nanoseconds, the process id and the node id, mixed. Only
/// its difference from the last one matters (see [`transport::PeerIncarnations`]).
fn draw_incarnation(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut rng = ordo_core::rng::Prng::new(nanos ^ u64::from(std::process::id()) << 32 ^ id);
    rng.next_u64()
}

/// Reloads the certificates, the CA and the revocation lists on every SIGHUP. A failed reload
/// keeps the ones in use, and says why.
#[cfg(unix)]
async fn reload_on_hangup(
    endpoint: quinn::Endpoint,
    links: transport::PeerLinks,
    http_tls: Option<crate::http::TlsSlot>,
    config: NodeConfig,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot install a SIGHUP handler: certificates reload only on restart");
        return;
    };
    while hangups.recv().await.is_some() {
        let reloaded = transport::reload(&endpoint, &links, &config).and_then(|()| {
            if let Some(slot) = &http_tls {
                let tls = crate::http::tls_config(&config)?;
                *slot.write().expect("TLS slot lock") = tls;
            }
            Ok(())
        });
        match reloaded {
            Ok(()) => {
                info!(tls_dir = %config.tls_dir.display(), "reloaded certificates (SIGHUP)");
                metrics::counter!("ordo_certificate_reloads_total").increment(1);
            }
            Err(error) => {
                warn!(%error, "SIGHUP: kept the certificates in use; reloading them failed");
                metrics::counter!("ordo_certificate_reload_failures_total").increment(1);
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => info!("Ctrl-C received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
