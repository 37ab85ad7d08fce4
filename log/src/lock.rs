//! The data-directory lock: one process owns a directory at a time (flock on `LOCK`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::limits::LOCK_SELF_WAIT;

/// File name of the lock inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Held for as long as the directory is open; the kernel drops it when the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock or fails at once with [`Error::Locked`] naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let io = |e| Error::from_io(&path, e);
        let mut file = crate::private::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let started = Instant::now();
        loop {
            // SAFETY: the descriptor belongs to `file`, which outlives the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut text = String::new();
            let _ = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text));
            let pid = text.trim();
            // Held by this process: either a handle still open here (refused once the wait
            // is over) or a child spawned by another thread that has not reached exec yet.
            if pid == std::process::id().to_string() && started.elapsed() < LOCK_SELF_WAIT {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let holder = match pid {
                "" => "another process".to_string(),
                own if own == std::process::id().to_string() => {
                    format!("another handle in this process (pid {own})")
                }
                pid => format!("another process (pid {pid})"),
            };
            return Err(Error::Locked { path: dir.to_path_buf(), holder });
        }
        // The pid is a courtesy for the error message; a full disk must not stop an open.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| write!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
