//! Damaged files: a corrupt record is reported (naming its index) and never served, a corrupt
//! log refuses to open with a message that says what to do, a file of another format version is
//! refused, and no damage makes the store panic.

mod common;

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::{Rng, entries, hard_state, is_intact, seed_from_env};
use ordo_common::{Entry, EntryPayload, LogId, LogIndex};
use ordo_coordinator::storage::{
    DAMAGED_NODE_ADVICE, LogRead, LogStore, MemDisk, MemLogStore, RedbLogStore, RedbOptions,
    Retention, STORAGE_FORMAT_VERSION, StateUpdate, StorageError, VerifyOnOpen, WriteBatch,
};

const ENTRIES: u64 = 200;

/// A payload that names its index, so that the test can find the entry's bytes in the file.
fn marked_payload(index: LogIndex) -> Bytes {
    format!("ORDO-MARK-{index:06}-")
        .repeat(5)
        .into_bytes()
        .into()
}

fn marked_entries() -> Vec<Entry> {
    (1..=ENTRIES)
        .map(|index| Entry {
            term: 1,
            index,
            payload: EntryPayload::Normal(marked_payload(index)),
        })
        .collect()
}

fn options(verify_on_open: VerifyOnOpen) -> RedbOptions {
    RedbOptions {
        verify_on_open,
        ..RedbOptions::default()
    }
}

/// A closed store holding the marked entries, written in one transaction so that the file holds
/// one copy of each.
fn write_marked_store(path: &Path) {
    let mut store = RedbLogStore::open(path, RedbOptions::default()).unwrap();
    store
        .write(&WriteBatch {
            hard_state: Some(hard_state(1, Some(1))),
            entries: marked_entries(),
            ..WriteBatch::default()
        })
        .unwrap();
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(offset, _)| offset)
        .collect()
}

/// Flips one byte inside every copy of `needle` in the file; returns how many copies there were.
fn flip_in_file(path: &Path, needle: &[u8], offset_in_needle: usize) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let found = find_all(&bytes, needle);
    for offset in &found {
        bytes[offset + offset_in_needle] ^= 0x20;
    }
    std::fs::write(path, bytes).unwrap();
    found.len()
}

fn assert_corrupt_entry(error: StorageError, index: LogIndex) {
    assert!(
        matches!(error, StorageError::Corrupt { index: found, .. } if found == index),
        "expected entry {index} to be reported corrupt, got: {error}"
    );
    assert!(error.is_fatal());
    let message = error.to_string();
    assert!(
        message.contains(&format!("log entry {index} is corrupt"))
            && message.contains(DAMAGED_NODE_ADVICE)
            && !message.contains("aside"),
        "the message does not tell the operator what to do: {message}"
    );
}

#[test]
fn a_damaged_entry_is_reported_by_index_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    write_marked_store(&path);
    let copies = flip_in_file(&path, &marked_payload(57), 12);
    assert_eq!(
        copies, 1,
        "expected exactly one copy of entry 57 in the file"
    );

    // Entry 57 is far from the tail, so the default open accepts the file...
    let store = RedbLogStore::open(&path, options(VerifyOnOpen::Tail { entries: 10 })).unwrap();
    // ...but no read serves it.
    assert_corrupt_entry(store.entries(50, 60, u64::MAX).unwrap_err(), 57);
    assert_corrupt_entry(store.entries(57, 58, u64::MAX).unwrap_err(), 57);
    assert_corrupt_entry(store.term_at(57).unwrap_err(), 57);
    assert_corrupt_entry(store.reader().entries(1, 201, u64::MAX).unwrap_err(), 57);
    // Its neighbours are intact and still readable.
    let before = store.entries(1, 57, u64::MAX).unwrap();
    let after = store.entries(58, ENTRIES + 1, u64::MAX).unwrap();
    assert_eq!(before, marked_entries()[..56].to_vec());
    assert_eq!(after, marked_entries()[57..].to_vec());
    assert_eq!(store.term_at(56).unwrap(), 1);
    drop(store);

    // A full check on open refuses the log.
    let error = RedbLogStore::open(&path, options(VerifyOnOpen::All))
        .err()
        .expect("a corrupt log must not open with VerifyOnOpen::All");
    assert_corrupt_entry(error, 57);
}

#[test]
fn a_damaged_tail_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    write_marked_store(&path);
    flip_in_file(&path, &marked_payload(ENTRIES - 3), 15);
    let error = RedbLogStore::open(&path, RedbOptions::default())
        .err()
        .expect("a log with a corrupt tail must not open");
    assert_corrupt_entry(error, ENTRIES - 3);
}

#[test]
fn a_damaged_hard_state_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    // A term whose encoding is easy to find in the file.
    let term = 0x0D0E_0A0D_0B0E_0E0F;
    {
        let mut store = RedbLogStore::open(&path, RedbOptions::default()).unwrap();
        store
            .write(&WriteBatch::hard_state(hard_state(term, Some(2))))
            .unwrap();
    }
    let copies = flip_in_file(&path, &term.to_le_bytes(), 3);
    assert!(copies >= 1, "the hard state was not found in the file");
    let error = RedbLogStore::open(&path, RedbOptions::default())
        .err()
        .expect("a corrupt hard state must not open");
    assert!(
        matches!(&error, StorageError::CorruptState { record, .. } if record == "hard_state"),
        "{error}"
    );
    assert!(error.to_string().contains(DAMAGED_NODE_ADVICE), "{error}");
}

#[test]
fn a_newer_format_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    write_marked_store(&path);
    let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("ordo_meta");
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(meta)
            .unwrap()
            .insert("format_version", STORAGE_FORMAT_VERSION + 98)
            .unwrap();
        txn.commit().unwrap();
    }
    let error = RedbLogStore::open(&path, RedbOptions::default())
        .err()
        .expect("a newer format must not open");
    assert!(
        matches!(
            error,
            StorageError::IncompatibleFormat { found, supported }
                if found == STORAGE_FORMAT_VERSION + 98 && supported == STORAGE_FORMAT_VERSION
        ),
        "{error}"
    );
    let message = error.to_string();
    let newer = format!("format version {}", STORAGE_FORMAT_VERSION + 98);
    assert!(message.contains(&newer) && message.contains("run an ordo release"));
    // Nothing was written to the newer file.
    let db = redb::Database::open(&path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let found = txn.open_table(meta).unwrap().get("format_version").unwrap();
    assert_eq!(found.map(|v| v.value()), Some(STORAGE_FORMAT_VERSION + 98));
}

/// A store in the layout of formats 4 to 7, written with redb directly: one record per log
/// entry and per seq, the marked entries in term 1, and seqs 1..=`seqs` carried by entries
/// 1..=`seqs`, applied and committed.
fn write_per_entry_store(path: &Path, version: u64, seqs: u64) {
    use ordo_coordinator::storage::record::{encode_entry, encode_value};
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("ordo_meta");
    let log: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ordo_log");
    let raft: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("ordo_raft");
    let batches: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ordo_batches");
    txn.open_table(meta)
        .unwrap()
        .insert("format_version", version)
        .unwrap();
    {
        let mut log = txn.open_table(log).unwrap();
        for entry in marked_entries() {
            log.insert(entry.index, encode_entry(&entry).as_slice())
                .unwrap();
        }
        let mut batches = txn.open_table(batches).unwrap();
        for seq in 1..=seqs {
            batches
                .insert(seq, encode_value(&seq.to_be_bytes(), &seq).as_slice())
                .unwrap();
        }
        let mut raft = txn.open_table(raft).unwrap();
        let mut put = |key: &str, record: Vec<u8>| {
            raft.insert(key, record.as_slice()).unwrap();
        };
        put(
            "hard_state",
            encode_value(b"hard_state", &hard_state(1, Some(1))),
        );
        put("committed", encode_value(b"committed", &seqs));
        put("applied", encode_value(b"applied", &LogId::new(1, seqs)));
        put("last_seq", encode_value(b"last_seq", &seqs));
    }
    txn.commit().unwrap();
}

#[test]
fn per_entry_stores_of_formats_5_and_7_open_and_are_regrouped_in_place() {
    // Formats 6 and 7 added configuration entries, the membership row and the incarnation, and
    // format 8 stores the log and the seq index in groups: older files are upgraded in place.
    for version in [5, 7] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        // More seqs than one seq group holds, and entries enough for several log groups.
        let seqs = ENTRIES.min(1_500);
        write_per_entry_store(&path, version, seqs);
        let entries = marked_entries();
        let (first, last) = (entries[0].index, entries.last().unwrap().index);
        for _reopen in 0..2 {
            let store = RedbLogStore::open(&path, options(VerifyOnOpen::All))
                .unwrap_or_else(|error| panic!("format {version} opens: {error}"));
            assert_eq!(store.entries(first, last + 1, u64::MAX).unwrap(), entries);
            assert_eq!(store.term_at(last).unwrap(), 1);
            assert_eq!(store.store_state().unwrap().log.last_index(), last);
            for seq in [1, 2, seqs / 2, seqs] {
                assert_eq!(store.batch_index(seq).unwrap(), Some(seq), "seq {seq}");
            }
            assert_eq!(store.batch_index(seqs + 1).unwrap(), None);
            assert_eq!(store.first_seq().unwrap(), 1);
        }
        let db = redb::Database::open(&path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("ordo_meta");
        let found = txn.open_table(meta).unwrap().get("format_version").unwrap();
        assert_eq!(found.map(|v| v.value()), Some(STORAGE_FORMAT_VERSION));
        // Regrouped: far fewer records than entries and seqs.
        let log: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ordo_log");
        let batches: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ordo_batches");
        let log_records = redb::ReadableTableMetadata::len(&txn.open_table(log).unwrap()).unwrap();
        let seq_records =
            redb::ReadableTableMetadata::len(&txn.open_table(batches).unwrap()).unwrap();
        assert!(log_records < ENTRIES / 10, "{log_records} log records");
        assert!(
            seq_records <= seqs.div_ceil(1024),
            "{seq_records} seq records"
        );
    }
}

#[test]
fn a_foreign_or_garbage_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let txn = db.begin_write().unwrap();
        let table: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
        txn.open_table(table).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let error = RedbLogStore::open(&foreign, RedbOptions::default())
        .err()
        .expect("a foreign redb file must not open");
    assert!(error.to_string().contains("not an ordo store"), "{error}");

    let garbage = dir.path().join("garbage.redb");
    let mut rng = Rng::new(7);
    let bytes: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&garbage, bytes).unwrap();
    let error = RedbLogStore::open(&garbage, RedbOptions::default())
        .err()
        .expect("garbage must not open");
    assert!(error.is_fatal(), "{error}");
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let _first = RedbLogStore::open(&path, RedbOptions::default()).unwrap();
    let error = RedbLogStore::open(&path, RedbOptions::default())
        .err()
        .expect("the file is already open");
    assert!(matches!(error, StorageError::AlreadyOpen), "{error}");
}

/// redb may panic on a damaged page; the store catches that and reports the file as damaged.
/// This keeps those expected panics out of the test output (and counts them), and leaves every
/// other panic to the default hook.
fn quiet_redb_panics() -> &'static AtomicUsize {
    static CAUGHT: AtomicUsize = AtomicUsize::new(0);
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let inside_redb = info
                .location()
                .is_some_and(|location| location.file().contains("/redb-"));
            if inside_redb {
                CAUGHT.fetch_add(1, Ordering::Relaxed);
            } else {
                default_hook(info);
            }
        }));
    });
    &CAUGHT
}

/// Random bytes flipped anywhere in the file: the store may refuse to open or fail a read, but
/// it never panics and never returns an entry or a state that was not written.
#[test]
fn random_damage_is_refused_never_served() {
    let redb_panics = quiet_redb_panics();
    let seed = seed_from_env("ORDO_CORRUPTION_SEED");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine.redb");
    let written = entries(1, 301, 2);
    {
        let mut store = RedbLogStore::open(&pristine, RedbOptions::default()).unwrap();
        store
            .write(&WriteBatch::hard_state(hard_state(2, Some(1))))
            .unwrap();
        for chunk in written.chunks(50) {
            store.write(&WriteBatch::entries(chunk.to_vec())).unwrap();
        }
        store
            .write(&WriteBatch {
                committed: Some(250),
                state: Some(StateUpdate::applied(LogId::new(2, 200))),
                ..WriteBatch::default()
            })
            .unwrap();
    }
    let original = std::fs::read(&pristine).unwrap();
    let damaged = dir.path().join("damaged.redb");
    let (mut refused_open, mut failed_reads, mut served) = (0, 0, 0);
    for _ in 0..60 {
        let mut bytes = original.clone();
        for _ in 0..rng.range(1, 8) {
            let offset = rng.range(0, bytes.len() as u64 - 1) as usize;
            bytes[offset] ^= 1 << rng.range(0, 7);
        }
        std::fs::write(&damaged, &bytes).unwrap();
        // Half the opens check only the tail, so that reads meet the damage too.
        let verify = if rng.chance(50) {
            VerifyOnOpen::All
        } else {
            VerifyOnOpen::Tail { entries: 5 }
        };
        let store = match RedbLogStore::open(&damaged, options(verify)) {
            Ok(store) => store,
            Err(error) => {
                assert!(error.is_fatal(), "{error}");
                refused_open += 1;
                continue;
            }
        };
        match store.store_state() {
            Ok(state) => {
                assert!(
                    state.hard_state == hard_state(2, Some(1)) || state.hard_state.term == 0,
                    "hard state {:?} was never written (seed {seed})",
                    state.hard_state
                );
                assert!(state.log.last_index() <= 300);
            }
            Err(_) => failed_reads += 1,
        }
        for lo in (1..=300).step_by(30) {
            match store.entries(lo, (lo + 30).min(301), u64::MAX) {
                Ok(read) => {
                    for entry in read {
                        assert!(is_intact(&entry), "served a damaged entry (seed {seed})");
                        assert_eq!(entry, written[entry.index as usize - 1], "seed {seed}");
                        served += 1;
                    }
                }
                Err(_) => failed_reads += 1,
            }
        }
    }
    println!(
        "random damage: {refused_open} opens refused, {failed_reads} reads failed, {served} \
         entries served intact; redb panicked {} times on damaged pages, each caught and \
         reported as a damaged file",
        redb_panics.load(Ordering::Relaxed)
    );
}

#[test]
fn the_mem_store_checks_its_records_too() {
    let disk = MemDisk::new();
    let mut store = MemLogStore::open(&disk, Retention::default()).unwrap();
    store
        .write(&WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    store
        .write(&WriteBatch::entries(entries(1, 11, 1)))
        .unwrap();
    assert!(disk.corrupt_entry(4, 20, 3));
    assert_corrupt_entry(store.entries(1, 11, u64::MAX).unwrap_err(), 4);
    assert_corrupt_entry(store.term_at(4).unwrap_err(), 4);
    assert_eq!(store.entries(5, 11, u64::MAX).unwrap(), entries(5, 11, 1));
    drop(store);
    assert_corrupt_entry(
        MemLogStore::open(&disk, Retention::default()).unwrap_err(),
        4,
    );

    let newer = MemDisk::new();
    newer.set_format_version(STORAGE_FORMAT_VERSION + 1);
    assert!(matches!(
        MemLogStore::open(&newer, Retention::default()),
        Err(StorageError::IncompatibleFormat { .. })
    ));
}
