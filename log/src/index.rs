//! The redb index: op_id → where the op lives, (origin, seq) → op_id, per-origin heads, and the
//! LSN the index reflects. It is derived state: the log can always rebuild it.

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::op::{OpId, Origin};

// Keys are integers (big-endian readings of the ids), so redb compares them natively and
// their order is the byte order of the ids.
const OPS: TableDefinition<'_, u128, [u8; ENTRY_BYTES]> = TableDefinition::new("ops");
const BY_ORIGIN: TableDefinition<'_, (u128, u64), u128> = TableDefinition::new("ops_by_origin");
const HEADS: TableDefinition<'_, u128, u64> = TableDefinition::new("heads");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("log_meta");

const META_INDEXED_LSN: &str = "indexed_lsn";
const META_HLC_WALL: &str = "max_hlc_wall_ms";
const META_HLC_COUNTER: &str = "max_hlc_counter";
const ENTRY_BYTES: usize = 76;

/// Where an op lives and what it is, as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The op's id.
    pub op_id: OpId,
    /// Writer incarnation.
    pub origin: Origin,
    /// Per-origin sequence number.
    pub seq: u64,
    /// HLC stamp (its node is the origin).
    pub hlc: Hlc,
    /// Local log position.
    pub lsn: u64,
    /// Base LSN of the segment holding it.
    pub segment: u64,
    /// Byte offset of its frame in that segment.
    pub offset: u64,
    /// [`crate::op::content_hash`] of the writer-supplied fields.
    pub content_hash: u64,
}

impl IndexEntry {
    fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[0..16].copy_from_slice(&self.origin.0);
        let numbers =
            [self.seq, self.lsn, self.segment, self.offset, self.content_hash, self.hlc.wall_ms];
        for (i, n) in numbers.iter().enumerate() {
            out[16 + i * 8..24 + i * 8].copy_from_slice(&n.to_le_bytes());
        }
        out[64..68].copy_from_slice(&self.hlc.counter.to_le_bytes());
        out
    }

    fn decode(op_id: OpId, raw: &[u8; ENTRY_BYTES]) -> IndexEntry {
        let n = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[16 + i * 8..24 + i * 8]);
            u64::from_le_bytes(b)
        };
        let mut origin = [0u8; 16];
        origin.copy_from_slice(&raw[0..16]);
        let mut counter = [0u8; 4];
        counter.copy_from_slice(&raw[64..68]);
        IndexEntry {
            op_id,
            origin: Origin(origin),
            seq: n(0),
            lsn: n(1),
            segment: n(2),
            offset: n(3),
            content_hash: n(4),
            hlc: Hlc { wall_ms: n(5), counter: u32::from_le_bytes(counter), node: Origin(origin) },
        }
    }
}

fn key(bytes: &[u8; 16]) -> u128 {
    u128::from_be_bytes(*bytes)
}

fn origin_key(origin: &Origin, seq: u64) -> (u128, u64) {
    (key(&origin.0), seq)
}

/// Maps a redb failure to the crate error, keeping corruption distinct.
pub(crate) fn redb_error(error: impl Into<redb::Error>) -> Error {
    match error.into() {
        redb::Error::Corrupted(msg) => Error::IndexCorruption(msg),
        redb::Error::Io(e) => Error::from_io("index.redb", e),
        other => Error::Index(other.to_string()),
    }
}

/// The index database.
#[derive(Debug)]
pub struct Index {
    db: Database,
    non_durable_ops: std::sync::atomic::AtomicU64,
}

/// What the index says about its own progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexMeta {
    /// Every op with an LSN at or below this is indexed.
    pub indexed_lsn: u64,
    /// The greatest HLC among indexed ops.
    pub max_hlc: (u64, u32),
}

impl Index {
    /// Opens (creating if needed) the index file and its tables.
    pub fn open(path: &Path) -> Result<Index> {
        let db = Database::create(path).map_err(redb_error)?;
        if Self::tables_exist(&db)? {
            return Ok(Index { db, non_durable_ops: Default::default() });
        }
        let txn = db.begin_write().map_err(redb_error)?;
        {
            txn.open_table(OPS).map_err(redb_error)?;
            txn.open_table(BY_ORIGIN).map_err(redb_error)?;
            txn.open_table(HEADS).map_err(redb_error)?;
            txn.open_table(META).map_err(redb_error)?;
        }
        txn.commit().map_err(redb_error)?;
        Ok(Index { db, non_durable_ops: Default::default() })
    }

    /// True when every table exists, so opening needs no write (a full disk can still open).
    fn tables_exist(db: &Database) -> Result<bool> {
        let txn = db.begin_read().map_err(redb_error)?;
        let found = [
            txn.open_table(OPS).is_ok(),
            txn.open_table(BY_ORIGIN).is_ok(),
            txn.open_table(HEADS).is_ok(),
            txn.open_table(META).is_ok(),
        ];
        Ok(found.iter().all(|ok| *ok))
    }

    /// The shared redb handle (the materializer keeps its tables in the same file).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Progress markers.
    pub fn meta(&self) -> Result<IndexMeta> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(META).map_err(redb_error)?;
        let read = |key: &str| -> Result<u64> {
            Ok(table.get(key).map_err(redb_error)?.map_or(0, |v| v.value()))
        };
        Ok(IndexMeta {
            indexed_lsn: read(META_INDEXED_LSN)?,
            max_hlc: (read(META_HLC_WALL)?, read(META_HLC_COUNTER)? as u32),
        })
    }

    /// The entry for an op_id.
    pub fn lookup(&self, op_id: &OpId) -> Result<Option<IndexEntry>> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(OPS).map_err(redb_error)?;
        let found = table.get(key(&op_id.0)).map_err(redb_error)?;
        Ok(found.map(|raw| IndexEntry::decode(*op_id, &raw.value())))
    }

    /// The op_id held for `(origin, seq)`.
    pub fn lookup_seq(&self, origin: &Origin, seq: u64) -> Result<Option<OpId>> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(BY_ORIGIN).map_err(redb_error)?;
        let found = table.get(origin_key(origin, seq)).map_err(redb_error)?;
        Ok(found.map(|raw| OpId(raw.value().to_be_bytes())))
    }

    /// Entries for `origin` with `from_seq <= seq <= to_seq`, in seq order, at most `limit`.
    pub fn range_by_origin(
        &self,
        origin: &Origin,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
    ) -> Result<Vec<IndexEntry>> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let by_origin = txn.open_table(BY_ORIGIN).map_err(redb_error)?;
        let ops = txn.open_table(OPS).map_err(redb_error)?;
        let range = origin_key(origin, from_seq)..=origin_key(origin, to_seq);
        let mut out = Vec::new();
        for item in by_origin.range(range).map_err(redb_error)?.take(limit) {
            let (_, id) = item.map_err(redb_error)?;
            let op_id = OpId(id.value().to_be_bytes());
            let raw = ops.get(key(&op_id.0)).map_err(redb_error)?.ok_or_else(|| {
                Error::IndexCorruption(format!("op {op_id} in ops_by_origin but not in ops"))
            })?;
            out.push(IndexEntry::decode(op_id, &raw.value()));
        }
        Ok(out)
    }

    /// Highest contiguous seq held per origin.
    pub fn heads(&self) -> Result<Vec<(Origin, u64)>> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(HEADS).map_err(redb_error)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(redb_error)? {
            let (k, v) = item.map_err(redb_error)?;
            out.push((Origin(k.value().to_be_bytes()), v.value()));
        }
        Ok(out)
    }

    /// Number of indexed ops.
    pub fn len(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(OPS).map_err(redb_error)?;
        table.len().map_err(redb_error)
    }

    /// True when no op is indexed.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Indexes a batch of durable ops (in LSN order) in one transaction. Commits durably when
    /// `durable` or when enough non-durable commits piled up; otherwise the log replays them.
    pub fn commit(&self, entries: &[IndexEntry], durable: bool) -> Result<()> {
        use std::sync::atomic::Ordering;
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let pending = self.non_durable_ops.fetch_add(entries.len() as u64, Ordering::Relaxed)
            + entries.len() as u64;
        let durable = durable || pending >= crate::limits::INDEX_DURABLE_EVERY_OPS;
        let mut txn = self.db.begin_write().map_err(redb_error)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(|e| Error::Index(e.to_string()))?;
        }
        {
            let mut ops = txn.open_table(OPS).map_err(redb_error)?;
            let mut by_origin = txn.open_table(BY_ORIGIN).map_err(redb_error)?;
            let mut heads = txn.open_table(HEADS).map_err(redb_error)?;
            let mut meta = txn.open_table(META).map_err(redb_error)?;
            let mut max_hlc = {
                let wall = meta.get(META_HLC_WALL).map_err(redb_error)?.map_or(0, |v| v.value());
                let counter =
                    meta.get(META_HLC_COUNTER).map_err(redb_error)?.map_or(0, |v| v.value());
                (wall, counter as u32)
            };
            for entry in entries {
                ops.insert(key(&entry.op_id.0), entry.encode()).map_err(redb_error)?;
                by_origin
                    .insert(origin_key(&entry.origin, entry.seq), key(&entry.op_id.0))
                    .map_err(redb_error)?;
                max_hlc = max_hlc.max((entry.hlc.wall_ms, entry.hlc.counter));
            }
            for origin in distinct_origins(entries) {
                let mut head =
                    heads.get(key(&origin.0)).map_err(redb_error)?.map_or(0, |v| v.value());
                let start = head;
                while by_origin.get(origin_key(&origin, head + 1)).map_err(redb_error)?.is_some() {
                    head += 1;
                }
                if head != start {
                    heads.insert(key(&origin.0), head).map_err(redb_error)?;
                }
            }
            meta.insert(META_INDEXED_LSN, last.lsn).map_err(redb_error)?;
            meta.insert(META_HLC_WALL, max_hlc.0).map_err(redb_error)?;
            meta.insert(META_HLC_COUNTER, u64::from(max_hlc.1)).map_err(redb_error)?;
        }
        txn.commit().map_err(redb_error)?;
        if durable {
            self.non_durable_ops.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Makes every earlier non-durable commit durable.
    pub fn flush(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.non_durable_ops.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(redb_error)?;
        txn.commit().map_err(redb_error)?;
        self.non_durable_ops.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// A read snapshot for many lookups in a row.
    pub fn reader(&self) -> Result<IndexReader> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let ops = txn.open_table(OPS).map_err(redb_error)?;
        Ok(IndexReader { ops })
    }

    /// redb's own structural check (page checksums, tree shape).
    pub fn check_structure(&mut self) -> Result<bool> {
        self.db.check_integrity().map_err(redb_error)
    }

    /// Visits every entry in op_id order.
    pub fn for_each(&self, visit: &mut dyn FnMut(IndexEntry) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = txn.open_table(OPS).map_err(redb_error)?;
        for item in table.iter().map_err(redb_error)? {
            let (k, v) = item.map_err(redb_error)?;
            visit(IndexEntry::decode(OpId(k.value().to_be_bytes()), &v.value()))?;
        }
        Ok(())
    }
}

/// A read snapshot for many lookups.
#[derive(Debug)]
pub struct IndexReader {
    ops: redb::ReadOnlyTable<u128, [u8; ENTRY_BYTES]>,
}

impl IndexReader {
    /// The entry for an op_id.
    pub fn get(&self, op_id: &OpId) -> Result<Option<IndexEntry>> {
        let found = self.ops.get(key(&op_id.0)).map_err(redb_error)?;
        Ok(found.map(|raw| IndexEntry::decode(*op_id, &raw.value())))
    }
}

fn distinct_origins(entries: &[IndexEntry]) -> Vec<Origin> {
    let mut origins: Vec<Origin> = entries.iter().map(|e| e.origin).collect();
    origins.sort_unstable();
    origins.dedup();
    origins
}
