//! The reserve: a preallocated file (`<data>/reserve`, `RESERVE_BYTES`) the store keeps so
//! that a full disk does not leave it stuck (CockroachDB keeps such a ballast file).
//!
//! When the store pauses because the disk is full, the reserve is deleted at once: its space
//! lets the index, the projection and the search index commit what they hold, and lets
//! `resume` reopen them (redb grows its files in steps of megabytes, more than an operator may
//! have freed). Writes stay refused until `resume`. The reserve is taken again at open and
//! after a resume, only when the volume has room for it and one more segment besides, so
//! holding it never fills the disk itself; without that room the store runs without it and
//! says so (`reserve_bytes` 0 in status, a warning in the log).

use std::sync::atomic::Ordering;

use crate::limits::RESERVE_BYTES;
use crate::wal::{Core, Wal};

/// The reserve's file name in the data directory.
pub const RESERVE_FILE: &str = "reserve";

impl Wal {
    /// Bytes the reserve holds now (0 when it is released or could not be taken).
    pub fn reserve_bytes(&self) -> u64 {
        if self.inner.reserve_held.load(Ordering::Relaxed) { RESERVE_BYTES } else { 0 }
    }

    /// Takes the reserve if it is not held and the volume has room for it and one segment
    /// more. Returns whether it is held afterwards.
    pub fn hold_reserve(&self) -> bool {
        let path = self.dir().join(RESERVE_FILE);
        if self.inner.reserve_held.load(Ordering::Relaxed) && path.exists() {
            return true;
        }
        let segment = self.writer().capacity;
        let free = crate::storage::available_bytes(self.dir()).unwrap_or(0);
        // A file left by an earlier run counts as room already taken.
        let left = std::fs::metadata(&path).map_or(0, |m| m.len());
        if free.saturating_add(left) < RESERVE_BYTES.saturating_add(segment) {
            tracing::warn!(
                free,
                wanted = RESERVE_BYTES + segment,
                "no room for the disk-full reserve; the store runs without it"
            );
            let _ = self.storage().remove(&path);
            self.inner.reserve_held.store(false, Ordering::Relaxed);
            return false;
        }
        let taken = (|| -> std::io::Result<()> {
            let _ = self.storage().remove(&path);
            let file = self.storage().create(&path)?;
            file.allocate(RESERVE_BYTES)?;
            file.sync_data()?;
            self.storage().sync_dir(self.dir())
        })();
        match taken {
            Ok(()) => {
                self.inner.reserve_held.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take the disk-full reserve; the store runs without it");
                let _ = self.storage().remove(&path);
                self.inner.reserve_held.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// Deletes the reserve (the disk is full); see [`Core::release_reserve`].
    pub(crate) fn release_reserve(&self) {
        self.inner.release_reserve();
    }
}

impl Core {
    /// Deletes the reserve (the disk is full): its space is free for what must still commit
    /// and for the reopen a resume does. Called without any lock held.
    pub(crate) fn release_reserve(&self) {
        if !self.reserve_held.swap(false, Ordering::Relaxed) {
            return;
        }
        let path = self.dir.join(RESERVE_FILE);
        let storage = &self.config.storage;
        match storage.remove(&path).and_then(|()| storage.sync_dir(&self.dir)) {
            Ok(()) => tracing::warn!(
                bytes = RESERVE_BYTES,
                "the disk is full: released the reserve so the index and projection can commit and resume can reopen them; free space, then resume"
            ),
            Err(e) => tracing::error!(error = %e, "could not release the disk-full reserve"),
        }
    }
}
