//! The writeback thread that trickles redb's pages to the disk between checkpoints, and the sync
//! thread that fsyncs the write-ahead file while redb commits: one each per store opened on a
//! file, for exactly as long as the store is open, and they leave every write where a reopen
//! finds it. Its own binary, so that no other test's stores share the count.

mod common;

use common::{entry, hard_state};
use ordo_common::{Entry, LogIndex};
use ordo_coordinator::storage::{
    LogRead, LogStore, RedbLogStore, RedbOptions, SYNC_THREAD_NAME, WRITEBACK_PERIOD,
    WRITEBACK_THREAD_NAME, WriteBatch,
};

/// Threads of this process named `name`.
fn threads(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Entries `lo..hi` of term 1 with `len`-byte payloads.
fn sized(lo: LogIndex, hi: LogIndex, len: usize) -> Vec<Entry> {
    (lo..hi).map(|index| entry(index, 1, len)).collect()
}

/// Waits until `count` writeback threads and as many sync threads run (a new thread names
/// itself once it starts, and an exited one leaves the task list a moment after it is joined),
/// then asserts it.
fn assert_writeback_threads(count: usize, why: &str) {
    for name in [WRITEBACK_THREAD_NAME, SYNC_THREAD_NAME] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while threads(name) != count && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(threads(name), count, "{name}: {why}");
    }
}

#[test]
fn each_store_on_a_file_has_one_writeback_and_one_sync_thread_while_it_is_open() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        // Small enough that redb hands pages to the kernel between checkpoints.
        cache_bytes: 1 << 20,
        ..RedbOptions::default()
    };
    assert_writeback_threads(0, "none before a store opens");
    let mut first = RedbLogStore::open(dir.path().join("a.redb"), options).unwrap();
    let second = RedbLogStore::open(dir.path().join("b.redb"), options).unwrap();
    assert_writeback_threads(2, "one thread per open store");

    // Writes behind the write-ahead file, with the thread starting writeback meanwhile.
    first
        .write(&WriteBatch::hard_state(hard_state(1, Some(1))))
        .unwrap();
    let payload = 4096;
    for lo in (1..=2_000).step_by(100) {
        let batch = WriteBatch::entries(sized(lo, lo + 100, payload));
        first.write(&batch).unwrap();
        if lo % 500 == 1 {
            std::thread::sleep(WRITEBACK_PERIOD * 2);
        }
    }
    drop(second);
    assert_writeback_threads(1, "a closed store's thread stops");
    drop(first);
    assert_writeback_threads(0, "every closed store's thread stops");

    let reopened = RedbLogStore::open(dir.path().join("a.redb"), options).unwrap();
    assert_eq!(reopened.store_state().unwrap().log.last_index(), 2_000);
    assert_eq!(
        reopened.entries(1_901, 2_001, u64::MAX).unwrap(),
        sized(1_901, 2_001, payload)
    );
    assert_writeback_threads(1, "a reopened store has its own");
}
