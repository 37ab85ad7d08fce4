//! Reading the projection (one row, listings by time and session, every row, counters) and
//! verifying it against itself and the log.

use std::sync::atomic::Ordering;

use feral_log::index::catch_redb_panic;
use feral_log::{Lsn, OpId};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::error::{Error, Result};
use crate::limits::{LIST_LIMIT_MAX, LIST_SCAN_ROWS_MAX};
use crate::projection::{
    BY_SESSION, BY_TIME, HISTORY, META, META_APPLIED_LSN, META_SKIPPED, Materializer,
    ProjectionStats, ROWS, Row, TABLE_ROWS, TABLES, TableRow, corruption_from_panic, decode_row,
    decode_stored_row, decode_stored_table_row, decode_table_row, map_redb, read_meta, row_hash,
    session_hash, session_key, time_key,
};

/// Where a listing stands: the index key of the last row it passed, newest first
/// (`created_at` as [`Episode::created_key`], then the writer's op id).
pub type ListPosition = (u64, u128);

/// One page of a listing: filters, where to start, and how many rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Only this session.
    pub session: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// created_at at or after (unix seconds).
    pub since: Option<f64>,
    /// created_at before (unix seconds).
    pub until: Option<f64>,
    /// importance at least.
    pub min_importance: Option<f64>,
    /// Rows at most (1 to [`LIST_LIMIT_MAX`]).
    pub limit: usize,
    /// Start after this position (the previous page's `next`).
    pub after: Option<ListPosition>,
}

/// Live rows of a table (row id and row), and the row id the next page starts after.
pub type TableRowsPage = (Vec<(String, TableRow)>, Option<String>);
/// Ops of a row's history (LSN and op id), and the LSN the next page starts after.
pub type HistoryPage = (Vec<(Lsn, OpId)>, Option<Lsn>);

/// One page of live episodes, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The rows.
    pub rows: Vec<Row>,
    /// Where the next page starts; none at the end. A page may hold fewer than `limit` rows
    /// before the end when filters pass few rows: it stops after [`LIST_SCAN_ROWS_MAX`].
    pub next: Option<ListPosition>,
}

impl Materializer {
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

    /// One page of live episodes, newest `created_at` first, with the query's filters. The
    /// position is that of an index entry, so pages cut anywhere (rows with equal
    /// `created_at` included) and every row is on exactly one page while the rows stay put;
    /// a row written between pages is on a later page only if it sorts after the cut.
    pub fn page(&self, q: &ListQuery) -> Result<ListPage> {
        if q.limit == 0 || q.limit > LIST_LIMIT_MAX {
            return Err(Error::InvalidQuery(format!(
                "limit {} is not within 1..={LIST_LIMIT_MAX}",
                q.limit
            )));
        }
        let low = q.since.map_or(0, f64::to_bits);
        // `until` is exclusive: the largest key below it.
        let high: ListPosition = match q.until {
            Some(u) if u <= 0.0 => return Ok(ListPage { rows: Vec::new(), next: None }),
            Some(u) => ((u.to_bits() - 1), u128::MAX),
            None => (u64::MAX, u128::MAX),
        };
        let high = match q.after {
            Some(after) if after < high => after,
            Some(_) => high,
            None => high,
        };
        let exclusive = q.after.is_some_and(|a| a <= high);
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?;
            let mut out: Vec<(ListPosition, Row)> = Vec::with_capacity(q.limit.min(1024) + 1);
            let mut scanned = 0usize;
            let mut last = None;
            // Takes the row one index entry names when it passes the filters; false to stop.
            let mut visit = |key: ListPosition, id: &str| -> Result<bool> {
                if exclusive && key == high {
                    return Ok(true);
                }
                scanned += 1;
                last = Some(key);
                let raw = rows.get(id).map_err(|e| m.err(e))?.ok_or_else(|| {
                    Error::Corruption(format!("an index names episode {id:?} with no row"))
                })?;
                let row = decode_row(raw.value())?;
                let Some(e) = &row.episode else {
                    return Err(Error::Corruption(format!(
                        "an index names deleted episode {id:?}"
                    )));
                };
                let passes = q.session.as_deref().is_none_or(|s| e.session_id == s)
                    && q.event_type.as_deref().is_none_or(|t| e.event_type == t)
                    && q.min_importance.is_none_or(|min| e.importance >= min);
                if passes {
                    out.push((key, row));
                }
                // One row past the limit says that another page follows.
                Ok(out.len() <= q.limit && scanned < LIST_SCAN_ROWS_MAX)
            };
            match &q.session {
                Some(s) => {
                    let h = session_hash(s);
                    let table = txn.open_table(BY_SESSION).map_err(|e| m.err(e))?;
                    let range =
                        table.range((h, low, 0)..=(h, high.0, high.1)).map_err(|e| m.err(e))?;
                    for item in range.rev() {
                        let (key, id) = item.map_err(|e| m.err(e))?;
                        let (_, created, writer) = key.value();
                        if !visit((created, writer), id.value())? {
                            break;
                        }
                    }
                }
                None => {
                    let table = txn.open_table(BY_TIME).map_err(|e| m.err(e))?;
                    let range = table.range((low, 0)..=high).map_err(|e| m.err(e))?;
                    for item in range.rev() {
                        let (key, id) = item.map_err(|e| m.err(e))?;
                        if !visit(key.value(), id.value())? {
                            break;
                        }
                    }
                }
            }
            let next = if out.len() > q.limit {
                out.truncate(q.limit);
                out.last().map(|(key, _)| *key)
            } else if scanned >= LIST_SCAN_ROWS_MAX {
                last
            } else {
                None
            };
            Ok(ListPage { rows: out.into_iter().map(|(_, row)| row).collect(), next })
        })
    }

    /// Live episodes of one session, counted (all of them without a session).
    pub fn count(&self, session: Option<&str>) -> Result<u64> {
        let Some(s) = session else { return Ok(self.stats()?.episodes) };
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?;
            let table = txn.open_table(BY_SESSION).map_err(|e| m.err(e))?;
            let h = session_hash(s);
            let mut n = 0;
            for item in table.range((h, 0, 0)..=(h, u64::MAX, u128::MAX)).map_err(|e| m.err(e))? {
                let (_, id) = item.map_err(|e| m.err(e))?;
                let raw = rows.get(id.value()).map_err(|e| m.err(e))?;
                let row = raw.map(|r| decode_row(r.value())).transpose()?;
                if row.and_then(|r| r.episode).is_some_and(|e| e.session_id == s) {
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// The row of another table (a tombstone included).
    pub fn table_row(&self, table: &str, row_id: &str) -> Result<Option<TableRow>> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(TABLE_ROWS).map_err(|e| m.err(e))?;
            match rows.get((table, row_id)).map_err(|e| m.err(e))? {
                Some(raw) => decode_table_row(raw.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Live rows of another table in row id order, after `after`, at most `limit`; and the
    /// row id the next page starts after (none at the end).
    pub fn table_rows(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TableRowsPage> {
        use std::ops::Bound;
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let rows = txn.open_table(TABLE_ROWS).map_err(|e| m.err(e))?;
            let low = match after {
                Some(a) => Bound::Excluded((table, a)),
                None => Bound::Included((table, "")),
            };
            let mut out = Vec::with_capacity(limit.min(1024) + 1);
            let mut scanned = 0usize;
            let mut last = None;
            for item in rows.range::<(&str, &str)>((low, Bound::Unbounded)).map_err(|e| m.err(e))? {
                let (key, raw) = item.map_err(|e| m.err(e))?;
                let (t, id) = key.value();
                if t != table || out.len() > limit || scanned >= LIST_SCAN_ROWS_MAX {
                    break;
                }
                scanned += 1;
                last = Some(id.to_string());
                let row = decode_table_row(raw.value())?;
                if row.data.is_some() {
                    out.push((id.to_string(), row));
                }
            }
            let next = if out.len() > limit {
                out.truncate(limit);
                out.last().map(|(id, _)| id.clone())
            } else if scanned >= LIST_SCAN_ROWS_MAX {
                last
            } else {
                None
            };
            Ok((out, next))
        })
    }

    /// Every table other than `episodes` with its live rows, by name.
    pub fn tables(&self) -> Result<Vec<(String, u64)>> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let tables = txn.open_table(TABLES).map_err(|e| m.err(e))?;
            let mut out = Vec::new();
            for item in tables.iter().map_err(|e| m.err(e))? {
                let (name, live) = item.map_err(|e| m.err(e))?;
                out.push((name.value().to_string(), live.value()));
            }
            Ok(out)
        })
    }

    /// The ops that touched a row (any table, episodes included), in local log order: their
    /// LSN and op id, after LSN `after`, at most `limit`; and the LSN the next page starts
    /// after. Entries of rows that only share the row's hash are included: the caller reads
    /// each op and keeps those of this row.
    pub fn history(
        &self,
        table: &str,
        row_id: &str,
        after: Lsn,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let history = txn.open_table(HISTORY).map_err(|e| m.err(e))?;
            // The row's writer is kept in the row; the history table has the other ops.
            let writer = if table == crate::TABLE {
                let rows = txn.open_table(ROWS).map_err(|e| m.err(e))?;
                let raw = rows.get(row_id).map_err(|e| m.err(e))?;
                raw.map(|r| decode_stored_row(r.value()).map(|(row, lsn)| (lsn, row.op_id)))
                    .transpose()?
            } else {
                let rows = txn.open_table(TABLE_ROWS).map_err(|e| m.err(e))?;
                let raw = rows.get((table, row_id)).map_err(|e| m.err(e))?;
                raw.map(|r| decode_stored_table_row(r.value()).map(|(row, lsn)| (lsn, row.op_id)))
                    .transpose()?
            };
            let mut writer = writer.filter(|(lsn, _)| *lsn > after);
            let h = row_hash(table, row_id);
            let mut out = Vec::new();
            let start = after.saturating_add(1);
            for item in history.range((h, start)..=(h, u64::MAX)).map_err(|e| m.err(e))? {
                let (key, op) = item.map_err(|e| m.err(e))?;
                let entry = (key.value().1, OpId(op.value().to_be_bytes()));
                if let Some(w) = writer.filter(|w| w.0 < entry.0) {
                    if out.len() == limit {
                        return Ok((out, Some(w.0 - 1)));
                    }
                    out.push(w);
                    writer = None;
                }
                if out.len() == limit {
                    return Ok((out, Some(entry.0 - 1)));
                }
                out.push(entry);
            }
            if let Some(w) = writer {
                if out.len() == limit {
                    return Ok((out, Some(w.0 - 1)));
                }
                out.push(w);
            }
            Ok((out, None))
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

    /// A read snapshot of the rows and the applied LSN they reflect, for reading them whole
    /// (digest, dump) without holding anything the applier or other readers wait for.
    pub fn rows_snapshot(&self) -> Result<RowsSnapshot> {
        self.guarded(|m| {
            let txn = m.db.begin_read().map_err(|e| m.err(e))?;
            let applied_lsn = {
                let meta = txn.open_table(META).map_err(|e| m.err(e))?;
                read_meta(&meta, META_APPLIED_LSN).map_err(|e| m.err(e))?
            };
            Ok(RowsSnapshot { txn, applied_lsn, path: m.path.clone() })
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
        self.check_structure()?;
        self.check_snapshot()?.verify(durable_lsn)
    }

    /// redb's structure check (page checksums, tree shape). It needs the handle to itself.
    /// Waits up to [`feral_log::limits::STRUCTURE_CHECK_WAIT`] for read snapshots already
    /// taken (a digest's, an export's, another check's) to end: its caller holds the handle
    /// exclusively, so no new one starts.
    pub fn check_structure(&mut self) -> Result<()> {
        use feral_log::limits::{STRUCTURE_CHECK_RETRY, STRUCTURE_CHECK_WAIT};
        let (suspect, db, path) = (&self.suspect, &mut self.db, &self.path);
        let deadline = std::time::Instant::now() + STRUCTURE_CHECK_WAIT;
        let fine = catch_redb_panic(
            || loop {
                match db.check_integrity() {
                    Err(redb::DatabaseError::TransactionInProgress)
                        if std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(STRUCTURE_CHECK_RETRY);
                    }
                    Err(redb::DatabaseError::TransactionInProgress) => {
                        return Err(Error::Projection(format!(
                            "the structure check waited {STRUCTURE_CHECK_WAIT:?} for readers of \
                             the projection to end; check again"
                        )));
                    }
                    other => return other.map_err(|e| map_redb(path, e)),
                }
            },
            corruption_from_panic,
        );
        match fine {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Corruption("redb integrity check failed".into())),
            Err(e) => {
                suspect.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// A read snapshot for the row check, so it can run without the caller's lock while
    /// the projection goes on applying ops.
    pub fn check_snapshot(&self) -> Result<CheckSnapshot> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        Ok(CheckSnapshot { txn, path: self.path.clone() })
    }
}

/// The projection's rows as of one applied LSN ([`Materializer::rows_snapshot`]).
#[derive(Debug)]
pub struct RowsSnapshot {
    txn: redb::ReadTransaction,
    applied_lsn: Lsn,
    path: std::path::PathBuf,
}

impl RowsSnapshot {
    /// The last log record these rows reflect: every op up to it, none after.
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// Visits every row (tombstones included) in id order.
    pub fn for_each_row(&self, visit: &mut dyn FnMut(&str, &Row) -> Result<()>) -> Result<()> {
        let err = |e: redb::Error| map_redb(&self.path, e);
        catch_redb_panic(
            || {
                let rows = self.txn.open_table(ROWS).map_err(|e| err(e.into()))?;
                for item in rows.iter().map_err(|e| err(e.into()))? {
                    let (key, raw) = item.map_err(|e| err(e.into()))?;
                    visit(key.value(), &decode_row(raw.value())?)?;
                }
                Ok(())
            },
            corruption_from_panic,
        )
    }
}

/// A read snapshot of the projection for [`CheckSnapshot::verify`].
#[derive(Debug)]
pub struct CheckSnapshot {
    txn: redb::ReadTransaction,
    path: std::path::PathBuf,
}

impl CheckSnapshot {
    fn err(&self, e: impl Into<redb::Error>) -> Error {
        map_redb(&self.path, e)
    }

    /// Verifies every row of the snapshot, that the secondary keys match the rows, and that
    /// its applied LSN is within the log (`durable_lsn`, read after the snapshot was taken).
    pub fn verify(&self, durable_lsn: Lsn) -> Result<()> {
        catch_redb_panic(|| self.verify_rows(durable_lsn), corruption_from_panic)
    }

    fn verify_rows(&self, durable_lsn: Lsn) -> Result<()> {
        let txn = &self.txn;
        let rows = txn.open_table(ROWS).map_err(|e| self.err(e))?;
        let by_time = txn.open_table(BY_TIME).map_err(|e| self.err(e))?;
        let by_session = txn.open_table(BY_SESSION).map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let applied = read_meta(&meta, META_APPLIED_LSN).map_err(|e| self.err(e))?;
        if applied > durable_lsn {
            return Err(Error::Corruption(format!(
                "applied LSN {applied} is past the end of the log ({durable_lsn})"
            )));
        }
        let mut live = 0u64;
        for item in rows.iter().map_err(|e| self.err(e))? {
            let (key, raw) = item.map_err(|e| self.err(e))?;
            let row = decode_row(raw.value())?;
            let Some(e) = row.episode else { continue };
            live += 1;
            let id = key.value();
            let names = |found: Option<redb::AccessGuard<'_, &'static str>>| {
                found.is_some_and(|v| v.value() == id)
            };
            let indexed = e.id == id
                && names(by_time.get(time_key(&e, &row.op_id)).map_err(|e| self.err(e))?)
                && names(by_session.get(session_key(&e, &row.op_id)).map_err(|e| self.err(e))?);
            if !indexed {
                return Err(Error::Corruption(format!(
                    "episode {id:?} is missing from the secondary indexes"
                )));
            }
        }
        let (t, s) =
            (by_time.len().map_err(|e| self.err(e))?, by_session.len().map_err(|e| self.err(e))?);
        if t != live || s != live {
            return Err(Error::Corruption(format!(
                "{live} live episodes but {t} time and {s} session index entries"
            )));
        }
        self.verify_tables()
    }

    /// Every other table's rows decode, and its live count matches them.
    fn verify_tables(&self) -> Result<()> {
        let rows = self.txn.open_table(TABLE_ROWS).map_err(|e| self.err(e))?;
        let tables = self.txn.open_table(TABLES).map_err(|e| self.err(e))?;
        let mut live: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for item in rows.iter().map_err(|e| self.err(e))? {
            let (key, raw) = item.map_err(|e| self.err(e))?;
            if decode_table_row(raw.value())?.data.is_some() {
                *live.entry(key.value().0.to_string()).or_default() += 1;
            }
        }
        for item in tables.iter().map_err(|e| self.err(e))? {
            let (name, counted) = item.map_err(|e| self.err(e))?;
            let found = live.remove(name.value()).unwrap_or(0);
            if found != counted.value() {
                return Err(Error::Corruption(format!(
                    "table {:?} counts {} live rows but holds {found}",
                    name.value(),
                    counted.value()
                )));
            }
        }
        match live.into_iter().next() {
            Some((name, found)) => Err(Error::Corruption(format!(
                "table {name:?} holds {found} live rows but counts none"
            ))),
            None => Ok(()),
        }
    }
}
