//! Disk space as an operating condition: how much the file system holding the data directory
//! has free, and an emergency ballast.
//!
//! A node below its free-space watermark refuses new proposals (it keeps serving reads) and
//! resumes by itself when space returns. The watermark keeps the log from ever reaching a full
//! disk in normal operation; the ballast is for when it does anyway (another process filled the
//! disk, or followers kept appending what the leader already accepted). It is a file of real,
//! allocated bytes that the node deletes when a write fails with `ENOSPC`, so that reopening
//! the store and finishing what was already accepted has room. It is made again once the
//! file system has room for it above the watermark.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The ballast's file name, next to the log file.
pub const BALLAST_FILE_NAME: &str = "ordo.ballast";

/// Bytes the file system holding `path` has available to this process (`statvfs`'s
/// `f_bavail`, which leaves out the blocks reserved for root).
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `name` is a valid C string and `stats` a writable `statvfs`; the call writes
    // all of it on success, and it is read only then.
    let stats = unsafe {
        if libc::statvfs(name.as_ptr(), stats.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stats.assume_init()
    };
    Ok((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

/// Whether an I/O error says the file system is full (or the user's quota is).
pub fn is_no_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// A file of `bytes` allocated bytes the node gives up when the disk fills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ballast {
    pub path: PathBuf,
    pub bytes: u64,
}

impl Ballast {
    /// The ballast of the data directory `dir`.
    pub fn in_dir(dir: &Path, bytes: u64) -> Self {
        Self {
            path: dir.join(BALLAST_FILE_NAME),
            bytes,
        }
    }

    /// Whether the ballast is in place at its full size.
    pub fn is_in_place(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|meta| meta.len() >= self.bytes)
    }

    /// Makes the ballast if it is missing and the file system has room for it with
    /// `free_min` bytes still free afterwards. Returns whether it is in place.
    pub fn ensure(&self, free_min: u64) -> std::io::Result<bool> {
        if self.bytes == 0 || self.is_in_place() {
            return Ok(self.bytes != 0);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if available_bytes(dir)? < free_min.saturating_add(self.bytes) {
            return Ok(false);
        }
        let staging = self.path.with_extension("ballast.tmp");
        let written = write_zeros(&staging, self.bytes).and_then(|()| {
            std::fs::rename(&staging, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        });
        if let Err(error) = written {
            let _ = std::fs::remove_file(&staging);
            return if is_no_space(&error) {
                Ok(false)
            } else {
                Err(error)
            };
        }
        Ok(true)
    }

    /// Deletes the ballast. Returns whether there was one.
    pub fn release(&self) -> bool {
        let _ = std::fs::remove_file(self.path.with_extension("ballast.tmp"));
        std::fs::remove_file(&self.path).is_ok()
    }
}

/// Writes `bytes` zero bytes to a new file and syncs it: the blocks are really allocated (a
/// sparse file from `set_len` would free nothing when deleted).
fn write_zeros(path: &Path, bytes: u64) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut file = std::fs::File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}
