//! The redb store: one file holding the log, the Raft state and the state machine's tables.
//!
//! # Tables
//!
//! | table                | key                 | value (a checked record, see `record.rs`) |
//! |----------------------|---------------------|-------------------------------------------|
//! | `ordo_meta`          | `"format_version"`  | `u64`, unchecked; its type never changes   |
//! | `ordo_log`           | first index of a group | the group's entry records (term + payload each) |
//! | `ordo_raft`          | `"hard_state"`, `"committed"`, `"applied"`, `"last_seq"`, `"purged"` | the value |
//! | `ordo_batches`       | first seq of a group | log indexes of the entries carrying the batches |
//! | `ordo_registry`      | batch id (16 bytes) | outcome bytes                             |
//! | `ordo_coord`         | `s` + session id, `l`/`e` + name | a session, lock or election  |
//! | `ordo_topic_offsets` | topic name          | offset                                    |
//!
//! The log and the seq index keep one record per group of consecutive items (see [`groups`]):
//! a group commit of many entries costs one insert in each, not one per entry.
//!
//! Every write is one redb write transaction. A small one (a write-ahead record of up to
//! [`WAL_RECORD_BYTES_MAX`]) is appended, as one record, to the write-ahead file beside the redb
//! file, which is fsynced: one sequential page or so instead of a dozen scattered ones. redb
//! commits it without an fsync while that fsync runs (see [`wal`] for the layout, the sync thread
//! and the checkpoint protocol). A
//! larger write, a snapshot install, a write that may let retention delete entries, and every
//! [`WAL_CHECKPOINT_BYTES`] of the write-ahead file, commit redb with `Durability::Immediate`.
//! Either way the write is durable when `write` returns. Stores opened
//! on a test backend have no write-ahead file and commit every write durably. Records are
//! written only when they change, so a pure append touches the log table alone.
//!
//! redb checks its own page checksums only when it recovers from a crash; the record checksums
//! are what catch a damaged value afterwards. redb may panic on a damaged page structure, so
//! every call into it is shielded and a panic becomes [`StorageError::CorruptFile`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use ordo_common::{ClusterId, EngineKind, Entry, HardState, LogId, LogIndex, Term};
use redb::{
    Builder, Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageBackend, TableDefinition, WriteTransaction,
};

use super::space::{Ballast, is_no_space};

mod groups;
mod wal;
mod writeback;
pub use groups::{LOG_GROUP_BYTES_MAX, SEQ_GROUP_ITEMS_MAX};
pub use wal::SYNC_THREAD_NAME;
use wal::{Syncer, Wal};
use writeback::Writeback;
pub use writeback::{WRITEBACK_PERIOD, WRITEBACK_THREAD_NAME};

/// A write whose entries and state hold more than this many bytes skips the write-ahead file and
/// is made durable by redb itself (a checkpoint, if the file holds records): a write this big
/// costs about as much to fsync either way, and appending it to the file would write it twice.
pub const WAL_RECORD_BYTES_MAX: u64 = 256 * 1024;

/// Once the write-ahead file holds this many bytes, the next write checkpoints: redb is made
/// durable and the file starts again. It bounds the file, the replay at the next open, and the
/// pages redb keeps from reuse until its next durable commit.
pub const WAL_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;

/// The largest write-ahead file a store writes: records up to the checkpoint size, then one more
/// of at most [`WAL_RECORD_BYTES_MAX`]. Open refuses a larger file rather than read it whole.
pub const WAL_FILE_BYTES_MAX: u64 =
    wal::HEADER_BYTES + WAL_CHECKPOINT_BYTES + wal::RECORD_HEADER_BYTES + WAL_RECORD_BYTES_MAX;

use ordo_node::storage::record::{
    decode_bytes, decode_entry, decode_value, encode_bytes, encode_value, entry_facts, entry_term,
};
use ordo_node::storage::rules::{AgeCheck, Extent, plan_compaction, plan_write};
use ordo_node::storage::{
    ApplyProgress, Install, LogRead, LogState, LogStore, Result as StoreResult, Retention,
    STORAGE_FORMAT_VERSION, SnapshotState, StorageError, StoreState, StoredTables, WriteBatch,
    missing,
};

/// The names in the redb file: its tables and the keys of the Raft table. They are part of the
/// storage format (`STORAGE_FORMAT_VERSION`); `coordinator/tests/golden.rs` pins them.
pub mod layout {
    /// The format version's table. Its name and types are fixed forever, so that any build can
    /// read the version of any file.
    pub const META_TABLE: &str = "ordo_meta";
    pub const FORMAT_KEY: &str = "format_version";
    /// First log index of a group → the group's entry records.
    pub const LOG_TABLE: &str = "ordo_log";
    /// Named records: hard state, commit and apply progress, last seq, last purged entry.
    pub const RAFT_TABLE: &str = "ordo_raft";
    /// First seq of a group → log indexes of the entries that carried its batches.
    pub const BATCHES_TABLE: &str = "ordo_batches";
    /// Batch id → encoded outcome.
    pub const REGISTRY_TABLE: &str = "ordo_registry";
    pub const COORD_TABLE: &str = "ordo_coord";
    /// Topic → offset.
    pub const OFFSETS_TABLE: &str = "ordo_topic_offsets";
    pub const HARD_STATE_KEY: &str = "hard_state";
    pub const COMMITTED_KEY: &str = "committed";
    pub const APPLIED_KEY: &str = "applied";
    pub const LAST_SEQ_KEY: &str = "last_seq";
    pub const PURGED_KEY: &str = "purged";
    pub const LOG_TIME_KEY: &str = "log_time_ms";
    pub const REGISTRY_FLOOR_KEY: &str = "registry_floor_ms";
    /// The cluster this store belongs to (set once, at the first start or by a restore).
    pub const CLUSTER_ID_KEY: &str = "cluster_id";
    /// The consensus engine the log belongs to, by name ("raft", "multi-paxos"): set once, at
    /// the first start. Absent in stores written before engines could be chosen: Raft.
    pub const ENGINE_KEY: &str = "consensus_engine";
    /// This store's incarnation: drawn once, when the store first starts a node. A node that
    /// lost its data comes back with another one, and its peers refuse it.
    pub const INCARNATION_KEY: &str = "incarnation";
    /// In the format table: the id that ties the write-ahead file to this redb file.
    pub const WAL_STORE_KEY: &str = "wal_store_id";
    /// In the format table: the write-ahead generation whose records redb does not yet hold.
    pub const WAL_GENERATION_KEY: &str = "wal_generation";
    /// In the format table: how many records of that generation redb holds (without an fsync:
    /// what a close or a crash inside a checkpoint made durable).
    pub const WAL_RECORDS_KEY: &str = "wal_records";

    /// The records consecutive entries are stored as in the log table: `(key, value)` each.
    pub fn log_group_records(entries: &[ordo_common::Entry]) -> Vec<(u64, Vec<u8>)> {
        super::groups::encode_log_groups(entries)
            .into_iter()
            .map(|(first, value, _)| (first, value))
            .collect()
    }

    /// The record consecutive seqs `(seq, log index)` are stored as in the seq table.
    pub fn seq_group_record(seqs: &[(u64, ordo_common::LogIndex)]) -> (u64, Vec<u8>) {
        super::groups::encode_seq_group(seqs)
    }

    /// The header of a write-ahead file.
    pub fn wal_header(store_id: u64, generation: u64) -> Vec<u8> {
        super::wal::header(store_id, generation)
    }

    /// Where the valid records of a write-ahead file (its bytes) end.
    pub fn wal_records_end(file: &[u8]) -> u64 {
        super::wal::records_end(file)
    }

    /// A write-ahead record of `batch` in a file of `generation`.
    pub fn wal_record(generation: u64, batch: &super::WriteBatch) -> Vec<u8> {
        super::wal::record(generation, &super::encode_wal_batch(batch))
    }
}

use layout::{
    APPLIED_KEY, CLUSTER_ID_KEY, COMMITTED_KEY, ENGINE_KEY, FORMAT_KEY, HARD_STATE_KEY,
    INCARNATION_KEY, LAST_SEQ_KEY, LOG_TIME_KEY, PURGED_KEY, REGISTRY_FLOOR_KEY,
    WAL_GENERATION_KEY, WAL_RECORDS_KEY, WAL_STORE_KEY,
};

const META: TableDefinition<&str, u64> = TableDefinition::new(layout::META_TABLE);
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new(layout::LOG_TABLE);
const RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new(layout::RAFT_TABLE);
const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new(layout::BATCHES_TABLE);
const REGISTRY: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new(layout::REGISTRY_TABLE);
const COORD: TableDefinition<&[u8], &[u8]> = TableDefinition::new(layout::COORD_TABLE);
const OFFSETS: TableDefinition<&str, &[u8]> = TableDefinition::new(layout::OFFSETS_TABLE);

/// redb's page cache, by default. The log is read mostly at its tail, so a modest cache serves
/// followers and the state machine; raise it for nodes that serve long catch-ups.
pub const CACHE_BYTES_DEFAULT: usize = 256 * 1024 * 1024;

/// Entries checked on open by default: the most recent ones, which are the ones a crash could
/// have been writing.
pub const VERIFY_TAIL_ENTRIES_DEFAULT: u64 = 1024;

/// How much of the log [`RedbLogStore::open`] checks before it accepts the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOnOpen {
    /// The last `entries` entries, plus the durable state and the log's extent. Cheap, and
    /// covers what a crash could have been writing; older entries are checked when read.
    Tail { entries: u64 },
    /// Every entry. Reads the whole log: use it after a disk problem or before trusting a node
    /// to serve a long catch-up.
    All,
}

impl Default for VerifyOnOpen {
    fn default() -> Self {
        Self::Tail {
            entries: VERIFY_TAIL_ENTRIES_DEFAULT,
        }
    }
}

/// How to open a [`RedbLogStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedbOptions {
    pub retention: Retention,
    pub verify_on_open: VerifyOnOpen,
    pub cache_bytes: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            verify_on_open: VerifyOnOpen::default(),
            cache_bytes: CACHE_BYTES_DEFAULT,
        }
    }
}

/// The redb [`LogStore`]. Holds the file open (exclusively) until dropped.
pub struct RedbLogStore {
    slot: Arc<DbSlot>,
    reader: RedbLogReader,
    opener: Opener,
    options: RedbOptions,
    /// The durable state, as of the last successful write.
    state: StoreState,
    /// Bytes of entry records in the log; counted only when retention limits bytes.
    retained_bytes: Option<u64>,
    /// When retention last checked entries' age (not durable: a restart checks again).
    age_check: std::cell::Cell<AgeCheck>,
    /// Why writes are refused, after a write failed.
    halted: Option<Halt>,
    /// Released when a write finds the disk full.
    ballast: Option<Ballast>,
    /// The write-ahead file (stores opened on a file; one on a test backend has none and makes
    /// every write durable in redb).
    wal: Option<Wal>,
    /// Fsyncs the write-ahead file's records while redb commits them (with the file).
    syncer: Option<Syncer>,
    /// Starts writing redb's pages out between checkpoints (stores opened on a file).
    _writeback: Option<Writeback>,
}

/// Why a store stopped taking writes.
struct Halt {
    reason: String,
    /// The file system was full: [`LogStore::recover`] may reopen the store.
    no_space: bool,
}

/// A read handle on a [`RedbLogStore`], usable from any thread while the store writes. Each
/// read is one redb read transaction, so it sees one committed state: that of a write that is
/// durable or is becoming so (its write-ahead fsync may still run; the node acts on a write only
/// once `write` returns, and readers serve what was committed by a majority, or entries a leader
/// may send before its own fsync).
#[derive(Clone)]
pub struct RedbLogReader {
    slot: Arc<DbSlot>,
}

/// The open database, shared by the store and its readers. A read holds the lock for its
/// transaction; [`LogStore::recover`] takes it exclusively to close and reopen the file, so
/// that readers wait for the reopened database instead of failing.
type DbSlot = RwLock<Db>;

/// How to open the file again.
#[derive(Clone)]
enum Opener {
    Path(PathBuf),
    Backend(BackendOpener),
}

/// Opens the database on a fresh backend (see [`RedbLogStore::open_with_backend`]).
type BackendOpener =
    Arc<dyn Fn(&Builder) -> std::result::Result<Database, redb::DatabaseError> + Send + Sync>;

/// The open database, or none while a recovery has closed it and could not reopen it. redb
/// commits when it closes, and may panic doing so on a damaged file; closing it here contains
/// that panic, because a drop must not panic (the store may be dropped by an error path that
/// is reporting the damage).
struct Db(Option<Database>);

impl Db {
    fn get(&self) -> Result<&Database> {
        self.0.as_ref().ok_or_else(|| {
            StorageError::NoSpace {
                detail: "the store was closed to recover from a full disk and could not be \
                         reopened yet"
                    .into(),
            }
            .into()
        })
    }

    fn close(&mut self) {
        if let Some(db) = self.0.take() {
            // Nothing can act on a failed close here: the next open recovers the file.
            let _ = catch_unwind(AssertUnwindSafe(move || db.close()));
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_slot(slot: &DbSlot) -> RwLockReadGuard<'_, Db> {
    // A panic while the lock is held is contained by `shielded` and leaves the database as
    // redb left it, which the next call checks; the guard is still usable.
    slot.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RedbLogStore {
    /// Opens the store in the file at `path`, creating it if it does not exist.
    ///
    /// Refuses a file written in another format ([`StorageError::IncompatibleFormat`]), a file
    /// another process holds ([`StorageError::AlreadyOpen`]) and a log that fails the checks of
    /// `options.verify_on_open` (a corruption error whose message tells the operator what to do).
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> StoreResult<Self> {
        let opener = Opener::Path(path.as_ref().to_path_buf());
        Ok(shielded(|| Self::open_unshielded(opener, options))?)
    }

    /// Opens the store on backends that `factory` makes (one per open, and one per reopen
    /// after a full disk). For tests that inject I/O failures; [`open`](Self::open) is the file.
    pub fn open_with_backend<B, F>(factory: F, options: RedbOptions) -> StoreResult<Self>
    where
        B: StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + Sync + 'static,
    {
        let opener: BackendOpener = Arc::new(move |builder: &Builder| {
            builder.create_with_backend(factory().map_err(redb::StorageError::from)?)
        });
        Ok(shielded(|| {
            Self::open_unshielded(Opener::Backend(opener), options)
        })?)
    }

    /// The cluster this store belongs to, if it was ever set.
    pub fn cluster_id(&self) -> StoreResult<Option<ClusterId>> {
        Ok(self
            .reader
            .read(|txn| raft_record(&txn.open_table(RAFT)?, CLUSTER_ID_KEY))?)
    }

    /// Records the cluster this store belongs to. A store belongs to one cluster for life:
    /// setting another identity is refused.
    pub fn set_cluster_id(&mut self, cluster: ClusterId) -> StoreResult<()> {
        match self.cluster_id()? {
            Some(stored) if stored == cluster => return Ok(()),
            Some(stored) => {
                return Err(StorageError::invalid_write(format!(
                    "this store belongs to cluster {stored}, not {cluster}"
                )));
            }
            None => {}
        }
        self.put_raft_record(CLUSTER_ID_KEY, &cluster)
    }

    /// The consensus engine this store's log belongs to, if one was ever recorded (see
    /// [`layout::ENGINE_KEY`]).
    pub fn engine(&self) -> StoreResult<Option<EngineKind>> {
        Ok(self
            .reader
            .read(|txn| engine_record(&txn.open_table(RAFT)?))?)
    }

    /// Records the consensus engine this store's log belongs to. A log belongs to one engine
    /// for life: recording another is refused.
    pub fn set_engine(&mut self, engine: EngineKind) -> StoreResult<()> {
        match self.engine()? {
            Some(stored) if stored == engine => return Ok(()),
            Some(stored) => {
                return Err(StorageError::invalid_write(format!(
                    "this log was written by the {stored} engine, not {engine}"
                )));
            }
            None => {}
        }
        self.put_raft_record(ENGINE_KEY, &engine.name().to_string())?;
        self.state.engine = engine;
        Ok(())
    }

    /// This store's incarnation, if one was drawn (see [`layout::INCARNATION_KEY`]).
    pub fn incarnation(&self) -> StoreResult<Option<u64>> {
        Ok(self
            .reader
            .read(|txn| raft_record(&txn.open_table(RAFT)?, INCARNATION_KEY))?)
    }

    /// This store's incarnation, drawn from `draw` and stored durably the first time.
    pub fn incarnation_or_draw(&mut self, draw: impl FnOnce() -> u64) -> StoreResult<u64> {
        if let Some(incarnation) = self.incarnation()? {
            return Ok(incarnation);
        }
        let incarnation = draw();
        self.put_raft_record(INCARNATION_KEY, &incarnation)?;
        Ok(incarnation)
    }

    /// Writes one record of the raft table, durably, in a transaction of its own.
    fn put_raft_record<T: serde::Serialize>(&mut self, key: &str, value: &T) -> StoreResult<()> {
        self.refuse_if_halted()?;
        let record = encode_value(key.as_bytes(), value);
        self.durable_commit(|txn| {
            txn.open_table(RAFT)?.insert(key, record.as_slice())?;
            Ok(())
        })
    }

    fn refuse_if_halted(&self) -> StoreResult<()> {
        match &self.halted {
            Some(halt) => Err(StorageError::Halted {
                reason: halt.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Commits what `f` writes durably. A durable commit also makes durable every write redb
    /// holds without an fsync, so it is a checkpoint: it moves redb's write-ahead generation on
    /// and then starts the write-ahead file again.
    fn durable_commit(
        &mut self,
        f: impl FnOnce(&WriteTransaction) -> Result<()>,
    ) -> StoreResult<()> {
        let generation = self.next_wal_generation();
        let committed = shielded(|| {
            let db = read_slot(&self.slot);
            let mut txn = db.get()?.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            f(&txn)?;
            if let Some(generation) = generation {
                let mut meta = txn.open_table(META)?;
                meta.insert(WAL_GENERATION_KEY, generation)?;
                meta.insert(WAL_RECORDS_KEY, 0)?;
            }
            txn.commit()?;
            Ok(())
        });
        if let Err(Fault(error)) = committed {
            return Err(self.halt(error));
        }
        self.restart_wal(generation)
    }

    /// The generation a durable commit moves redb to: the next one if the write-ahead file
    /// holds records (which the commit makes durable in redb), none if it holds nothing.
    fn next_wal_generation(&self) -> Option<u64> {
        self.wal
            .as_ref()
            .filter(|wal| wal.len() > wal::HEADER_BYTES)
            .map(|wal| wal.generation() + 1)
    }

    /// Starts the write-ahead file again after a durable commit that moved its generation.
    fn restart_wal(&mut self, moved: Option<u64>) -> StoreResult<()> {
        let (Some(wal), Some(_)) = (self.wal.as_mut(), moved) else {
            return Ok(());
        };
        if let Err(error) = wal.restart() {
            return Err(self.halt(error));
        }
        Ok(())
    }

    /// Stops writes after `error` and returns it. A failed commit or append leaves the durable
    /// state unknown: only a reopen, which recovers and checks it, may write again.
    fn halt(&mut self, error: StorageError) -> StorageError {
        self.halted = Some(Halt {
            reason: error.to_string(),
            no_space: matches!(error, StorageError::NoSpace { .. }),
        });
        error
    }

    /// Whether writing `batch` might let retention delete entries: then it is committed
    /// durably, where retention runs. Cheap and on the safe side: it reads no record.
    fn retention_may_apply(&self, batch: &WriteBatch, after: &StoreState) -> bool {
        let retention = &self.options.retention;
        if *retention == Retention::default() {
            return false;
        }
        let Some(applied) = after.progress.applied else {
            return false;
        };
        let (first, last) = (after.log.first_index, after.log.last_index());
        let first_max = (applied.index.min(last) + 1).saturating_sub(retention.trailing_entries);
        if last < first || first_max <= first {
            return false;
        }
        let over_count = retention
            .entries_max
            .is_some_and(|max| last + 1 - first > u64::from(max));
        let added: u64 = batch.entries.iter().map(|e| e.payload_bytes() + 64).sum();
        let over_bytes = match (retention.bytes_max, self.retained_bytes) {
            (Some(max), Some(retained)) => retained + added > u64::from(max),
            _ => false,
        };
        let age_due = self.age_check.get().due(retention, after.log_time_ms);
        over_count || over_bytes || age_due
    }

    /// Makes everything redb holds durable and starts the write-ahead file again.
    fn checkpoint(&mut self) -> StoreResult<()> {
        let started = std::time::Instant::now();
        self.durable_commit(|_| Ok(()))?;
        metrics::histogram!("ordo_store_checkpoint_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Opens the write-ahead file that belongs to the redb file at `path` (making one for a
    /// store that has none yet) and replays its records into redb, then checkpoints if there
    /// were any.
    fn attach_wal(&mut self, path: &Path) -> StoreResult<()> {
        let wal_path = wal::path_for(path);
        let (store_id, generation) = self.reader.read(|txn| {
            let meta = txn.open_table(META)?;
            let store_id = meta.get(WAL_STORE_KEY)?.map(|value| value.value());
            let generation = meta.get(WAL_GENERATION_KEY)?.map(|value| value.value());
            Ok((store_id, generation))
        })?;
        let refuse = |detail: String| StorageError::CorruptFile {
            detail: format!("{detail} ({})", wal_path.display()),
        };
        let (wal, records) = match (
            Wal::open(&wal_path, WAL_FILE_BYTES_MAX)?,
            store_id,
            generation,
        ) {
            (None, None, _) => {
                let store_id = draw_store_id(path);
                self.durable_commit(|txn| {
                    let mut meta = txn.open_table(META)?;
                    meta.insert(WAL_STORE_KEY, store_id)?;
                    meta.insert(WAL_GENERATION_KEY, 1)?;
                    Ok(())
                })?;
                (Wal::create(&wal_path, store_id, 1)?, Vec::new())
            }
            (None, Some(_), _) => {
                return Err(refuse(
                    "the write-ahead file of this store is missing: writes acknowledged since \
                     its last checkpoint may be lost; restore the node's data from a peer"
                        .into(),
                ));
            }
            (Some(_), None, _) => {
                return Err(refuse(
                    "a write-ahead file lies beside a store that never had one: it belongs to \
                     another store; move it away"
                        .into(),
                ));
            }
            (Some(opened), Some(store_id), generation) => {
                let generation = generation.unwrap_or(1);
                if opened.wal.store_id() != store_id {
                    return Err(refuse(format!(
                        "the write-ahead file belongs to store {:016x}, not to this store \
                         {store_id:016x}",
                        opened.wal.store_id()
                    )));
                }
                if opened.wal.generation() == generation {
                    (opened.wal, opened.records)
                } else if opened.wal.generation() + 1 == generation {
                    // A checkpoint made redb durable and stopped before it started the file
                    // again: redb holds every record of it.
                    (Wal::create(&wal_path, store_id, generation)?, Vec::new())
                } else {
                    return Err(refuse(format!(
                        "the write-ahead file is of generation {}, the store expects {generation}",
                        opened.wal.generation()
                    )));
                }
            }
        };
        // Records redb already holds: a close (which redb makes durable) or a checkpoint that
        // stopped before it started the file again.
        let held = self.reader.read(|txn| {
            Ok(txn
                .open_table(META)?
                .get(WAL_RECORDS_KEY)?
                .map_or(0, |value| value.value()))
        })?;
        if held > records.len() as u64 {
            return Err(refuse(format!(
                "the store holds {held} records of the write-ahead file, which has {}",
                records.len()
            )));
        }
        let syncer = Syncer::start().map_err(|error| {
            StorageError::Io(std::io::Error::new(
                error.kind(),
                format!("cannot start the write-ahead file's sync thread: {error}"),
            ))
        })?;
        // The file is attached only after its records are replayed: a record that does not
        // replay fails the open with the file untouched (a store without one does not
        // checkpoint as it drops), so the next open meets the same records again.
        for (number, record) in records.iter().enumerate().skip(held as usize) {
            let batch = decode_wal_batch(record).map_err(|detail| {
                refuse(format!("record {number} of the write-ahead file: {detail}"))
            })?;
            let records = number as u64 + 1;
            self.apply(&batch, Commit::Behind { records })
                .map_err(|error| {
                    refuse(format!(
                        "record {number} of the write-ahead file does not apply: {error}"
                    ))
                })?;
        }
        self.wal = Some(wal);
        self.syncer = Some(syncer);
        if records.is_empty() {
            return Ok(());
        }
        tracing::info!(
            replayed = records.len() as u64 - held,
            already_held = held,
            "replayed the write-ahead file into the store"
        );
        // Also when redb held every record already (a close makes its commits durable): a
        // record whose fsync failed may be in the page cache only, and must not stay in the
        // middle of a file that later records follow.
        self.checkpoint()
    }

    /// Checks `batch` against the state and commits it; updates the state.
    fn apply(&mut self, batch: &WriteBatch, mode: Commit) -> StoreResult<()> {
        let after = self.plan(batch)?;
        self.commit_planned(batch, after, mode)
    }

    /// The state after `batch`, if the rules allow it.
    fn plan(&self, batch: &WriteBatch) -> StoreResult<StoreState> {
        let reader = &self.reader;
        plan_write(&self.state, batch, &mut |index| reader.term_at(index))
    }

    /// Commits a planned `batch`; updates the state, or halts on a failure.
    fn commit_planned(
        &mut self,
        batch: &WriteBatch,
        after: StoreState,
        mode: Commit,
    ) -> StoreResult<()> {
        match shielded(|| self.commit(batch, after, mode)) {
            Ok((state, retained_bytes)) => {
                self.state = state;
                self.retained_bytes = retained_bytes;
                Ok(())
            }
            Err(Fault(error)) => Err(self.halt(error)),
        }
    }

    /// The ballast this store releases when a write finds the disk full.
    pub fn set_ballast(&mut self, ballast: Ballast) {
        self.ballast = Some(ballast);
    }

    fn open_unshielded(opener: Opener, options: RedbOptions) -> Result<Self> {
        let db = open_db(&opener, options)?;
        let (state, retained_bytes) = load_checked(&db, options)?;
        let slot = Arc::new(RwLock::new(Db(Some(db))));
        let mut store = Self {
            reader: RedbLogReader { slot: slot.clone() },
            slot,
            opener,
            options,
            state,
            retained_bytes,
            age_check: std::cell::Cell::new(AgeCheck::default()),
            halted: None,
            ballast: None,
            wal: None,
            syncer: None,
            _writeback: None,
        };
        if let Opener::Path(path) = &store.opener {
            let path = path.clone();
            store.attach_wal(&path)?;
            store._writeback = Some(Writeback::start(&path));
        }
        Ok(store)
    }

    /// The write-ahead file that goes with the redb file at `path`.
    pub fn wal_path(path: &Path) -> PathBuf {
        wal::path_for(path)
    }

    /// Writes `batch` in one transaction and returns the state after it. A durable commit also
    /// moves the write-ahead generation on (the caller then starts the file again) and applies
    /// retention; a commit behind a write-ahead record counts the record, so that a replay
    /// skips what redb already holds.
    fn commit(
        &self,
        batch: &WriteBatch,
        mut after: StoreState,
        mode: Commit,
    ) -> Result<(StoreState, Option<u64>)> {
        let db = read_slot(&self.slot);
        let mut txn = db.get()?.begin_write()?;
        match mode {
            Commit::Durable => {
                txn.set_durability(Durability::Immediate)?;
                if let Some(generation) = self.next_wal_generation() {
                    let mut meta = txn.open_table(META)?;
                    meta.insert(WAL_GENERATION_KEY, generation)?;
                    meta.insert(WAL_RECORDS_KEY, 0)?;
                }
            }
            Commit::Behind { records } => {
                txn.set_durability(Durability::None)?;
                txn.open_table(META)?.insert(WAL_RECORDS_KEY, records)?;
            }
        }
        if let Some(install) = &batch.install {
            let retained_bytes = install_snapshot(&txn, install, &after, self.retained_bytes)?;
            txn.commit()?;
            return Ok((after, retained_bytes));
        }
        let mut retained_bytes = self.retained_bytes;
        write_entries(
            &txn,
            batch,
            self.state.log.last_index(),
            &mut retained_bytes,
        )?;
        write_raft_state(&txn, batch, &self.state)?;
        write_tables(&txn, batch)?;
        let retention = &self.options.retention;
        let compaction = if *retention == Retention::default() || mode != Commit::Durable {
            None
        } else {
            let mut age_check = self.age_check.get();
            let check_age = age_check.due(retention, after.log_time_ms);
            self.age_check.set(age_check);
            let log = txn.open_table(LOG)?;
            let mut facts = groups::records_from(&log, after.log.first_index, entry_facts)?
                .map(|facts| facts.map_err(StorageError::from));
            plan_compaction(&after, retained_bytes, retention, check_age, &mut facts)?
        };
        if let Some(compaction) = compaction {
            let purged = compact(&txn, after.log.first_index, compaction.first_index)?;
            after.log.first_index = compaction.first_index;
            after.log.purged = Some(purged);
            retained_bytes = compaction.retained_bytes;
        }
        txn.commit()?;
        Ok((after, retained_bytes))
    }
}

/// How [`RedbLogStore::commit`] commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    /// With an fsync; retention applies.
    Durable,
    /// Without one, behind the write-ahead record that makes it durable: the `records`-th of the
    /// file's generation. Retention waits for a durable commit, so that a replay redoes exactly
    /// what the record says.
    Behind { records: u64 },
}

/// Makes a snapshot the store's state in `txn`: the log through it goes (all of it unless the
/// suffix is kept), the tables are the snapshot's, progress and the named records move to it.
/// Returns the retained record bytes after it (when counted).
fn install_snapshot(
    txn: &WriteTransaction,
    install: &Install,
    after: &StoreState,
    retained_bytes: Option<u64>,
) -> Result<Option<u64>> {
    let last = install.last_included;
    {
        let mut log = txn.open_table(LOG)?;
        if install.keep_suffix {
            groups::drop_below(&mut log, last.index + 1)?;
        } else {
            log.retain(|_, _| false)?;
        }
    }
    let retained_bytes = match retained_bytes {
        Some(_) => Some(record_bytes(&txn.open_table(LOG)?)?),
        None => None,
    };
    txn.open_table(BATCHES)?.retain(|_, _| false)?;
    {
        let mut registry = txn.open_table(REGISTRY)?;
        registry.retain(|_, _| false)?;
        for (batch_id, record) in &install.state.registry {
            let sealed = encode_bytes(batch_id, record);
            registry.insert(batch_id, sealed.as_slice())?;
        }
    }
    {
        let mut coord = txn.open_table(COORD)?;
        coord.retain(|_, _| false)?;
        for (key, row) in &install.state.coord {
            let sealed = encode_bytes(key, row);
            coord.insert(key.as_slice(), sealed.as_slice())?;
        }
    }
    {
        let mut offsets = txn.open_table(OFFSETS)?;
        offsets.retain(|_, _| false)?;
        for (topic, offset) in &install.state.offsets {
            let record = encode_value(topic.as_bytes(), offset);
            offsets.insert(topic.as_str(), record.as_slice())?;
        }
    }
    let mut raft = txn.open_table(RAFT)?;
    let mut put = |key: &str, record: Vec<u8>| raft.insert(key, record.as_slice()).map(|_| ());
    put(APPLIED_KEY, encode_value(APPLIED_KEY.as_bytes(), &last))?;
    put(
        COMMITTED_KEY,
        encode_value(COMMITTED_KEY.as_bytes(), &after.progress.committed),
    )?;
    put(PURGED_KEY, encode_value(PURGED_KEY.as_bytes(), &last))?;
    put(
        LAST_SEQ_KEY,
        encode_value(LAST_SEQ_KEY.as_bytes(), &install.state.last_seq),
    )?;
    put(
        LOG_TIME_KEY,
        encode_value(LOG_TIME_KEY.as_bytes(), &install.state.log_time_ms),
    )?;
    put(
        REGISTRY_FLOOR_KEY,
        encode_value(
            REGISTRY_FLOOR_KEY.as_bytes(),
            &install.state.registry_floor_ms,
        ),
    )?;
    Ok(retained_bytes)
}

impl LogStore for RedbLogStore {
    type Reader = RedbLogReader;

    fn write(&mut self, batch: &WriteBatch) -> StoreResult<LogState> {
        self.refuse_if_halted()?;
        let after = self.plan(batch)?;
        // The estimate spares encoding a write that is surely too big; the record's own length
        // decides, so that the file never passes `WAL_FILE_BYTES_MAX`.
        let record = (self.wal.is_some()
            && batch.install.is_none()
            && batch.queued_bytes() <= WAL_RECORD_BYTES_MAX
            && !self.retention_may_apply(batch, &after))
        .then(|| encode_wal_batch(batch))
        .filter(|record| record.len() as u64 <= WAL_RECORD_BYTES_MAX);
        let (Some(wal), Some(record)) = (self.wal.as_mut(), record) else {
            let moved = self.next_wal_generation();
            self.commit_planned(batch, after, Commit::Durable)?;
            self.restart_wal(moved)?;
            return Ok(self.state.log);
        };
        // The record first; its fsync runs on the sync thread while redb commits the batch
        // without one, counting the record, and the write is durable once both are done. redb's
        // readers may see the batch a moment before the fsync ends, never the node's logic, which
        // hears of it when `write` returns. If redb fails, the record is cut off again, so that a
        // write reported as failed is never replayed.
        let (length, records) = (wal.len(), wal.records());
        if let Err(error) = wal.write(&record) {
            return Err(self.halt(error));
        }
        let file = wal.file();
        let mut syncer = self.syncer.take();
        let commit = || {
            let behind = Commit::Behind {
                records: records + 1,
            };
            self.commit_planned(batch, after, behind)
        };
        let (committed, synced) = match syncer.as_mut() {
            Some(syncer) => syncer.overlapped(file, commit),
            None => (commit(), file.sync_data()),
        };
        self.syncer = syncer;
        if let Err(error) = committed {
            if let Some(Err(cut)) = self.wal.as_mut().map(|wal| wal.cut(length, records)) {
                self.halted = Some(Halt {
                    reason: format!(
                        "{error}; then could not take its write-ahead record back: {cut}"
                    ),
                    no_space: false,
                });
            }
            return Err(error);
        }
        if let (Err(error), Some(wal)) = (synced, self.wal.as_ref()) {
            // redb holds the batch, without an fsync, and the record's bytes are written but may
            // not be on the disk. The record stays (cutting it would leave redb ahead of the
            // file); a checkpoint makes redb durable, and with it the batch. If that fails too,
            // the store halts, and a reopen finds the batch or not, as after a crash.
            let error = wal.sync_error(error);
            tracing::warn!(%error, "the write-ahead fsync failed; checkpointing the store instead");
            if let Err(failed) = self.checkpoint() {
                // Not a write that did not happen (what a recovery from a full disk assumes):
                // the batch may be durable or not, which only a reopen can tell.
                self.halted = Some(Halt {
                    reason: format!("{error}; then the checkpoint failed too: {failed}"),
                    no_space: false,
                });
                return Err(failed);
            }
            return Ok(self.state.log);
        }
        if self
            .wal
            .as_ref()
            .is_some_and(|wal| wal.len() >= WAL_CHECKPOINT_BYTES)
        {
            self.checkpoint()?;
        }
        Ok(self.state.log)
    }

    fn reader(&self) -> RedbLogReader {
        self.reader.clone()
    }

    fn recover(&mut self) -> StoreResult<()> {
        match &self.halted {
            None => return Ok(()),
            Some(halt) if !halt.no_space => {
                return Err(StorageError::Halted {
                    reason: halt.reason.clone(),
                });
            }
            Some(_) => {}
        }
        if let Some(ballast) = &self.ballast
            && ballast.release()
        {
            tracing::warn!(
                path = %ballast.path.display(),
                bytes = ballast.bytes,
                "the disk is full: released the emergency ballast to finish accepted writes"
            );
        }
        let expected = self.state.clone();
        {
            let mut db = self
                .slot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            db.close();
            let (reopened, state, retained_bytes) = shielded(|| {
                let reopened = open_db(&self.opener, self.options)?;
                let (state, retained_bytes) = load_checked(&reopened, self.options)?;
                Ok((reopened, state, retained_bytes))
            })?;
            *db = Db(Some(reopened));
            self.state = state;
            self.retained_bytes = retained_bytes;
        }
        // What redb did not make durable comes back from the write-ahead file.
        if let Opener::Path(path) = &self.opener {
            let path = path.clone();
            self.wal = None;
            self.halted = None;
            if let Err(error) = self.attach_wal(&path) {
                return Err(self.halt(error));
            }
        }
        if self.state != expected {
            // The failed write reached the disk after all (the error came after its commit
            // or record was written): the caller's idea of what is durable is wrong. Only a
            // restart, which starts from what is on disk, is safe.
            self.halted = Some(Halt {
                reason: "a write reported as failed turned out to be durable".into(),
                no_space: false,
            });
            return Err(StorageError::Halted {
                reason: "a write reported as failed turned out to be durable; restart the node"
                    .into(),
            });
        }
        self.halted = None;
        Ok(())
    }
}

impl Drop for RedbLogStore {
    fn drop(&mut self) {
        // A store closed in good order leaves everything in redb and an empty write-ahead file,
        // so that the redb file alone shows every write.
        let pending = self
            .wal
            .as_ref()
            .is_some_and(|wal| wal.len() > wal::HEADER_BYTES);
        if pending
            && self.halted.is_none()
            && let Err(error) = self.checkpoint()
        {
            tracing::warn!(%error, "could not checkpoint the store as it closed");
        }
    }
}

/// An id for a new store's write-ahead file: only needs to differ between stores.
fn draw_store_id(path: &Path) -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((path, nanos, std::process::id()))
}

/// A write as the write-ahead file keeps it (never an install: those go to redb directly).
#[derive(serde::Serialize)]
struct WalBatchRef<'a> {
    hard_state: &'a Option<HardState>,
    entries: &'a [Entry],
    committed: &'a Option<LogIndex>,
    state: &'a Option<ordo_node::storage::StateUpdate>,
}

#[derive(serde::Deserialize)]
struct WalBatch {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    committed: Option<LogIndex>,
    state: Option<ordo_node::storage::StateUpdate>,
}

fn encode_wal_batch(batch: &WriteBatch) -> Vec<u8> {
    ordo_common::codec::encode(&WalBatchRef {
        hard_state: &batch.hard_state,
        entries: &batch.entries,
        committed: &batch.committed,
        state: &batch.state,
    })
}

fn decode_wal_batch(record: &[u8]) -> std::result::Result<WriteBatch, String> {
    let batch: WalBatch = ordo_common::codec::decode(record, record.len() as u64)
        .map_err(|error| error.to_string())?;
    Ok(WriteBatch {
        hard_state: batch.hard_state,
        entries: batch.entries,
        committed: batch.committed,
        state: batch.state,
        install: None,
    })
}

/// Opens the database and checks or sets its format.
fn open_db(opener: &Opener, options: RedbOptions) -> Result<Database> {
    let mut builder = Builder::new();
    builder.set_cache_size(options.cache_bytes);
    let db = match opener {
        Opener::Path(path) => builder.create(path)?,
        Opener::Backend(open) => open(&builder)?,
    };
    prepare_tables(&db)?;
    Ok(db)
}

/// The durable state, checked as `options.verify_on_open` asks, and the retained bytes.
fn load_checked(db: &Database, options: RedbOptions) -> Result<(StoreState, Option<u64>)> {
    let txn = db.begin_read()?;
    let state = load_state(&txn)?;
    // A read the state says must work but that reports the log shorter or compacted is damage.
    verify(&txn, &state, options.verify_on_open).map_err(|Fault(error)| match error {
        error if error.is_fatal() => Fault(error),
        error => Fault(StorageError::corrupt_state("log extent", error.to_string())),
    })?;
    let retained_bytes = match options.retention.bytes_max {
        Some(_) => Some(count_log_bytes(&txn)?),
        None => None,
    };
    Ok((state, retained_bytes))
}

impl LogRead for RedbLogStore {
    fn store_state(&self) -> StoreResult<StoreState> {
        Ok(self.state.clone())
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64) -> StoreResult<Vec<Entry>> {
        self.reader.entries(lo, hi, bytes_max)
    }

    fn term_at(&self, index: LogIndex) -> StoreResult<Term> {
        self.reader.term_at(index)
    }

    fn batch_index(&self, seq: u64) -> StoreResult<Option<LogIndex>> {
        self.reader.batch_index(seq)
    }

    fn batches_from(&self, from: u64, to: u64, bytes_max: u64) -> StoreResult<Vec<(u64, Entry)>> {
        self.reader.batches_from(from, to, bytes_max)
    }

    fn outcome(&self, batch_id: &[u8; 16]) -> StoreResult<Option<Vec<u8>>> {
        self.reader.outcome(batch_id)
    }

    fn topic_offset(&self, topic: &str) -> StoreResult<u64> {
        self.reader.topic_offset(topic)
    }

    fn tables(&self) -> StoreResult<StoredTables> {
        self.reader.tables()
    }

    fn snapshot(&self) -> StoreResult<SnapshotState> {
        self.reader.snapshot()
    }

    fn first_seq(&self) -> StoreResult<u64> {
        self.reader.first_seq()
    }
}

impl RedbLogReader {
    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        shielded(|| {
            let db = read_slot(&self.slot);
            let txn = db.get()?.begin_read()?;
            f(&txn)
        })
    }
}

impl LogRead for RedbLogReader {
    fn store_state(&self) -> StoreResult<StoreState> {
        Ok(self.read(load_state)?)
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64) -> StoreResult<Vec<Entry>> {
        Ok(self.read(|txn| {
            let log = txn.open_table(LOG)?;
            load_extent(txn, &log)?.check_range(lo, hi)?;
            let mut entries = Vec::new();
            let mut bytes = 0;
            let mut expected = lo;
            if lo < hi {
                for entry in groups::records_from(&log, lo, decode_entry)? {
                    let entry = entry?;
                    if entry.index != expected {
                        return Err(missing(expected).into());
                    }
                    bytes += entry.payload_bytes();
                    if bytes > bytes_max && !entries.is_empty() {
                        return Ok(entries);
                    }
                    entries.push(entry);
                    expected += 1;
                    if expected == hi {
                        break;
                    }
                }
            }
            if expected != hi {
                return Err(missing(expected).into());
            }
            Ok(entries)
        })?)
    }

    fn term_at(&self, index: LogIndex) -> StoreResult<Term> {
        Ok(self.read(|txn| {
            let log = txn.open_table(LOG)?;
            term_in(&log, &load_extent(txn, &log)?, index)
        })?)
    }

    fn batch_index(&self, seq: u64) -> StoreResult<Option<LogIndex>> {
        Ok(self.read(|txn| groups::seq_index(&txn.open_table(BATCHES)?, seq))?)
    }

    /// One read transaction for the whole range: the seq groups once, then one walk of the log
    /// from the first batch's entry that decodes only the entries carrying the batches.
    fn batches_from(&self, from: u64, to: u64, bytes_max: u64) -> StoreResult<Vec<(u64, Entry)>> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self.read(|txn| {
            let indexes = groups::seq_indexes(&txn.open_table(BATCHES)?, from, to)?;
            let log = txn.open_table(LOG)?;
            let (Some(&lowest), Some(first)) = (indexes.first(), groups::first_index(&log)?) else {
                return Ok(Vec::new());
            };
            if lowest < first {
                // Compacted since the seq groups were written: nothing from `from` on is held.
                return Ok(Vec::new());
            }
            let mut wanted = indexes.iter().copied().peekable();
            let mut entries = groups::records_from(&log, lowest, |index, record| {
                if wanted.next_if_eq(&index).is_some() {
                    decode_entry(index, record).map(Some)
                } else {
                    Ok(None)
                }
            })?;
            let mut read = Vec::with_capacity(indexes.len());
            let mut bytes = 0u64;
            while read.len() < indexes.len() {
                let Some(entry) = entries.next() else {
                    return Err(missing(indexes[read.len()]).into());
                };
                let Some(entry) = entry? else {
                    continue;
                };
                bytes = bytes.saturating_add(entry.payload_bytes());
                if bytes > bytes_max && !read.is_empty() {
                    break;
                }
                read.push((from + read.len() as u64, entry));
            }
            Ok(read)
        })?)
    }

    fn outcome(&self, batch_id: &[u8; 16]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.read(|txn| {
            let registry = txn.open_table(REGISTRY)?;
            match registry.get(batch_id)? {
                Some(value) => Ok(decode_bytes(batch_id, value.value())
                    .map(|bytes| Some(bytes.to_vec()))
                    .map_err(|detail| StorageError::corrupt_state("registry outcome", detail))?),
                None => Ok(None),
            }
        })?)
    }

    fn topic_offset(&self, topic: &str) -> StoreResult<u64> {
        Ok(self.read(|txn| {
            let offsets = txn.open_table(OFFSETS)?;
            match offsets.get(topic)? {
                Some(value) => Ok(decode_value(topic.as_bytes(), value.value()).map_err(
                    |detail| {
                        StorageError::corrupt_state(format!("offset of topic {topic:?}"), detail)
                    },
                )?),
                None => Ok(0),
            }
        })?)
    }

    fn snapshot(&self) -> StoreResult<SnapshotState> {
        Ok(self.read(|txn| {
            let state = load_state(txn)?;
            let tables = read_tables(txn)?;
            Ok(SnapshotState {
                applied: state.progress.applied.unwrap_or_default(),
                last_seq: state.last_seq,
                log_time_ms: state.log_time_ms,
                registry_floor_ms: state.registry_floor_ms,
                offsets: tables.offsets,
                registry: tables.registry,
                coord: tables.coord,
            })
        })?)
    }

    fn first_seq(&self) -> StoreResult<u64> {
        Ok(
            self.read(|txn| match groups::first_seq(&txn.open_table(BATCHES)?)? {
                Some(seq) => Ok(seq),
                None => Ok(load_state(txn)?.last_seq + 1),
            })?,
        )
    }

    fn tables(&self) -> StoreResult<StoredTables> {
        Ok(self.read(read_tables)?)
    }
}

/// Every topic offset and registry record, in key order, as of `txn`.
fn read_tables(txn: &ReadTransaction) -> Result<StoredTables> {
    let mut tables = StoredTables::default();
    for item in txn.open_table(OFFSETS)?.iter()? {
        let (topic, value) = item?;
        let topic = topic.value().to_string();
        let offset = decode_value(topic.as_bytes(), value.value()).map_err(|detail| {
            StorageError::corrupt_state(format!("offset of topic {topic:?}"), detail)
        })?;
        tables.offsets.push((topic, offset));
    }
    for item in txn.open_table(REGISTRY)?.iter()? {
        let (id, value) = item?;
        let id = *id.value();
        let record = decode_bytes(&id, value.value())
            .map_err(|detail| StorageError::corrupt_state("registry record", detail))?;
        tables.registry.push((id, record.to_vec()));
    }
    for item in txn.open_table(COORD)?.iter()? {
        let (key, value) = item?;
        let key = key.value().to_vec();
        let row = decode_bytes(&key, value.value())
            .map_err(|detail| StorageError::corrupt_state("coordination row", detail))?;
        tables.coord.push((key, row.to_vec()));
    }
    Ok(tables)
}

/// Checks the format version of a file and creates the tables of a new one. Nothing is written
/// to a file of another format.
fn prepare_tables(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    let table_names: Vec<String> = txn
        .list_tables()?
        .map(|handle| redb::TableHandle::name(&handle).to_string())
        .collect();
    let found = if table_names.is_empty() {
        txn.open_table(META)?
            .insert(FORMAT_KEY, STORAGE_FORMAT_VERSION)?;
        STORAGE_FORMAT_VERSION
    } else if !table_names
        .iter()
        .any(|name| name == redb::TableHandle::name(&META))
    {
        return Err(StorageError::CorruptFile {
            detail: format!(
                "not an ordo store: it has tables {table_names:?} but no format version"
            ),
        }
        .into());
    } else {
        let meta = txn.open_table(META)?;
        let found = meta.get(FORMAT_KEY)?.map(|value| value.value());
        found.ok_or_else(|| StorageError::corrupt_state("format version", "missing"))?
    };
    // Format 4 lacks only the coordination table, created below; format 5 also configuration
    // entries and the membership row, which it never needed; format 6 also the incarnation,
    // drawn at the next start; format 7 stored one log entry and one seq per record, regrouped
    // here: upgrade in place, in this one transaction.
    let found = if (4..=7).contains(&found) {
        groups::regroup_log(&mut txn.open_table(LOG)?)?;
        groups::regroup_seqs(&mut txn.open_table(BATCHES)?)?;
        txn.open_table(META)?
            .insert(FORMAT_KEY, STORAGE_FORMAT_VERSION)?;
        STORAGE_FORMAT_VERSION
    } else {
        found
    };
    if found != STORAGE_FORMAT_VERSION {
        return Err(StorageError::IncompatibleFormat {
            found,
            supported: STORAGE_FORMAT_VERSION,
        }
        .into());
    }
    txn.open_table(LOG)?;
    txn.open_table(RAFT)?;
    txn.open_table(BATCHES)?;
    txn.open_table(REGISTRY)?;
    txn.open_table(OFFSETS)?;
    txn.open_table(COORD)?;
    txn.commit()?;
    Ok(())
}

/// Reads a state record of the `ordo_raft` table, checking it.
fn raft_record<T: serde::de::DeserializeOwned>(
    raft: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match raft.get(key)? {
        Some(value) => Ok(decode_value(key.as_bytes(), value.value())
            .map(Some)
            .map_err(|detail| StorageError::corrupt_state(key, detail))?),
        None => Ok(None),
    }
}

/// The engine record, checked: a name this build does not know is a corrupt record.
fn engine_record(
    raft: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<EngineKind>> {
    let Some(name) = raft_record::<String>(raft, ENGINE_KEY)? else {
        return Ok(None);
    };
    match EngineKind::parse(&name) {
        Some(engine) => Ok(Some(engine)),
        None => Err(StorageError::corrupt_state(
            ENGINE_KEY,
            format!("{name:?} names no consensus engine"),
        )
        .into()),
    }
}

/// The log's first and last index (and the purged id), without reading any entry.
fn load_extent(
    txn: &ReadTransaction,
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Extent> {
    let raft = txn.open_table(RAFT)?;
    let purged: Option<LogId> = raft_record(&raft, PURGED_KEY)?;
    let first = groups::first_index(log)?;
    let last = groups::last_index(log)?;
    Ok(match (first, last) {
        (Some(first_index), Some(last_index)) => Extent {
            first_index,
            last_index,
            purged,
        },
        _ => Extent {
            first_index: purged.map_or(1, |p| p.index + 1),
            last_index: purged.map_or(0, |p| p.index),
            purged,
        },
    })
}

fn load_state(txn: &ReadTransaction) -> Result<StoreState> {
    let log = txn.open_table(LOG)?;
    let raft = txn.open_table(RAFT)?;
    let extent = load_extent(txn, &log)?;
    let last_log_id = match groups::last_entry(&log)? {
        Some(last) => Some(last),
        None => extent.purged,
    };
    let hard_state: HardState = raft_record(&raft, HARD_STATE_KEY)?.unwrap_or_default();
    Ok(StoreState {
        log: LogState {
            first_index: extent.first_index,
            last_log_id,
            purged: extent.purged,
        },
        hard_state,
        progress: ApplyProgress {
            committed: raft_record(&raft, COMMITTED_KEY)?.unwrap_or(0),
            applied: raft_record(&raft, APPLIED_KEY)?,
        },
        last_seq: raft_record(&raft, LAST_SEQ_KEY)?.unwrap_or(0),
        log_time_ms: raft_record(&raft, LOG_TIME_KEY)?.unwrap_or(0),
        registry_floor_ms: raft_record(&raft, REGISTRY_FLOOR_KEY)?.unwrap_or(0),
        engine: engine_record(&raft)?.unwrap_or_default(),
    })
}

fn term_in(
    log: &impl ReadableTable<u64, &'static [u8]>,
    extent: &Extent,
    index: LogIndex,
) -> Result<Term> {
    if let Some(answer) = extent.term_without_entry(index) {
        return Ok(answer?);
    }
    match groups::with_record(log, index, |record| entry_term(index, record))? {
        Some(term) => Ok(term),
        None => Err(missing(index).into()),
    }
}

/// The checks of [`RedbLogStore::open`]: the log has no holes and agrees with the durable state,
/// and the entries `verify` names pass their checksums, decode, and have non-decreasing terms.
fn verify(txn: &ReadTransaction, state: &StoreState, verify: VerifyOnOpen) -> Result<()> {
    let log = txn.open_table(LOG)?;
    let first = state.log.first_index;
    let last = state.log.last_index();
    let stored = !log.is_empty()?;
    // Only compaction and snapshots remove a prefix, and both record the purged entry.
    let expected_first = state.log.purged.map_or(1, |purged| purged.index + 1);
    if stored && first != expected_first {
        let after = match state.log.purged {
            Some(purged) => format!("after the purged entry {purged}"),
            None => "at 1, as nothing was purged".into(),
        };
        return Err(StorageError::corrupt_state(
            PURGED_KEY,
            format!("the log starts at {first}, not {after}"),
        )
        .into());
    }
    if state.progress.committed > last {
        return Err(StorageError::corrupt_state(
            COMMITTED_KEY,
            format!(
                "commit index {} is past the last index {last}",
                state.progress.committed
            ),
        )
        .into());
    }
    if let Some(applied) = state.progress.applied {
        let term = term_in(&log, &Extent::of(&state.log), applied.index)?;
        if applied.index > state.progress.committed || term != applied.term {
            return Err(StorageError::corrupt_state(
                APPLIED_KEY,
                format!("applied entry {applied} is not a committed entry of the log"),
            )
            .into());
        }
    }
    let last_term = state.log.last_log_id.map_or(0, |id| id.term);
    if last_term > state.hard_state.term {
        return Err(StorageError::corrupt_state(
            HARD_STATE_KEY,
            format!(
                "term {} is older than the last entry's term {last_term}",
                state.hard_state.term
            ),
        )
        .into());
    }
    let from = match verify {
        VerifyOnOpen::All => first,
        VerifyOnOpen::Tail { entries } => first.max((last + 1).saturating_sub(entries)),
    };
    // The walk from `from` checks that the groups follow each other; with `All`, that covers the
    // whole log. Entries before `from` are checked when read.
    let mut term_floor = 0;
    let mut expected = from;
    for entry in groups::records_from(&log, from, decode_entry)? {
        let entry = entry?;
        if entry.index != expected {
            return Err(missing(expected).into());
        }
        expected += 1;
        if entry.term < term_floor {
            return Err(StorageError::Corrupt {
                index: entry.index,
                detail: format!(
                    "term {} is below the term {term_floor} before it",
                    entry.term
                ),
            }
            .into());
        }
        term_floor = entry.term;
    }
    if last >= from && expected != last + 1 {
        return Err(missing(expected).into());
    }
    Ok(())
}

fn count_log_bytes(txn: &ReadTransaction) -> Result<u64> {
    record_bytes(&txn.open_table(LOG)?)
}

/// The bytes of every entry record in the log (what retention counts).
fn record_bytes(log: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64> {
    let mut bytes = 0;
    for size in groups::records_from(log, 0, |_, record| Ok(record.len() as u64))? {
        bytes += size?;
    }
    Ok(bytes)
}

/// Deletes every entry `>= entries[0].index`, then inserts the batch's entries.
fn write_entries(
    txn: &WriteTransaction,
    batch: &WriteBatch,
    last_index: LogIndex,
    retained_bytes: &mut Option<u64>,
) -> Result<()> {
    let Some(start) = batch.entries.first().map(|entry| entry.index) else {
        return Ok(());
    };
    let mut log = txn.open_table(LOG)?;
    if start <= last_index {
        let removed = groups::truncate_from(&mut log, start)?;
        if let Some(bytes) = retained_bytes.as_mut() {
            *bytes -= removed;
        }
    }
    let added = groups::append(&mut log, &batch.entries)?;
    if let Some(bytes) = retained_bytes.as_mut() {
        *bytes += added;
    }
    Ok(())
}

/// Writes the hard state and progress records that the batch changes, and no others, so that
/// an append does not rewrite this table's pages.
fn write_raft_state(txn: &WriteTransaction, batch: &WriteBatch, before: &StoreState) -> Result<()> {
    let changed_hard_state = batch.hard_state.filter(|h| *h != before.hard_state);
    let changed_committed = batch.committed.filter(|c| *c != before.progress.committed);
    if changed_hard_state.is_none() && changed_committed.is_none() && batch.state.is_none() {
        return Ok(());
    }
    let mut raft = txn.open_table(RAFT)?;
    if let Some(hard_state) = changed_hard_state {
        let record = encode_value(HARD_STATE_KEY.as_bytes(), &hard_state);
        raft.insert(HARD_STATE_KEY, record.as_slice())?;
    }
    if let Some(committed) = changed_committed {
        let record = encode_value(COMMITTED_KEY.as_bytes(), &committed);
        raft.insert(COMMITTED_KEY, record.as_slice())?;
    }
    if let Some(state) = &batch.state {
        let record = encode_value(APPLIED_KEY.as_bytes(), &state.applied);
        raft.insert(APPLIED_KEY, record.as_slice())?;
        if let Some(&(last_seq, _)) = state.seqs.last() {
            let record = encode_value(LAST_SEQ_KEY.as_bytes(), &last_seq);
            raft.insert(LAST_SEQ_KEY, record.as_slice())?;
        }
        if state.log_time_ms != before.log_time_ms {
            let record = encode_value(LOG_TIME_KEY.as_bytes(), &state.log_time_ms);
            raft.insert(LOG_TIME_KEY, record.as_slice())?;
        }
        if state.registry_floor_ms != before.registry_floor_ms {
            let record = encode_value(REGISTRY_FLOOR_KEY.as_bytes(), &state.registry_floor_ms);
            raft.insert(REGISTRY_FLOOR_KEY, record.as_slice())?;
        }
    }
    Ok(())
}

fn write_tables(txn: &WriteTransaction, batch: &WriteBatch) -> Result<()> {
    let Some(state) = &batch.state else {
        return Ok(());
    };
    if !state.seqs.is_empty() {
        groups::put_seqs(&mut txn.open_table(BATCHES)?, &state.seqs)?;
    }
    if !state.registry.is_empty() || !state.registry_evicted.is_empty() {
        let mut registry = txn.open_table(REGISTRY)?;
        for (batch_id, outcome) in &state.registry {
            let record = encode_bytes(batch_id, outcome);
            registry.insert(batch_id, record.as_slice())?;
        }
        for batch_id in &state.registry_evicted {
            registry.remove(batch_id)?;
        }
    }
    if !state.offsets.is_empty() {
        let mut offsets = txn.open_table(OFFSETS)?;
        for (topic, offset) in &state.offsets {
            let record = encode_value(topic.as_bytes(), offset);
            offsets.insert(topic.as_str(), record.as_slice())?;
        }
    }
    if !state.coord.is_empty() {
        let mut coord = txn.open_table(COORD)?;
        for (key, row) in &state.coord {
            match row {
                Some(row) => {
                    let record = encode_bytes(key, row);
                    coord.insert(key.as_slice(), record.as_slice())?;
                }
                None => {
                    coord.remove(key.as_slice())?;
                }
            }
        }
    }
    Ok(())
}

/// Deletes entries `[first, new_first)` and the seqs of batches they carried, records the last
/// deleted entry as purged, and returns its id.
fn compact(txn: &WriteTransaction, first: LogIndex, new_first: LogIndex) -> Result<LogId> {
    debug_assert!(first < new_first);
    let purged = groups::remove_before(&mut txn.open_table(LOG)?, new_first)?;
    let record = encode_value(PURGED_KEY.as_bytes(), &purged);
    txn.open_table(RAFT)?
        .insert(PURGED_KEY, record.as_slice())?;
    groups::forget_seqs_before(&mut txn.open_table(BATCHES)?, new_first)?;
    Ok(purged)
}

/// Runs `f`, turning a panic inside redb (which it may raise on a damaged page) into an error.
fn shielded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(StorageError::CorruptFile {
                detail: format!("redb panicked while reading it: {message}"),
            }
            .into())
        }
    }
}

/// A [`StorageError`] inside this module, where `?` also turns redb's errors into one. (The
/// storage contract's error type lives in `ordo-node`, which knows nothing of redb, so the
/// conversions hang off this local wrapper instead.)
#[derive(Debug)]
struct Fault(StorageError);

type Result<T, E = Fault> = std::result::Result<T, E>;

impl From<StorageError> for Fault {
    fn from(error: StorageError) -> Self {
        Self(error)
    }
}

impl From<Fault> for StorageError {
    fn from(Fault(error): Fault) -> Self {
        error
    }
}

impl From<redb::Error> for Fault {
    fn from(error: redb::Error) -> Self {
        Self(match error {
            redb::Error::Io(error) if is_no_space(&error) => StorageError::NoSpace {
                detail: error.to_string(),
            },
            redb::Error::Io(error) => StorageError::Io(error),
            redb::Error::Corrupted(detail) => StorageError::CorruptFile { detail },
            redb::Error::DatabaseAlreadyOpen => StorageError::AlreadyOpen,
            other => StorageError::Engine(Box::new(other)),
        })
    }
}

macro_rules! from_redb_error {
    ($($error:ty),* $(,)?) => {
        $(
            impl From<$error> for Fault {
                fn from(error: $error) -> Self {
                    redb::Error::from(error).into()
                }
            }
        )*
    };
}

from_redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

#[cfg(test)]
mod tests {
    use ordo_common::EntryPayload;

    use super::*;

    fn noops(lo: LogIndex, hi: LogIndex) -> Vec<Entry> {
        (lo..hi)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Noop,
            })
            .collect()
    }

    #[test]
    fn a_failed_write_ahead_fsync_is_made_good_by_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let mut store = RedbLogStore::open(&path, RedbOptions::default()).unwrap();
        let hard_state = HardState {
            term: 1,
            vote: Some(1),
        };
        store.write(&WriteBatch::hard_state(hard_state)).unwrap();
        store.write(&WriteBatch::entries(noops(1, 4))).unwrap();
        let generation = store.wal.as_ref().unwrap().generation();

        store.syncer.as_ref().unwrap().fail_next();
        let log = store.write(&WriteBatch::entries(noops(4, 6))).unwrap();
        assert_eq!(log.last_index(), 5, "the write went through, durably");
        assert_eq!(
            store.wal.as_ref().unwrap().generation(),
            generation + 1,
            "redb was made durable and the write-ahead file started again"
        );
        store.write(&WriteBatch::entries(noops(6, 7))).unwrap();

        // A crash now: the redb file as of its last durable commit, and the write-ahead file.
        let crashed = dir.path().join("crashed");
        std::fs::create_dir(&crashed).unwrap();
        let copy = crashed.join("log.redb");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(wal::path_for(&path), wal::path_for(&copy)).unwrap();
        drop(store);
        let reopened = RedbLogStore::open(&copy, RedbOptions::default()).unwrap();
        assert_eq!(reopened.entries(1, 7, u64::MAX).unwrap(), noops(1, 7));
    }
}
