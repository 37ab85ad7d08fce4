//! The storage seam: every durable I/O the log does goes through these two narrow traits. The
//! real filesystem is [`FsStorage`]; [`FaultStorage`](crate::fault::FaultStorage) wraps it to
//! inject ENOSPC, fsync EIO, torn writes and bit flips.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A file opened through a [`Storage`].
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves `len` bytes of real space (the file reads as zeros there).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Tells the kernel the file's cached pages will not be needed soon (they are clean once
    /// synced). Only a hint: errors are ignored.
    fn drop_cache(&self) {}
    /// The next run of the file that may hold data, at or after `offset`: `[start, end)`, or
    /// none when everything after `offset` is a hole or an unwritten extent (both read as
    /// zeros). A scan for non-zero bytes may skip what lies outside the runs. By default every
    /// byte may hold data.
    fn data_run(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        Ok(Some((offset, u64::MAX)))
    }
    /// True when the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// A directory of files, as the log sees it.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates a new file (fails if it exists), open for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file, for writing too when `writable`.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Renames a file atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries durable (fsync on the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Lists the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// True when the log may write zeros ahead of its frames from a background thread (see
    /// `zeroer.rs`). Off by default, so a fault-injecting storage sees only the write path's
    /// own writes, in a replayable order.
    fn zero_fill_ahead(&self) -> bool {
        false
    }
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile(File);

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "allocation too large"))?;
        // SAFETY: the descriptor is owned by `self.0` and open for the duration of the call;
        // posix_fallocate takes no pointers.
        let rc = unsafe { libc::posix_fallocate(self.0.as_raw_fd(), 0, len) };
        if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn drop_cache(&self) {
        // SAFETY: the descriptor is owned by `self.0` and open for the duration of the call.
        let _ = unsafe { libc::posix_fadvise(self.0.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }

    /// `lseek` with `SEEK_DATA` and `SEEK_HOLE`. The file's position is not used by anything
    /// else (every read and write is positional). A filesystem without them answers for the
    /// whole file, which is the default.
    fn data_run(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let Ok(at) = libc::off_t::try_from(offset) else { return Ok(Some((offset, u64::MAX))) };
        let fd = self.0.as_raw_fd();
        // SAFETY: the descriptor is owned by `self.0` and open for the duration of the calls;
        // lseek takes no pointers.
        let start = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if start < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(None),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((offset, u64::MAX))),
                _ => Err(e),
            };
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some((start as u64, end as u64)))
    }
}

impl Storage for FsStorage {
    fn zero_fill_ahead(&self) -> bool {
        true
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = crate::private::options().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(FsFile(file)))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Box::new(FsFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            out.push(entry?.path());
        }
        out.sort();
        Ok(out)
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
pub fn read_exact_at(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ends at {} of {}", offset + done as u64, offset + buf.len() as u64),
            ));
        }
        done += n;
    }
    Ok(())
}

/// Bytes an unprivileged writer can still allocate on the filesystem that holds `path` (or,
/// when `path` does not exist yet, its nearest existing ancestor): `statvfs`'s `f_bavail`
/// blocks of `f_frsize` bytes.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    let name = std::ffi::CString::new(at.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: `name` is a valid NUL-terminated string and `stats` a properly sized buffer
    // that statvfs fills in; nothing else is touched.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(name.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recovery skips what `data_run` calls empty, so it must never call empty a byte that was
    /// written: a preallocated file with one byte written deep inside has a run holding it,
    /// and every byte before it either lies in a run or reads as zero.
    #[test]
    fn data_runs_cover_every_written_byte_of_a_preallocated_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = FsStorage.create(&dir.path().join("seg")).expect("create");
        let len = 4 << 20;
        file.allocate(len).expect("allocate");
        let written = 3 << 20;
        file.write_all_at(&[7], written + 5).expect("write");
        let mut at = 0;
        let mut found = false;
        while let Some((from, to)) = file.data_run(at).expect("data_run") {
            assert!(from >= at && to > from, "runs move forward: {at} -> [{from}, {to})");
            if (from..to).contains(&(written + 5)) {
                found = true;
            }
            // Whatever lies between runs reads as zeros.
            let mut gap = vec![1u8; (from - at) as usize];
            file.read_at(&mut gap, at).expect("read");
            assert!(gap.iter().all(|b| *b == 0), "non-zero bytes outside a run at {at}..{from}");
            if to >= len {
                break;
            }
            at = to;
        }
        assert!(found, "the written byte lies in a data run");
    }
}
