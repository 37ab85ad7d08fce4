//! The redb index: op_id → where the op lives, (origin, seq) → op, per-origin heads, and the LSN
//! the index reflects. It is derived state: the log can always rebuild it.
//!
//! Ops logged back to back from one origin with increasing op_ids (the usual case: a batch of
//! local appends, or a stretch of one peer's ops during sync) are stored as one *run* entry;
//! other ops get one entry each. Run ranges never overlap: a run is only formed when its first
//! op_id is above every op_id already in a run, so the run with the greatest first op_id at or
//! below an id is the only one that can hold it.

mod entry;

use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

pub use entry::{ENTRY_BYTES, IndexEntry};
use entry::{Run, encode_run};

use crate::error::{Error, Result};
use crate::limits::{INDEX_DURABLE_EVERY_OPS, INDEX_RUN_OPS_MAX, INDEX_RUN_OPS_MIN};
use crate::op::{OpId, Origin};

// Keys are integers (big-endian readings of the ids), so redb compares them natively and
// their order is the byte order of the ids.
const OPS: TableDefinition<'_, u128, [u8; ENTRY_BYTES]> = TableDefinition::new("ops");
const BY_ORIGIN: TableDefinition<'_, (u128, u64), u128> = TableDefinition::new("ops_by_origin");
const RUNS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("op_runs");
const SEQ_RUNS: TableDefinition<'_, (u128, u64), u128> = TableDefinition::new("op_runs_by_origin");
const HEADS: TableDefinition<'_, u128, u64> = TableDefinition::new("heads");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("log_meta");

const META_INDEXED_LSN: &str = "indexed_lsn";
const META_HLC_WALL: &str = "max_hlc_wall_ms";
const META_HLC_COUNTER: &str = "max_hlc_counter";
const META_OP_COUNT: &str = "op_count";
const META_RUN_ID_HI: &str = "max_run_op_id_hi";
const META_RUN_ID_LO: &str = "max_run_op_id_lo";

fn key(bytes: &[u8; 16]) -> u128 {
    u128::from_be_bytes(*bytes)
}

fn origin_key(origin: &Origin, seq: u64) -> (u128, u64) {
    (key(&origin.0), seq)
}

/// Runs an index operation, turning a panic inside redb (it can panic on a damaged file instead
/// of returning `Corrupted`) into [`Error::IndexCorruption`]: input from disk never panics the
/// engine. The handle is not trusted afterwards: the caller pauses and `resume()` rebuilds it.
fn guarded<T>(suspect: &AtomicBool, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outcome = catch_panic(f);
    if matches!(outcome, Err(Error::IndexCorruption(_))) {
        suspect.store(true, Ordering::Relaxed);
    }
    outcome
}

/// `f`, with a panic turned into [`Error::IndexCorruption`].
fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_redb_panic(f, |what| {
        Error::IndexCorruption(format!("redb panicked reading the index: {what}"))
    })
}

/// Runs `f`, turning a panic (redb can panic on a damaged file) into the error `on_panic`
/// makes from the panic's message. Shared with the materializer's redb file.
pub fn catch_redb_panic<T, E>(
    f: impl FnOnce() -> std::result::Result<T, E>,
    on_panic: impl FnOnce(String) -> E,
) -> std::result::Result<T, E> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(on_panic(what))
        }
    }
}

/// Maps a redb failure to the crate error, keeping corruption distinct.
pub(crate) fn redb_error(error: impl Into<redb::Error>) -> Error {
    match error.into() {
        redb::Error::Corrupted(msg) => Error::IndexCorruption(msg),
        // redb reports a file that is not a redb database ("magic number mismatch") as
        // invalid data: damage, not a failing disk.
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Error::IndexCorruption(e.to_string())
        }
        redb::Error::Io(e) => Error::from_io("index.redb", e),
        other => Error::Index(other.to_string()),
    }
}

/// The entry for `op_id` in any pair of readable `ops` / `op_runs` tables.
fn find_op(
    ops: &impl ReadableTable<u128, [u8; ENTRY_BYTES]>,
    runs: &impl ReadableTable<u128, &'static [u8]>,
    op_id: &OpId,
) -> Result<Option<IndexEntry>> {
    let id = key(&op_id.0);
    if let Some(raw) = ops.get(id).map_err(redb_error)? {
        return Ok(Some(IndexEntry::decode(*op_id, &raw.value())));
    }
    let Some(item) = runs.range(..=id).map_err(redb_error)?.next_back() else {
        return Ok(None);
    };
    let (_, raw) = item.map_err(redb_error)?;
    let run = Run::parse(raw.value())?;
    Ok(run.find(op_id).map(|i| run.entry(i)))
}

/// The entry for `(origin, seq)`, and the last seq of the run holding it (itself when single).
fn find_seq(
    by_origin: &impl ReadableTable<(u128, u64), u128>,
    seq_runs: &impl ReadableTable<(u128, u64), u128>,
    runs: &impl ReadableTable<u128, &'static [u8]>,
    origin: &Origin,
    seq: u64,
) -> Result<Option<(OpId, u64)>> {
    if let Some(id) = by_origin.get(origin_key(origin, seq)).map_err(redb_error)? {
        return Ok(Some((OpId(id.value().to_be_bytes()), seq)));
    }
    let lower = origin_key(origin, 0)..=origin_key(origin, seq);
    let Some(item) = seq_runs.range(lower).map_err(redb_error)?.next_back() else {
        return Ok(None);
    };
    let (_, run_key) = item.map_err(redb_error)?;
    let raw = run_named(runs, run_key.value())?;
    let run = Run::parse(raw.value())?;
    let last = run.first_seq() + run.len() as u64 - 1;
    Ok(run.find_seq(seq).map(|i| (run.entry(i).op_id, last)))
}

/// The stored run `key` that `op_runs_by_origin` names (missing is corruption).
fn run_named(
    runs: &impl ReadableTable<u128, &'static [u8]>,
    key: u128,
) -> Result<redb::AccessGuard<'_, &'static [u8]>> {
    runs.get(key).map_err(redb_error)?.ok_or_else(|| {
        Error::IndexCorruption("op_runs_by_origin names a run that is missing".into())
    })
}

/// The index database.
#[derive(Debug)]
pub struct Index {
    /// Dropped by hand: redb's drop writes, and can panic on a damaged file.
    db: ManuallyDrop<Database>,
    non_durable_ops: AtomicU64,
    /// Set once redb reported corruption or panicked: the handle is leaked, not dropped.
    suspect: AtomicBool,
}

impl Drop for Index {
    fn drop(&mut self) {
        // SAFETY: `db` is taken exactly once, here, and never used after.
        let db = unsafe { ManuallyDrop::take(&mut self.db) };
        if self.suspect.load(Ordering::Relaxed) {
            // Dropping a handle on a damaged file can panic inside redb; leaking it cannot.
            std::mem::forget(db);
            return;
        }
        if catch_panic(|| {
            drop(db);
            Ok(())
        })
        .is_err()
        {
            tracing::error!("closing the index panicked inside redb; it is rebuilt on next open");
        }
    }
}

/// What the index says about its own progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexMeta {
    /// Every op with an LSN at or below this is indexed.
    pub indexed_lsn: u64,
    /// The greatest HLC among indexed ops.
    pub max_hlc: (u64, u32),
    /// Ops indexed.
    pub op_count: u64,
    /// The greatest op_id held in a run.
    pub max_run_op_id: u128,
}

fn read_meta(table: &impl ReadableTable<&'static str, u64>) -> Result<IndexMeta> {
    let read = |name: &str| -> Result<u64> {
        Ok(table.get(name).map_err(redb_error)?.map_or(0, |v| v.value()))
    };
    Ok(IndexMeta {
        indexed_lsn: read(META_INDEXED_LSN)?,
        max_hlc: (read(META_HLC_WALL)?, read(META_HLC_COUNTER)? as u32),
        op_count: read(META_OP_COUNT)?,
        max_run_op_id: (u128::from(read(META_RUN_ID_HI)?) << 64)
            | u128::from(read(META_RUN_ID_LO)?),
    })
}

impl Index {
    /// Opens (creating if needed) the index file and its tables.
    pub fn open(path: &Path) -> Result<Index> {
        crate::private::precreate(path).map_err(|e| Error::from_io(path, e))?;
        let db = catch_panic(|| {
            redb::Builder::new()
                .set_cache_size(crate::limits::INDEX_CACHE_BYTES)
                .create(path)
                .map_err(redb_error)
        })?;
        // From here the handle is owned by an `Index`, so a failure below leaks it rather than
        // running redb's drop on a damaged file.
        let index = Index {
            db: ManuallyDrop::new(db),
            non_durable_ops: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
        };
        index.create_tables()?;
        Ok(index)
    }

    fn create_tables(&self) -> Result<()> {
        guarded(&self.suspect, || {
            if Self::tables_exist(&self.db)? {
                return Ok(());
            }
            let txn = self.db.begin_write().map_err(redb_error)?;
            {
                txn.open_table(OPS).map_err(redb_error)?;
                txn.open_table(BY_ORIGIN).map_err(redb_error)?;
                txn.open_table(RUNS).map_err(redb_error)?;
                txn.open_table(SEQ_RUNS).map_err(redb_error)?;
                txn.open_table(HEADS).map_err(redb_error)?;
                txn.open_table(META).map_err(redb_error)?;
            }
            txn.commit().map_err(redb_error)
        })
    }

    /// True when every table exists, so opening needs no write (a full disk can still open).
    fn tables_exist(db: &Database) -> Result<bool> {
        let txn = db.begin_read().map_err(redb_error)?;
        Ok(txn.open_table(OPS).is_ok()
            && txn.open_table(BY_ORIGIN).is_ok()
            && txn.open_table(RUNS).is_ok()
            && txn.open_table(SEQ_RUNS).is_ok()
            && txn.open_table(HEADS).is_ok()
            && txn.open_table(META).is_ok())
    }

    /// Progress markers.
    pub fn meta(&self) -> Result<IndexMeta> {
        guarded(&self.suspect, || {
            let txn = self.db.begin_read().map_err(redb_error)?;
            read_meta(&txn.open_table(META).map_err(redb_error)?)
        })
    }

    /// The entry for an op_id.
    pub fn lookup(&self, op_id: &OpId) -> Result<Option<IndexEntry>> {
        self.reader()?.get(op_id)
    }

    /// The op_id held for `(origin, seq)`.
    pub fn lookup_seq(&self, origin: &Origin, seq: u64) -> Result<Option<OpId>> {
        guarded(&self.suspect, || {
            let txn = self.db.begin_read().map_err(redb_error)?;
            let by_origin = txn.open_table(BY_ORIGIN).map_err(redb_error)?;
            let seq_runs = txn.open_table(SEQ_RUNS).map_err(redb_error)?;
            let runs = txn.open_table(RUNS).map_err(redb_error)?;
            Ok(find_seq(&by_origin, &seq_runs, &runs, origin, seq)?.map(|(id, _)| id))
        })
    }

    /// Entries for `origin` with `from_seq <= seq <= to_seq`, in seq order, at most `limit`.
    pub fn range_by_origin(
        &self,
        origin: &Origin,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
    ) -> Result<Vec<IndexEntry>> {
        guarded(&self.suspect, || {
            let txn = self.db.begin_read().map_err(redb_error)?;
            let ops = txn.open_table(OPS).map_err(redb_error)?;
            let by_origin = txn.open_table(BY_ORIGIN).map_err(redb_error)?;
            let seq_runs = txn.open_table(SEQ_RUNS).map_err(redb_error)?;
            let runs = txn.open_table(RUNS).map_err(redb_error)?;
            let mut out = Vec::new();
            let mut seq = from_seq;
            // Singles and runs are merged by walking seq upwards: each step finds the next seq
            // held either way, so gaps cost one lookup each, not one per missing seq.
            while seq <= to_seq && out.len() < limit {
                if let Some((op_id, last)) = find_seq(&by_origin, &seq_runs, &runs, origin, seq)? {
                    let entry = find_op(&ops, &runs, &op_id)?.ok_or_else(|| {
                        Error::IndexCorruption(format!(
                            "op {op_id} indexed by origin but not by id"
                        ))
                    })?;
                    out.push(entry);
                    if last > seq {
                        let more = range_in_run(&runs, &op_id, seq + 1, last.min(to_seq))?;
                        out.extend(more.into_iter().take(limit - out.len()));
                    }
                    seq = last + 1;
                    continue;
                }
                match next_seq(&by_origin, &seq_runs, origin, seq, to_seq)? {
                    Some(next) => seq = next,
                    None => break,
                }
            }
            Ok(out)
        })
    }

    /// Highest contiguous seq held per origin.
    pub fn heads(&self) -> Result<Vec<(Origin, u64)>> {
        guarded(&self.suspect, || {
            let txn = self.db.begin_read().map_err(redb_error)?;
            let table = txn.open_table(HEADS).map_err(redb_error)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(redb_error)? {
                let (k, v) = item.map_err(redb_error)?;
                out.push((Origin(k.value().to_be_bytes()), v.value()));
            }
            Ok(out)
        })
    }

    /// Number of indexed ops.
    pub fn len(&self) -> Result<u64> {
        Ok(self.meta()?.op_count)
    }

    /// True when no op is indexed.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Indexes a batch of durable ops (in LSN order) in one transaction. Commits durably when
    /// `durable` or when enough non-durable commits piled up; otherwise the log replays them.
    pub fn commit(&self, entries: &[IndexEntry], durable: bool) -> Result<()> {
        guarded(&self.suspect, || {
            let Some(last) = entries.last() else {
                return Ok(());
            };
            let n = entries.len() as u64;
            let pending = self.non_durable_ops.fetch_add(n, Ordering::Relaxed) + n;
            let durable = durable || pending >= INDEX_DURABLE_EVERY_OPS;
            let mut txn = self.db.begin_write().map_err(redb_error)?;
            if !durable {
                txn.set_durability(Durability::None).map_err(|e| Error::Index(e.to_string()))?;
            }
            {
                let mut w = Writer {
                    ops: txn.open_table(OPS).map_err(redb_error)?,
                    by_origin: txn.open_table(BY_ORIGIN).map_err(redb_error)?,
                    runs: txn.open_table(RUNS).map_err(redb_error)?,
                    seq_runs: txn.open_table(SEQ_RUNS).map_err(redb_error)?,
                };
                let mut meta_table = txn.open_table(META).map_err(redb_error)?;
                let mut meta = read_meta(&meta_table)?;
                w.insert_all(entries, &mut meta)?;
                let mut heads = txn.open_table(HEADS).map_err(redb_error)?;
                for origin in distinct_origins(entries) {
                    w.advance_head(&mut heads, &origin)?;
                }
                meta.indexed_lsn = last.lsn;
                write_meta(&mut meta_table, &meta)?;
            }
            crate::failpoint::reached("index.commit", entries[0].lsn, last.lsn);
            txn.commit().map_err(redb_error)?;
            if durable {
                self.non_durable_ops.store(0, Ordering::Relaxed);
            }
            Ok(())
        })
    }

    /// Makes every earlier non-durable commit durable.
    pub fn flush(&self) -> Result<()> {
        guarded(&self.suspect, || {
            if self.non_durable_ops.load(Ordering::Relaxed) == 0 {
                return Ok(());
            }
            let txn = self.db.begin_write().map_err(redb_error)?;
            txn.commit().map_err(redb_error)?;
            self.non_durable_ops.store(0, Ordering::Relaxed);
            Ok(())
        })
    }

    /// A read snapshot for many lookups in a row (one read transaction and one opening of
    /// each table, where single lookups pay both every time).
    pub fn reader(&self) -> Result<IndexReader> {
        guarded(&self.suspect, || {
            let txn = self.db.begin_read().map_err(redb_error)?;
            Ok(IndexReader {
                meta: read_meta(&txn.open_table(META).map_err(redb_error)?)?,
                ops: txn.open_table(OPS).map_err(redb_error)?,
                runs: txn.open_table(RUNS).map_err(redb_error)?,
                by_origin: txn.open_table(BY_ORIGIN).map_err(redb_error)?,
                seq_runs: txn.open_table(SEQ_RUNS).map_err(redb_error)?,
                heads: txn.open_table(HEADS).map_err(redb_error)?,
            })
        })
    }

    /// redb's own structural check (page checksums, tree shape).
    /// Waits up to [`crate::limits::STRUCTURE_CHECK_WAIT`] for read snapshots already taken
    /// to end (the caller, holding the index exclusively, keeps new ones from starting).
    pub fn check_structure(&mut self) -> Result<bool> {
        let (suspect, db) = (&self.suspect, &mut self.db);
        let deadline = std::time::Instant::now() + crate::limits::STRUCTURE_CHECK_WAIT;
        guarded(suspect, || {
            loop {
                match db.check_integrity() {
                    Err(redb::DatabaseError::TransactionInProgress)
                        if std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(crate::limits::STRUCTURE_CHECK_RETRY);
                    }
                    Err(redb::DatabaseError::TransactionInProgress) => {
                        return Err(Error::Index(format!(
                            "the structure check waited {:?} for readers of the index to end; \
                             check again",
                            crate::limits::STRUCTURE_CHECK_WAIT
                        )));
                    }
                    other => return other.map_err(redb_error),
                }
            }
        })
    }
}

/// Entries `from..=to` (by seq) of the run holding `op_id`.
fn range_in_run(
    runs: &impl ReadableTable<u128, &'static [u8]>,
    op_id: &OpId,
    from: u64,
    to: u64,
) -> Result<Vec<IndexEntry>> {
    let id = key(&op_id.0);
    let Some(item) = runs.range(..=id).map_err(redb_error)?.next_back() else {
        return Ok(Vec::new());
    };
    let (_, raw) = item.map_err(redb_error)?;
    let run = Run::parse(raw.value())?;
    let mut out = Vec::new();
    for seq in from..=to {
        if let Some(i) = run.find_seq(seq) {
            out.push(run.entry(i));
        }
    }
    Ok(out)
}

/// The smallest seq above `seq` (and at most `to`) held for `origin`, single or run start.
fn next_seq(
    by_origin: &impl ReadableTable<(u128, u64), u128>,
    seq_runs: &impl ReadableTable<(u128, u64), u128>,
    origin: &Origin,
    seq: u64,
    to: u64,
) -> Result<Option<u64>> {
    if seq >= to {
        return Ok(None);
    }
    let range = origin_key(origin, seq + 1)..=origin_key(origin, to);
    let single = match by_origin.range(range.clone()).map_err(redb_error)?.next() {
        Some(item) => Some(item.map_err(redb_error)?.0.value().1),
        None => None,
    };
    let run = match seq_runs.range(range).map_err(redb_error)?.next() {
        Some(item) => Some(item.map_err(redb_error)?.0.value().1),
        None => None,
    };
    Ok(match (single, run) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

fn write_meta(table: &mut redb::Table<'_, &'static str, u64>, meta: &IndexMeta) -> Result<()> {
    let values = [
        (META_INDEXED_LSN, meta.indexed_lsn),
        (META_HLC_WALL, meta.max_hlc.0),
        (META_HLC_COUNTER, u64::from(meta.max_hlc.1)),
        (META_OP_COUNT, meta.op_count),
        (META_RUN_ID_HI, (meta.max_run_op_id >> 64) as u64),
        (META_RUN_ID_LO, meta.max_run_op_id as u64),
    ];
    for (name, value) in values {
        table.insert(name, value).map_err(redb_error)?;
    }
    Ok(())
}

/// The tables one commit writes.
struct Writer<'t> {
    ops: redb::Table<'t, u128, [u8; ENTRY_BYTES]>,
    by_origin: redb::Table<'t, (u128, u64), u128>,
    runs: redb::Table<'t, u128, &'static [u8]>,
    seq_runs: redb::Table<'t, (u128, u64), u128>,
}

impl Writer<'_> {
    /// Splits `entries` into runs and singles and inserts them.
    fn insert_all(&mut self, entries: &[IndexEntry], meta: &mut IndexMeta) -> Result<()> {
        let mut i = 0;
        while i < entries.len() {
            let mut j = i + 1;
            if key(&entries[i].op_id.0) > meta.max_run_op_id {
                while j < entries.len()
                    && j - i < INDEX_RUN_OPS_MAX
                    && entries[j - 1].continued_by(&entries[j])
                {
                    j += 1;
                }
            }
            let group = &entries[i..j];
            if group.len() >= INDEX_RUN_OPS_MIN {
                self.insert_run(group)?;
                meta.max_run_op_id = key(&group[group.len() - 1].op_id.0);
            } else {
                for entry in group {
                    self.insert_single(entry)?;
                }
            }
            for entry in group {
                meta.max_hlc = meta.max_hlc.max((entry.hlc.wall_ms, entry.hlc.counter));
            }
            meta.op_count += group.len() as u64;
            i = j;
        }
        Ok(())
    }

    fn insert_single(&mut self, entry: &IndexEntry) -> Result<()> {
        self.ops.insert(key(&entry.op_id.0), entry.encode()).map_err(redb_error)?;
        self.by_origin
            .insert(origin_key(&entry.origin, entry.seq), key(&entry.op_id.0))
            .map_err(redb_error)?;
        Ok(())
    }

    fn insert_run(&mut self, run: &[IndexEntry]) -> Result<()> {
        let first = &run[0];
        let run_key = key(&first.op_id.0);
        self.runs.insert(run_key, encode_run(run).as_slice()).map_err(redb_error)?;
        self.seq_runs.insert(origin_key(&first.origin, first.seq), run_key).map_err(redb_error)?;
        Ok(())
    }

    /// Moves the origin's head over every contiguous seq now held.
    fn advance_head(&self, heads: &mut redb::Table<'_, u128, u64>, origin: &Origin) -> Result<()> {
        let start = heads.get(key(&origin.0)).map_err(redb_error)?.map_or(0, |v| v.value());
        let mut head = start;
        while let Some((_, last)) =
            find_seq(&self.by_origin, &self.seq_runs, &self.runs, origin, head + 1)?
        {
            head = last;
        }
        if head != start {
            heads.insert(key(&origin.0), head).map_err(redb_error)?;
        }
        Ok(())
    }
}

/// A read snapshot for many lookups.
#[derive(Debug)]
pub struct IndexReader {
    meta: IndexMeta,
    ops: redb::ReadOnlyTable<u128, [u8; ENTRY_BYTES]>,
    runs: redb::ReadOnlyTable<u128, &'static [u8]>,
    by_origin: redb::ReadOnlyTable<(u128, u64), u128>,
    seq_runs: redb::ReadOnlyTable<(u128, u64), u128>,
    heads: redb::ReadOnlyTable<u128, u64>,
}

impl IndexReader {
    /// The progress markers of this snapshot.
    pub fn meta(&self) -> IndexMeta {
        self.meta
    }

    /// The entry for an op_id.
    pub fn get(&self, op_id: &OpId) -> Result<Option<IndexEntry>> {
        catch_panic(|| find_op(&self.ops, &self.runs, op_id))
    }

    /// Highest contiguous seq per origin in this snapshot, as [`Index::heads`].
    pub fn heads(&self) -> Result<Vec<(Origin, u64)>> {
        catch_panic(|| {
            let mut out = Vec::new();
            for item in self.heads.iter().map_err(redb_error)? {
                let (k, v) = item.map_err(redb_error)?;
                out.push((Origin(k.value().to_be_bytes()), v.value()));
            }
            Ok(out)
        })
    }

    /// The highest seq of `origin` this snapshot holds, gaps below it allowed (a bound for
    /// [`IndexReader::get_seq`]: nothing is held past it).
    pub fn max_seq(&self, origin: &Origin) -> Result<Option<u64>> {
        catch_panic(|| {
            let all = origin_key(origin, 0)..=origin_key(origin, u64::MAX);
            let single = match self.by_origin.range(all.clone()).map_err(redb_error)?.next_back() {
                Some(item) => Some(item.map_err(redb_error)?.0.value().1),
                None => None,
            };
            let in_runs = match self.seq_runs.range(all).map_err(redb_error)?.next_back() {
                Some(item) => {
                    let (_, run_key) = item.map_err(redb_error)?;
                    let raw = run_named(&self.runs, run_key.value())?;
                    let run = Run::parse(raw.value())?;
                    Some(run.first_seq() + run.len() as u64 - 1)
                }
                None => None,
            };
            Ok(single.max(in_runs))
        })
    }

    /// The head of `own` (the store's origin), verified against the ops indexed: it must be
    /// held at its seq (absent means 0) and the seq after it must not be. A heads table that
    /// garbage left readable but wrong would otherwise hand a local append a seq already
    /// taken. The answer is the highest own seq held, so not even a gap below it makes a seq
    /// be reused. (Other origins' heads only steer sync; `check` compares them with the log.)
    pub fn verified_own_head(&self, own: &Origin) -> Result<u64> {
        catch_panic(|| {
            let head = self.heads.get(key(&own.0)).map_err(redb_error)?.map_or(0, |v| v.value());
            let held = |seq| find_seq(&self.by_origin, &self.seq_runs, &self.runs, own, seq);
            if head > 0 && held(head)?.is_none() {
                return Err(Error::IndexCorruption(format!(
                    "this store's head is seq {head}, which the index does not hold"
                )));
            }
            if held(head + 1)?.is_some() {
                return Err(Error::IndexCorruption(format!(
                    "this store's head is seq {head}, but the index holds seq {}",
                    head + 1
                )));
            }
            Ok(head.max(self.max_seq(own)?.unwrap_or(0)))
        })
    }

    /// The op_id held at (origin, seq), as [`Index::lookup_seq`].
    pub fn get_seq(&self, origin: &Origin, seq: u64) -> Result<Option<OpId>> {
        catch_panic(|| {
            Ok(find_seq(&self.by_origin, &self.seq_runs, &self.runs, origin, seq)?
                .map(|(id, _)| id))
        })
    }
}

fn distinct_origins(entries: &[IndexEntry]) -> Vec<Origin> {
    let mut origins: Vec<Origin> = entries.iter().map(|e| e.origin).collect();
    origins.sort_unstable();
    origins.dedup();
    origins
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;

    const A: Origin = Origin([1; 16]);
    const B: Origin = Origin([2; 16]);

    fn entry(origin: Origin, seq: u64, lsn: u64, id: u128) -> IndexEntry {
        IndexEntry {
            op_id: OpId(id.to_be_bytes()),
            origin,
            seq,
            hlc: Hlc { wall_ms: lsn, counter: 0, node: origin },
            lsn,
            segment: 1,
            offset: 64 * lsn,
            content_hash: id as u64,
        }
    }

    /// Runs of A (increasing ids), B's ops with falling ids (singles), a short group, a gap.
    fn sample() -> Vec<IndexEntry> {
        let mut out = Vec::new();
        let mut lsn = 0;
        let mut push = |origin, seq, id| {
            lsn += 1;
            out.push(entry(origin, seq, lsn, id));
        };
        for seq in 1..=10 {
            push(A, seq, 1000 + seq as u128);
        }
        for seq in 1..=6 {
            push(B, seq, 900 - seq as u128); // falling ids: never a run
        }
        for seq in 11..=12 {
            push(A, seq, 2000 + seq as u128); // too short for a run
        }
        for seq in 14..=30 {
            push(A, seq, 3000 + seq as u128); // after a gap at 13
        }
        out
    }

    #[test]
    fn runs_and_singles_answer_every_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(&dir.path().join("i.redb")).expect("open");
        let entries = sample();
        index.commit(&entries[..7], false).expect("commit");
        index.commit(&entries[7..], true).expect("commit");
        assert_eq!(index.len().expect("len"), entries.len() as u64);
        for e in &entries {
            assert_eq!(index.lookup(&e.op_id).expect("lookup"), Some(*e));
            assert_eq!(index.lookup_seq(&e.origin, e.seq).expect("seq"), Some(e.op_id));
        }
        let mut heads = index.heads().expect("heads");
        heads.sort();
        assert_eq!(heads, vec![(A, 12), (B, 6)]);
        // The highest seq held, past the gap (A's last ops are a run, B's are singles).
        let reader = index.reader().expect("reader");
        assert_eq!(reader.max_seq(&A).expect("max"), Some(30));
        assert_eq!(reader.max_seq(&B).expect("max"), Some(6));
        assert_eq!(reader.max_seq(&Origin([9; 16])).expect("max"), None);
        drop(reader);
        let seqs = |from, to, limit| -> Vec<u64> {
            index
                .range_by_origin(&A, from, to, limit)
                .expect("range")
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs(5, 16, 100), vec![5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16]);
        assert_eq!(seqs(12, u64::MAX, 3), vec![12, 14, 15]);
        assert_eq!(seqs(13, 13, 10), Vec::<u64>::new());
        let all: Vec<u64> =
            index.range_by_origin(&B, 0, u64::MAX, 100).expect("b").iter().map(|e| e.seq).collect();
        assert_eq!(all, (1..=6).collect::<Vec<_>>());
        let missing = OpId(1500u128.to_be_bytes());
        assert_eq!(index.lookup(&missing).expect("lookup"), None);
        // Filling the gap moves the head over the whole following run.
        index.commit(&[entry(A, 13, 40, 50)], false).expect("fill");
        assert!(index.heads().expect("heads").contains(&(A, 30)));
    }
}
