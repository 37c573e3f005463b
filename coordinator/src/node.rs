//! `ordo serve`: opens the log, starts the transport and runs the driver until SIGTERM or
//! Ctrl-C, then stops gracefully.

use ordo_common::ClusterId;
use ordo_node::{Node, NodeConfig as NodeLogicConfig, Recovered, recovered_tables};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::config::{ConfigError, NodeConfig};
use crate::driver::{
    DiskWatch, Driver, DriverError, DriverOptions, DriverParts, StoredBatches, addresses,
    writer_channel,
};
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
}

/// The log file inside a data directory.
pub const LOG_FILE_NAME: &str = "ordo-log.redb";

/// Runs a node until it is told to stop.
pub async fn serve(config: NodeConfig) -> Result<(), NodeError> {
    let voters = config.voters()?;
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
    // The first start of a fresh store names its cluster from the voters; a restored store
    // carries the identity its restore gave it.
    let cluster = match store.cluster_id()? {
        Some(cluster) => cluster,
        None => {
            let cluster = ClusterId::initial(voters.keys().copied());
            store.set_cluster_id(cluster)?;
            cluster
        }
    };
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
        addresses: addresses(&voters),
        registry: config.registry_limits(),
        tick_ms: config.raft.tick_interval.0.as_millis().max(1) as u64,
        clock_skew_ms: config.raft.clock_skew_max.0.as_millis() as u64,
    };
    let node = Node::new(node_config, recovered, seed)?;
    let (servable_tx, servable_rx) = watch::channel(node.servable_seq());

    let (events_tx, events_rx) = writer_channel();
    let writer = GroupCommitWriter::start(store, move |event| {
        // Blocking here holds the writer back when the driver falls behind: back-pressure.
        let _ = events_tx.blocking_send(event);
    })?;
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE_MESSAGES_MAX);
    let (snapshots_tx, snapshots_rx) = mpsc::channel(1);
    let (clients_tx, clients_rx) = mpsc::channel(CLIENT_QUEUE_REQUESTS_MAX);
    // A node starts knowing no leader; it learns one from the first heartbeat or election.
    let (leaderless_tx, leaderless_rx) = watch::channel(Some(std::time::Instant::now()));
    let batches = StoredBatches::new(writer.reader(), servable_rx, leaderless_rx);
    let (endpoint, peers) = transport::start(
        &config,
        cluster,
        &voters,
        inbound_tx,
        snapshots_tx,
        clients_tx,
        batches,
    )?;
    info!(id = config.id, listen = %config.listen, peers = ?voters, "serving");

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
        options: DriverOptions {
            tick_interval: config.raft.tick_interval.0,
            append_bytes_max: config.raft.append_bytes_max.0,
            data_dir: config.data_dir.clone(),
            disk: Some(DiskWatch {
                free_space_min: config.storage.free_space_min.0,
                ballast: (ballast.bytes > 0).then_some(ballast),
            }),
        },
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(());
    });
    let result = driver.run(stop_rx).await;
    transport::close(&endpoint);
    endpoint.wait_idle().await;
    info!("stopped");
    Ok(result?)
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
