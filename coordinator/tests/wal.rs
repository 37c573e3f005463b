//! The write-ahead file in front of the redb file: what a crash leaves (the redb file as of its
//! last durable commit, and the write-ahead file) opens to every write reported durable, once;
//! files that do not belong together are refused.
//!
//! A crash is made by copying both files while the store is open: the copy of the redb file
//! holds what redb made durable (its header on disk moves only at a durable commit), the copy of
//! the write-ahead file holds the records written since.

mod common;

use std::path::{Path, PathBuf};

use common::{entries, hard_state};
use ordo_common::LogId;
use ordo_coordinator::storage::layout::{wal_record, wal_records_end};
use ordo_coordinator::storage::{
    LogRead, LogStore, RedbLogStore, RedbOptions, StateUpdate, StorageError, StoreState, WriteBatch,
};

fn open(path: &Path) -> RedbLogStore {
    RedbLogStore::open(path, RedbOptions::default()).expect("open")
}

/// Where the records of the write-ahead file of the store at `path` end: the file is allocated
/// ahead, so its size does not tell.
fn wal_len(path: &Path) -> u64 {
    let bytes = std::fs::read(RedbLogStore::wal_path(path)).expect("the write-ahead file exists");
    wal_records_end(&bytes)
}

/// Copies the store's two files into `dir`, as a crash would leave them.
fn crash_copy(path: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let copy = dir.join("log.redb");
    std::fs::copy(path, &copy).unwrap();
    std::fs::copy(RedbLogStore::wal_path(path), RedbLogStore::wal_path(&copy)).unwrap();
    copy
}

/// Term 1, entries 1..=30 in three writes, the first 20 committed and applied as seqs 1..=20.
fn small_writes(store: &mut RedbLogStore) -> StoreState {
    store
        .write(&WriteBatch::hard_state(hard_state(1, Some(1))))
        .unwrap();
    for lo in [1, 11, 21] {
        store
            .write(&WriteBatch::entries(entries(lo, lo + 10, 1)))
            .unwrap();
    }
    let mut state = StateUpdate::applied(LogId::new(1, 20));
    state.seqs = (1..=20).map(|seq| (seq, seq)).collect();
    state.registry = vec![([5; 16], b"outcome".to_vec())];
    state.offsets = vec![("orders".into(), 20)];
    store
        .write(&WriteBatch {
            committed: Some(20),
            state: Some(state),
            ..WriteBatch::default()
        })
        .unwrap();
    store.store_state().unwrap()
}

/// The small writes in a store under `dir`, and a crash copy of it taken while it was open
/// (the store is then closed): the copy's path and the state the writes left.
fn crashed_after_small_writes(dir: &Path) -> (PathBuf, StoreState) {
    let path = dir.join("a").join("log.redb");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut store = open(&path);
    let expected = small_writes(&mut store);
    let copy = crash_copy(&path, &dir.join("b"));
    drop(store);
    (copy, expected)
}

/// Cuts the write-ahead file of the store at `path` at the end of its records (its allocated
/// zeros go), appends `tail(generation)` after them and returns the file's bytes.
fn append_after_the_records(path: &Path, tail: impl FnOnce(u64) -> Vec<u8>) -> Vec<u8> {
    let wal = RedbLogStore::wal_path(path);
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes.truncate(wal_records_end(&bytes) as usize);
    let generation = u64::from_be_bytes(bytes[16..24].try_into().expect("a header"));
    bytes.extend(tail(generation));
    std::fs::write(&wal, &bytes).unwrap();
    bytes
}

fn assert_holds_the_small_writes(store: &RedbLogStore, expected: &StoreState) {
    assert_eq!(&store.store_state().unwrap(), expected);
    assert_eq!(store.entries(1, 31, u64::MAX).unwrap(), entries(1, 31, 1));
    assert_eq!(store.batch_index(20).unwrap(), Some(20));
    assert_eq!(store.outcome(&[5; 16]).unwrap(), Some(b"outcome".to_vec()));
    assert_eq!(store.topic_offset("orders").unwrap(), 20);
}

#[test]
fn writes_after_the_last_durable_commit_come_back_from_the_write_ahead_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("log.redb");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut store = open(&path);
    let empty_wal = wal_len(&path);
    let expected = small_writes(&mut store);
    assert!(
        wal_len(&path) > empty_wal,
        "small writes go to the write-ahead file"
    );
    let copy = crash_copy(&path, &dir.path().join("b"));
    drop(store);

    let reopened = open(&copy);
    assert_holds_the_small_writes(&reopened, &expected);
    // The replay was checkpointed: redb holds it all, the file starts again.
    assert_eq!(wal_len(&copy), empty_wal);
    drop(reopened);
    assert_holds_the_small_writes(&open(&copy), &expected);

    // Without its write-ahead file the redb copy would have lost them: it alone is behind.
    let without = dir.path().join("c");
    std::fs::create_dir_all(&without).unwrap();
    let redb_only = crash_copy(&path, &without);
    std::fs::remove_file(RedbLogStore::wal_path(&redb_only)).unwrap();
    let error = RedbLogStore::open(&redb_only, RedbOptions::default())
        .err()
        .expect("a store without its write-ahead file must not open");
    assert!(error.is_fatal());
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn a_torn_record_at_the_end_is_cut_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (copy, expected) = crashed_after_small_writes(dir.path());
    // The start of a record the crash interrupted.
    append_after_the_records(&copy, |_| vec![0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    let mut reopened = open(&copy);
    assert_holds_the_small_writes(&reopened, &expected);
    reopened
        .write(&WriteBatch::entries(entries(31, 33, 1)))
        .unwrap();
    let copy_again = crash_copy(&copy, &dir.path().join("c"));
    drop(reopened);
    assert_eq!(
        open(&copy_again).entries(1, 33, u64::MAX).unwrap(),
        entries(1, 33, 1)
    );
}

#[test]
fn a_record_that_does_not_replay_fails_every_open_and_the_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (copy, _) = crashed_after_small_writes(dir.path());
    // After the crash's records, one the rules refuse (entries leaving a gap after 30, as a
    // record of another format or a bug might read) and a good one after it.
    let bytes = append_after_the_records(&copy, |generation| {
        let mut tail = wal_record(generation, &WriteBatch::entries(entries(40, 41, 1)));
        tail.extend(wal_record(
            generation,
            &WriteBatch::entries(entries(31, 32, 1)),
        ));
        tail
    });
    let wal = RedbLogStore::wal_path(&copy);
    for attempt in 1..=2 {
        let error = RedbLogStore::open(&copy, RedbOptions::default())
            .err()
            .expect("a record that does not replay fails the open");
        assert!(matches!(error, StorageError::CorruptFile { .. }), "{error}");
        assert!(
            error.to_string().contains("does not apply"),
            "open {attempt}: {error}"
        );
    }
    assert_eq!(
        std::fs::read(&wal).unwrap()[..bytes.len()],
        bytes[..],
        "a failed open neither checkpoints nor starts the file again: its records stay"
    );
}

#[test]
fn a_crash_inside_a_checkpoint_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let mut store = open(&path);
    let expected = small_writes(&mut store);
    // The file before the checkpoint that closing makes: its records are then in redb, and the
    // crash came before the file was started again.
    let wal = RedbLogStore::wal_path(&path);
    let before = std::fs::read(&wal).unwrap();
    drop(store);
    std::fs::write(&wal, &before).unwrap();
    let reopened = open(&path);
    assert_holds_the_small_writes(&reopened, &expected);
    assert!(
        wal_len(&path) < wal_records_end(&before),
        "the old file was replaced"
    );
}

#[test]
fn a_write_ahead_file_of_another_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.redb");
    let second = dir.path().join("second.redb");
    small_writes(&mut open(&first));
    small_writes(&mut open(&second));
    std::fs::copy(
        RedbLogStore::wal_path(&first),
        RedbLogStore::wal_path(&second),
    )
    .unwrap();
    let error = RedbLogStore::open(&second, RedbOptions::default())
        .err()
        .expect("another store's write-ahead file must not be used");
    assert!(matches!(error, StorageError::CorruptFile { .. }), "{error}");
    assert!(error.to_string().contains("belongs to store"), "{error}");

    // And one lying beside a store that never had one (its redb file was replaced).
    std::fs::remove_file(&first).unwrap();
    let error = RedbLogStore::open(&first, RedbOptions::default())
        .err()
        .expect("a stray write-ahead file must not be replayed into a new store");
    assert!(error.to_string().contains("never had one"), "{error}");
}

#[test]
fn compaction_done_after_the_last_durable_commit_is_done_again_by_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("log.redb");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let options = RedbOptions {
        retention: ordo_coordinator::storage::Retention {
            entries_max: std::num::NonZeroU64::new(16),
            ..Default::default()
        },
        ..RedbOptions::default()
    };
    let mut store = RedbLogStore::open(&path, options).unwrap();
    store
        .write(&WriteBatch::hard_state(hard_state(1, Some(1))))
        .unwrap();
    store
        .write(&WriteBatch::entries(entries(1, 41, 1)))
        .unwrap();
    let mut state = StateUpdate::applied(LogId::new(1, 30));
    state.seqs = vec![(1, 3), (2, 12), (3, 20), (4, 29), (5, 30)];
    store
        .write(&WriteBatch {
            committed: Some(30),
            state: Some(state),
            ..WriteBatch::default()
        })
        .unwrap();
    let expected = store.store_state().unwrap();
    // 16 entries at most: the log is compacted to 27, and seqs 1 to 3 go with it.
    assert_eq!(expected.log.first_index, 27);
    assert_eq!(store.first_seq().unwrap(), 4);
    let copy = crash_copy(&path, &dir.path().join("b"));
    drop(store);
    let reopened = RedbLogStore::open(&copy, options).unwrap();
    assert_eq!(reopened.store_state().unwrap(), expected);
    assert_eq!(reopened.first_seq().unwrap(), 4);
    assert_eq!(reopened.batch_index(3).unwrap(), None);
    assert_eq!(reopened.batch_index(4).unwrap(), Some(29));
}

/// Environment variable that makes a machine without tmpfs mounts a failure instead of a skip
/// (CI sets it).
const REQUIRE_MOUNT: &str = "ORDO_TEST_REQUIRE_MOUNT";

/// A tmpfs of `bytes` at `path`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "ordo-test"])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_fails_a_write_whole_and_the_store_recovers_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let _disk = match SmallDisk::mount(&small, 8 << 20) {
        Ok(disk) => disk,
        Err(reason) if std::env::var_os(REQUIRE_MOUNT).is_none() => {
            eprintln!("SKIPPED: no small file system here: {reason}");
            return;
        }
        Err(reason) => panic!("{REQUIRE_MOUNT} is set, but mount failed: {reason}"),
    };
    let path = small.join("log.redb");
    let mut store = open(&path);
    // A term, then a vote in it: replaying the first over the second would be refused, so a
    // recovery that replays what redb already holds fails here.
    store
        .write(&WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    store
        .write(&WriteBatch::hard_state(hard_state(1, Some(1))))
        .unwrap();
    // Fill the file system but for a little room, then write until a write finds it full.
    let filler = small.join("filler");
    let free = {
        let mut bytes = 0u64;
        let mut chunk = vec![7u8; 64 << 10];
        let mut file = std::fs::File::create(&filler).unwrap();
        use std::io::Write;
        while file.write_all(&chunk).is_ok() {
            bytes += chunk.len() as u64;
        }
        chunk.clear();
        bytes
    };
    std::fs::File::options()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(free.saturating_sub(512 << 10))
        .unwrap();
    let mut next = 1;
    let failed = loop {
        let batch = WriteBatch::entries(entries(next, next + 20, 1));
        match store.write(&batch) {
            Ok(_) => next += 20,
            Err(error) => break (batch, error),
        }
        assert!(next < 1_000_000, "the disk never filled");
    };
    let (batch, error) = failed;
    assert!(
        matches!(error, StorageError::NoSpace { .. }),
        "expected NoSpace, got {error}"
    );
    let acknowledged = next - 1;
    assert!(acknowledged > 0);
    // Still full: recovering says so, and loses nothing.
    if let Err(error) = store.recover() {
        assert!(matches!(error, StorageError::NoSpace { .. }), "{error}");
        std::fs::remove_file(&filler).unwrap();
        store.recover().expect("recovers once there is room");
    } else {
        std::fs::remove_file(&filler).unwrap();
    }
    assert_eq!(store.store_state().unwrap().log.last_index(), acknowledged);
    // The failed write goes through now, and the log goes on.
    store.write(&batch).unwrap();
    store
        .write(&WriteBatch::entries(entries(next + 20, next + 40, 1)))
        .unwrap();
    drop(store);
    let reopened = open(&path);
    assert_eq!(
        reopened.entries(1, next + 40, u64::MAX).unwrap(),
        entries(1, next + 40, 1)
    );
    println!("full after {acknowledged} entries: {error}");
}
