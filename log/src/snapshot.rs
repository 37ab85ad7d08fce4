//! A consistent view of the segment files for a backup taken while the log is open: every
//! sealed segment whole, and the active segment up to the end of its synced records.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::wal::{Lsn, Wal, lock};

/// One segment file and how many of its bytes belong to the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The segment file.
    pub path: PathBuf,
    /// Bytes to copy from its start (the whole file when sealed).
    pub bytes: u64,
    /// The capacity the file is preallocated to (a restored copy is extended to it).
    pub capacity: u64,
    /// True for the active segment (its copy ends at the last synced record).
    pub active: bool,
}

/// The snapshot: its files, in LSN order, and the last LSN they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Segment files.
    pub files: Vec<SnapshotFile>,
    /// Every record up to this LSN is in the files.
    pub durable_lsn: Lsn,
}

impl Wal {
    /// Names the bytes a consistent backup copies. Sealed segments never change; the active
    /// one is only ever appended to, so copying its first `bytes` later is still consistent.
    /// Refused while the log is paused (the unsynced tail is not trusted until `resume()`).
    pub fn snapshot(&self) -> Result<Snapshot> {
        // Lock order as in the group commit's failure path: state, then writer. A leader holds
        // the writer lock across write + sync, so once we hold it every written byte is synced.
        let state = self.state();
        if let Some(pause) = state.faults.first() {
            return Err(Error::Paused { kind: pause.kind, reason: pause.detail.clone() });
        }
        let writer = lock(&self.inner.writer);
        let active = writer.active.as_ref().map(|a| (a.header.base_lsn, a.write_offset));
        let mut bases = state.segments.clone();
        if let Some((base, _)) = active
            && !bases.contains(&base)
        {
            bases.push(base);
        }
        let mut files = Vec::with_capacity(bases.len());
        for base in bases {
            let path = self.segment_path(base);
            let capacity = std::fs::metadata(&path).map_err(|e| Error::from_io(&path, e))?.len();
            let (bytes, is_active) = match active {
                Some((active_base, offset)) if active_base == base => (offset, true),
                _ => (capacity, false),
            };
            files.push(SnapshotFile { path, bytes, capacity, active: is_active });
        }
        // Records written after the lock was taken are past `bytes`; durable_lsn may lag the
        // bytes by one in-progress batch, which the restored log's recovery finds synced.
        Ok(Snapshot { files, durable_lsn: state.durable_lsn })
    }
}
