//! The storage contract: what a node writes ([`WriteBatch`]), what a store must guarantee
//! ([`LogStore`], [`LogRead`], each a checklist), the rules every store enforces
//! ([`rules`]), the checked record layout both stores write ([`record`]), and the in-memory
//! store ([`MemLogStore`]) that tests and the simulator run on.
//!
//! The stores that touch a disk live in the runtime (`ordo-coordinator`: the redb store and the
//! group-commit writer thread); everything here is pure, so the simulator runs the same rules
//! and the same record encoding as production.
//!
//! # Where the batch history lives
//!
//! Committed batches are served from the Raft log, not copied into a table of their own: the
//! `seq → log index` table holds 8 bytes per batch and the batch's bytes stay in the entry that
//! carried them. That halves the bytes written per message, at the price that the batch history
//! is exactly as long as the retained log: a subscriber asking for a batch whose entry was
//! compacted away gets [`StorageError::Compacted`] and must catch up from a snapshot.
//!
//! # Integrity
//!
//! Every stored record starts with a format byte and a CRC-32 over its key and contents, and is
//! checked on every read: a record that fails the check is reported as corrupt and never served.
//! Opening a store checks the format version, the consistency of the durable state and the most
//! recent entries, and refuses a corrupt log, so that a node with bad data cannot win an
//! election or overwrite its peers' logs with it.

mod mem;
pub mod record;
pub mod rules;

use std::num::NonZeroU64;

use ordo_common::{EngineKind, Entry, HardState, LogId, LogIndex, Term};

pub use mem::{MemDisk, MemLogStore, missing};

/// The storage format this build writes. A store written with any other version is refused with
/// [`StorageError::IncompatibleFormat`], except formats 4 to 7, upgraded in place: format 4
/// lacks only the table of sessions, locks and elections, format 5 also configuration entries
/// and the membership row, format 6 also the incarnation record (drawn at the next start), and
/// format 7 stored one log entry and one seq per record where format 8 stores groups.
/// Bump it whenever a table or record layout changes, with a migration from the formats users
/// have.
pub const STORAGE_FORMAT_VERSION: u64 = 8;

pub use ordo_common::limits::{OUTCOME_BYTES_MAX, TOPIC_NAME_BYTES_MAX};

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything one call to [`LogStore::write`] makes durable, atomically: either all of it is on
/// disk when `write` returns `Ok`, or none of it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The new term and vote, if they changed.
    pub hard_state: Option<HardState>,
    /// Entries to append. They must have consecutive indexes; writing entries that start at index
    /// `i` first deletes every stored entry with index `>= i` (Raft's conflicting-suffix
    /// replacement), so an append is the special case `i == last_index + 1`.
    pub entries: Vec<Entry>,
    /// The new commit index, if it advanced.
    pub committed: Option<LogIndex>,
    /// The state machine's progress and table changes, if it applied entries.
    pub state: Option<StateUpdate>,
    /// A snapshot to install in place of the log through its last entry and of the whole state
    /// machine. An install is written alone.
    pub install: Option<Install>,
}

/// A received snapshot, made the node's state: the state machine's tables are replaced with
/// the snapshot's, the log through `last_included` is purged (all of it unless
/// `keep_suffix`), and the apply and commit progress move to `last_included`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    pub last_included: LogId,
    /// Keep the stored entries after `last_included` (the log holds `last_included` itself with
    /// its term, so what follows may be the leader's too); drop the whole log otherwise.
    pub keep_suffix: bool,
    pub state: SnapshotState,
}

/// The state machine's durable state as of an applied entry: what a snapshot carries, read in
/// one consistent view ([`LogRead::snapshot`]). Tables are in key order, so two nodes at the same
/// applied index hold byte-identical snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotState {
    /// The last entry applied: the snapshot covers the log through it.
    pub applied: LogId,
    pub last_seq: u64,
    pub log_time_ms: u64,
    pub registry_floor_ms: u64,
    /// In topic order.
    pub offsets: Vec<(String, u64)>,
    /// Batch id → encoded registry record, in id order.
    pub registry: Vec<([u8; 16], Vec<u8>)>,
    /// Sessions, locks and elections: key → encoded row, in key order.
    pub coord: Vec<(Vec<u8>, Vec<u8>)>,
}

impl WriteBatch {
    /// A batch that only appends (or replaces a suffix with) `entries`.
    pub fn entries(entries: Vec<Entry>) -> Self {
        Self {
            entries,
            ..Self::default()
        }
    }

    /// A batch that only saves a new term and vote.
    pub fn hard_state(hard_state: HardState) -> Self {
        Self {
            hard_state: Some(hard_state),
            ..Self::default()
        }
    }

    /// Whether the batch changes nothing. An empty batch is still a valid write: it costs a
    /// transaction and reports the current state.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.committed.is_none()
            && self.state.is_none()
            && self.install.is_none()
    }

    /// Approximate bytes the batch holds in memory, the unit of the writer's queue limit.
    pub fn queued_bytes(&self) -> u64 {
        let entries: u64 = self.entries.iter().map(|e| e.payload_bytes() + 16).sum();
        let state = self.state.as_ref().map_or(0, |s| {
            let registry: usize = s.registry.iter().map(|(_, o)| o.len() + 16).sum::<usize>()
                + s.registry_evicted.len() * 16;
            let offsets: usize = s.offsets.iter().map(|(t, _)| t.len() + 8).sum();
            let coord: usize = s
                .coord
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            (registry + offsets + coord + s.seqs.len() * 16) as u64
        });
        let install = self.install.as_ref().map_or(0, |install| {
            let state = &install.state;
            let registry: usize = state.registry.iter().map(|(_, r)| r.len() + 16).sum();
            let offsets: usize = state.offsets.iter().map(|(t, _)| t.len() + 8).sum();
            let coord: usize = state.coord.iter().map(|(k, v)| k.len() + v.len()).sum();
            (registry + offsets + coord) as u64
        });
        entries + state + install
    }
}

/// What the state machine changed by applying entries up to `applied`, written in the same
/// transaction as the progress so that a crash can never separate the two.
///
/// The contents are bytes and plain numbers on purpose: the batch and outcome types belong to the
/// consensus core, and storage only has to keep them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateUpdate {
    /// The last entry applied. Never decreases, never passes the commit index.
    pub applied: LogId,
    /// Newly committed batches: `(seq, log index of the entry that carried the batch)`. Seqs are
    /// dense: the first must be one more than [`StoreState::last_seq`], and each index must lie
    /// in the newly applied range, increasing.
    pub seqs: Vec<(u64, LogIndex)>,
    /// Idempotency registry: a batch id's 16 bytes to its encoded record (outcome and content
    /// hash). A later value for the same id replaces the earlier one.
    pub registry: Vec<([u8; 16], Vec<u8>)>,
    /// Registry ids evicted (past the horizon, or over the byte budget).
    pub registry_evicted: Vec<[u8; 16]>,
    /// Topic offsets (count of messages committed to a topic), set to these values.
    pub offsets: Vec<(String, u64)>,
    /// The log time after these entries: the newest leader stamp applied. Never decreases.
    pub log_time_ms: u64,
    /// Ids at or below this time were evicted from the registry. Never decreases.
    pub registry_floor_ms: u64,
    /// Sessions, locks and elections: rows to write (`Some`) or delete (`None`). A later value
    /// for the same key replaces the earlier one.
    pub coord: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl StateUpdate {
    /// An update that only records progress.
    pub fn applied(applied: LogId) -> Self {
        Self {
            applied,
            seqs: Vec::new(),
            registry: Vec::new(),
            registry_evicted: Vec::new(),
            offsets: Vec::new(),
            log_time_ms: 0,
            registry_floor_ms: 0,
            coord: Vec::new(),
        }
    }
}

/// Which entries a store keeps, beyond what the state machine still needs.
///
/// After a write, a store deletes the oldest entries while the log holds more than
/// `entries_max` entries or `bytes_max` bytes of records, or while they are older than `age_ms`
/// by the log's time (a batch entry's leader stamp; entries without one count as old as the
/// last stamped entry before them) — but never an entry above the applied index, nor any of the
/// `trailing_entries` entries just below it, which let a follower that is a little behind catch
/// up from the log instead of a snapshot. Deleted entries are gone for subscribers too.
///
/// Count and byte limits, once exceeded, delete down to seven eighths of the limit, so that the
/// cost (a few more pages rewritten) is paid once per eighth of the limit, not per write. The
/// default keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Most entries to keep.
    pub entries_max: Option<NonZeroU64>,
    /// Most bytes of stored entry records to keep.
    pub bytes_max: Option<NonZeroU64>,
    /// Oldest entry to keep, in ms of log time.
    pub age_ms: Option<NonZeroU64>,
    /// Entries below the applied index never deleted.
    pub trailing_entries: u64,
}

/// Which entries the log holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The first index that can be read. 1 for a log that never compacted; one past the last
    /// compacted entry otherwise.
    pub first_index: LogIndex,
    /// The last entry, or the last compacted entry if every entry was compacted; `None` for a log
    /// that never had an entry.
    pub last_log_id: Option<LogId>,
    /// The last entry deleted by compaction, whose term [`LogRead::term_at`] still answers so that
    /// the entry at `first_index` can be checked against it.
    pub purged: Option<LogId>,
}

impl LogState {
    /// The last index, or 0 for a log that never had an entry.
    pub fn last_index(&self) -> LogIndex {
        self.last_log_id.map_or(0, |id| id.index)
    }
}

/// How far the log is committed and applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyProgress {
    /// The highest index known to be committed; 0 before any.
    pub committed: LogIndex,
    /// The last entry the state machine applied, if any.
    pub applied: Option<LogId>,
}

/// One consistent view of everything a store keeps outside the entries and the tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreState {
    pub log: LogState,
    pub hard_state: HardState,
    pub progress: ApplyProgress,
    /// The last committed batch's seq; 0 before any.
    pub last_seq: u64,
    /// The log time and the registry's floor as of the applied index (see [`StateUpdate`]).
    pub log_time_ms: u64,
    pub registry_floor_ms: u64,
    /// The consensus engine whose log this is. Raft's terms never fall along the log; a
    /// Multi-Paxos slot carries the ballot its value was accepted at, which may.
    pub engine: EngineKind,
}

/// The state machine's tables as of the applied index: what a node loads at start instead of
/// replaying its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredTables {
    /// In topic order.
    pub offsets: Vec<(String, u64)>,
    /// Batch id → encoded registry record, in id order.
    pub registry: Vec<([u8; 16], Vec<u8>)>,
    /// Sessions, locks and elections: key → encoded row, in key order.
    pub coord: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The read side of a store. Every read sees one committed state, never part of a write: that
/// of the last completed [`LogStore::write`], or of the write in progress once the store has
/// committed it and while it waits for that write's fsync (a store may overlap the two, as the
/// redb store does). The node acts on a write only once it is reported durable, and what it
/// serves from reads is bounded by what a majority made durable.
///
/// Checklist for implementations:
/// - Every entry, and every stored state record, is checked against its checksum on every read;
///   one that fails is reported as [`StorageError::Corrupt`] (or `CorruptState`) and never
///   returned. A read never panics on stored bytes.
/// - Ranges are `[lo, hi)`. `lo == hi` is an empty range and valid anywhere in
///   `first_index ..= last_index + 1`.
/// - Reading below `first_index` returns [`StorageError::Compacted`]; reading past
///   `last_index` returns [`StorageError::OutOfRange`].
pub trait LogRead {
    /// Everything but the entries and the tables, as of one moment.
    fn store_state(&self) -> Result<StoreState>;

    /// Entries `[lo, hi)`, in index order, with no holes.
    ///
    /// Stops before the entry that would take the total payload bytes over `bytes_max`, but
    /// always returns at least one entry for a non-empty range, so that an entry larger than
    /// the budget can still be read. Errors: `lo > hi` is `InvalidRange`; `lo < first_index` is
    /// `Compacted`; `hi > last_index + 1` is `OutOfRange`.
    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64) -> Result<Vec<Entry>>;

    /// The term of the entry at `index`: 0 for index 0 (before the log), the purged term for the
    /// last compacted entry, `Compacted` below that and `OutOfRange` past the last entry.
    fn term_at(&self, index: LogIndex) -> Result<Term>;

    /// The log index of the entry that carried the batch committed at `seq`, if there is one.
    /// Seqs whose entries were compacted away are forgotten with them.
    fn batch_index(&self, seq: u64) -> Result<Option<LogIndex>>;

    /// The batches committed at seqs `from ..= to`, in seq order, each with the entry that
    /// carried it: consecutive from `from`, ending at the first seq the store no longer holds,
    /// and before the batch whose entry would take the total payload bytes over `bytes_max` (the
    /// first one is always read, so that a batch larger than the budget can still be read).
    /// Empty when `from` is not held: compacted, or not committed yet. The caller bounds
    /// `to - from`. Stores override it to read the range in one pass; this reads seq by seq.
    fn batches_from(&self, from: u64, to: u64, bytes_max: u64) -> Result<Vec<(u64, Entry)>> {
        let mut read = Vec::new();
        let mut bytes = 0u64;
        for seq in from..=to {
            let Some(index) = self.batch_index(seq)? else {
                break;
            };
            let entry = match self.entries(index, index + 1, u64::MAX) {
                Ok(mut entries) => entries.pop().ok_or_else(|| missing(index))?,
                Err(StorageError::Compacted { .. }) => break,
                Err(error) => return Err(error),
            };
            bytes = bytes.saturating_add(entry.payload_bytes());
            if bytes > bytes_max && !read.is_empty() {
                break;
            }
            read.push((seq, entry));
        }
        Ok(read)
    }

    /// The registry record kept for the batch with this id, if any.
    fn outcome(&self, batch_id: &[u8; 16]) -> Result<Option<Vec<u8>>>;

    /// The offset of `topic`: the count of messages committed to it, 0 for a topic never seen.
    fn topic_offset(&self, topic: &str) -> Result<u64>;

    /// Every topic offset and registry record, read together (one consistent view).
    fn tables(&self) -> Result<StoredTables>;

    /// The state machine as of the applied index, tables and progress read in one consistent
    /// view: what a snapshot carries. Building it never blocks writes.
    fn snapshot(&self) -> Result<SnapshotState>;

    /// The lowest seq whose batch is still stored (one past the last seq when none is): a
    /// subscriber asking for less is told the history was compacted.
    fn first_seq(&self) -> Result<u64>;

    /// The durable term and vote.
    fn hard_state(&self) -> Result<HardState> {
        Ok(self.store_state()?.hard_state)
    }

    /// Which entries the log holds.
    fn log_state(&self) -> Result<LogState> {
        Ok(self.store_state()?.log)
    }

    /// The first readable index.
    fn first_index(&self) -> Result<LogIndex> {
        Ok(self.log_state()?.first_index)
    }

    /// The last entry's id, if the log ever had one.
    fn last_log_id(&self) -> Result<Option<LogId>> {
        Ok(self.log_state()?.last_log_id)
    }

    /// The commit and apply progress.
    fn progress(&self) -> Result<ApplyProgress> {
        Ok(self.store_state()?.progress)
    }
}

/// A durable Raft log with its hard state, progress and state machine tables.
///
/// Checklist (every implementation, checked by the conformance suite in `tests/conformance.rs`):
/// - **Durable on return.** When [`write`](Self::write) returns `Ok`, all of the batch is durable:
///   it survives a crash of the process and of the machine. When it returns `Err`, none of it
///   was written.
/// - **Atomic.** A batch's hard state, entries, commit index, progress and table updates become
///   durable together or not at all; a crash never leaves part of a batch.
/// - **No holes.** The log always holds every index in `first_index ..= last_index`. An append
///   must start at most at `last_index + 1`.
/// - **Suffix replacement.** Entries starting at index `i` first delete every entry with index
///   `>= i`, then store the new ones. `i` must be above the commit index (committed entries never
///   change) and at or above `first_index`.
/// - **Raft's monotonic rules are enforced**, so that a bug in the caller cannot make them false
///   on disk: the term never decreases and a vote never changes within a term; entry terms never
///   decrease along the log and never exceed the current term; the commit index never decreases
///   and never passes the last index; the applied index never decreases, never passes the commit
///   index and names an entry in the log; seqs are dense.
/// - **Refusals change nothing.** A batch that breaks a rule is refused with
///   [`StorageError::InvalidWrite`] before anything is written.
/// - **Retention** (see [`Retention`]) never deletes an entry above the applied index.
///
/// Errors from `write`: `InvalidWrite` means the caller has a bug and nothing was written; the
/// store stays usable. [`StorageError::NoSpace`] means the file system is full: the write did
/// not happen, and after [`recover`](LogStore::recover) the same write may be tried again.
/// Anything else ([`StorageError::is_fatal`]) means the durable state is unknown: the store
/// refuses further writes, and the node must stop and reopen it.
pub trait LogStore: LogRead + Send + 'static {
    /// A handle that reads the same store from other threads, concurrently with writes.
    type Reader: LogRead + Clone + Send + Sync + 'static;

    /// Makes all of `batch` durable in one transaction (one fsync) and returns the log's new
    /// extent.
    fn write(&mut self, batch: &WriteBatch) -> Result<LogState>;

    /// A read handle for other threads.
    fn reader(&self) -> Self::Reader;

    /// After a write failed with [`StorageError::NoSpace`]: makes the store writable again
    /// (reopening it if it must), with the durable state it had before the failed write, and
    /// frees what space it holds in reserve. Readers keep working across it. Fails with
    /// `NoSpace` again if there is still no room to reopen.
    fn recover(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a node whose storage is damaged must do, in every error that says so. Restarting it on
/// an empty data directory under the same id is not safe: it would vote again in terms it already
/// voted in (two leaders in one term) and forget entries it acknowledged (an acknowledged batch
/// can be lost). Until membership change exists it stays out; a majority runs on without it.
pub const DAMAGED_NODE_ADVICE: &str = "stop the node and keep its data directory for \
     diagnosis; do not restart it on an empty data directory under the same id (it would vote \
     again in terms it already voted in and forget entries it acknowledged, which can lose \
     acknowledged batches); the cluster runs on without it while a majority of its nodes is \
     healthy (README: \"A damaged coordinator\")";

/// Why a storage call failed. [`is_fatal`](Self::is_fatal) separates "your request was wrong"
/// from "this node's storage cannot be trusted any more".
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file system is full (`ENOSPC`): the write did not happen and nothing stored was
    /// lost. Writes wait for space; reads go on.
    #[error(
        "the file system holding the log is full ({detail}); nothing stored was lost: free \
         space (or grow the volume) and writes resume by themselves"
    )]
    NoSpace { detail: String },
    /// The file system failed.
    #[error(
        "storage i/o failed: {0}; stop the node and restart it, which reopens and checks the log"
    )]
    Io(#[from] std::io::Error),
    /// The storage engine failed for a reason other than I/O or a damaged file.
    #[error(
        "the storage engine failed: {0}; stop the node and restart it, which reopens and checks \
         the log"
    )]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The storage file's own structure is damaged (not just one record).
    #[error(
        "the storage file is damaged ({detail}); {advice}",
        advice = DAMAGED_NODE_ADVICE
    )]
    CorruptFile { detail: String },
    /// A log entry failed its checksum or could not be decoded. It was not served.
    #[error(
        "log entry {index} is corrupt ({detail}); this node's log cannot be trusted: {advice}",
        advice = DAMAGED_NODE_ADVICE
    )]
    Corrupt { index: LogIndex, detail: String },
    /// A stored state record (hard state, progress, table row) failed its checksum or is
    /// inconsistent with the log. It was not served.
    #[error(
        "stored {record} is corrupt ({detail}); this node's storage cannot be trusted: \
         {advice}",
        advice = DAMAGED_NODE_ADVICE
    )]
    CorruptState { record: String, detail: String },
    /// The requested entries were deleted by retention.
    #[error(
        "entries below index {first_index} were compacted away; read from {first_index} on, or \
         bring the reader up to date with a snapshot"
    )]
    Compacted { first_index: LogIndex },
    /// The requested index is past the last entry.
    #[error("index {index} is past the end of the log (last index {last_index})")]
    OutOfRange {
        index: LogIndex,
        last_index: LogIndex,
    },
    /// A range with `lo > hi`: a caller bug.
    #[error("invalid range [{lo}, {hi}): lo is above hi")]
    InvalidRange { lo: LogIndex, hi: LogIndex },
    /// The store was written by a format this build does not read.
    #[error(
        "the storage was written in format version {found}, and this build reads only version \
         {supported}; run an ordo release that reads format {found} (do not start this node on \
         an empty data directory instead: it would vote again and forget what it acknowledged)"
    )]
    IncompatibleFormat { found: u64, supported: u64 },
    /// The batch breaks the store's contract; nothing was written. A caller bug.
    #[error("write refused, nothing was written: {detail}")]
    InvalidWrite { detail: String },
    /// Another process holds the storage file.
    #[error(
        "another process has the storage file open; stop it, or give this node its own data \
         directory"
    )]
    AlreadyOpen,
    /// An earlier write failed, so the durable state is unknown.
    #[error(
        "an earlier write failed ({reason}), so the store refuses writes until it is reopened; \
         restart the node"
    )]
    Halted { reason: String },
    /// The group commit writer thread has stopped (after a fatal error, or because it was closed).
    #[error("the storage writer has stopped; no further writes are possible until restart")]
    WriterStopped,
}

impl StorageError {
    /// Whether the store can no longer be trusted or written: the node must stop (and, for a
    /// corrupt store, be rebuilt from its peers). The other errors reject one request and leave
    /// the store as it was.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::Compacted { .. }
                | Self::OutOfRange { .. }
                | Self::InvalidRange { .. }
                | Self::InvalidWrite { .. }
        )
    }

    pub fn invalid_write(detail: impl Into<String>) -> Self {
        Self::InvalidWrite {
            detail: detail.into(),
        }
    }

    pub fn corrupt_state(record: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::CorruptState {
            record: record.into(),
            detail: detail.into(),
        }
    }
}
