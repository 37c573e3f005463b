//! The in-memory store, for tests and the simulator.
//!
//! It keeps the same checked records as the redb store, so that it exercises the same encoding,
//! and its "disk" is a shared handle ([`MemDisk`]) that outlives the store: dropping the store
//! and opening a new one on the same disk is a restart. A write is atomic and immediately
//! "durable", because it happens under one lock and this disk never crashes mid-write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ordo_common::{EngineKind, Entry, HardState, LogId, LogIndex, Term};

use super::record::{decode_entry, encode_entry, entry_facts, entry_term};
use super::rules::{AgeCheck, Extent, plan_compaction, plan_write};
use super::{
    Install, LogRead, LogState, LogStore, Result, Retention, STORAGE_FORMAT_VERSION, SnapshotState,
    StorageError, StoreState, StoredTables, WriteBatch,
};

/// The shared "disk" of [`MemLogStore`]s: clone it to keep the data across a store's lifetime.
/// It is also the store's read handle.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    file: Arc<Mutex<MemFile>>,
}

#[derive(Debug)]
struct MemFile {
    format_version: u64,
    /// Entry records by index.
    log: BTreeMap<LogIndex, Vec<u8>>,
    state: StoreState,
    retained_bytes: u64,
    batches: BTreeMap<u64, LogIndex>,
    registry: BTreeMap<[u8; 16], Vec<u8>>,
    coord: BTreeMap<Vec<u8>, Vec<u8>>,
    offsets: BTreeMap<String, u64>,
}

impl Default for MemFile {
    fn default() -> Self {
        Self {
            format_version: STORAGE_FORMAT_VERSION,
            log: BTreeMap::new(),
            state: StoreState {
                log: LogState {
                    first_index: 1,
                    ..LogState::default()
                },
                ..StoreState::default()
            },
            retained_bytes: 0,
            batches: BTreeMap::new(),
            registry: BTreeMap::new(),
            coord: BTreeMap::new(),
            offsets: BTreeMap::new(),
        }
    }
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flips bit `bit` of byte `byte` of the record stored for `index`, as a damaged disk would.
    /// Returns whether there was such a byte. For corruption tests.
    pub fn corrupt_entry(&self, index: LogIndex, byte: usize, bit: u8) -> bool {
        let mut file = self.lock();
        match file.log.get_mut(&index).and_then(|r| r.get_mut(byte)) {
            Some(value) => {
                *value ^= 1 << (bit % 8);
                true
            }
            None => false,
        }
    }

    /// Records `version` as the disk's format version, as a newer build would. For tests.
    pub fn set_format_version(&self, version: u64) {
        self.lock().format_version = version;
    }

    fn lock(&self) -> MutexGuard<'_, MemFile> {
        // A panic while holding this lock is a bug in this module, not a disk condition.
        self.file.lock().expect("mem disk lock poisoned")
    }
}

/// The in-memory [`LogStore`].
#[derive(Debug)]
pub struct MemLogStore {
    disk: MemDisk,
    retention: Retention,
    age_check: AgeCheck,
}

impl MemLogStore {
    /// Opens the store kept on `disk`, checking its format version and every entry, as the redb
    /// store does on open.
    pub fn open(disk: &MemDisk, retention: Retention) -> Result<Self> {
        {
            let file = disk.lock();
            if file.format_version != STORAGE_FORMAT_VERSION {
                return Err(StorageError::IncompatibleFormat {
                    found: file.format_version,
                    supported: STORAGE_FORMAT_VERSION,
                });
            }
            for (&index, record) in &file.log {
                decode_entry(index, record)?;
            }
        }
        Ok(Self {
            disk: disk.clone(),
            retention,
            age_check: AgeCheck::default(),
        })
    }

    /// The disk this store keeps its data on.
    pub fn disk(&self) -> &MemDisk {
        &self.disk
    }

    /// Records the consensus engine the log belongs to (as the redb store does at the first
    /// start); another than the one recorded is refused.
    pub fn set_engine(&mut self, engine: EngineKind) -> Result<()> {
        let mut file = self.disk.lock();
        let fresh = file.log.is_empty() && file.state.hard_state == HardState::default();
        if file.state.engine != engine && !fresh {
            return Err(StorageError::invalid_write(format!(
                "this log was written by the {} engine, not {engine}",
                file.state.engine
            )));
        }
        file.state.engine = engine;
        Ok(())
    }
}

impl LogStore for MemLogStore {
    type Reader = MemDisk;

    fn write(&mut self, batch: &WriteBatch) -> Result<LogState> {
        self.disk
            .lock()
            .write(batch, &self.retention, &mut self.age_check)
    }

    fn reader(&self) -> MemDisk {
        self.disk.clone()
    }
}

impl MemFile {
    /// Plans everything first, so that the mutation below cannot fail half way.
    fn write(
        &mut self,
        batch: &WriteBatch,
        retention: &Retention,
        age_check: &mut AgeCheck,
    ) -> Result<LogState> {
        let after = plan_write(&self.state, batch, &mut |index| self.term_at(index))?;
        if let Some(install) = &batch.install {
            return Ok(self.install(install, after));
        }
        let records: Vec<Vec<u8>> = batch.entries.iter().map(encode_entry).collect();
        let start = batch.entries.first().map(|entry| entry.index);
        let replaced_bytes: u64 = start.map_or(0, |start| {
            self.log.range(start..).map(|(_, r)| r.len() as u64).sum()
        });
        let added_bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        let retained_bytes = self.retained_bytes - replaced_bytes + added_bytes;
        // The record of an index as it will be after this write.
        let record_after = |index: LogIndex| match start {
            Some(start) if index >= start => records.get((index - start) as usize),
            _ => self.log.get(&index),
        };
        let mut facts = (after.log.first_index..).map(|index| {
            let record = record_after(index).ok_or_else(|| missing(index))?;
            entry_facts(index, record)
        });
        let check_age = age_check.due(retention, after.log_time_ms);
        let compaction = plan_compaction(
            &after,
            Some(retained_bytes),
            retention,
            check_age,
            &mut facts,
        )?;
        let purged = match compaction {
            Some(c) => {
                let index = c.first_index - 1;
                let record = record_after(index).ok_or_else(|| missing(index))?;
                Some(LogId::new(entry_term(index, record)?, index))
            }
            None => None,
        };

        if let Some(start) = start {
            self.log.split_off(&start);
            for (entry, record) in batch.entries.iter().zip(records) {
                self.log.insert(entry.index, record);
            }
        }
        if let Some(state) = &batch.state {
            self.batches.extend(state.seqs.iter().copied());
            self.registry.extend(state.registry.iter().cloned());
            for (key, row) in &state.coord {
                match row {
                    Some(row) => self.coord.insert(key.clone(), row.clone()),
                    None => self.coord.remove(key),
                };
            }
            for id in &state.registry_evicted {
                self.registry.remove(id);
            }
            self.offsets.extend(state.offsets.iter().cloned());
        }
        self.state = after;
        self.retained_bytes = retained_bytes;
        if let (Some(compaction), Some(purged)) = (compaction, purged) {
            self.purge(compaction.first_index, purged);
            self.retained_bytes = compaction.retained_bytes.unwrap_or(retained_bytes);
        }
        Ok(self.state.log)
    }

    /// Deletes entries below `first_index` (and the seqs they carried); `purged` is the last.
    fn purge(&mut self, first_index: LogIndex, purged: LogId) {
        self.log = self.log.split_off(&first_index);
        self.batches.retain(|_, index| *index >= first_index);
        self.state.log.first_index = first_index;
        self.state.log.purged = Some(purged);
        if self.log.is_empty() {
            self.state.log.last_log_id = Some(purged);
        }
    }

    /// Makes a snapshot the state: its tables replace ours, the log through it goes.
    fn install(&mut self, install: &Install, after: StoreState) -> LogState {
        let last = install.last_included;
        if !install.keep_suffix {
            self.log.clear();
        }
        self.log = self.log.split_off(&(last.index + 1));
        self.retained_bytes = self.log.values().map(|record| record.len() as u64).sum();
        self.batches.clear();
        self.registry = install.state.registry.iter().cloned().collect();
        self.coord = install.state.coord.iter().cloned().collect();
        self.offsets = install.state.offsets.iter().cloned().collect();
        self.state = after;
        self.state.log
    }

    fn snapshot(&self) -> SnapshotState {
        SnapshotState {
            applied: self.state.progress.applied.unwrap_or_default(),
            last_seq: self.state.last_seq,
            log_time_ms: self.state.log_time_ms,
            registry_floor_ms: self.state.registry_floor_ms,
            offsets: self.offsets.iter().map(|(t, o)| (t.clone(), *o)).collect(),
            registry: self.registry.iter().map(|(i, r)| (*i, r.clone())).collect(),
            coord: self
                .coord
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
        }
    }

    fn first_seq(&self) -> u64 {
        self.batches
            .keys()
            .next()
            .copied()
            .unwrap_or(self.state.last_seq + 1)
    }

    fn term_at(&self, index: LogIndex) -> Result<Term> {
        if let Some(answer) = Extent::of(&self.state.log).term_without_entry(index) {
            return answer;
        }
        match self.log.get(&index) {
            Some(record) => entry_term(index, record),
            None => Err(missing(index)),
        }
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64) -> Result<Vec<Entry>> {
        Extent::of(&self.state.log).check_range(lo, hi)?;
        let mut entries = Vec::new();
        let mut bytes = 0;
        for index in lo..hi {
            let record = self.log.get(&index).ok_or_else(|| missing(index))?;
            let entry = decode_entry(index, record)?;
            bytes += entry.payload_bytes();
            if bytes > bytes_max && !entries.is_empty() {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// The error for an index that the log's extent includes but the log does not hold.
pub fn missing(index: LogIndex) -> StorageError {
    StorageError::Corrupt {
        index,
        detail: "missing: the log has a hole here".into(),
    }
}

impl LogRead for MemDisk {
    fn store_state(&self) -> Result<StoreState> {
        Ok(self.lock().state.clone())
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64) -> Result<Vec<Entry>> {
        self.lock().entries(lo, hi, bytes_max)
    }

    fn term_at(&self, index: LogIndex) -> Result<Term> {
        self.lock().term_at(index)
    }

    fn batch_index(&self, seq: u64) -> Result<Option<LogIndex>> {
        Ok(self.lock().batches.get(&seq).copied())
    }

    fn outcome(&self, batch_id: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().registry.get(batch_id).cloned())
    }

    fn topic_offset(&self, topic: &str) -> Result<u64> {
        Ok(self.lock().offsets.get(topic).copied().unwrap_or(0))
    }

    fn tables(&self) -> Result<StoredTables> {
        let file = self.lock();
        Ok(StoredTables {
            offsets: file.offsets.iter().map(|(t, o)| (t.clone(), *o)).collect(),
            registry: file.registry.iter().map(|(i, r)| (*i, r.clone())).collect(),
            coord: file
                .coord
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
        })
    }

    fn snapshot(&self) -> Result<SnapshotState> {
        Ok(self.lock().snapshot())
    }

    fn first_seq(&self) -> Result<u64> {
        Ok(self.lock().first_seq())
    }
}

impl LogRead for MemLogStore {
    fn store_state(&self) -> Result<StoreState> {
        self.disk.store_state()
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64) -> Result<Vec<Entry>> {
        self.disk.entries(lo, hi, bytes_max)
    }

    fn term_at(&self, index: LogIndex) -> Result<Term> {
        self.disk.term_at(index)
    }

    fn batch_index(&self, seq: u64) -> Result<Option<LogIndex>> {
        self.disk.batch_index(seq)
    }

    fn outcome(&self, batch_id: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        self.disk.outcome(batch_id)
    }

    fn topic_offset(&self, topic: &str) -> Result<u64> {
        self.disk.topic_offset(topic)
    }

    fn tables(&self) -> Result<StoredTables> {
        self.disk.tables()
    }

    fn snapshot(&self) -> Result<SnapshotState> {
        self.disk.snapshot()
    }

    fn first_seq(&self) -> Result<u64> {
        self.disk.first_seq()
    }
}
