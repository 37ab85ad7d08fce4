//! Backup of an open store (sealed segments whole, the active one up to its last synced
//! record, the node key and certificates, a manifest with SHA-256 of every file) and restore into a new data
//! directory, which gets a new origin (SPEC 2) and rebuilds index and projection from the log.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use feral_log::Config;
use feral_log::meter::{Meter, Unit};
use feral_log::private;
use feral_log::storage::{FsStorage, Storage};
use feral_log::wal::WAL_DIR;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::identity::NODE_KEY_FILE;
use crate::node::Node;

/// The manifest file at the top of a backup directory.
pub const MANIFEST_FILE: &str = "BACKUP.json";
const MANIFEST_FORMAT: u32 = 1;
const MANIFEST_BYTES_MAX: u64 = 16 * 1024 * 1024;
const COPY_CHUNK_BYTES: usize = 1024 * 1024;

/// One copied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct BackupFile {
    /// Path inside the backup directory.
    pub name: String,
    /// Bytes copied.
    pub bytes: u64,
    /// Size to extend the file to on restore (a segment's preallocated capacity).
    pub capacity: u64,
    /// SHA-256 of the copied bytes, hex.
    pub sha256: String,
}

/// The manifest: what the backup holds and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Unix seconds when the backup was taken.
    pub created_unix_s: u64,
    /// Origin of the store backed up (a restore gets a new one).
    pub origin: String,
    /// Node id of the store backed up.
    pub node_id: String,
    /// Every op up to this LSN is in the backup.
    pub durable_lsn: u64,
    /// The files.
    pub files: Vec<BackupFile>,
}

/// The identity files a backup carries besides the log (the key; the certificates if issued;
/// the revocations learned, which are not read back from the log).
const IDENTITY_FILES: [&str; 4] = [
    NODE_KEY_FILE,
    feral_transport::tls::NODE_CERT_FILE,
    feral_transport::tls::CA_CERT_FILE,
    crate::revocation::REVOKED_FILE,
];

fn backup_error(what: impl std::fmt::Display) -> Error {
    Error::Backup(what.to_string())
}

/// Copies the first `bytes` of `from` into a new file `to`, synced; returns its SHA-256.
fn copy_prefix(from: &Path, to: &Path, bytes: u64, meter: &Meter) -> Result<String> {
    let mut src = File::open(from).map_err(|e| Error::io(from, e))?.take(bytes);
    let mut dst = feral_log::private::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)
        .map_err(|e| Error::io(to, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut copied = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| Error::io(from, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| Error::io(to, e))?;
        copied += n as u64;
        meter.add(n as u64);
    }
    if copied != bytes {
        return Err(backup_error(format!(
            "{} has {copied} bytes, expected {bytes}",
            from.display()
        )));
    }
    dst.sync_all().map_err(|e| Error::io(to, e))?;
    Ok(hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(dir, e)),
    }
}

impl Node {
    /// Backs the store up into `to` (which must be absent or empty) while it stays open.
    pub fn backup(&self, to: &Path) -> Result<Manifest> {
        if !is_empty_dir(to)? {
            return Err(backup_error(format!("{} exists and is not empty", to.display())));
        }
        let snapshot = self.wal.snapshot()?;
        let wal_to = to.join(WAL_DIR);
        // A backup holds the node key: the directory is 0700 even when it existed empty.
        private::create_dir_all(to)
            .and_then(|()| private::restrict(to))
            .and_then(|()| private::create_dir_all(&wal_to))
            .map_err(|e| Error::io(&wal_to, e))?;
        let mut files = Vec::with_capacity(snapshot.files.len() + 1);
        let meter = self.wal.meter();
        let total = snapshot.files.iter().map(|f| f.bytes).sum();
        meter.stage("copying the log", Unit::Bytes, total);
        for file in &snapshot.files {
            let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.ok_or_else(|| backup_error("segment without a file name"))?;
            let sha256 = copy_prefix(&file.path, &wal_to.join(&name), file.bytes, meter)?;
            files.push(BackupFile {
                name: format!("{WAL_DIR}/{name}"),
                bytes: file.bytes,
                capacity: file.capacity,
                sha256,
            });
        }
        // The node's identity: its key, and (when issued) its certificate and the cluster CA
        // certificate, so a restored node can sync at once. The CA's private key is never here.
        for name in IDENTITY_FILES {
            let from = self.dir.join(name);
            let bytes = match fs::metadata(&from) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && name != NODE_KEY_FILE => {
                    continue;
                }
                Err(e) => return Err(Error::io(&from, e)),
            };
            let sha256 = copy_prefix(&from, &to.join(name), bytes, &Meter::off())?;
            files.push(BackupFile { name: name.into(), bytes, capacity: bytes, sha256 });
        }
        sync_dir(&wal_to)?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            created_unix_s: self.time.now_ms() / 1000,
            origin: self.wal.origin().to_string(),
            node_id: self.node_id.to_string(),
            durable_lsn: snapshot.durable_lsn,
            files,
        };
        write_manifest(to, &manifest)?;
        Ok(manifest)
    }
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(manifest).map_err(backup_error)?;
    let mut file = private::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    file.write_all(&text).and_then(|()| file.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

/// Reads and checks a backup's manifest (format, file names, sizes, SHA-256 of every file).
pub fn verify(from: &Path) -> Result<Manifest> {
    verify_metered(from, &Meter::off())
}

/// [`verify`], reporting the bytes read to `meter`.
pub fn verify_metered(from: &Path, meter: &Meter) -> Result<Manifest> {
    let path = from.join(MANIFEST_FILE);
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            backup_error(format!("{} is not a backup (no {MANIFEST_FILE})", from.display()))
        }
        _ => Error::io(&path, e),
    })?;
    let mut text = Vec::new();
    file.take(MANIFEST_BYTES_MAX).read_to_end(&mut text).map_err(|e| Error::io(&path, e))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| backup_error(format!("{}: unreadable manifest: {e}", path.display())))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(backup_error(format!("manifest format {} is not supported", manifest.format)));
    }
    meter.stage("verifying the backup", Unit::Bytes, manifest.files.iter().map(|f| f.bytes).sum());
    for f in &manifest.files {
        let safe = IDENTITY_FILES.contains(&f.name.as_str())
            || f.name
                .strip_prefix(&format!("{WAL_DIR}/"))
                .is_some_and(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'));
        if !safe || f.capacity < f.bytes {
            return Err(backup_error(format!("manifest names a bad file entry {:?}", f.name)));
        }
        let file_path = from.join(&f.name);
        let mut src = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
        let mut hash = Sha256::new();
        let n = std::io::copy(&mut (&mut src).take(f.bytes + 1), &mut HashWriter(&mut hash, meter))
            .map_err(|e| Error::io(&file_path, e))?;
        if n != f.bytes || hex(&hash.finalize()) != f.sha256 {
            return Err(backup_error(format!(
                "{} does not match the manifest (damaged backup)",
                file_path.display()
            )));
        }
    }
    Ok(manifest)
}

struct HashWriter<'a>(&'a mut Sha256, &'a Meter);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1.add(buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The restored data directory.
    pub data_dir: PathBuf,
    /// The new origin.
    pub origin: String,
    /// Where the directory that was there before was moved (with `force`).
    pub moved_aside: Option<PathBuf>,
    /// The manifest restored from.
    pub durable_lsn: u64,
}

/// Restores the backup in `from` into `into`, which must be absent or empty unless `force`
/// (then the old directory is moved aside, never deleted). The store is assembled in a staging
/// directory and renamed into place, then opened once so index and projection are rebuilt.
pub fn restore(from: &Path, into: &Path, force: bool, config: Config) -> Result<Restored> {
    let manifest = verify_metered(from, &config.meter)?;
    let name = into.file_name().map(|n| n.to_string_lossy().into_owned());
    let name =
        name.ok_or_else(|| backup_error(format!("{} has no directory name", into.display())))?;
    let parent = into.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    private::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    private::create_dir_all(&staging.join(WAL_DIR)).map_err(|e| Error::io(&staging, e))?;
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let total = manifest.files.iter().map(|f| f.bytes).sum();
    config.meter.stage("copying the backup", Unit::Bytes, total);
    for f in &manifest.files {
        let to = staging.join(&f.name);
        copy_prefix(&from.join(&f.name), &to, f.bytes, &config.meter)?;
        if f.capacity > f.bytes {
            // The active segment: reserve its whole capacity again (so a full disk shows at a
            // segment roll, not inside a record); the space past the copy reads as zeros.
            let file = storage.open(&to, true).map_err(|e| Error::io(&to, e))?;
            file.allocate(f.capacity)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io(&to, e))?;
        }
    }
    sync_dir(&staging.join(WAL_DIR))?;
    // A new origin, made from the node key the backup holds (SPEC 2: a restored node never
    // reissues an (origin, seq) it used); its first op will carry a new genesis.
    let (key, _) = crate::identity::load_or_create(&staging)?;
    let (fresh, nonce) =
        feral_log::wal::new_origin(&rcgen::PublicKeyData::subject_public_key_info(&key));
    let origin = feral_log::wal::write_origin(&staging, &storage, fresh, nonce)?;
    let moved_aside = if is_empty_dir(into)? {
        let _ = fs::remove_dir(into);
        None
    } else if force {
        // Refuse to move a store some process has open: its lock says so.
        let held = if into.join(feral_log::wal::ORIGIN_FILE).exists() {
            match feral_log::lock::DirLock::acquire(into) {
                Ok(lock) => Some(lock),
                Err(e) => {
                    let _ = fs::remove_dir_all(&staging);
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let aside = parent.join(format!("{name}.before-restore-{}", manifest_time()));
        fs::rename(into, &aside).map_err(|e| Error::io(into, e))?;
        drop(held);
        Some(aside)
    } else {
        let _ = fs::remove_dir_all(&staging);
        return Err(backup_error(format!(
            "{} holds a store; restore into an empty directory or pass --force (the old one is moved aside)",
            into.display()
        )));
    };
    fs::rename(&staging, into).map_err(|e| Error::io(into, e))?;
    sync_dir(parent)?;
    let node = Node::open(into, config)?;
    let report = node.check();
    node.close()?;
    if !report.ok {
        return Err(backup_error(format!(
            "restored store fails its check: {}",
            report.error.map_or("", crate::error::Code::as_str)
        )));
    }
    Ok(Restored {
        data_dir: into.to_path_buf(),
        origin: origin.to_string(),
        moved_aside,
        durable_lsn: manifest.durable_lsn,
    })
}

fn manifest_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
