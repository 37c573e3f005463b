//! Helpers shared by the storage tests: a way to open (and reopen) each store, entries whose
//! payload can be checked from their index alone, and a small seeded random number generator.

#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use ordo_common::{EngineKind, Entry, EntryPayload, HardState, LogIndex, Term};
use ordo_coordinator::storage::{
    LogStore, MemDisk, MemLogStore, RedbLogStore, RedbOptions, Retention, StorageError,
    VerifyOnOpen,
};

/// Opens a store on storage that outlives it, so that opening again is a restart.
pub trait Harness {
    type Store: LogStore;

    fn open(&mut self, retention: Retention) -> Self::Store;

    /// Records the consensus engine the store's log belongs to (what `ordo serve` does at the
    /// first start).
    fn set_engine(store: &mut Self::Store, engine: EngineKind) -> Result<(), StorageError>;
}

pub struct MemHarness {
    pub disk: MemDisk,
}

impl MemHarness {
    pub fn new() -> Self {
        Self {
            disk: MemDisk::new(),
        }
    }
}

impl Harness for MemHarness {
    type Store = MemLogStore;

    fn open(&mut self, retention: Retention) -> MemLogStore {
        MemLogStore::open(&self.disk, retention).expect("open mem store")
    }

    fn set_engine(store: &mut MemLogStore, engine: EngineKind) -> Result<(), StorageError> {
        store.set_engine(engine)
    }
}

pub struct RedbHarness {
    pub dir: tempfile::TempDir,
}

impl RedbHarness {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("log.redb")
    }
}

impl Harness for RedbHarness {
    type Store = RedbLogStore;

    fn open(&mut self, retention: Retention) -> RedbLogStore {
        let options = RedbOptions {
            retention,
            verify_on_open: VerifyOnOpen::All,
            ..RedbOptions::default()
        };
        RedbLogStore::open(self.path(), options).expect("open redb store")
    }

    fn set_engine(store: &mut RedbLogStore, engine: EngineKind) -> Result<(), StorageError> {
        store.set_engine(engine)
    }
}

/// The payload of the entry at `(index, term)`: `len` bytes that depend on both, so that an
/// entry read back can be checked without remembering what was written.
pub fn payload(index: LogIndex, term: Term, len: usize) -> Bytes {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub fn entry(index: LogIndex, term: Term, len: usize) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(payload(index, term, len)),
    }
}

/// Entries `[lo, hi)` of term `term`, with payload lengths that vary with the index.
pub fn entries(lo: LogIndex, hi: LogIndex, term: Term) -> Vec<Entry> {
    (lo..hi)
        .map(|index| {
            if index % 7 == 0 {
                Entry {
                    term,
                    index,
                    payload: EntryPayload::Noop,
                }
            } else {
                entry(index, term, 16 + (index as usize * 37) % 200)
            }
        })
        .collect()
}

/// Whether `entry` is one that [`entry`] or [`entries`] made.
pub fn is_intact(entry: &Entry) -> bool {
    match &entry.payload {
        EntryPayload::Noop | EntryPayload::Config(_) => true,
        EntryPayload::Normal(bytes) => *bytes == payload(entry.index, entry.term, bytes.len()),
    }
}

pub fn hard_state(term: Term, vote: Option<u64>) -> HardState {
    HardState { term, vote }
}

/// SplitMix64: a tiny seeded generator, enough for choosing test actions reproducibly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// A seed from the environment variable `name`, or from the clock, printed either way so that
/// a failing run can be replayed.
pub fn seed_from_env(name: &str) -> u64 {
    let seed = std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("seed {seed} (replay with {name}={seed})");
    seed
}
