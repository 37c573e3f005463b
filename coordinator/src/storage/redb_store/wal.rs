//! The write-ahead file in front of the redb file.
//!
//! A durable redb commit writes a dozen or more scattered pages (the B-trees' copied paths, the
//! free-page records, the header) and then fsyncs them: on the development VM about 0.3 ms for a
//! lone batch. Appending one record to a file and fsyncing it costs about 0.1 ms. So an ordinary
//! write is appended to this file as one record and committed to redb *without* an fsync
//! (`Durability::None`: readers in this process see it, the file's durable header does not move),
//! in a transaction that also counts the records redb holds
//! ([`WAL_RECORDS_KEY`](super::layout::WAL_RECORDS_KEY)); the record's fsync runs on a thread of
//! its own ([`Syncer`]) while redb commits, and the write is durable, and reported, once both are
//! done. If the commit fails, the record is cut off again, so a write reported as failed is never
//! replayed; if the fsync fails, a checkpoint makes the write durable in redb instead (or the store
//! halts, and a reopen finds the write or not, as after a crash). Every so often a
//! *checkpoint* makes redb durable and starts the file afresh. Retention runs only in durable
//! commits, so a replay redoes exactly what each record says.
//!
//! # Layout
//!
//! `[magic "ORDOWAL1"][store id: u64][generation: u64][crc32: u32]` and then records, each
//! `[length: u32][crc32: u32][body]`, all big-endian. A record's checksum covers the file's
//! generation, its length and its body, so a record left over from an earlier generation, or
//! torn by a crash, fails it: the records read back are the valid prefix, and the rest is cut.
//!
//! The file is allocated [`ALLOCATION_STEP`] ahead of its records (`fallocate`, which reads back
//! as zeros): an append inside the allocation leaves the file's size alone, so its `fdatasync`
//! writes the record and no inode (on the development VM's ext4, 41 µs instead of 59 for a
//! 300-byte append); one append per step extends it. The step is small so that a full disk still
//! shows at the next appends, not a checkpoint's worth of records later. Eight zero bytes where
//! a record would start, never a record's header, end the records like a torn tail.
//!
//! # The generation protocol
//!
//! redb keeps, in the same durable commit as the data, the generation whose records it does
//! *not* yet hold ([`WAL_GENERATION_KEY`](super::layout::WAL_GENERATION_KEY)). A checkpoint
//! commits redb durably with that number moved to `g + 1` and only then replaces this file with
//! an empty one of generation `g + 1` (written aside, fsynced, renamed over). On open:
//!
//! - the file's generation equals redb's: its records are replayed into redb, but for the
//!   first ones redb already counts (a clean close of redb makes its commits durable);
//! - it is one less: the crash fell between the two steps of a checkpoint, redb holds every
//!   record already, and the file is replaced;
//! - anything else, another store's id, or a missing file where redb expects one, is refused:
//!   the two files do not belong together, and acknowledged writes could be lost.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use ordo_node::storage::StorageError;

use crate::storage::space::is_no_space;

const MAGIC: &[u8; 8] = b"ORDOWAL1";
pub(super) const HEADER_BYTES: u64 = 8 + 8 + 8 + 4;
pub(super) const RECORD_HEADER_BYTES: u64 = 8;

/// How far ahead of its records the file is allocated.
pub(super) const ALLOCATION_STEP: u64 = 256 * 1024;

/// The write-ahead file of one store.
pub(super) struct Wal {
    /// Shared with the [`Syncer`] while it fsyncs a record.
    file: Arc<File>,
    path: PathBuf,
    store_id: u64,
    generation: u64,
    /// Where the next record goes: the end of the valid records.
    len: u64,
    /// Valid records in the file.
    records: u64,
    /// The file's size: appends up to here do not change it.
    allocated: u64,
}

/// What [`Wal::open`] found.
pub(super) struct Opened {
    pub wal: Wal,
    /// The bodies of the valid records of the file's generation, in order.
    pub records: Vec<Vec<u8>>,
}

/// The path of the write-ahead file of the redb file at `db`.
pub(super) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".wal");
    PathBuf::from(name)
}

fn io_error(path: &Path, what: &str, error: std::io::Error) -> StorageError {
    if is_no_space(&error) {
        return StorageError::NoSpace {
            detail: format!("{what} {}: {error}", path.display()),
        };
    }
    StorageError::Io(std::io::Error::new(
        error.kind(),
        format!("{what} {}: {error}", path.display()),
    ))
}

fn corrupt(path: &Path, detail: impl std::fmt::Display) -> StorageError {
    StorageError::CorruptFile {
        detail: format!("write-ahead file {}: {detail}", path.display()),
    }
}

pub(super) fn header(store_id: u64, generation: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES as usize);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&store_id.to_be_bytes());
    bytes.extend_from_slice(&generation.to_be_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// A record of `body` (under 4 GiB) in a file of `generation`.
pub(super) fn record(generation: u64, body: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD_HEADER_BYTES as usize + body.len());
    record.extend_from_slice(&(body.len() as u32).to_be_bytes());
    record.extend_from_slice(&record_crc(generation, body).to_be_bytes());
    record.extend_from_slice(body);
    record
}

fn record_crc(generation: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&generation.to_be_bytes());
    hasher.update(&(body.len() as u32).to_be_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Where the header holds the file's generation.
const GENERATION_FIELD: std::ops::Range<usize> = 16..24;

/// The valid records of a file of `generation` whose bytes (header included) are `bytes`: where
/// they end, and their bodies in order.
fn valid_records(bytes: &[u8], generation: u64) -> (usize, Vec<Vec<u8>>) {
    let mut records = Vec::new();
    let mut offset = HEADER_BYTES as usize;
    while let Some(head) = bytes.get(offset..offset + RECORD_HEADER_BYTES as usize) {
        if head.iter().all(|&byte| byte == 0) {
            // The allocated part no record reached yet (or a torn header).
            break;
        }
        let length = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        let start = offset + RECORD_HEADER_BYTES as usize;
        let Some(body) = bytes.get(start..start + length) else {
            break;
        };
        if record_crc(generation, body) != crc {
            break;
        }
        records.push(body.to_vec());
        offset = start + length;
    }
    (offset, records)
}

/// Where the valid records of the write-ahead file whose bytes are `bytes` end (the header's
/// end if it has none or no valid header): the file is allocated ahead, so its size does not
/// tell.
pub(super) fn records_end(bytes: &[u8]) -> u64 {
    match bytes.get(GENERATION_FIELD) {
        Some(generation) => {
            let generation = u64::from_be_bytes(generation.try_into().expect("8 bytes"));
            valid_records(bytes, generation).0 as u64
        }
        None => HEADER_BYTES,
    }
}

/// Allocates `file` up to `bytes` (no further if it is longer), so that appends inside it do not
/// change its size; whether it did. Best effort: a file system without `fallocate`, or too full
/// for it, leaves appends growing the file as they would anyway (and a full disk then fails the
/// append itself).
fn preallocate(file: &File, bytes: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(length) = libc::off_t::try_from(bytes) else {
            return false;
        };
        // SAFETY: the descriptor is open for as long as `file` lives; the call reads no memory
        // of ours. Mode 0 allocates and, past the end, extends the size.
        unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, bytes);
        false
    }
}

/// Fsyncs the directory holding `path`, so that a rename or a creation in it is durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

impl Wal {
    /// Makes `path` an empty file of `generation`: written aside, fsynced, renamed over.
    pub fn create(path: &Path, store_id: u64, generation: u64) -> Result<Self, StorageError> {
        let mut aside = path.as_os_str().to_os_string();
        aside.push(".new");
        let aside = PathBuf::from(aside);
        let write = || -> std::io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&aside)?;
            file.write_all_at(&header(store_id, generation), 0)?;
            preallocate(&file, HEADER_BYTES + ALLOCATION_STEP);
            file.sync_all()?;
            std::fs::rename(&aside, path)?;
            sync_parent(path)?;
            Ok(file)
        };
        let file = write().map_err(|error| io_error(path, "cannot write", error))?;
        let allocated = file
            .metadata()
            .map_err(|error| io_error(path, "cannot read", error))?
            .len();
        Ok(Self {
            file: Arc::new(file),
            path: path.to_path_buf(),
            store_id,
            generation,
            len: HEADER_BYTES,
            records: 0,
            allocated,
        })
    }

    /// Opens the file at `path` and reads its valid records; `None` if there is no file. A file
    /// over `bytes_max` is refused unread. A torn or stale tail is cut off (durably) so that
    /// new records follow the valid ones.
    pub fn open(path: &Path, bytes_max: u64) -> Result<Option<Opened>, StorageError> {
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(path, "cannot open", error)),
        };
        let size = file
            .metadata()
            .map_err(|error| io_error(path, "cannot read", error))?
            .len();
        if size > bytes_max {
            return Err(corrupt(
                path,
                format!("it holds {size} bytes, more than a store ever writes there ({bytes_max})"),
            ));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|error| io_error(path, "cannot read", error))?;
        let Some(head) = bytes.get(..HEADER_BYTES as usize) else {
            return Err(corrupt(path, "shorter than its header"));
        };
        let (fields, crc) = head.split_at(HEADER_BYTES as usize - 4);
        if &fields[..8] != MAGIC {
            return Err(corrupt(path, "not an Ordo write-ahead file"));
        }
        if crc32fast::hash(fields) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
            return Err(corrupt(path, "its header fails its checksum"));
        }
        let store_id = u64::from_be_bytes(fields[8..16].try_into().expect("8 bytes"));
        let generation = u64::from_be_bytes(fields[GENERATION_FIELD].try_into().expect("8 bytes"));
        let (offset, records) = valid_records(&bytes, generation);
        if offset < bytes.len() {
            let cut = || -> std::io::Result<()> {
                file.set_len(offset as u64)?;
                file.sync_all()
            };
            cut().map_err(|error| io_error(path, "cannot cut the torn tail of", error))?;
        }
        Ok(Some(Opened {
            wal: Self {
                file: Arc::new(file),
                path: path.to_path_buf(),
                store_id,
                generation,
                len: offset as u64,
                records: records.len() as u64,
                allocated: offset as u64,
            },
            records,
        }))
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Records in the file.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Takes the records after the first `records` (which end at `len`) back, durably.
    pub fn cut(&mut self, len: u64, records: u64) -> Result<(), StorageError> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|error| io_error(&self.path, "cannot cut", error))?;
        self.len = len;
        self.records = records;
        self.allocated = len;
        Ok(())
    }

    /// Writes one record after the others, without an fsync: the caller makes it durable (see
    /// [`Syncer`]) before it counts on it. On an error the record may be partly written; its
    /// bytes are taken back if they can be, the caller stops writing, and the next open cuts a
    /// torn record.
    pub fn write(&mut self, body: &[u8]) -> Result<(), StorageError> {
        if u32::try_from(body.len()).is_err() {
            return Err(StorageError::invalid_write(
                "a write-ahead record over 4 GiB",
            ));
        }
        let record = record(self.generation, body);
        let end = self.len + record.len() as u64;
        if end > self.allocated && preallocate(&self.file, end + ALLOCATION_STEP) {
            self.allocated = end + ALLOCATION_STEP;
        }
        if let Err(error) = self.file.write_all_at(&record, self.len) {
            let _ = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            return Err(io_error(&self.path, "cannot append to", error));
        }
        self.len = end;
        self.records += 1;
        self.allocated = self.allocated.max(end);
        Ok(())
    }

    /// The open file, for a [`Syncer`].
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The error of a failed fsync of this file.
    pub fn sync_error(&self, error: std::io::Error) -> StorageError {
        io_error(&self.path, "cannot fsync", error)
    }

    /// Appends one record and fsyncs it.
    #[cfg(test)]
    pub fn append(&mut self, body: &[u8]) -> Result<(), StorageError> {
        self.write(body)?;
        self.file
            .sync_data()
            .map_err(|error| self.sync_error(error))
    }

    /// Replaces the file with an empty one of the next generation (after redb made every record
    /// of this one durable).
    pub fn restart(&mut self) -> Result<(), StorageError> {
        *self = Self::create(&self.path, self.store_id, self.generation + 1)?;
        Ok(())
    }
}

/// The name of a store's sync thread.
pub const SYNC_THREAD_NAME: &str = "ordo-wal-sync";

/// Fsyncs the write-ahead file on a thread of its own, so that the store's writer commits redb
/// (work for the CPU) while the disk makes the record durable (a wait), instead of one after the
/// other: at one submitter on the development VM, 0.07 ms of redb commit and 0.1–0.15 ms of
/// append and fsync on every node's critical path. One fsync at a time (each call waits for its
/// own); the thread stops when the syncer is dropped.
pub(super) struct Syncer {
    requests: Option<SyncSender<Arc<File>>>,
    results: Receiver<std::io::Result<()>>,
    thread: Option<JoinHandle<()>>,
    /// Fails the next fsync, as a disk would (tests only).
    #[cfg(test)]
    fail_next: Arc<std::sync::atomic::AtomicBool>,
}

impl Syncer {
    pub fn start() -> std::io::Result<Self> {
        let (requests, incoming) = std::sync::mpsc::sync_channel::<Arc<File>>(1);
        let (outgoing, results) = std::sync::mpsc::sync_channel(1);
        #[cfg(test)]
        let fail_next = Arc::new(std::sync::atomic::AtomicBool::new(false));
        #[cfg(test)]
        let fail = fail_next.clone();
        let thread = std::thread::Builder::new()
            .name(SYNC_THREAD_NAME.into())
            .spawn(move || {
                for file in incoming {
                    #[cfg(test)]
                    if fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        let _ = outgoing.send(Err(std::io::Error::other("an injected failure")));
                        continue;
                    }
                    if outgoing.send(file.sync_data()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            results,
            thread: Some(thread),
            #[cfg(test)]
            fail_next,
        })
    }

    /// Runs `work` while `file`'s data is fsynced; returns what `work` returned and how the
    /// fsync went, once both are done.
    pub fn overlapped<T>(
        &mut self,
        file: Arc<File>,
        work: impl FnOnce() -> T,
    ) -> (T, std::io::Result<()>) {
        let sent = self.requests.as_ref().map(|requests| requests.send(file));
        let out = work();
        let synced = match sent {
            Some(Ok(())) => self.results.recv().unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the sync thread stopped before it said how the fsync went",
                ))
            }),
            // The thread is gone: the fsync is done here, after the work.
            Some(Err(std::sync::mpsc::SendError(file))) => file.sync_data(),
            None => Err(std::io::Error::other("the sync thread was stopped")),
        };
        (out, synced)
    }

    /// Makes the next fsync fail.
    #[cfg(test)]
    pub fn fail_next(&self) {
        self.fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(path: &Path) -> Opened {
        Wal::open(path, u64::MAX).unwrap().expect("the file exists")
    }

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb.wal");
        assert!(Wal::open(&path, u64::MAX).unwrap().is_none());
        let mut wal = Wal::create(&path, 7, 1).unwrap();
        wal.append(b"first").unwrap();
        wal.append(b"").unwrap();
        wal.append(b"third").unwrap();
        let length = wal.len();
        drop(wal);
        // A crash in the middle of the next append.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0, 0, 0, 9, 1, 2], length).unwrap();
        let Opened { mut wal, records } = opened(&path);
        assert_eq!(records, vec![b"first".to_vec(), vec![], b"third".to_vec()]);
        assert_eq!(
            (wal.store_id(), wal.generation(), wal.len()),
            (7, 1, length)
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), length);
        wal.append(b"fourth").unwrap();
        assert_eq!(opened(&path).records.len(), 4);
    }

    #[test]
    fn a_new_file_is_allocated_ahead_and_its_zeros_are_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb.wal");
        let mut wal = Wal::create(&path, 7, 1).unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        if cfg!(target_os = "linux") {
            assert_eq!(
                size(),
                HEADER_BYTES + ALLOCATION_STEP,
                "allocated a step ahead"
            );
        }
        wal.append(b"first").unwrap();
        wal.append(b"").unwrap();
        let length = wal.len();
        drop(wal);
        let Opened { mut wal, records } = opened(&path);
        assert_eq!(records, vec![b"first".to_vec(), vec![]]);
        assert_eq!(
            wal.len(),
            length,
            "the zeros after the records are not read as one"
        );
        wal.append(b"third").unwrap();
        assert_eq!(opened(&path).records.len(), 3);
        // Past the allocation, the next append allocates the next step.
        let mut wal = opened(&path).wal;
        let body = vec![7u8; ALLOCATION_STEP as usize / 4];
        for _ in 0..5 {
            wal.append(&body).unwrap();
        }
        assert!(wal.len() > HEADER_BYTES + ALLOCATION_STEP);
        if cfg!(target_os = "linux") {
            assert!(size() > wal.len(), "still ahead: {} {}", size(), wal.len());
            assert!(
                size() - wal.len() <= ALLOCATION_STEP,
                "{} {}",
                size(),
                wal.len()
            );
        }
        assert_eq!(opened(&path).records.len(), 8);

        // In a file of this generation an empty record's checksum is zero, so eight zero bytes
        // pass as one: the zeros must end the records all the same.
        let generation = 0x4cf0_5f31;
        assert_eq!(record(generation, b""), [0u8; RECORD_HEADER_BYTES as usize]);
        let mut wal = Wal::create(&path, 7, generation).unwrap();
        wal.append(b"only").unwrap();
        drop(wal);
        assert_eq!(opened(&path).records, vec![b"only".to_vec()]);
    }

    #[test]
    fn a_damaged_record_ends_the_records_and_a_restart_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb.wal");
        let mut wal = Wal::create(&path, 7, 1).unwrap();
        wal.append(b"kept").unwrap();
        let damaged_at = wal.len() + RECORD_HEADER_BYTES + 2;
        wal.append(b"damaged").unwrap();
        wal.append(b"after").unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"X", damaged_at).unwrap();
        assert_eq!(opened(&path).records, vec![b"kept".to_vec()]);

        let Opened { mut wal, .. } = opened(&path);
        wal.append(b"old generation").unwrap();
        wal.restart().unwrap();
        let Opened { wal, records } = opened(&path);
        assert_eq!((wal.generation(), records.len()), (2, 0));
    }

    #[test]
    fn records_of_an_earlier_generation_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb.wal");
        let mut wal = Wal::create(&path, 7, 1).unwrap();
        wal.append(b"generation one").unwrap();
        drop(wal);
        // The header of generation 2 over a file whose records are still generation 1's.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&header(7, 2), 0).unwrap();
        let Opened { wal, records } = opened(&path);
        assert_eq!((wal.generation(), records.len()), (2, 0));
    }

    proptest::proptest! {
        /// Any damage, anywhere, and any truncation: opening never panics, and what it reads
        /// back is a prefix of what was written (or it refuses the file).
        #[test]
        fn damage_never_panics_and_yields_a_prefix(
            bodies in proptest::collection::vec(proptest::collection::vec(0u8.., 0..300), 0..12),
            flips in proptest::collection::vec((0usize..5_000, 0u8..8), 0..6),
            cut in proptest::option::of(0usize..5_000),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log.redb.wal");
            let mut wal = Wal::create(&path, 9, 4).unwrap();
            for body in &bodies {
                wal.append(body).unwrap();
            }
            drop(wal);
            let mut bytes = std::fs::read(&path).unwrap();
            let len = bytes.len();
            for (at, bit) in flips {
                bytes[at % len] ^= 1 << bit;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.min(bytes.len()));
            }
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(Some(opened)) = Wal::open(&path, u64::MAX) {
                proptest::prop_assert!(opened.records.len() <= bodies.len());
                proptest::prop_assert_eq!(&opened.records[..], &bodies[..opened.records.len()]);
            }
        }
    }

    #[test]
    fn a_file_larger_than_a_store_writes_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb.wal");
        let mut wal = Wal::create(&path, 7, 1).unwrap();
        wal.append(&[5; 100]).unwrap();
        drop(wal);
        // The size of the file, allocated ahead, not of its records (an open that accepts it
        // cuts the allocation, so the refusal comes first).
        let size = std::fs::metadata(&path).unwrap().len();
        let error = Wal::open(&path, size - 1).err().expect("refused");
        assert!(matches!(error, StorageError::CorruptFile { .. }), "{error}");
        assert!(
            error.to_string().contains("more than a store ever writes"),
            "{error}"
        );
        assert_eq!(Wal::open(&path, size).unwrap().unwrap().records.len(), 1);
    }

    #[test]
    fn a_damaged_header_or_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb.wal");
        Wal::create(&path, 7, 1).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"\xff", 12).unwrap();
        let error = Wal::open(&path, u64::MAX).err().expect("refused");
        assert!(error.to_string().contains("checksum"), "{error}");
        std::fs::write(&path, b"something else entirely, long enough").unwrap();
        let error = Wal::open(&path, u64::MAX).err().expect("refused");
        assert!(error.to_string().contains("not an Ordo"), "{error}");
    }
}
