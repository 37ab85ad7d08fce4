//! Private files: every directory the store creates is 0700 and every file 0600, whatever the
//! process umask (SPEC 9), and the check a node runs before it serves (as OpenSSH and
//! PostgreSQL do: a group- or world-accessible data directory or key is refused).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory the store creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;
/// Permission bits that make a file or directory reachable by the group or by others.
pub const SHARED_BITS: u32 = 0o077;

/// Creates `dir` and any missing parents with mode 0700; an existing `dir` keeps its mode
/// (the start-up check reports it when it is shared). Each directory created is made durable
/// in its parent (the parent is fsynced after it), so a power loss right after cannot take
/// away a directory a store was then created in.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The missing directories, outermost first.
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        missing.push(path);
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(path) {
            Ok(()) => {}
            // Another process made it in between: it is there, which is what was asked.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => continue,
            Err(e) => return Err(e),
        }
        // The umask may have removed bits from 0700 but never adds any; set it exactly.
        fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))?;
        sync_parent(path)?;
    }
    Ok(())
}

/// Fsyncs the directory that holds `path` (the current directory for a bare name), so that
/// the entry of a file or directory just created or renamed there survives a power loss.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Options that create a file with mode 0600 (the umask can only remove bits from it).
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates `path` empty with mode 0600 if it does not exist, so that a library that creates
/// the file itself (redb) finds a private one. A file created here is made durable in its
/// directory (the directory is fsynced).
pub fn precreate(path: &Path) -> io::Result<()> {
    match options().write(true).create_new(true).open(path) {
        Ok(_) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically and privately: a new temporary file (create_new,
/// 0600), fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = options().write(true).create_new(true).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Makes an existing file 0600 and an existing directory 0700.
pub fn restrict(path: &Path) -> io::Result<()> {
    let mode = if fs::symlink_metadata(path)?.is_dir() { DIR_MODE } else { FILE_MODE };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Why a path is not private: its mode, and the command that makes it so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// The path.
    pub path: std::path::PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// The mode it should have (0700 or 0600).
    pub wanted: u32,
}

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is accessible by its group or others (mode {:04o}); run `chmod {:o} {}`",
            self.path.display(),
            self.mode,
            self.wanted,
            self.path.display()
        )
    }
}

/// None when `path` is absent or only its owner can reach it; else why not.
pub fn shared(path: &Path) -> io::Result<Option<Shared>> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mode = meta.permissions().mode() & 0o7777;
    let wanted = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
    Ok((mode & SHARED_BITS != 0).then(|| Shared { path: path.to_path_buf(), mode, wanted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with the process umask set to `mask`, restoring it after.
    fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
        // SAFETY: umask only swaps the process's mask; it cannot fail.
        let old = unsafe { libc::umask(mask) };
        let out = f();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        out
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn created_files_and_directories_are_private_whatever_the_umask() {
        let root = tempfile::tempdir().expect("tempdir");
        with_umask(0o000, || {
            let dir = root.path().join("a/b");
            create_dir_all(&dir).expect("mkdir");
            assert_eq!(mode(&dir), DIR_MODE);
            assert_eq!(mode(&root.path().join("a")), DIR_MODE, "parents too");
            write_atomic(&dir.join("key"), b"secret").expect("write");
            assert_eq!(mode(&dir.join("key")), FILE_MODE);
            precreate(&dir.join("db")).expect("precreate");
            assert_eq!(mode(&dir.join("db")), FILE_MODE);
            assert_eq!(fs::read(dir.join("key")).expect("read"), b"secret");
            assert_eq!(shared(&dir).expect("stat"), None);
        });
    }

    #[test]
    fn a_shared_directory_is_named_with_its_chmod() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let found = shared(root.path()).expect("stat").expect("shared");
        assert_eq!(found.mode, 0o755);
        assert!(found.to_string().contains("chmod 700"), "{found}");
        restrict(root.path()).expect("restrict");
        assert_eq!(shared(root.path()).expect("stat"), None);
        assert_eq!(shared(&root.path().join("absent")).expect("stat"), None);
    }
}
