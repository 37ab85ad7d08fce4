//! The zeroer thread: writes zeros into the active segment a little ahead of the frames.
//!
//! A segment is preallocated with `posix_fallocate`, which on ext4 and XFS leaves unwritten
//! extents: the first fdatasync after frames land in one must also commit the extent
//! conversion, which measured about twice as slow as an fdatasync of an overwrite (for a
//! group of 1,024 ops of 256 bytes: 300 µs against 160 µs). Zeros written ahead of the
//! writer, and synced by this thread, turn those extents into initialized blocks before the
//! frames arrive, off the append path (on a machine whose appender waits on its syncs, the disk
//! is idle in between).
//!
//! Safety: the zeroer writes only at or past the active segment's `write_offset`, under the
//! writer lock, so it never touches a written frame and never races a frame write; what it
//! writes is zeros, which is what an unwritten extent reads as, so a crash at any point leaves
//! the same segment recovery already expects. It writes and syncs through a file handle of its
//! own: an I/O error is then reported to the write path's own fdatasync too (Linux reports a
//! writeback error once to each open file description), never swallowed here. Any failure
//! makes it give up on that segment, with a warning (appends then sync into unwritten
//! extents, as without it); it never pauses the log: the write path reports real faults.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::limits::{ZERO_AHEAD_BYTES, ZERO_CHUNK_BYTES};
use crate::storage::StorageFile;
use crate::wal::{Core, Lsn, lock};

/// Wakes the zeroer after the writer moved.
#[derive(Debug, Default)]
pub(crate) struct Zeroer {
    state: Mutex<Signal>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct Signal {
    wake: bool,
    shutdown: bool,
}

impl Zeroer {
    fn lock(&self) -> MutexGuard<'_, Signal> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for zeros ahead of the writer (cheap: a flag and at most one notify).
    pub(crate) fn wake(&self) {
        let mut signal = self.lock();
        if !signal.wake {
            signal.wake = true;
            self.cond.notify_one();
        }
    }

    /// Asks the thread to stop.
    pub(crate) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cond.notify_all();
    }

    /// Waits for a wake; false on shutdown.
    fn wait(&self) -> bool {
        let mut signal = self.lock();
        while !signal.wake && !signal.shutdown {
            signal = self.cond.wait(signal).unwrap_or_else(|p| p.into_inner());
        }
        signal.wake = false;
        !signal.shutdown
    }

    fn stopping(&self) -> bool {
        self.lock().shutdown
    }
}

/// The next stretch to zero, decided under the writer lock.
enum Step {
    /// Nothing to do until the writer moves.
    Idle,
    /// A handle of our own is needed for the segment at this path first.
    Open(Lsn, std::path::PathBuf),
    /// Zeros were written up to here; sync them.
    Wrote,
}

/// The thread body.
pub(crate) fn run(core: &Core) {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES as usize];
    let mut own: Option<(Lsn, Box<dyn StorageFile>)> = None;
    while core.zeroer.wait() {
        let mut written = false;
        loop {
            if core.zeroer.stopping() {
                return;
            }
            match step(core, &mut own, &zeros) {
                Step::Idle => break,
                Step::Open(base, path) => match core.config.storage.open(&path, true) {
                    Ok(file) => own = Some((base, file)),
                    Err(error) => {
                        tracing::warn!(%error, segment = %path.display(), "zeroer: cannot open; giving up on this segment");
                        give_up(core, base);
                        break;
                    }
                },
                Step::Wrote => written = true,
            }
        }
        // One sync for the whole stretch: one journal commit of the extent conversions, after
        // which the segment's syncs are plain overwrites.
        if written
            && let Some((base, file)) = own.as_ref()
            && let Err(error) = file.sync_data()
        {
            tracing::warn!(%error, "zeroer: sync failed; giving up on this segment");
            give_up(core, *base);
        }
    }
}

/// Under the writer lock: zero the next chunk ahead of the frames, if one is due.
fn step(core: &Core, own: &mut Option<(Lsn, Box<dyn StorageFile>)>, zeros: &[u8]) -> Step {
    let mut writer = lock(&core.writer);
    let Some(active) = writer.active.as_mut() else { return Step::Idle };
    let base = active.header.base_lsn;
    let limit = active.header.data_limit();
    let from = active.initialized_to.max(active.write_offset);
    if from >= limit || from >= active.write_offset.saturating_add(ZERO_AHEAD_BYTES) {
        return Step::Idle;
    }
    let file = match own {
        Some((held, file)) if *held == base => file,
        _ => return Step::Open(base, active.path.clone()),
    };
    let to = (from + ZERO_CHUNK_BYTES).min(limit);
    match file.write_all_at(&zeros[..(to - from) as usize], from) {
        Ok(()) => {
            active.initialized_to = to;
            Step::Wrote
        }
        Err(error) => {
            tracing::warn!(%error, "zeroer: write failed; giving up on this segment");
            active.initialized_to = limit;
            Step::Idle
        }
    }
}

/// Stops zeroing the segment `base` (if it is still the active one).
fn give_up(core: &Core, base: Lsn) {
    let mut writer = lock(&core.writer);
    if let Some(active) = writer.active.as_mut().filter(|a| a.header.base_lsn == base) {
        active.initialized_to = active.header.data_limit();
    }
}
