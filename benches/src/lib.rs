//! feral-benches: shared helpers for the criterion benchmarks in `benches/`: raw probes of the
//! physical limits that each engine benchmark is measured against.

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
}

impl RawAppender {
    /// Creates `path`; the file is truncated and restarted every `wrap_bytes`.
    pub fn create(path: &Path, wrap_bytes: u64) -> io::Result<RawAppender> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(RawAppender { file, at: 0, wrap_bytes, buf: Vec::new() })
    }

    /// Appends `records` records of `record_bytes` each with one write, then fdatasync.
    pub fn append_group(&mut self, records: usize, record_bytes: usize) -> io::Result<()> {
        self.buf.resize(records * record_bytes, 0xab);
        if self.at + self.buf.len() as u64 > self.wrap_bytes {
            self.file.set_len(0)?;
            self.at = 0;
        }
        self.file.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        self.file.sync_data()
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
