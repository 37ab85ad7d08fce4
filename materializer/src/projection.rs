//! The `episodes` projection in its own redb file: rows (live or tombstone) keyed by episode
//! id, secondary keys by time and by session, and the LSN applied. Rows and the applied LSN
//! change in one transaction, so every op is applied exactly once; the log replays the rest.

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use feral_log::index::catch_redb_panic;
use feral_log::{Hlc, Lsn, Op, OpId, Wal, codec};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::change::{Change, Effect};
use crate::episode::Episode;
use crate::error::{Error, Result};
use crate::limits::{CATCH_UP_BATCH_OPS, PROJECTION_DURABLE_EVERY_OPS};

pub(crate) const ROWS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("episodes");
// Secondary keys are fixed-width integers, compared natively by redb: (created_at, op_id of
// the row's writer) → episode id, and (session hash, created_at, op_id) → episode id. A
// session listing drops the rare rows whose session only shares the hash.
pub(crate) const BY_TIME: TableDefinition<'_, (u64, u128), &str> =
    TableDefinition::new("episodes_by_time");
pub(crate) const BY_SESSION: TableDefinition<'_, (u64, u64, u128), &str> =
    TableDefinition::new("episodes_by_session");
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("episodes_meta");
/// Rows of every other table: (table, row id) → [`TableRow`] (live or tombstone).
pub(crate) const TABLE_ROWS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("table_rows");
/// Live rows per table (tables other than `episodes`).
pub(crate) const TABLES: TableDefinition<'_, &str, u64> = TableDefinition::new("tables");
/// Every op that touched a row and is not its writer (the writer is in the row, with its
/// LSN): (hash of table and row id, LSN) → op id. Most rows are written once, so most ops
/// cost no entry here. A row's history drops the rare ops of rows that only share the hash.
pub(crate) const HISTORY: TableDefinition<'_, (u64, u64), u128> = TableDefinition::new("history");

pub(crate) const META_APPLIED_LSN: &str = "applied_lsn";
pub(crate) const META_SKIPPED: &str = "skipped_invalid";
pub(crate) const META_FORMAT: &str = "format";
/// The projection's layout: 2 added every table's rows and the history; 3 keeps the writer's
/// LSN in the row and only the other ops in the history. A file of another
/// layout is derived state of an older build: it is recreated from the log.
pub(crate) const FORMAT: u64 = 3;

/// One row of a table other than `episodes`: its data as written, or a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// The HLC of the op that wrote it (last writer wins).
    pub hlc: Hlc,
    /// That op's id.
    pub op_id: OpId,
    /// The op's data; none for a tombstone.
    pub data: Option<Vec<u8>>,
}

/// A table row borrowed for encoding; encodes exactly as [`TableRow`].
#[derive(Serialize)]
struct TableRowRef<'a> {
    hlc: Hlc,
    op_id: OpId,
    data: Option<&'a [u8]>,
}

/// FNV-1a, 64 bits: a stable hash for keys (collisions only cost a filtered row), and for
/// binding an API cursor to its query. Not a keyed or cryptographic hash.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The key of a row's history: FNV-1a over the table, a zero byte, and the row id.
pub(crate) fn row_hash(table: &str, row_id: &str) -> u64 {
    fnv1a(table.bytes().chain(std::iter::once(0)).chain(row_id.bytes()))
}

/// Told each episode row a change decided: its id, the live episode (none for a tombstone),
/// and whether the id had a row before ([`Materializer::apply_with`]).
pub type RowSink<'s> = dyn FnMut(&str, Option<&Episode>, bool) -> Result<()> + 's;

/// The file name of the projection inside a data directory.
pub const PROJECTION_FILE: &str = "episodes.redb";

/// One row of the projection: a live episode or a tombstone, with the op that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The HLC of the op that wrote the row (last writer wins).
    pub hlc: Hlc,
    /// That op's id.
    pub op_id: OpId,
    /// The episode; `None` for a tombstone.
    pub episode: Option<Episode>,
}

/// A row borrowed for encoding; encodes exactly as [`Row`].
#[derive(Serialize)]
struct RowRef<'a> {
    hlc: Hlc,
    op_id: OpId,
    episode: Option<&'a Episode>,
}

/// Counters of the projection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionStats {
    /// The last LSN applied.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub applied_lsn: Lsn,
    /// Live episodes.
    pub episodes: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Episode ops whose data was not a valid episode (skipped the same way on every node).
    pub skipped_invalid: u64,
}

/// The projection.
#[derive(Debug)]
pub struct Materializer {
    // Never dropped after a panic inside redb: its drop could run on a damaged file.
    pub(crate) db: ManuallyDrop<Database>,
    pub(crate) path: PathBuf,
    non_durable_ops: AtomicU64,
    pub(crate) suspect: AtomicBool,
}

impl Drop for Materializer {
    fn drop(&mut self) {
        if !self.suspect.load(Ordering::Relaxed)
            && let Err(e) = self.flush()
        {
            tracing::warn!(error = %e, "projection flush on close failed; the log replays it");
        }
        // SAFETY: `db` is taken exactly once, here, and never used after.
        let db = unsafe { ManuallyDrop::take(&mut self.db) };
        if self.suspect.load(Ordering::Relaxed) {
            // Dropping a handle on a damaged file can panic inside redb; leaking it cannot.
            std::mem::forget(db);
            return;
        }
        let _ = catch_redb_panic(
            || {
                drop(db);
                Ok(())
            },
            corruption_from_panic,
        );
    }
}

pub(crate) fn corruption_from_panic(what: String) -> Error {
    Error::Corruption(format!("redb panicked reading the projection: {what}"))
}

impl Materializer {
    /// Opens (creating if needed) the projection file.
    pub fn open(path: &Path) -> Result<Materializer> {
        let path = path.to_path_buf();
        feral_log::private::precreate(&path).map_err(|e| map_io(&path, e))?;
        let db = catch_redb_panic(
            || {
                redb::Builder::new()
                    .set_cache_size(crate::limits::PROJECTION_CACHE_BYTES)
                    .create(&path)
                    .map_err(|e| map_redb(&path, e))
            },
            corruption_from_panic,
        )?;
        let m = Materializer {
            db: ManuallyDrop::new(db),
            path,
            non_durable_ops: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
        };
        m.guarded(|m| m.create_tables())?;
        Ok(m)
    }

    /// Deletes the projection file and opens an empty one; `catch_up` then fills it.
    pub fn recreate(path: &Path) -> Result<Materializer> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(map_io(path, e)),
            _ => Materializer::open(path),
        }
    }

    /// The projection file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn guarded<T>(&self, f: impl FnOnce(&Materializer) -> Result<T>) -> Result<T> {
        let outcome = catch_redb_panic(|| f(self), corruption_from_panic);
        if matches!(outcome, Err(Error::Corruption(_))) {
            self.suspect.store(true, Ordering::Relaxed);
        }
        outcome
    }

    pub(crate) fn err(&self, e: impl Into<redb::Error>) -> Error {
        map_redb(&self.path, e)
    }

    fn create_tables(&self) -> Result<()> {
        {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            if let Ok(meta) = txn.open_table(META) {
                let format = read_meta(&meta, META_FORMAT).map_err(|e| self.err(e))?;
                let applied = read_meta(&meta, META_APPLIED_LSN).map_err(|e| self.err(e))?;
                if format != FORMAT && applied > 0 {
                    return Err(Error::Corruption(format!(
                        "{}: projection format {format}, this build keeps format {FORMAT}; it is rebuilt from the log",
                        self.path.display()
                    )));
                }
                if format == FORMAT && txn.open_table(HISTORY).is_ok() {
                    return Ok(());
                }
            }
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(ROWS).map_err(|e| self.err(e))?;
        txn.open_table(BY_TIME).map_err(|e| self.err(e))?;
        txn.open_table(BY_SESSION).map_err(|e| self.err(e))?;
        txn.open_table(TABLE_ROWS).map_err(|e| self.err(e))?;
        txn.open_table(TABLES).map_err(|e| self.err(e))?;
        txn.open_table(HISTORY).map_err(|e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(META_FORMAT, FORMAT).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The last LSN applied.
    pub fn applied_lsn(&self) -> Result<Lsn> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let meta = txn.open_table(META).map_err(|e| m.err(e))?;
            read_meta(&meta, META_APPLIED_LSN).map_err(|e| m.err(e))
        })
    }

    /// Applies durable log records, in LSN order, in one transaction. Records at or below the
    /// applied LSN are skipped; a gap after it is refused ([`Error::Gap`]). Returns how many
    /// records were newly applied (re-applying returns 0).
    pub fn apply_ops<'a>(&self, records: impl IntoIterator<Item = (Lsn, &'a Op)>) -> Result<usize> {
        self.apply(records.into_iter().map(|(lsn, op)| Change::of(lsn, op)))
    }

    /// [`Materializer::apply_ops`] for changes already decided (see [`Change::put`]).
    pub fn apply<'a>(&self, changes: impl IntoIterator<Item = Change<'a>>) -> Result<usize> {
        self.guarded(|m| m.apply_inner(changes.into_iter(), &mut |_, _, _| Ok(())))
    }

    /// [`Materializer::apply`], telling `rows` each episode row a change decided (the live
    /// episode, or none for a tombstone) and whether the id had a row before (live or
    /// tombstone), in LSN order; a change that loses to the row's writer is not told. What
    /// `rows` was told is undone by the caller when this fails.
    pub fn apply_with<'a>(
        &self,
        changes: impl IntoIterator<Item = Change<'a>>,
        rows: &mut RowSink<'_>,
    ) -> Result<usize> {
        self.guarded(|m| m.apply_inner(changes.into_iter(), rows))
    }

    fn apply_inner<'a>(
        &self,
        changes: impl Iterator<Item = Change<'a>>,
        decided: &mut RowSink<'_>,
    ) -> Result<usize> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut newly = 0usize;
        {
            let mut rows = txn.open_table(ROWS).map_err(|e| self.err(e))?;
            let mut by_time = txn.open_table(BY_TIME).map_err(|e| self.err(e))?;
            let mut by_session = txn.open_table(BY_SESSION).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut table_rows = txn.open_table(TABLE_ROWS).map_err(|e| self.err(e))?;
            let mut tables = txn.open_table(TABLES).map_err(|e| self.err(e))?;
            let mut history = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
            let start = read_meta(&meta, META_APPLIED_LSN).map_err(|e| self.err(e))?;
            let mut skipped = 0u64;
            let mut last = start;
            let mut encoded = Vec::new();
            for change in changes {
                if change.lsn <= last {
                    continue;
                }
                if change.lsn != last + 1 {
                    return Err(Error::Gap { applied: last, first: change.lsn });
                }
                last = change.lsn;
                newly += 1;
                feral_log::failpoint::reached("projection.apply", last, last);
                // The history table holds the ops that are not (or no longer) a row's
                // writer; the writer is in the row itself, with its LSN.
                let mut superseded = |lsn: Lsn, op_id: OpId| {
                    history
                        .insert(
                            (row_hash(&change.table, &change.row_id), lsn),
                            u128::from_be_bytes(op_id.0),
                        )
                        .map(|_| ())
                        .map_err(|e| self.err(e))
                };
                let episode = match &change.effect {
                    Effect::Other(data) => {
                        let row = TableRowRef {
                            hlc: change.hlc,
                            op_id: change.op_id,
                            data: data.as_deref(),
                        };
                        let key = (change.table.as_ref(), change.row_id.as_ref());
                        let lost = self.apply_table_row(
                            &mut table_rows,
                            &mut tables,
                            key,
                            (&row, change.lsn),
                        )?;
                        if let Some((lsn, op_id)) = lost {
                            superseded(lsn, op_id)?;
                        }
                        continue;
                    }
                    Effect::Skip(reason) => {
                        tracing::warn!(op_id = %change.op_id, %reason, "episode op skipped");
                        superseded(change.lsn, change.op_id)?;
                        skipped += 1;
                        continue;
                    }
                    Effect::Delete => None,
                    Effect::Put(e) => Some(e.as_ref()),
                };
                encoded.clear();
                codec::encode_value_into(
                    &(RowRef { hlc: change.hlc, op_id: change.op_id, episode }, change.lsn),
                    &mut encoded,
                );
                // Insert first: redb hands back the row it replaced, which saves a lookup for
                // the usual new row; the rare losing write puts the old row back.
                let old = match rows
                    .insert(change.row_id.as_ref(), encoded.as_slice())
                    .map_err(|e| self.err(e))?
                {
                    Some(raw) => Some((decode_stored_row(raw.value())?, raw.value().to_vec())),
                    None => None,
                };
                if let Some(((old, old_lsn), old_bytes)) = &old {
                    // Later HLC wins; the op_id breaks a tie (one origin never issues an HLC
                    // twice, so only a faulty writer makes one), keeping every node equal.
                    if (change.hlc, change.op_id) <= (old.hlc, old.op_id) {
                        rows.insert(change.row_id.as_ref(), old_bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                        superseded(change.lsn, change.op_id)?;
                        continue;
                    }
                    superseded(*old_lsn, old.op_id)?;
                    if let Some(e) = &old.episode {
                        by_time.remove(time_key(e, &old.op_id)).map_err(|e| self.err(e))?;
                        by_session.remove(session_key(e, &old.op_id)).map_err(|e| self.err(e))?;
                    }
                }
                decided(change.row_id.as_ref(), episode, old.is_some())?;
                if let Some(e) = episode {
                    let id = e.id.as_str();
                    by_time.insert(time_key(e, &change.op_id), id).map_err(|e| self.err(e))?;
                    by_session
                        .insert(session_key(e, &change.op_id), id)
                        .map_err(|e| self.err(e))?;
                }
            }
            if newly == 0 {
                return Ok(0);
            }
            meta.insert(META_APPLIED_LSN, last).map_err(|e| self.err(e))?;
            if skipped > 0 {
                let before = read_meta(&meta, META_SKIPPED).map_err(|e| self.err(e))?;
                meta.insert(META_SKIPPED, before + skipped).map_err(|e| self.err(e))?;
            }
        }
        let applied = newly as u64;
        let pending = self.non_durable_ops.fetch_add(applied, Ordering::Relaxed) + applied;
        let durable = pending >= PROJECTION_DURABLE_EVERY_OPS;
        if !durable {
            txn.set_durability(Durability::None).map_err(|e| Error::Projection(e.to_string()))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        if durable {
            self.non_durable_ops.store(0, Ordering::Relaxed);
        }
        Ok(newly)
    }

    /// Last writer wins for a row of another table (`row` written at LSN `lsn`), keeping its
    /// table's live count. Returns the op that is not the row's writer afterwards (the old
    /// writer, or `row` when it loses), with its LSN.
    fn apply_table_row(
        &self,
        rows: &mut redb::Table<'_, (&'static str, &'static str), &'static [u8]>,
        tables: &mut redb::Table<'_, &'static str, u64>,
        key: (&str, &str),
        (row, lsn): (&TableRowRef<'_>, Lsn),
    ) -> Result<Option<(Lsn, OpId)>> {
        let old = match rows.get(key).map_err(|e| self.err(e))? {
            Some(raw) => Some(decode_stored_table_row(raw.value())?),
            None => None,
        };
        if let Some((old, _)) = &old
            && (row.hlc, row.op_id) <= (old.hlc, old.op_id)
        {
            return Ok(Some((lsn, row.op_id)));
        }
        let lost = old.as_ref().map(|(o, old_lsn)| (*old_lsn, o.op_id));
        let old = old.map(|(o, _)| o);
        let encoded = codec::encode_value(&(row, lsn));
        rows.insert(key, encoded.as_slice()).map_err(|e| self.err(e))?;
        let was_live = old.as_ref().is_some_and(|o| o.data.is_some());
        let delta: i64 = match (was_live, row.data.is_some()) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        if delta != 0 {
            let live = read_meta(tables, key.0).map_err(|e| self.err(e))?;
            let live = live.checked_add_signed(delta).ok_or_else(|| {
                Error::Corruption(format!("table {:?} counts fewer live rows than it has", key.0))
            })?;
            tables.insert(key.0, live).map_err(|e| self.err(e))?;
        }
        Ok(lost)
    }

    /// Applies every durable record of `wal` after the applied LSN. Returns how many.
    pub fn catch_up(&self, wal: &Wal) -> Result<usize> {
        let applied = self.applied_lsn()?;
        let durable = wal.durable_lsn();
        if applied > durable {
            return Err(Error::Corruption(format!(
                "projection has applied LSN {applied} but the log ends at {durable}"
            )));
        }
        let mut batch: Vec<(Lsn, Op)> = Vec::new();
        let mut total = 0;
        let mut failure = None;
        let meter = wal.meter();
        meter.stage("projecting the log", feral_log::meter::Unit::Records, durable - applied);
        wal.scan(applied + 1, &mut |record| {
            batch.push((record.lsn, record.op));
            if batch.len() >= CATCH_UP_BATCH_OPS {
                meter.add(batch.len() as u64);
                match self.apply_ops(batch.iter().map(|(lsn, op)| (*lsn, op))) {
                    Ok(n) => total += n,
                    Err(e) => {
                        failure = Some(e);
                        return Ok(false);
                    }
                }
                batch.clear();
            }
            Ok(true)
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        total += self.apply_ops(batch.iter().map(|(lsn, op)| (*lsn, op)))?;
        Ok(total)
    }

    /// Makes every earlier commit durable.
    pub fn flush(&self) -> Result<()> {
        if self.non_durable_ops.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        self.guarded(|m| {
            let txn = m.db.begin_write().map_err(|e| m.err(e))?;
            txn.commit().map_err(|e| m.err(e))?;
            m.non_durable_ops.store(0, Ordering::Relaxed);
            Ok(())
        })
    }
}

pub(crate) fn time_key(e: &Episode, writer: &OpId) -> (u64, u128) {
    (e.created_key(), u128::from_be_bytes(writer.0))
}

pub(crate) fn session_key(e: &Episode, writer: &OpId) -> (u64, u64, u128) {
    (session_hash(&e.session_id), e.created_key(), u128::from_be_bytes(writer.0))
}

/// FNV-1a: a stable 64-bit hash of a session id (collisions only cost a filtered row).
pub(crate) fn session_hash(session: &str) -> u64 {
    fnv1a(session.bytes())
}

pub(crate) fn read_meta(
    meta: &impl ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<u64, redb::Error> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
}

/// A stored table row: the row, and the LSN of the op that wrote it (local, so kept out of
/// [`TableRow`], which the digest compares across nodes).
pub(crate) fn decode_stored_table_row(raw: &[u8]) -> Result<(TableRow, Lsn)> {
    codec::decode_value(raw)
        .map_err(|reason| Error::Corruption(format!("undecodable table row: {reason}")))
}

pub(crate) fn decode_table_row(raw: &[u8]) -> Result<TableRow> {
    decode_stored_table_row(raw).map(|(row, _)| row)
}

/// A stored episode row and the LSN of its writer (see [`decode_stored_table_row`]).
pub(crate) fn decode_stored_row(raw: &[u8]) -> Result<(Row, Lsn)> {
    codec::decode_value(raw)
        .map_err(|reason| Error::Corruption(format!("undecodable row: {reason}")))
}

pub(crate) fn decode_row(raw: &[u8]) -> Result<Row> {
    decode_stored_row(raw).map(|(row, _)| row)
}

pub(crate) fn map_io(path: &Path, e: std::io::Error) -> Error {
    if feral_log::error::is_disk_full(&e) {
        Error::DiskFull { path: path.to_path_buf(), source: e }
    } else if e.kind() == std::io::ErrorKind::InvalidData {
        // redb's "Not a redb database": the file is damaged, not the device.
        Error::Corruption(format!("{}: {e}", path.display()))
    } else {
        Error::Projection(format!("{}: {e}", path.display()))
    }
}

/// Maps a redb failure, keeping corruption and a full disk distinct.
pub(crate) fn map_redb(path: &Path, error: impl Into<redb::Error>) -> Error {
    match error.into() {
        redb::Error::Corrupted(msg) => Error::Corruption(msg),
        redb::Error::Io(e) => map_io(path, e),
        other => Error::Projection(other.to_string()),
    }
}
