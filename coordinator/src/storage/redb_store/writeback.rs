//! Steady writeback of the redb file between checkpoints.
//!
//! Between checkpoints redb commits without an fsync: the pages it writes stay in its own write
//! buffer (at most half of its cache) and, once that is full, go to the kernel's page cache.
//! Left alone, the kernel writes them out only at the checkpoint's fsync, so every checkpoint
//! sent the disk a burst of megabytes at once, and for its tens of milliseconds every node's
//! small write-ahead fsync on the same disk queued behind it. A thread per store asks the kernel
//! every [`WRITEBACK_PERIOD`] to start writing the file's dirty pages out
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for them), so they trickle
//! to the disk as they are made and a checkpoint finds little left to write.
//!
//! It changes nothing about durability: the kernel may write a dirty page out at any time
//! anyway, and redb's crash safety does not depend on when it does (a page a non-durable commit
//! wrote is not part of the last durable commit). An error here is ignored: the checkpoint's
//! fsync reports any that matters. On systems other than Linux there is no thread.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the writeback thread starts writing the file's dirty pages out.
pub const WRITEBACK_PERIOD: Duration = Duration::from_millis(20);

/// The name of the writeback threads.
pub const WRITEBACK_THREAD_NAME: &str = "ordo-writeback";

/// The writeback thread of one store; stops (and is joined) when dropped.
pub(super) struct Writeback {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    /// Starts the thread for the redb file at `path`. A file it cannot open, or a thread it
    /// cannot start, leaves the store without one: writes stay correct, checkpoints slower.
    pub(super) fn start(path: &Path) -> Self {
        let idle = Self {
            stop: None,
            thread: None,
        };
        if !cfg!(target_os = "linux") {
            return idle;
        }
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "no steady writeback for the store");
                return idle;
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(WRITEBACK_THREAD_NAME.into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(WRITEBACK_PERIOD) {
                    start_writeback(&file);
                }
            });
        match spawned {
            Ok(thread) => Self {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(error) => {
                tracing::warn!(%error, "no steady writeback for the store");
                idle
            }
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` lives; the call reads no memory of
    // ours. Offset 0 and length 0 mean the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File) {}
