//! `feral-node import --sqlite PATH`: the original system's `memory.db` brought over.
//!
//! Its `episodes` table (id, session_id, event_type, summary, detail, importance, created_at)
//! becomes episodes, keeping each row's id and original `created_at`; every other table
//! becomes rows of a table of the same name, keyed by its `id` column (else SQLite's rowid),
//! each row a JSON object of its columns. Each op's op_id is made from the table, the row id
//! and the row's content, so a second run of the same import appends nothing (every op is a
//! duplicate) and a row changed since is a new write that wins. The database is opened
//! read-only. What cannot be imported is skipped, counted and said why, never dropped in
//! silence. The rows go to an [`ImportSink`]: a store opened here ([`Node`]), or a running
//! node's API (the CLI's, when a node holds the data directory); both make the same ops.

use std::path::{Path, PathBuf};

use feral_log::meter::{Meter, Unit};
use feral_types::{OpDraft, OpId, OpKind};
use rusqlite::types::ValueRef;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::node::Node;

/// Rows appended per group commit, at most.
pub const IMPORT_BATCH_ROWS: usize = 1000;
/// Bytes of row content per group commit, at most (a batch through a running node's API is
/// one request body, whose default limit is 4 MiB). A larger row goes alone.
pub const IMPORT_BATCH_BYTES: usize = 1 << 20;
/// Skipped rows listed in the report (all are counted).
pub const IMPORT_SKIPS_LISTED: usize = 100;
/// The original system's episodes table.
pub const EPISODES_TABLE: &str = "episodes";
/// The original system's sync log, beside `memory.db`.
pub const SYNC_WAL_FILE: &str = "sync_wal.db";

/// What one table gave.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableImport {
    /// The table (the same name here).
    pub table: String,
    /// Rows read.
    pub rows: u64,
    /// Rows appended as new ops.
    pub imported: u64,
    /// Rows already imported by an earlier run (same content).
    pub duplicates: u64,
    /// Rows skipped (see `skips`).
    pub skipped: u64,
}

/// One row not imported, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    /// Its table.
    pub table: String,
    /// Its row id, when it has one.
    pub row_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Imported {
    /// The database read.
    pub from: PathBuf,
    /// Per table, in the database's order.
    pub tables: Vec<TableImport>,
    /// The first skipped rows (at most [`IMPORT_SKIPS_LISTED`]); all are counted per table.
    pub skips: Vec<Skip>,
    /// Whole tables or files not imported, and why.
    pub notes: Vec<String>,
}

impl Imported {
    /// True when every row was imported or was already there.
    pub fn complete(&self) -> bool {
        self.tables.iter().all(|t| t.skipped == 0)
    }

    fn skip(&mut self, table: usize, row_id: Option<String>, reason: String) {
        self.tables[table].skipped += 1;
        if self.skips.len() < IMPORT_SKIPS_LISTED {
            let name = self.tables[table].table.clone();
            self.skips.push(Skip { table: name, row_id, reason });
        }
    }
}

fn import_error(e: impl std::fmt::Display) -> Error {
    Error::Import(e.to_string())
}

/// The op_id of an imported row: the same table, row and content give the same id.
fn op_id_for(table: &str, row_id: &str, data: &[u8]) -> OpId {
    let mut hash = Sha256::new();
    for part in [b"feral-import/sqlite/1".as_slice(), table.as_bytes(), row_id.as_bytes(), data] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    OpId(id)
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column's value as JSON: BLOBs as `{"hex": …}`, as the API shows bytes.
fn json_of(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// `created_at` as unix seconds: a number (seconds, or milliseconds when it is too large to
/// be seconds), or SQLite's text form `YYYY-MM-DD HH:MM:SS[.fff]` (UTC; a `T` and a `Z` are
/// taken too).
pub fn created_at_secs(value: &Value) -> std::result::Result<Option<f64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let v = n.as_f64().ok_or("not a number")?;
            Ok(Some(if v > 1e11 { v / 1000.0 } else { v }))
        }
        Value::String(s) => parse_sqlite_time(s).map(Some).ok_or_else(|| {
            format!("created_at {s:?} is neither unix seconds nor YYYY-MM-DD HH:MM:SS")
        }),
        _ => Err("created_at is neither a number nor a time".into()),
    }
}

fn parse_sqlite_time(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once([' ', 'T']).unwrap_or((s, "00:00:00"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec = t.next().map_or(Some(0.0), |x| x.parse::<f64>().ok())?;
    if t.next().is_some()
        || !(0..24).contains(&h)
        || !(0..60).contains(&min)
        || !(0.0..61.0).contains(&sec)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), then seconds.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

/// Where an import's rows go.
pub trait ImportSink {
    /// The canonical bytes of an episode document, validated as the store validates input.
    fn episode_data(&self, doc: &Value) -> Result<Vec<u8>>;
    /// Appends the drafts (all of one table) as one group commit, all or nothing; whether
    /// each was already held. A draft the store refuses fails the whole call with
    /// `invalid_op` or `invalid_episode`.
    fn append(&self, drafts: Vec<OpDraft>) -> Result<Vec<bool>>;
}

impl ImportSink for Node {
    fn episode_data(&self, doc: &Value) -> Result<Vec<u8>> {
        Ok(self.prepare_episode(doc, None)?.to_data())
    }

    fn append(&self, drafts: Vec<OpDraft>) -> Result<Vec<bool>> {
        Ok(self.append_ops(drafts)?.into_iter().map(|a| a.duplicate).collect())
    }
}

/// Imports the SQLite database at `path` into `node` (see the module's documentation).
pub fn import_sqlite(node: &dyn ImportSink, path: &Path, meter: &Meter) -> Result<Imported> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|e| import_error(format!("{}: {e}", path.display())))?;
    let mut out = Imported { from: path.to_path_buf(), ..Imported::default() };
    let tables: Vec<String> = {
        let mut stmt = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(|e| import_error(format!("{}: not an SQLite database: {e}", path.display())))?;
        let names = stmt.query_map([], |row| row.get::<_, String>(0)).map_err(import_error)?;
        names.collect::<std::result::Result<_, _>>().map_err(import_error)?
    };
    for table in tables {
        if table.starts_with('_') {
            out.notes.push(format!(
                "table {table:?} not imported: names starting with '_' are the node's own"
            ));
            continue;
        }
        out.tables.push(TableImport { table: table.clone(), ..TableImport::default() });
        let at = out.tables.len() - 1;
        import_table(node, &db, &table, at, &mut out, meter)?;
    }
    if let Some(wal) = path.parent().map(|d| d.join(SYNC_WAL_FILE)).filter(|p| p.exists()) {
        out.notes.push(format!(
            "{} not imported: its ops are the original system's replication log, whose effect the rows of {} already hold; this store starts its own log from those rows",
            wal.display(),
            path.display()
        ));
    }
    Ok(out)
}

fn import_table(
    node: &dyn ImportSink,
    db: &rusqlite::Connection,
    table: &str,
    at: usize,
    out: &mut Imported,
    meter: &Meter,
) -> Result<()> {
    let count: i64 = db
        .query_row(&format!("SELECT count(*) FROM {}", quoted(table)), [], |r| r.get(0))
        .unwrap_or(0);
    meter.stage(&format!("importing {table}"), Unit::Records, count.max(0) as u64);
    let mut stmt = match db.prepare(&format!("SELECT rowid, * FROM {}", quoted(table))) {
        Ok(stmt) => stmt,
        // A WITHOUT ROWID table, a virtual table whose module is missing: said, not guessed.
        Err(e) => {
            out.notes.push(format!("table {table:?} not imported: {e}"));
            out.tables.pop();
            return Ok(());
        }
    };
    let columns: Vec<String> = stmt.column_names().skip(1).map(|c| c.to_string()).collect();
    let mut rows = stmt.query([]).map_err(import_error)?;
    let mut batch: Vec<(String, Value)> = Vec::with_capacity(IMPORT_BATCH_ROWS);
    let mut batch_bytes = 0;
    while let Some(row) = rows.next().map_err(import_error)? {
        out.tables[at].rows += 1;
        let rowid: i64 = row.get(0).map_err(import_error)?;
        let mut fields = Map::new();
        for (i, name) in columns.iter().enumerate() {
            let value = row.get_ref(i + 1).map_err(import_error)?;
            fields.insert(name.clone(), json_of(value));
        }
        let row_id = match fields.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => rowid.to_string(),
        };
        let bytes = fields.iter().map(|(k, v)| k.len() + 3 + value_bytes(v)).sum::<usize>();
        if !batch.is_empty() && batch_bytes + bytes > IMPORT_BATCH_BYTES {
            flush(node, table, at, &mut batch, out, meter)?;
            batch_bytes = 0;
        }
        batch_bytes += bytes;
        batch.push((row_id, Value::Object(fields)));
        if batch.len() >= IMPORT_BATCH_ROWS {
            batch_bytes = 0;
            flush(node, table, at, &mut batch, out, meter)?;
        }
    }
    flush(node, table, at, &mut batch, out, meter)
}

/// About the bytes a column's value takes in a row's JSON (for the batch bound).
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 2,
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + 3 + value_bytes(v)).sum(),
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        _ => 24,
    }
}

fn flush(
    node: &dyn ImportSink,
    table: &str,
    at: usize,
    batch: &mut Vec<(String, Value)>,
    out: &mut Imported,
    meter: &Meter,
) -> Result<()> {
    meter.add(batch.len() as u64);
    let mut drafts = Vec::with_capacity(batch.len());
    for (row_id, fields) in batch.drain(..) {
        let doc = if table == EPISODES_TABLE {
            match episode_doc(&row_id, fields) {
                Ok(doc) => doc,
                Err(reason) => {
                    out.skip(at, Some(row_id), reason);
                    continue;
                }
            }
        } else {
            fields
        };
        let data = if table == EPISODES_TABLE {
            match node.episode_data(&doc) {
                Ok(data) => data,
                Err(e) => {
                    out.skip(at, Some(row_id), e.to_string());
                    continue;
                }
            }
        } else {
            serde_json::to_vec(&doc).map_err(import_error)?
        };
        let op_id = op_id_for(table, &row_id, &data);
        drafts.push(OpDraft {
            op_id: Some(op_id),
            table: table.into(),
            row_id,
            kind: OpKind::Insert,
            data,
        });
    }
    if drafts.is_empty() {
        return Ok(());
    }
    let appended = match node.append(drafts.clone()) {
        Ok(appended) => appended,
        // A full disk, a pause: the import stops here with the cause; what was appended stays
        // and a second run goes on from it.
        Err(e)
            if e.code() != feral_log::Code::InvalidOp
                && e.code() != feral_log::Code::InvalidEpisode =>
        {
            return Err(e);
        }
        Err(_) => {
            // One row refused whole the batch: take them one by one, so it costs only itself.
            let mut appended = Vec::with_capacity(drafts.len());
            for draft in drafts {
                let row_id = draft.row_id.clone();
                match node.append(vec![draft]) {
                    Ok(mut one) => appended.append(&mut one),
                    Err(e)
                        if e.code() == feral_log::Code::InvalidOp
                            || e.code() == feral_log::Code::InvalidEpisode =>
                    {
                        out.skip(at, Some(row_id), e.to_string());
                    }
                    Err(e) => return Err(e),
                }
            }
            appended
        }
    };
    for duplicate in appended {
        if duplicate {
            out.tables[at].duplicates += 1;
        } else {
            out.tables[at].imported += 1;
        }
    }
    Ok(())
}

/// The episode document of a row of the original `episodes` table: its fields by name, the
/// row id as `id`, `created_at` as unix seconds; other columns are left out (and said so by
/// nothing: the original schema has none).
fn episode_doc(row_id: &str, fields: Value) -> std::result::Result<Value, String> {
    let Value::Object(mut fields) = fields else { return Err("not a row".into()) };
    let mut doc = Map::new();
    doc.insert("id".into(), Value::String(row_id.to_string()));
    for name in [
        "session_id",
        "event_type",
        "summary",
        "detail",
        "importance",
        "emotions",
        "participants",
        "location",
    ] {
        match fields.remove(name) {
            None | Some(Value::Null) => {}
            // Lists the original kept as JSON text come back as lists.
            Some(Value::String(s)) if matches!(name, "emotions" | "participants") => {
                let list = serde_json::from_str::<Value>(&s).unwrap_or(Value::String(s));
                doc.insert(name.into(), list);
            }
            Some(Value::Number(n)) if matches!(name, "session_id" | "event_type") => {
                doc.insert(name.into(), Value::String(n.to_string()));
            }
            Some(v) => {
                doc.insert(name.into(), v);
            }
        }
    }
    if let Some(secs) = created_at_secs(fields.get("created_at").unwrap_or(&Value::Null))? {
        doc.insert("created_at".into(), Value::from(secs));
    }
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_takes_seconds_milliseconds_and_sqlite_text() {
        let secs = |v: Value| created_at_secs(&v).expect("parses").expect("some");
        assert_eq!(secs(Value::from(1_700_000_000)), 1_700_000_000.0);
        assert_eq!(secs(Value::from(1_700_000_000_500u64)), 1_700_000_000.5);
        assert_eq!(secs(Value::from("2023-11-14 22:13:20")), 1_700_000_000.0);
        assert_eq!(secs(Value::from("2023-11-14T22:13:20.25Z")), 1_700_000_000.25);
        assert_eq!(secs(Value::from("1970-01-01")), 0.0);
        assert!(created_at_secs(&Value::from("yesterday")).is_err());
        assert!(created_at_secs(&Value::from("2023-13-01 00:00:00")).is_err());
        assert_eq!(created_at_secs(&Value::Null), Ok(None));
    }

    #[test]
    fn the_op_id_follows_table_row_and_content() {
        let a = op_id_for("notes", "1", b"x");
        assert_eq!(a, op_id_for("notes", "1", b"x"));
        assert_ne!(a, op_id_for("notes", "1", b"y"));
        assert_ne!(a, op_id_for("notes", "2", b"x"));
        assert_ne!(op_id_for("ab", "c", b""), op_id_for("a", "bc", b""), "parts are length-framed");
    }
}
