//! A full disk and a failing disk, injected under redb through its `StorageBackend`: the real
//! file backend, with writes that fail with `ENOSPC` or `EIO` while a switch is on.
//!
//! A full disk must lose nothing, purge nothing, and be recoverable without a restart; a
//! failing disk must stop writes and keep everything that was durable.

mod common;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{entries, hard_state, is_intact};
use ordo_common::LogId;
use ordo_coordinator::storage::space::Ballast;
use ordo_coordinator::storage::{
    GroupCommitWriter, Install, LogRead, LogStore, RedbLogStore, RedbOptions, SnapshotState,
    StateUpdate, StorageError, VerifyOnOpen, WriteBatch, WriterEvent,
};
use redb::StorageBackend;
use redb::backends::FileBackend;

const HEALTHY: u8 = 0;
const NO_SPACE: u8 = 1;
const BROKEN: u8 = 2;

/// What the disk does with writes now: one of the constants above.
#[derive(Clone, Default)]
struct Switch(Arc<AtomicU8>);

impl Switch {
    fn set(&self, mode: u8) {
        self.0.store(mode, Ordering::SeqCst);
    }

    fn check(&self) -> std::io::Result<()> {
        match self.0.load(Ordering::SeqCst) {
            NO_SPACE => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            BROKEN => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            _ => Ok(()),
        }
    }
}

/// The file backend, with writes, growth and syncs failing as the switch says. Reads never
/// fail: a full disk still reads.
#[derive(Debug)]
struct FaultyBackend {
    file: FileBackend,
    switch: Arc<AtomicU8>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Switch({})", self.0.load(Ordering::SeqCst))
    }
}

impl FaultyBackend {
    fn check(&self) -> std::io::Result<()> {
        Switch(self.switch.clone()).check()
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > self.file.len()? {
            self.check()?;
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }
}

struct Disk {
    dir: tempfile::TempDir,
    switch: Switch,
}

impl Disk {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            switch: Switch::default(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("log.redb")
    }

    /// Opens the store on the faulty backend.
    fn open(&self) -> RedbLogStore {
        let path = self.path();
        let switch = self.switch.0.clone();
        let factory = move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let file = FileBackend::new(file).map_err(std::io::Error::other)?;
            Ok(FaultyBackend {
                file,
                switch: switch.clone(),
            })
        };
        RedbLogStore::open_with_backend(factory, options()).expect("open on the faulty backend")
    }

    /// Opens the file plainly, as a restarted node would.
    fn reopen_plain(&self) -> RedbLogStore {
        RedbLogStore::open(self.path(), options()).expect("reopen the file")
    }
}

fn options() -> RedbOptions {
    RedbOptions {
        verify_on_open: VerifyOnOpen::All,
        ..RedbOptions::default()
    }
}

/// A log of entries 1..=`last` in term 1, committed and applied through `applied`.
fn seed_log(store: &mut RedbLogStore, last: u64, applied: u64) {
    store
        .write(&WriteBatch::hard_state(hard_state(1, Some(1))))
        .unwrap();
    store
        .write(&WriteBatch::entries(entries(1, last + 1, 1)))
        .unwrap();
    store
        .write(&WriteBatch {
            committed: Some(applied),
            state: Some(StateUpdate::applied(LogId::new(1, applied))),
            ..WriteBatch::default()
        })
        .unwrap();
}

fn assert_log(store: &dyn LogRead, first: u64, last: u64) {
    let state = store.store_state().unwrap();
    assert_eq!(state.log.first_index, first, "first index");
    assert_eq!(state.log.last_index(), last, "last index");
    let read = store.entries(first, last + 1, u64::MAX).unwrap();
    assert_eq!(read.len() as u64, last + 1 - first);
    assert!(read.iter().all(is_intact));
}

#[test]
fn a_full_disk_fails_the_write_loses_nothing_and_recovers_in_place() {
    let disk = Disk::new();
    let mut store = disk.open();
    seed_log(&mut store, 20, 10);
    let reader = store.reader();

    disk.switch.set(NO_SPACE);
    let error = store
        .write(&WriteBatch::entries(entries(21, 41, 1)))
        .expect_err("a write on a full disk fails");
    assert!(
        matches!(error, StorageError::NoSpace { .. }),
        "expected NoSpace, got {error}"
    );
    assert!(error.to_string().contains("full"), "{error}");
    // Writes wait for recovery; recovery waits for space.
    assert!(matches!(
        store.write(&WriteBatch::entries(entries(21, 22, 1))),
        Err(StorageError::Halted { .. })
    ));
    assert!(matches!(store.recover(), Err(StorageError::NoSpace { .. })));

    disk.switch.set(HEALTHY);
    store.recover().expect("recover once there is space");
    // Readers from before the failure read the reopened store.
    assert_log(&reader, 1, 20);
    store
        .write(&WriteBatch::entries(entries(21, 41, 1)))
        .expect("the same write, tried again");
    assert_log(&store, 1, 40);
    drop(store);
    assert_log(&disk.reopen_plain(), 1, 40);
}

#[test]
fn a_snapshot_install_on_a_full_disk_purges_nothing() {
    let disk = Disk::new();
    let mut store = disk.open();
    seed_log(&mut store, 30, 20);
    let before = store.snapshot().unwrap();

    disk.switch.set(NO_SPACE);
    let install = WriteBatch {
        install: Some(Install {
            last_included: LogId::new(1, 25),
            keep_suffix: true,
            state: SnapshotState {
                applied: LogId::new(1, 25),
                last_seq: 7,
                log_time_ms: 1,
                registry_floor_ms: 0,
                offsets: vec![("t".into(), 7)],
                registry: Vec::new(),
                coord: vec![],
            },
        }),
        ..WriteBatch::default()
    };
    let error = store.write(&install).expect_err("no room for the install");
    assert!(matches!(error, StorageError::NoSpace { .. }), "{error}");
    disk.switch.set(HEALTHY);
    store.recover().unwrap();
    assert_log(&store, 1, 30);
    assert_eq!(store.snapshot().unwrap(), before);
    drop(store);
    let store = disk.reopen_plain();
    assert_log(&store, 1, 30);
    assert_eq!(store.snapshot().unwrap(), before);
}

#[test]
fn a_failing_disk_halts_writes_and_keeps_what_was_durable() {
    let disk = Disk::new();
    let mut store = disk.open();
    seed_log(&mut store, 20, 10);
    disk.switch.set(BROKEN);
    let error = store
        .write(&WriteBatch::entries(entries(21, 41, 1)))
        .expect_err("a write on a failing disk fails");
    assert!(
        matches!(error, StorageError::Io(_)),
        "expected Io, got {error}"
    );
    assert!(error.is_fatal());
    // Only a restart may write again.
    disk.switch.set(HEALTHY);
    assert!(matches!(store.recover(), Err(StorageError::Halted { .. })));
    drop(store);
    assert_log(&disk.reopen_plain(), 1, 20);
}

/// The writer thread, on a full disk: it reports `NoSpace`, releases the ballast, keeps the
/// requests (and everything after them) until there is space, then reports them durable in
/// order.
#[test]
fn the_writer_waits_for_space_and_resumes_in_order() {
    let disk = Disk::new();
    let mut store = disk.open();
    seed_log(&mut store, 10, 5);
    let ballast = Ballast::in_dir(disk.dir.path(), 1 << 20);
    assert!(ballast.ensure(0).unwrap());
    store.set_ballast(ballast.clone());

    let (events_tx, events) = mpsc::channel();
    let writer = GroupCommitWriter::start(store, move |event| {
        let _ = events_tx.send(event);
    })
    .unwrap();
    disk.switch.set(NO_SPACE);
    let mut submitted = Vec::new();
    for first in (11..51).step_by(10) {
        submitted.push(
            writer
                .submit(WriteBatch::entries(entries(first, first + 10, 1)))
                .unwrap(),
        );
    }
    let event = events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        matches!(event, WriterEvent::NoSpace { .. }),
        "expected NoSpace first, got {event:?}"
    );
    // The writer goes on waiting: nothing is reported durable while the disk is full.
    std::thread::sleep(Duration::from_millis(500));
    while let Ok(event) = events.try_recv() {
        assert!(
            matches!(event, WriterEvent::NoSpace { .. }),
            "only NoSpace while the disk is full, got {event:?}"
        );
    }
    assert!(
        !ballast.path.exists(),
        "the ballast is released on a full disk"
    );
    // With no room even to reopen the file (this disk stays full whatever is freed), reads
    // say why they fail until space returns.
    let read = writer.reader().entries(1, 11, u64::MAX);
    assert!(
        matches!(read, Err(StorageError::NoSpace { .. })),
        "{read:?}"
    );

    disk.switch.set(HEALTHY);
    let mut durable_through = 0;
    while durable_through < *submitted.last().unwrap() {
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            WriterEvent::Durable(report) => {
                assert_eq!(*report.requests.start(), durable_through + 1, "in order");
                durable_through = *report.requests.end();
            }
            WriterEvent::NoSpace { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let store = writer.close().unwrap();
    assert_log(&store, 1, 50);
}

/// A writer still waiting for space when the node stops gives up: `close` returns, and what
/// it never wrote was never reported durable.
#[test]
fn a_writer_waiting_for_space_still_closes() {
    let disk = Disk::new();
    let mut store = disk.open();
    seed_log(&mut store, 10, 5);
    let (events_tx, events) = mpsc::channel();
    let writer = GroupCommitWriter::start(store, move |event| {
        let _ = events_tx.send(event);
    })
    .unwrap();
    disk.switch.set(NO_SPACE);
    writer
        .submit(WriteBatch::entries(entries(11, 21, 1)))
        .unwrap();
    assert!(matches!(
        events.recv_timeout(Duration::from_secs(10)).unwrap(),
        WriterEvent::NoSpace { .. }
    ));
    // `close` returns (the store, halted) instead of waiting for space forever.
    let store = writer.close().expect("the writer thread ends");
    assert!(store.store_state().unwrap().log.last_index() == 10);
    let failed = events.iter().any(|event| {
        matches!(
            event,
            WriterEvent::Failed {
                error: StorageError::WriterStopped,
                ..
            }
        )
    });
    assert!(failed, "the unwritten requests are reported failed");
    disk.switch.set(HEALTHY);
    assert_log(&disk.reopen_plain(), 1, 10);
}

#[test]
fn the_ballast_is_real_bytes_and_respects_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let ballast = Ballast::in_dir(dir.path(), 4 << 20);
    assert!(
        !ballast.ensure(u64::MAX / 2).unwrap(),
        "no room above the watermark"
    );
    assert!(!ballast.path.exists());
    assert!(ballast.ensure(0).unwrap());
    assert!(ballast.is_in_place());
    assert_eq!(allocated_bytes(&ballast.path), 4 << 20, "not a sparse file");
    assert!(ballast.release());
    assert!(!ballast.release());
}

fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}
