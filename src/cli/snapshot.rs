//! `ordo snapshot save` and `ordo snapshot restore`: backups of the replicated state.
//!
//! A save streams one node's applied state — seq, topic offsets, the idempotency registry, as
//! of one applied entry, read in one transaction — into a file with the snapshot format's
//! header and checksum. A restore seeds an empty data directory from such a file, for a new
//! cluster: every node of it is restored from the same file, and they get a new cluster
//! identity, so that they never mix with the cluster the backup came from.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ordo_common::client::{ClientRequest, ClientResponse, NodeRole, SNAPSHOT_CHUNK_BYTES_MAX};
use ordo_common::{ClusterId, EngineKind, HardState, LogId};
use ordo_coordinator::node::LOG_FILE_NAME;
use ordo_coordinator::storage::{
    Install, LogRead, LogStore, RedbLogStore, RedbOptions, SnapshotState, WriteBatch,
};
use ordo_node::snapshot::{SNAPSHOT_BYTES_MAX, decode_snapshot};
use ordo_participant::{ClientTls, NodeConnection, parse_endpoints};

use super::ClientArguments;

/// How long to wait for a node to answer, and between two chunks of a snapshot.
const SAVE_TIMEOUT: Duration = Duration::from_secs(30);

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

pub async fn save(arguments: &ClientArguments, file: &Path) -> CliResult {
    let endpoints = parse_endpoints(&arguments.endpoints)?;
    let tls = ClientTls::load(&arguments.tls_dir, arguments.client.as_deref())?;
    let connection = freshest_node(&endpoints, &tls).await?;
    let partial = partial_path(file);
    let saved = receive(&connection, &partial).await;
    let (applied, bytes) = match saved {
        Ok(saved) => saved,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    // Read the file back: what is on disk is what restore will read.
    let written = std::fs::read(&partial)?;
    let state = match decode_snapshot(&written) {
        Ok(state) if state.applied == applied && written.len() as u64 == bytes => state,
        Ok(_) => {
            let _ = std::fs::remove_file(&partial);
            return Err("the saved snapshot does not match what the node announced".into());
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!("the saved snapshot does not check: {error}").into());
        }
    };
    std::fs::rename(&partial, file)?;
    sync_parent(file)?;
    println!(
        "saved a snapshot of node at {} to {}: applied index {}, last seq {}, {} topics, {} \
         registered batch ids, {bytes} bytes",
        connection.address(),
        file.display(),
        state.applied.index,
        state.last_seq,
        state.offsets.len(),
        state.registry.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The leader if one answers (its state is the most recent), else the node that has applied
/// the most.
async fn freshest_node(
    endpoints: &[std::net::SocketAddr],
    tls: &ClientTls,
) -> Result<NodeConnection, Box<dyn std::error::Error>> {
    let mut best: Option<(bool, u64, NodeConnection)> = None;
    let mut problems = Vec::new();
    for address in endpoints {
        let connection = match NodeConnection::connect(*address, tls, SAVE_TIMEOUT).await {
            Ok(connection) => connection,
            Err(error) => {
                problems.push(format!("{address}: {error}"));
                continue;
            }
        };
        match connection.request(&ClientRequest::Status).await {
            Ok(ClientResponse::Status(status)) => {
                let rank = (status.role == NodeRole::Leader, status.applied_index);
                if best.as_ref().is_none_or(|(l, a, _)| rank > (*l, *a)) {
                    best = Some((rank.0, rank.1, connection));
                }
            }
            Ok(other) => problems.push(format!("{address}: unexpected answer {other:?}")),
            Err(error) => problems.push(format!("{address}: {error}")),
        }
    }
    best.map(|(_, _, connection)| connection)
        .ok_or_else(|| format!("no node answered: {}", problems.join("; ")).into())
}

/// Streams the snapshot into `partial`, synced. Returns the applied entry and the size.
async fn receive(
    connection: &NodeConnection,
    partial: &Path,
) -> Result<(LogId, u64), Box<dyn std::error::Error>> {
    let (mut send, mut receive) = connection.raw().open_bi().await?;
    ordo_net::wire::write_frame(&mut send, &ClientRequest::SnapshotSave).await?;
    let _ = send.finish();
    let mut file = std::io::BufWriter::new(std::fs::File::create(partial)?);
    let mut received = 0u64;
    loop {
        let limit = ordo_common::client::CLIENT_RESPONSE_BYTES_MAX;
        let frame = tokio::time::timeout(
            SAVE_TIMEOUT,
            ordo_net::wire::read_frame::<ClientResponse, _>(&mut receive, limit),
        )
        .await
        .map_err(|_| format!("the node sent nothing for {SAVE_TIMEOUT:?}"))??;
        match frame {
            Some(ClientResponse::SnapshotChunk { data }) => {
                if data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
                    return Err(format!("a chunk of {} bytes is over the limit", data.len()).into());
                }
                received += data.len() as u64;
                if received > SNAPSHOT_BYTES_MAX {
                    return Err("the snapshot is over SNAPSHOT_BYTES_MAX".into());
                }
                file.write_all(&data)?;
            }
            Some(ClientResponse::SnapshotEnd {
                applied_index,
                applied_term,
                bytes,
            }) => {
                if bytes != received {
                    return Err(
                        format!("the node announced {bytes} bytes and sent {received}").into(),
                    );
                }
                let file = file.into_inner().map_err(|error| error.into_error())?;
                file.sync_all()?;
                return Ok((LogId::new(applied_term, applied_index), bytes));
            }
            Some(ClientResponse::Refused { code, reason }) => {
                return Err(format!("the node refused ({code}): {reason}").into());
            }
            Some(ClientResponse::Busy { code, reason }) => {
                return Err(format!("the node is busy ({code}): {reason}").into());
            }
            Some(other) => return Err(format!("unexpected answer {other:?}").into()),
            None => return Err("the node ended the stream before the snapshot's end".into()),
        }
    }
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

fn sync_parent(file: &Path) -> std::io::Result<()> {
    let parent = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

pub fn restore(file: &Path, data_dir: &Path, cluster_token: &str, engine: EngineKind) -> CliResult {
    let bytes = std::fs::read(file).map_err(|error| format!("{}: {error}", file.display()))?;
    let state = decode_snapshot(&bytes)
        .map_err(|error| format!("{} is not a usable snapshot: {error}", file.display()))?;
    if state.applied.index == 0 {
        return Err("the snapshot is of an empty cluster: there is nothing to restore".into());
    }
    let log_path = data_dir.join(LOG_FILE_NAME);
    if log_path.exists() {
        return Err(format!(
            "{} already holds a log: restore into an empty data directory (a restore never \
             overwrites a node's data)",
            data_dir.display()
        )
        .into());
    }
    std::fs::create_dir_all(data_dir)?;
    let cluster = ClusterId::restored(&bytes, cluster_token);
    let seeded = seed(&log_path, state.clone(), cluster, engine);
    if let Err(error) = seeded {
        // Leave no half-restored store behind for a node to start on.
        let _ = std::fs::remove_file(&log_path);
        let _ = std::fs::remove_file(RedbLogStore::wal_path(&log_path));
        return Err(error);
    }
    println!(
        "restored {} into {} as cluster {cluster}: applied index {}, last seq {}, {} topics, \
         {} registered batch ids; start every node of the new cluster on its restored data \
         directory",
        file.display(),
        data_dir.display(),
        state.applied.index,
        state.last_seq,
        state.offsets.len(),
        state.registry.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// A fresh store whose state is the snapshot's, whose log starts after it, and which belongs
/// to `cluster`.
fn seed(
    path: &Path,
    state: SnapshotState,
    cluster: ClusterId,
    engine: EngineKind,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = RedbLogStore::open(path, RedbOptions::default())?;
    store.set_engine(engine)?;
    let applied = state.applied;
    store.write(&WriteBatch::hard_state(HardState {
        term: applied.term,
        vote: None,
    }))?;
    store.write(&WriteBatch {
        install: Some(Install {
            last_included: applied,
            keep_suffix: false,
            state,
        }),
        ..WriteBatch::default()
    })?;
    store.set_cluster_id(cluster)?;
    let stored = store.store_state()?;
    if stored.progress.applied != Some(applied) {
        return Err("the restored store does not read back as written".into());
    }
    Ok(())
}
