//! Snapshots between nodes, on their own QUIC stream, and on disk while they are installed.
//!
//! **Sending.** The leader's node asks for a snapshot for a follower; the driver reads the state
//! machine in one consistent read ([`LogRead::snapshot`], a redb read transaction: apply goes on
//! meanwhile) and encodes it ([`encode_snapshot`]); the follower's peer link opens a
//! unidirectional stream and writes `SnapshotBegin`, the bytes in `SnapshotChunk`s (each with
//! its CRC-32), and `SnapshotEnd`. The node hears whether the bytes arrived.
//!
//! **Receiving.** One snapshot at a time per node (others are refused): the chunks are checked
//! and written to `snapshot.staging` in the data directory, fsynced, read back and checked whole
//! ([`decode_snapshot`]: format, length, checksum), and only then handed to the node.
//!
//! **Installing.** The node decides (Raft's rules) and asks for a sync write that swaps the
//! state in one redb transaction. Around it, [`InstallMarker`] records a durable
//! `snapshot.installing` marker before the swap and removes it (with the staging file) after.
//! At start, [`recover`] rolls back whatever a crash left: a marker and a staging file are
//! removed, and the log says whether the swap had landed (the store's applied index tells).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ordo_common::{LogId, LogIndex, NodeId, Term};
use ordo_net::wire::{FrameError, read_frame, write_frame};
use ordo_node::snapshot::{SNAPSHOT_BYTES_MAX, SnapshotError, decode_snapshot};
use ordo_node::storage::SnapshotState;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::transport::{PEER_FRAME_BYTES_MAX, PeerFrame};

/// Bytes of snapshot in one chunk frame.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// The staging file a snapshot lands in before it is installed.
pub const STAGING_FILE_NAME: &str = "snapshot.staging";
/// The marker that says an install was under way.
pub const MARKER_FILE_NAME: &str = "snapshot.installing";

const _: () = assert!((SNAPSHOT_CHUNK_BYTES as u64) < PEER_FRAME_BYTES_MAX);

/// A snapshot for a peer link to send.
#[derive(Debug)]
pub struct OutgoingSnapshot {
    pub term: Term,
    pub last_included: LogId,
    pub bytes: Arc<Vec<u8>>,
    /// Told whether the bytes reached the follower whole.
    pub done: oneshot::Sender<bool>,
}

/// A snapshot that arrived whole and checked, for the driver.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    pub from: NodeId,
    pub term: Term,
    pub state: SnapshotState,
}

/// Why a snapshot transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("stream: {0}")]
    Stream(#[from] FrameError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("the stream ended before the snapshot did")]
    Truncated,
    #[error("unexpected frame in a snapshot stream")]
    Unexpected,
    #[error("chunk at byte {offset} fails its checksum")]
    ChunkChecksum { offset: u64 },
    #[error("the snapshot claims {bytes} bytes, over SNAPSHOT_BYTES_MAX ({SNAPSHOT_BYTES_MAX})")]
    TooLarge { bytes: u64 },
    #[error("the snapshot's chunks hold {got} bytes, its header said {expected}")]
    Length { got: u64, expected: u64 },
    #[error("staging file {path}: {source}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the snapshot is not installable: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("the snapshot covers {found}, its header said {claimed}")]
    Mismatch { found: LogId, claimed: LogId },
    #[error("this node is stopping")]
    Stopping,
}

/// Writes `snapshot` on a new unidirectional stream of `connection`.
pub async fn send(
    connection: &quinn::Connection,
    snapshot: &OutgoingSnapshot,
) -> Result<(), TransferError> {
    let mut stream = connection.open_uni().await?;
    let begin = PeerFrame::SnapshotBegin {
        term: snapshot.term,
        last_included: snapshot.last_included,
        bytes: snapshot.bytes.len() as u64,
    };
    write_frame(&mut stream, &begin).await?;
    for chunk in snapshot.bytes.chunks(SNAPSHOT_CHUNK_BYTES) {
        let frame = PeerFrame::SnapshotChunk {
            crc: crc32fast::hash(chunk),
            data: Bytes::copy_from_slice(chunk),
        };
        write_frame(&mut stream, &frame).await?;
    }
    write_frame(&mut stream, &PeerFrame::SnapshotEnd).await?;
    let _ = stream.finish();
    // Done once the peer has read everything (it stops the stream, or the stream is acked).
    let _ = stream.stopped().await;
    Ok(())
}

/// Receives the rest of a snapshot stream whose `SnapshotBegin` was read: stages, checks and
/// decodes it. The caller holds the one receiving permit.
pub async fn receive(
    stream: &mut quinn::RecvStream,
    from: NodeId,
    term: Term,
    claimed: LogId,
    bytes: u64,
    data_dir: &Path,
) -> Result<ReceivedSnapshot, TransferError> {
    if bytes > SNAPSHOT_BYTES_MAX {
        return Err(TransferError::TooLarge { bytes });
    }
    let path = data_dir.join(STAGING_FILE_NAME);
    let staging = |source| TransferError::Staging {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::create(&path).map_err(staging)?;
    let mut got = 0u64;
    loop {
        match read_frame::<PeerFrame, _>(stream, PEER_FRAME_BYTES_MAX).await? {
            Some(PeerFrame::SnapshotChunk { data, crc }) => {
                if crc32fast::hash(&data) != crc {
                    return Err(TransferError::ChunkChecksum { offset: got });
                }
                got += data.len() as u64;
                if got > bytes {
                    return Err(TransferError::Length {
                        got,
                        expected: bytes,
                    });
                }
                tokio::task::block_in_place(|| file.write_all(&data)).map_err(staging)?;
            }
            Some(PeerFrame::SnapshotEnd) => break,
            Some(_) => return Err(TransferError::Unexpected),
            None => return Err(TransferError::Truncated),
        }
    }
    if got != bytes {
        return Err(TransferError::Length {
            got,
            expected: bytes,
        });
    }
    let state = tokio::task::block_in_place(|| {
        file.sync_all()?;
        drop(file);
        std::fs::read(&path)
    })
    .map_err(staging)?;
    let state = decode_snapshot(&state)?;
    if state.applied != claimed {
        return Err(TransferError::Mismatch {
            found: state.applied,
            claimed,
        });
    }
    Ok(ReceivedSnapshot { from, term, state })
}

/// The durable marker around an install.
pub struct InstallMarker {
    path: PathBuf,
    staging: PathBuf,
}

impl InstallMarker {
    /// Writes and fsyncs the marker (naming the snapshot's last entry) before the swap.
    pub fn begin(data_dir: &Path, last_included: LogId) -> std::io::Result<Self> {
        let path = data_dir.join(MARKER_FILE_NAME);
        let mut file = std::fs::File::create(&path)?;
        writeln!(file, "{} {}", last_included.index, last_included.term)?;
        file.sync_all()?;
        sync_dir(data_dir)?;
        Ok(Self {
            path,
            staging: data_dir.join(STAGING_FILE_NAME),
        })
    }

    /// The swap is durable: the marker and the staging file go.
    pub fn finish(self) -> std::io::Result<()> {
        remove_if_present(&self.staging)?;
        remove_if_present(&self.path)
    }
}

/// At start: removes what an interrupted transfer or install left, and says what it was. An
/// install whose swap landed (the store is applied through the marker's entry) is complete; one
/// whose swap did not is rolled back (the leader sends the snapshot again).
pub fn recover(data_dir: &Path, applied: LogIndex) -> std::io::Result<()> {
    let marker = data_dir.join(MARKER_FILE_NAME);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let index: Option<LogIndex> = text.split_whitespace().next().and_then(|i| i.parse().ok());
        match index {
            Some(index) if applied >= index => {
                info!(
                    index,
                    "a snapshot install interrupted after its swap: completed"
                )
            }
            _ => warn!(
                marker = text.trim(),
                applied, "a snapshot install interrupted before its swap: rolled back"
            ),
        }
    }
    remove_if_present(&data_dir.join(STAGING_FILE_NAME))?;
    remove_if_present(&marker)?;
    sync_dir(data_dir)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
