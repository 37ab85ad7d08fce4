//! The `episodes` projection in its own redb file: rows (live or tombstone) keyed by episode
//! id, secondary keys by time and by session, and the LSN applied. Rows and the applied LSN
//! change in one transaction, so every op is applied exactly once; the log replays the rest.

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use feral_log::index::catch_redb_panic;
use feral_log::{Hlc, Lsn, Op, OpId, Wal, codec};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::change::{Change, Effect};
use crate::episode::Episode;
use crate::error::{Error, Result};
use crate::limits::{CATCH_UP_BATCH_OPS, LIST_LIMIT_MAX, PROJECTION_DURABLE_EVERY_OPS};

const ROWS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("episodes");
// Secondary keys are fixed-width integers, compared natively by redb: (created_at, op_id of
// the row's writer) → episode id, and (session hash, created_at, op_id) → episode id. A
// session listing drops the rare rows whose session only shares the hash.
const BY_TIME: TableDefinition<'_, (u64, u128), &str> = TableDefinition::new("episodes_by_time");
const BY_SESSION: TableDefinition<'_, (u64, u64, u128), &str> =
    TableDefinition::new("episodes_by_session");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("episodes_meta");

const META_APPLIED_LSN: &str = "applied_lsn";
const META_SKIPPED: &str = "skipped_invalid";

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
pub struct ProjectionStats {
    /// The last LSN applied.
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
    db: ManuallyDrop<Database>,
    path: PathBuf,
    non_durable_ops: AtomicU64,
    suspect: AtomicBool,
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

fn corruption_from_panic(what: String) -> Error {
    Error::Corruption(format!("redb panicked reading the projection: {what}"))
}

impl Materializer {
    /// Opens (creating if needed) the projection file.
    pub fn open(path: &Path) -> Result<Materializer> {
        let path = path.to_path_buf();
        let db = catch_redb_panic(
            || Database::create(&path).map_err(|e| map_redb(&path, e)),
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

    fn guarded<T>(&self, f: impl FnOnce(&Materializer) -> Result<T>) -> Result<T> {
        let outcome = catch_redb_panic(|| f(self), corruption_from_panic);
        if matches!(outcome, Err(Error::Corruption(_))) {
            self.suspect.store(true, Ordering::Relaxed);
        }
        outcome
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        map_redb(&self.path, e)
    }

    fn create_tables(&self) -> Result<()> {
        {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            if txn.open_table(ROWS).is_ok()
                && txn.open_table(BY_TIME).is_ok()
                && txn.open_table(BY_SESSION).is_ok()
                && txn.open_table(META).is_ok()
            {
                return Ok(());
            }
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(ROWS).map_err(|e| self.err(e))?;
        txn.open_table(BY_TIME).map_err(|e| self.err(e))?;
        txn.open_table(BY_SESSION).map_err(|e| self.err(e))?;
        txn.open_table(META).map_err(|e| self.err(e))?;
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
        self.guarded(|m| m.apply_inner(changes.into_iter()))
    }

    fn apply_inner<'a>(&self, changes: impl Iterator<Item = Change<'a>>) -> Result<usize> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut newly = 0usize;
        {
            let mut rows = txn.open_table(ROWS).map_err(|e| self.err(e))?;
            let mut by_time = txn.open_table(BY_TIME).map_err(|e| self.err(e))?;
            let mut by_session = txn.open_table(BY_SESSION).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
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
                let episode = match &change.effect {
                    Effect::Other => continue,
                    Effect::Skip(reason) => {
                        tracing::warn!(op_id = %change.op_id, %reason, "episode op skipped");
                        skipped += 1;
                        continue;
                    }
                    Effect::Delete => None,
                    Effect::Put(e) => Some(e.as_ref()),
                };
                encoded.clear();
                codec::encode_value_into(
                    &RowRef { hlc: change.hlc, op_id: change.op_id, episode },
                    &mut encoded,
                );
                // Insert first: redb hands back the row it replaced, which saves a lookup for
                // the usual new row; the rare losing write puts the old row back.
                let old = match rows
                    .insert(change.row_id.as_ref(), encoded.as_slice())
                    .map_err(|e| self.err(e))?
                {
                    Some(raw) => Some((decode_row(raw.value())?, raw.value().to_vec())),
                    None => None,
                };
                if let Some((old, old_bytes)) = &old {
                    // Later HLC wins; the op_id breaks a tie (one origin never issues an HLC
                    // twice, so only a faulty writer makes one), keeping every node equal.
                    if (change.hlc, change.op_id) <= (old.hlc, old.op_id) {
                        rows.insert(change.row_id.as_ref(), old_bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                        continue;
                    }
                    if let Some(e) = &old.episode {
                        by_time.remove(time_key(e, &old.op_id)).map_err(|e| self.err(e))?;
                        by_session.remove(session_key(e, &old.op_id)).map_err(|e| self.err(e))?;
                    }
                }
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
        wal.scan(applied + 1, &mut |record| {
            batch.push((record.lsn, record.op));
            if batch.len() >= CATCH_UP_BATCH_OPS {
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

    /// The row for an episode id (a tombstone included).
    pub fn get(&self, id: &str) -> Result<Option<Row>> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?;
            match rows.get(id).map_err(|e| m.err(e))? {
                Some(raw) => decode_row(raw.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Live episode rows, newest `created_at` first, at most `limit`, optionally of one session.
    pub fn list(&self, limit: usize, session: Option<&str>) -> Result<Vec<Row>> {
        let limit = limit.min(LIST_LIMIT_MAX);
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?;
            let mut out = Vec::with_capacity(limit.min(1024));
            // Takes the row an index entry names; false once `limit` rows are taken.
            let mut take = |id: &str| -> Result<bool> {
                let raw = rows.get(id).map_err(|e| m.err(e))?.ok_or_else(|| {
                    Error::Corruption(format!("an index names episode {id:?} with no row"))
                })?;
                let row = decode_row(raw.value())?;
                match &row.episode {
                    Some(e) if session.is_none_or(|s| e.session_id == s) => out.push(row),
                    Some(_) => {} // another session with the same hash
                    None => {
                        return Err(Error::Corruption(format!(
                            "an index names deleted episode {id:?}"
                        )));
                    }
                }
                Ok(out.len() < limit)
            };
            if limit == 0 {
                return Ok(Vec::new());
            }
            match session {
                Some(s) => {
                    let table = txn.open_table(BY_SESSION).map_err(|e| m.err(e))?;
                    let h = session_hash(s);
                    let range =
                        table.range((h, 0, 0)..=(h, u64::MAX, u128::MAX)).map_err(|e| m.err(e))?;
                    for item in range.rev() {
                        let (_, id) = item.map_err(|e| m.err(e))?;
                        if !take(id.value())? {
                            break;
                        }
                    }
                }
                None => {
                    let table = txn.open_table(BY_TIME).map_err(|e| m.err(e))?;
                    for item in table.iter().map_err(|e| m.err(e))?.rev() {
                        let (_, id) = item.map_err(|e| m.err(e))?;
                        if !take(id.value())? {
                            break;
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Visits every row (tombstones included) in id order.
    pub fn for_each_row(&self, visit: &mut dyn FnMut(&str, &Row) -> Result<()>) -> Result<()> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?;
            for item in rows.iter().map_err(|e| m.err(e))? {
                let (key, raw) = item.map_err(|e| m.err(e))?;
                visit(key.value(), &decode_row(raw.value())?)?;
            }
            Ok(())
        })
    }

    /// Counters.
    pub fn stats(&self) -> Result<ProjectionStats> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let meta = txn.open_table(META).map_err(|e| m.err(e))?;
            let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?.len().map_err(|e| m.err(e))?;
            let live =
                txn.open_table(BY_TIME).map_err(|e| m.err(e))?.len().map_err(|e| m.err(e))?;
            Ok(ProjectionStats {
                applied_lsn: read_meta(&meta, META_APPLIED_LSN).map_err(|e| m.err(e))?,
                episodes: live,
                tombstones: rows.saturating_sub(live),
                skipped_invalid: read_meta(&meta, META_SKIPPED).map_err(|e| m.err(e))?,
            })
        })
    }

    /// Verifies the file (redb's page checksums and tree shape), every row, and that the
    /// secondary keys match the rows and the applied LSN is within the log (`durable_lsn`).
    pub fn check(&mut self, durable_lsn: Lsn) -> Result<()> {
        let (suspect, db, path) = (&self.suspect, &mut self.db, &self.path);
        let fine = catch_redb_panic(
            || db.check_integrity().map_err(|e| map_redb(path, e)),
            corruption_from_panic,
        );
        match fine {
            Ok(true) => {}
            Ok(false) => return Err(Error::Corruption("redb integrity check failed".into())),
            Err(e) => {
                suspect.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?;
            let by_time = txn.open_table(BY_TIME).map_err(|e| m.err(e))?;
            let by_session = txn.open_table(BY_SESSION).map_err(|e| m.err(e))?;
            let meta = txn.open_table(META).map_err(|e| m.err(e))?;
            let applied = read_meta(&meta, META_APPLIED_LSN).map_err(|e| m.err(e))?;
            if applied > durable_lsn {
                return Err(Error::Corruption(format!(
                    "applied LSN {applied} is past the end of the log ({durable_lsn})"
                )));
            }
            let mut live = 0u64;
            for item in rows.iter().map_err(|e| m.err(e))? {
                let (key, raw) = item.map_err(|e| m.err(e))?;
                let row = decode_row(raw.value())?;
                let Some(e) = row.episode else { continue };
                live += 1;
                let id = key.value();
                let names = |found: Option<redb::AccessGuard<'_, &'static str>>| {
                    found.is_some_and(|v| v.value() == id)
                };
                let indexed = e.id == id
                    && names(by_time.get(time_key(&e, &row.op_id)).map_err(|e| m.err(e))?)
                    && names(by_session.get(session_key(&e, &row.op_id)).map_err(|e| m.err(e))?);
                if !indexed {
                    return Err(Error::Corruption(format!(
                        "episode {id:?} is missing from the secondary indexes"
                    )));
                }
            }
            let (t, s) =
                (by_time.len().map_err(|e| m.err(e))?, by_session.len().map_err(|e| m.err(e))?);
            if t != live || s != live {
                return Err(Error::Corruption(format!(
                    "{live} live episodes but {t} time and {s} session index entries"
                )));
            }
            Ok(())
        })
    }
}

fn time_key(e: &Episode, writer: &OpId) -> (u64, u128) {
    (e.created_key(), u128::from_be_bytes(writer.0))
}

fn session_key(e: &Episode, writer: &OpId) -> (u64, u64, u128) {
    (session_hash(&e.session_id), e.created_key(), u128::from_be_bytes(writer.0))
}

/// FNV-1a: a stable 64-bit hash of a session id (collisions only cost a filtered row).
fn session_hash(session: &str) -> u64 {
    session
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn read_meta(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, redb::Error> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
}

fn decode_row(raw: &[u8]) -> Result<Row> {
    codec::decode_value(raw)
        .map_err(|reason| Error::Corruption(format!("undecodable row: {reason}")))
}

fn map_io(path: &Path, e: std::io::Error) -> Error {
    if feral_log::error::is_disk_full(&e) {
        Error::DiskFull { path: path.to_path_buf(), source: e }
    } else {
        Error::Projection(format!("{}: {e}", path.display()))
    }
}

/// Maps a redb failure, keeping corruption and a full disk distinct.
fn map_redb(path: &Path, error: impl Into<redb::Error>) -> Error {
    match error.into() {
        redb::Error::Corrupted(msg) => Error::Corruption(msg),
        redb::Error::Io(e) => map_io(path, e),
        other => Error::Projection(other.to_string()),
    }
}
