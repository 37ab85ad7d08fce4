//! A fault-injecting [`Storage`]: the real filesystem underneath, with ENOSPC from the Nth
//! write on, fsync EIO at the Nth sync, a torn Nth write, a silent bit flip in the Nth write,
//! and a power loss: every write not yet synced is undone and the device stops answering.
//! Tests arm faults through a shared [`FaultHandle`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{FsStorage, Storage, StorageFile};

#[derive(Debug, Default)]
struct Plan {
    writes: u64,
    flips_applied: u64,
    syncs: u64,
    full_from_write: Option<u64>,
    eio_at_sync: Option<u64>,
    torn_at_write: Option<(u64, usize)>,
    flip_at_write: Option<(u64, usize)>,
    full_while: Option<PathBuf>,
    /// Writes since each file's last sync, with the bytes they replaced (power-loss mode).
    unsynced: Option<Vec<Unsynced>>,
    /// Where each file (by inode) is now: files are renamed while open.
    paths: std::collections::HashMap<u64, PathBuf>,
    /// After a power loss every call fails.
    dead: bool,
}

/// One write a power loss would undo.
#[derive(Debug)]
struct Unsynced {
    inode: u64,
    offset: u64,
    before: Vec<u8>,
}

/// The inode of the file at `path` (0 if it cannot be read).
fn inode_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0)
}

fn dead() -> io::Error {
    io::Error::other("injected power loss: the device is gone")
}

/// Arms and observes faults; clones share one plan.
#[derive(Debug, Clone, Default)]
pub struct FaultHandle {
    plan: Arc<Mutex<Plan>>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl FaultHandle {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device fills: the `n`th write or allocation from now (1 = the next) and every one
    /// after it fails with ENOSPC, until [`FaultHandle::free_space`].
    pub fn fill_after(&self, n: u64) {
        let mut plan = self.plan();
        plan.full_from_write = Some(plan.writes + n.max(1));
    }

    /// Every armed fault is cleared (space freed, no EIO, torn write or flip pending).
    pub fn heal(&self) {
        let mut plan = self.plan();
        plan.full_from_write = None;
        plan.eio_at_sync = None;
        plan.torn_at_write = None;
        plan.flip_at_write = None;
    }

    /// Space is freed: writes succeed again.
    pub fn free_space(&self) {
        self.plan().full_from_write = None;
    }

    /// The device is full (ENOSPC on every write and allocation) while a file exists at
    /// `flag`: a switch another process can flip.
    pub fn full_while_exists(&self, flag: PathBuf) {
        self.plan().full_while = Some(flag);
    }

    /// The `n`th sync from now fails with EIO (once).
    pub fn fail_sync(&self, n: u64) {
        let mut plan = self.plan();
        plan.eio_at_sync = Some(plan.syncs + n.max(1));
    }

    /// The `n`th write from now stores only its first `keep` bytes, then fails with EIO (an
    /// allocation fails whole).
    pub fn tear_write(&self, n: u64, keep: usize) {
        let mut plan = self.plan();
        plan.torn_at_write = Some((plan.writes + n.max(1), keep));
    }

    /// The `n`th write from now silently stores `bit` flipped (bit index within the buffer,
    /// taken modulo its length).
    pub fn flip_bit(&self, n: u64, bit: usize) {
        let mut plan = self.plan();
        plan.flip_at_write = Some((plan.writes + n.max(1), bit));
    }

    /// From now on, remember every write until its file is synced, so that
    /// [`FaultHandle::power_loss`] can undo it.
    pub fn track_unsynced(&self) {
        self.plan().unsynced.get_or_insert_with(Vec::new);
    }

    /// The power goes: every write not yet synced (since [`FaultHandle::track_unsynced`]) is
    /// undone, newest first, and every later call through this storage fails. Returns how
    /// many writes were undone. (File creation, renames and allocations are kept: the log
    /// syncs its directory after each, so they are durable when they return.)
    pub fn power_loss(&self) -> io::Result<usize> {
        let mut plan = self.plan();
        plan.dead = true;
        let undo = plan.unsynced.take().unwrap_or_default();
        drop(plan);
        let count = undo.len();
        let paths = std::mem::take(&mut self.plan().paths);
        for w in undo.into_iter().rev() {
            let Some(path) = paths.get(&w.inode) else { continue };
            let file = match std::fs::OpenOptions::new().write(true).open(path) {
                Ok(file) => file,
                // Removed since (a temporary file cleaned up): nothing left to undo.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let at = path.display();
                    return Err(io::Error::new(e.kind(), format!("undoing a write to {at}: {e}")));
                }
            };
            std::os::unix::fs::FileExt::write_all_at(&file, &w.before, w.offset)?;
            file.sync_data()?;
        }
        Ok(count)
    }

    /// Bit flips actually applied (a flip armed for an allocation does nothing).
    pub fn flips_applied(&self) -> u64 {
        self.plan().flips_applied
    }

    /// Writes and allocations seen so far.
    pub fn writes(&self) -> u64 {
        self.plan().writes
    }

    /// Syncs seen so far.
    pub fn syncs(&self) -> u64 {
        self.plan().syncs
    }
}

/// With this variable naming a path, `feral-node` stores its log through a [`FaultStorage`]
/// that is full while a file exists there (the chaos suite's disk full where it cannot mount a
/// tmpfs). Never set it in production.
pub const DISK_FULL_FLAG_ENV: &str = "FERAL_FAULT_DISK_FULL_FLAG";

/// The storage [`DISK_FULL_FLAG_ENV`] asks for, if it is set.
pub fn storage_from_env() -> Option<Arc<dyn Storage>> {
    let flag = std::env::var_os(DISK_FULL_FLAG_ENV)?;
    let (storage, handle) = FaultStorage::new();
    handle.full_while_exists(PathBuf::from(flag));
    Some(Arc::new(storage))
}

/// The real filesystem with faults from a [`FaultHandle`].
#[derive(Debug, Clone, Default)]
pub struct FaultStorage {
    handle: FaultHandle,
}

impl FaultStorage {
    /// Storage plus the handle that arms its faults.
    pub fn new() -> (FaultStorage, FaultHandle) {
        let handle = FaultHandle::default();
        (FaultStorage { handle: handle.clone() }, handle)
    }

    fn file(&self, inner: Box<dyn StorageFile>, path: &Path) -> FaultFile {
        let inode = inode_of(path);
        self.handle.plan().paths.insert(inode, path.to_path_buf());
        FaultFile { inner, handle: self.handle.clone(), path: path.to_path_buf(), inode }
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Box<dyn StorageFile>,
    handle: FaultHandle,
    path: PathBuf,
    inode: u64,
}

impl FaultFile {
    /// In power-loss mode, records the bytes a write of `len` at `offset` replaces.
    fn remember(&self, len: usize, offset: u64) -> io::Result<()> {
        if self.handle.plan().unsynced.is_none() {
            return Ok(());
        }
        let mut before = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match self.inner.read_at(&mut before[done..], offset + done as u64)? {
                0 => break, // past the end: the write extends the file; zeros stand in
                n => done += n,
            }
        }
        if let Some(unsynced) = self.handle.plan().unsynced.as_mut() {
            unsynced.push(Unsynced { inode: self.inode, offset, before });
        }
        Ok(())
    }

    /// Counts a space-consuming call and says whether the device is full for it.
    fn space_call(&self) -> (u64, bool) {
        let mut plan = self.handle.plan();
        plan.writes += 1;
        let n = plan.writes;
        let flagged = plan.full_while.as_ref().is_some_and(|flag| flag.exists());
        (n, flagged || plan.full_from_write.is_some_and(|from| n >= from))
    }
}

impl StorageFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (n, full) = self.space_call();
        if self.handle.plan().dead {
            return Err(dead());
        }
        if full {
            return Err(enospc());
        }
        self.remember(buf.len(), offset)?;
        let (torn, flip) = {
            let plan = self.handle.plan();
            (
                plan.torn_at_write.filter(|(at, _)| *at == n),
                plan.flip_at_write.filter(|(at, _)| *at == n),
            )
        };
        if let Some((_, keep)) = torn {
            self.inner.write_all_at(&buf[..keep.min(buf.len())], offset)?;
            return Err(io::Error::other(format!(
                "injected torn write to {}",
                self.path.display()
            )));
        }
        if let Some((_, bit)) = flip.filter(|_| !buf.is_empty()) {
            let mut copy = buf.to_vec();
            let bit = bit % (copy.len() * 8);
            copy[bit / 8] ^= 1 << (bit % 8);
            self.handle.plan().flips_applied += 1;
            return self.inner.write_all_at(&copy, offset);
        }
        self.inner.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let fail = {
            let mut plan = self.handle.plan();
            if plan.dead {
                return Err(dead());
            }
            plan.syncs += 1;
            plan.eio_at_sync == Some(plan.syncs)
        };
        if fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()?;
        if let Some(unsynced) = self.handle.plan().unsynced.as_mut() {
            unsynced.retain(|w| w.inode != self.inode);
        }
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let (n, full) = self.space_call();
        if self.handle.plan().dead {
            return Err(dead());
        }
        if full {
            return Err(enospc());
        }
        if self.handle.plan().torn_at_write.is_some_and(|(at, _)| at == n) {
            return Err(io::Error::other("injected failed allocation"));
        }
        self.inner.allocate(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn drop_cache(&self) {
        self.inner.drop_cache();
    }
}

impl Storage for FaultStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let inner = FsStorage.create(path)?;
        Ok(Box::new(self.file(inner, path)))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>> {
        let inner = FsStorage.open(path, writable)?;
        Ok(Box::new(self.file(inner, path)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (moved, replaced) = (inode_of(from), inode_of(to));
        FsStorage.rename(from, to)?;
        let mut plan = self.handle.plan();
        if let Some(unsynced) = plan.unsynced.as_mut() {
            unsynced.retain(|w| w.inode != replaced || replaced == moved);
        }
        plan.paths.insert(moved, to.to_path_buf());
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let inode = inode_of(path);
        FsStorage.remove(path)?;
        let mut plan = self.handle.plan();
        if let Some(unsynced) = plan.unsynced.as_mut() {
            unsynced.retain(|w| w.inode != inode);
        }
        plan.paths.remove(&inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        FsStorage.sync_dir(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        FsStorage.list(dir)
    }
}
