//! tantivy's memory-mapped directory, with every file it creates made 0600 (the search
//! directory itself is 0700, as every directory of the store). tantivy opens its files with
//! the process umask; this wrapper fixes the mode as soon as each file exists (nothing is
//! reachable in between: the directory admits its owner only).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, WatchCallback, WatchHandle, WritePtr,
};

/// See the module comment.
#[derive(Debug, Clone)]
pub struct PrivateDirectory {
    inner: MmapDirectory,
    root: PathBuf,
}

impl PrivateDirectory {
    /// Opens `root` (created 0700 when missing).
    pub fn open(root: &Path) -> io::Result<PrivateDirectory> {
        feral_log::private::create_dir_all(root)?;
        let inner = MmapDirectory::open(root).map_err(io::Error::other)?;
        Ok(PrivateDirectory { inner, root: root.to_path_buf() })
    }

    fn restrict(&self, path: &Path) -> io::Result<()> {
        feral_log::private::restrict(&self.root.join(path))
    }
}

impl Directory for PrivateDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let write = self.inner.open_write(path)?;
        self.restrict(path).map_err(|e| OpenWriteError::wrap_io_error(e, path.to_path_buf()))?;
        Ok(write)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.atomic_write(path, data)?;
        self.restrict(path)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        // The lock file is made 0600 before tantivy opens it (it never truncates it).
        feral_log::private::precreate(&self.root.join(&lock.filepath))
            .map_err(|e| LockError::IoError(Arc::new(e)))?;
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(callback)
    }
}
