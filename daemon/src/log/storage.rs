//! The few operations through which log data reaches the disk: positioned
//! writes, truncation and syncs of segment files, and the one `syncfs` after
//! recovery. They go through [`Storage`] so that a test backend can fail any
//! of them on command and then drop the pages a failed sync left behind, as
//! a power loss would (tests/storage_faults.rs). Indexes are derived data
//! (rebuilt past the recovery point) and are written through their maps.

use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Where segment bytes go. Every error is final: the caller stops the
/// partition and the process (docs/OPERATIONS.md "Fail-stop"), it never
/// retries.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Writes every byte of `pieces` at `offset` onwards.
    fn write_at(
        &self,
        file: &File,
        path: &Path,
        pieces: &[IoSlice<'_>],
        offset: u64,
    ) -> io::Result<()>;
    /// Cuts (or extends) the file to `len` bytes.
    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// fdatasync: the file's data and size are durable when it returns Ok.
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;
    /// syncfs on the filesystem holding `path`: everything written to it is
    /// durable when it returns Ok (writeback errors reported, Linux ≥ 5.8).
    fn sync_filesystem(&self, path: &Path) -> io::Result<()>;
}

/// The real thing: system calls on the files as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

/// The process-wide [`OsStorage`], shared by every log opened without a
/// storage of its own.
pub fn os_storage() -> Arc<dyn Storage> {
    static OS: OnceLock<Arc<dyn Storage>> = OnceLock::new();
    OS.get_or_init(|| Arc::new(OsStorage)).clone()
}

impl Storage for OsStorage {
    fn write_at(
        &self,
        file: &File,
        _path: &Path,
        pieces: &[IoSlice<'_>],
        offset: u64,
    ) -> io::Result<()> {
        write_all_vectored_at(file, pieces, offset)
    }

    fn set_len(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        let dir = File::open(path)?;
        // SAFETY: syncfs on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Most iovecs one `pwritev` takes (Linux's IOV_MAX).
const IOVECS_PER_WRITE_MAX: usize = 1024;

/// `pwritev` until every byte of `pieces` is written at `offset` onwards: a
/// produce's patched headers and untouched records in one system call per
/// [`IOVECS_PER_WRITE_MAX`] pieces (fewer calls on a short write's resume).
pub fn write_all_vectored_at(file: &File, pieces: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
    // Empty pieces are dropped so that a return of 0 can only mean no progress.
    let mut remaining: Vec<IoSlice<'_>> =
        pieces.iter().filter(|p| !p.is_empty()).copied().collect();
    let mut slices: &mut [IoSlice<'_>] = &mut remaining;
    let mut offset = offset;
    while !slices.is_empty() {
        let count = slices.len().min(IOVECS_PER_WRITE_MAX);
        let position = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the first `count`
        // slices borrow live buffers for the duration of the call, and the
        // descriptor belongs to `file`, open while we hold it.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                position,
            )
        };
        match written {
            n if n < 0 => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            n => {
                offset += n as u64;
                IoSlice::advance_slices(&mut slices, n as usize);
            }
        }
    }
    Ok(())
}
