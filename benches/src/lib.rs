//! feral-benches: shared helpers for the criterion benchmarks in `benches/`: raw probes of the
//! physical limits that each engine benchmark is measured against.

/// The allocator `feral-node` ships with (see its `main.rs`), so every benchmark binary,
/// raw probes included, measures with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod search;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes one op with `data_bytes` of data occupies as a log frame (header, encoded op,
/// padding), so raw probes write exactly what the log writes.
pub fn frame_bytes(data_bytes: usize) -> usize {
    let op = feral_log::Op {
        op_id: feral_log::OpId([0xff; 16]),
        origin: feral_log::Origin([0xff; 16]),
        seq: 1 << 20,
        hlc: feral_log::Hlc { wall_ms: 1 << 41, counter: 0, node: feral_log::Origin([0xff; 16]) },
        table: "bench".into(),
        row_id: "row-0000".into(),
        kind: feral_log::OpKind::Insert,
        data: vec![0; data_bytes],
    };
    feral_log::record::frame_len(feral_log::codec::encode_op(&op).len())
}

/// Flushes every dirty page of the system, so one benchmark's leftover writeback does not land
/// on the next one's fdatasync.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The raw limit of a durable log: positional appends to one file, one fdatasync per group.
#[derive(Debug)]
pub struct RawAppender {
    file: File,
    at: u64,
    wrap_bytes: u64,
    buf: Vec<u8>,
    /// Overwrites a zero-filled file instead of extending an empty one.
    overwrite: bool,
}

impl RawAppender {
    /// Creates `path`; the file is truncated and restarted every `wrap_bytes`.
    pub fn create(path: &Path, wrap_bytes: u64) -> io::Result<RawAppender> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(RawAppender { file, at: 0, wrap_bytes, buf: Vec::new(), overwrite: false })
    }

    /// Creates `path` filled with `wrap_bytes` zeros (synced), then overwritten from the
    /// start again every `wrap_bytes`: the limit of writes into initialized blocks, as the
    /// log's segments are once its zeroer has run.
    pub fn create_zeroed(path: &Path, wrap_bytes: u64) -> io::Result<RawAppender> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < wrap_bytes {
            file.write_all_at(&zeros, at)?;
            at += zeros.len() as u64;
        }
        file.sync_all()?;
        Ok(RawAppender { file, at: 0, wrap_bytes, buf: Vec::new(), overwrite: true })
    }

    /// Appends `records` records of `record_bytes` each with one write, then fdatasync.
    pub fn append_group(&mut self, records: usize, record_bytes: usize) -> io::Result<()> {
        self.append_group_unsynced(records, record_bytes)?;
        self.file.sync_data()
    }

    /// Appends `records` records of `record_bytes` each with one write, no fdatasync.
    pub fn append_group_unsynced(&mut self, records: usize, record_bytes: usize) -> io::Result<()> {
        self.buf.resize(records * record_bytes, 0xab);
        if self.at + self.buf.len() as u64 > self.wrap_bytes {
            if !self.overwrite {
                self.file.set_len(0)?;
            }
            self.at = 0;
        }
        self.file.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        Ok(())
    }
}

/// The raw limit of a per-op index: two redb inserts per op (op_id → 76-byte entry, and
/// (origin, seq) → op_id) in one transaction per group, time-ordered keys, durable every
/// 8192 ops like the log's index (non-durable otherwise).
#[derive(Debug)]
pub struct RawIndex {
    db: redb::Database,
    next: u128,
    since_durable: usize,
}

const RAW_OPS: redb::TableDefinition<'_, u128, [u8; 76]> = redb::TableDefinition::new("ops");
const RAW_BY_ORIGIN: redb::TableDefinition<'_, (u128, u64), u128> =
    redb::TableDefinition::new("by_origin");

impl RawIndex {
    /// Creates the database file at `path`.
    pub fn create(path: &Path) -> Result<RawIndex, redb::Error> {
        Ok(RawIndex { db: redb::Database::create(path)?, next: 1, since_durable: 0 })
    }

    /// Inserts `records` entries in one transaction.
    pub fn insert_group(&mut self, records: usize) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        self.since_durable += records;
        if self.since_durable < feral_log::limits::INDEX_DURABLE_EVERY_OPS as usize {
            txn.set_durability(redb::Durability::None)?;
        } else {
            self.since_durable = 0;
        }
        {
            let mut ops = txn.open_table(RAW_OPS)?;
            let mut by_origin = txn.open_table(RAW_BY_ORIGIN)?;
            for _ in 0..records {
                self.next += 1;
                ops.insert(self.next, [7u8; 76])?;
                by_origin.insert((5u128, self.next as u64), self.next)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Looks up every key inserted so far, one read transaction, one get each; returns how
    /// many were found (the floor of an idempotence check or a point read).
    pub fn get_all(&self) -> Result<usize, redb::Error> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read()?;
        let ops = txn.open_table(RAW_OPS)?;
        let mut found = 0;
        for key in 2..=self.next {
            found += usize::from(ops.get(key)?.is_some());
        }
        Ok(found)
    }
}

/// Episode documents as the store benchmarks write them: time-ordered ids, ~300 bytes each.
pub fn episode_doc(i: u64) -> serde_json::Value {
    serde_json::json!({
        "id": format!("ep-{i:012}"),
        "session_id": format!("session-{}", i / 50),
        "event_type": "conversation",
        "summary": format!("episode {i}: the user asked about the weather and the plan for the week"),
        "detail": "x".repeat(120),
        "importance": 0.5,
        "created_at": 1_700_000_000.0 + i as f64,
        "emotions": ["curious"],
        "participants": ["user", "assistant"],
        "location": "home",
    })
}

const RAW_ROWS: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("episodes");

/// The raw limit of a projection: the same rows (id → document bytes) inserted into redb in
/// batches, one durable commit per batch.
pub fn raw_redb_batches(
    path: &Path,
    rows: &[(String, Vec<u8>)],
    batch: usize,
) -> Result<(), redb::Error> {
    let db = redb::Database::create(path)?;
    for chunk in rows.chunks(batch) {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(RAW_ROWS)?;
            for (id, doc) in chunk {
                table.insert(id.as_str(), doc.as_slice())?;
            }
        }
        txn.commit()?;
    }
    Ok(())
}

/// One op as the original system stored it: the episode's columns, plus the op's identity.
#[derive(Debug, Clone)]
pub struct SqliteOp {
    /// The episode.
    pub episode: feral_materializer::Episode,
    /// The op_id (hex).
    pub op_id: String,
    /// The HLC (text, ordered like the engine's).
    pub hlc: String,
    /// The writer's origin (hex) and seq.
    pub origin: String,
    /// Seq within the origin.
    pub seq: i64,
    /// The op's data, as the sync log keeps it.
    pub data: Vec<u8>,
}

/// The original system's two SQLite files: `memory.db` (the `episodes` table and its indexes)
/// and `sync_wal.db` (the sync log keyed by op_id); WAL mode, `synchronous=FULL`.
#[derive(Debug)]
pub struct SqliteStore {
    memory: rusqlite::Connection,
    wal: rusqlite::Connection,
}

fn sqlite_connect(path: &Path, schema: &str) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// Creates both files in `dir`.
pub fn sqlite_open(dir: &Path) -> rusqlite::Result<SqliteStore> {
    let memory = sqlite_connect(
        &dir.join("memory.db"),
        "CREATE TABLE IF NOT EXISTS episodes (
             id TEXT PRIMARY KEY, session_id TEXT NOT NULL, event_type TEXT NOT NULL,
             summary TEXT NOT NULL, detail TEXT, importance REAL, created_at REAL,
             emotions TEXT, participants TEXT, location TEXT, hlc TEXT NOT NULL,
             op_id TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS episodes_time ON episodes(created_at);
         CREATE INDEX IF NOT EXISTS episodes_session ON episodes(session_id, created_at);",
    )?;
    let wal = sqlite_connect(
        &dir.join("sync_wal.db"),
        "CREATE TABLE IF NOT EXISTS sync_wal (
             op_id TEXT PRIMARY KEY, origin TEXT NOT NULL, seq INTEGER NOT NULL,
             hlc TEXT NOT NULL, table_name TEXT NOT NULL, row_id TEXT NOT NULL,
             kind TEXT NOT NULL, data BLOB NOT NULL);",
    )?;
    Ok(SqliteStore { memory, wal })
}

/// The same idempotent work the engine does, the way the original did it: the op into the sync
/// log (ignored when its op_id is there) and committed, then the episode row (replaced only by
/// a later HLC) and committed; `per_commit` ops per transaction in each file (1 = one commit
/// per op, as the original).
pub fn sqlite_ingest(
    store: &mut SqliteStore,
    ops: &[SqliteOp],
    per_commit: usize,
) -> rusqlite::Result<()> {
    for chunk in ops.chunks(per_commit.max(1)) {
        let mut fresh = Vec::with_capacity(chunk.len());
        let txn = store.wal.transaction()?;
        {
            let mut log = txn.prepare_cached(
                "INSERT OR IGNORE INTO sync_wal (op_id, origin, seq, hlc, table_name, row_id, kind, data)
                 VALUES (?1, ?2, ?3, ?4, 'episodes', ?5, 'insert', ?6)",
            )?;
            for op in chunk {
                let inserted = log.execute(rusqlite::params![
                    op.op_id,
                    op.origin,
                    op.seq,
                    op.hlc,
                    op.episode.id,
                    op.data
                ])?;
                // Already logged: idempotent, nothing to apply.
                if inserted > 0 {
                    fresh.push(op);
                }
            }
        }
        txn.commit()?;
        let txn = store.memory.transaction()?;
        {
            let mut row = txn.prepare_cached(
                "INSERT INTO episodes (id, session_id, event_type, summary, detail, importance,
                     created_at, emotions, participants, location, hlc, op_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(id) DO UPDATE SET session_id = excluded.session_id,
                     event_type = excluded.event_type, summary = excluded.summary,
                     detail = excluded.detail, importance = excluded.importance,
                     created_at = excluded.created_at, emotions = excluded.emotions,
                     participants = excluded.participants, location = excluded.location,
                     hlc = excluded.hlc, op_id = excluded.op_id
                 WHERE excluded.hlc > episodes.hlc",
            )?;
            for op in fresh {
                let e = &op.episode;
                row.execute(rusqlite::params![
                    e.id,
                    e.session_id,
                    e.event_type,
                    e.summary,
                    e.detail,
                    e.importance,
                    e.created_at,
                    serde_json::to_string(&e.emotions).unwrap_or_default(),
                    serde_json::to_string(&e.participants).unwrap_or_default(),
                    e.location,
                    op.hlc,
                    op.op_id,
                ])?;
            }
        }
        txn.commit()?;
    }
    Ok(())
}

/// `n` ops for the SQLite probe, built from the same episodes as the engine's benchmark.
pub fn sqlite_ops(episodes: &[feral_materializer::Episode]) -> Vec<SqliteOp> {
    episodes
        .iter()
        .enumerate()
        .map(|(i, e)| SqliteOp {
            episode: e.clone(),
            op_id: format!("{:032x}", 0x0190_0000_0000_0000_0000_0000_0000_0000u128 + i as u128),
            hlc: format!("{:013}.{:010}.{}", 1_795_000_000_000u64 + i as u64, 0, "ab".repeat(16)),
            origin: "ab".repeat(16),
            seq: i as i64 + 1,
            data: e.to_data(),
        })
        .collect()
}

/// The real filesystem with every fsync skipped: the log's non-durable cost (CPU, copies,
/// page cache), measured beside raw writes without fdatasync. Never for data that matters.
#[derive(Debug, Default)]
pub struct NoSyncStorage(feral_log::FsStorage);

#[derive(Debug)]
struct NoSyncFile(Box<dyn feral_log::StorageFile>);

impl feral_log::StorageFile for NoSyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.0.allocate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}

impl feral_log::Storage for NoSyncStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn feral_log::StorageFile>> {
        Ok(Box::new(NoSyncFile(self.0.create(path)?)))
    }
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn feral_log::StorageFile>> {
        Ok(Box::new(NoSyncFile(self.0.open(path, writable)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
        self.0.list(dir)
    }
}

/// True for `benches/run.sh --quick` (`FERAL_BENCH_QUICK=1`): shorter measurements.
pub fn quick() -> bool {
    std::env::var_os("FERAL_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// A group's measurement time: `full`, or one second in a quick run.
pub fn measure(full: std::time::Duration) -> std::time::Duration {
    if quick() { full.min(std::time::Duration::from_secs(1)) } else { full }
}

/// A group's warm-up time: `full`, or 100 ms in a quick run.
pub fn warm_up(full: std::time::Duration) -> std::time::Duration {
    if quick() { full.min(std::time::Duration::from_millis(100)) } else { full }
}

/// The real filesystem, durable, but without the log's zeroer: frames are written into the
/// unwritten extents `posix_fallocate` leaves, as before the zeroer. Beside the default log in
/// the same group, it measures what the zeroer is worth.
#[derive(Debug, Default)]
pub struct NoZeroerStorage(feral_log::FsStorage);

impl feral_log::Storage for NoZeroerStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn feral_log::StorageFile>> {
        self.0.create(path)
    }
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn feral_log::StorageFile>> {
        self.0.open(path, writable)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
        self.0.list(dir)
    }
}

/// Every op a node holds, as the bytes it stores them as (with their seals), by origin and seq.
pub fn stored_ops(node: &feral_memory::Node) -> Vec<feral_log::OpBytes> {
    let mut out = Vec::new();
    for (origin, head) in node.wal().heads().expect("heads") {
        out.extend(
            node.wal()
                .payloads_by_origin_within(&origin, 1, head, usize::MAX, usize::MAX)
                .expect("payloads"),
        );
    }
    out
}

/// `ops` cut into batches of at most `max` that each end with a sealed op (a receiver takes
/// whole runs only), as a sync sender frames them.
pub fn sealed_batches(ops: &[feral_log::OpBytes], max: usize) -> Vec<Vec<feral_log::OpBytes>> {
    let mut out = Vec::new();
    let mut rest = ops;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(max)];
        let end =
            window.iter().rposition(feral_log::OpBytes::is_sealed).map_or(window.len(), |i| i + 1);
        out.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    out
}

/// The `feral-node` binary for the benches that run processes: `$FERAL_NODE_BIN`, else the one
/// in the target directory above the bench.
pub fn node_bin() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FERAL_NODE_BIN") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("feral-node");
    bin.exists().then_some(bin)
}
