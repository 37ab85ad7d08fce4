//! The canonical dump and digest of a store: every op sorted by (origin, seq), then every
//! episode row (tombstones included) sorted by id. Two stores holding the same ops give the same
//! bytes, whatever order the ops arrived in.

use std::io::Write;

use feral_log::{Lsn, Op, Origin, Wal, codec};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::projection::Row;
use crate::query::RowsSnapshot;

/// The digest of a store, with the two halves it combines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// SHA-256 over the ops part and the episodes part, hex.
    pub digest: String,
    /// SHA-256 over the ops in (origin, seq) order, hex.
    pub ops_digest: String,
    /// SHA-256 over the episode rows in id order, hex.
    pub episodes_digest: String,
    /// Ops in the log.
    pub ops: u64,
    /// Episode rows (live and tombstones).
    pub rows: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every op's sort key and the hash of its canonical encoding, sorted, for the records up to
/// `upto`. Holds 64 bytes per op.
fn op_leaves(wal: &Wal, upto: Lsn) -> Result<Vec<(Origin, u64, [u8; 32])>> {
    let mut leaves = Vec::new();
    each_op(wal, upto, &mut |op| {
        let leaf: [u8; 32] = Sha256::digest(codec::encode_op(&op)).into();
        leaves.push((op.origin, op.seq, leaf));
    })?;
    leaves.sort_unstable();
    Ok(leaves)
}

/// Visits the log's ops with LSN up to `upto`, in LSN order.
fn each_op(wal: &Wal, upto: Lsn, visit: &mut dyn FnMut(Op)) -> Result<()> {
    if upto == 0 {
        return Ok(());
    }
    wal.scan(1, &mut |record| {
        if record.lsn > upto {
            return Ok(false);
        }
        let last = record.lsn == upto;
        visit(record.op);
        Ok(!last)
    })?;
    Ok(())
}

/// Computes the digest of the log's ops and the projection's rows, as of the snapshot's
/// applied LSN: the rows of the snapshot and the ops up to that LSN, so writes that land
/// meanwhile change neither half. Nothing is locked while it reads.
pub fn digest(wal: &Wal, projection: &RowsSnapshot) -> Result<Digest> {
    let leaves = op_leaves(wal, projection.applied_lsn())?;
    let mut ops = Sha256::new();
    ops.update(b"feral-ops-v1\n");
    for (origin, seq, leaf) in &leaves {
        ops.update(origin.0);
        ops.update(seq.to_be_bytes());
        ops.update(leaf);
    }
    let mut rows = Sha256::new();
    rows.update(b"feral-episodes-v1\n");
    let mut row_count = 0u64;
    projection.for_each_row(&mut |id, row| {
        let bytes = codec::encode_value(row);
        rows.update((id.len() as u64).to_be_bytes());
        rows.update(id.as_bytes());
        rows.update((bytes.len() as u64).to_be_bytes());
        rows.update(&bytes);
        row_count += 1;
        Ok(())
    })?;
    let (ops, rows) = (ops.finalize(), rows.finalize());
    let mut all = Sha256::new();
    all.update(ops);
    all.update(rows);
    Ok(Digest {
        digest: hex(&all.finalize()),
        ops_digest: hex(&ops),
        episodes_digest: hex(&rows),
        ops: leaves.len() as u64,
        rows: row_count,
    })
}

#[derive(Serialize)]
struct OpLine<'a> {
    origin: String,
    seq: u64,
    op_id: String,
    hlc: String,
    table: &'a str,
    row_id: &'a str,
    kind: &'static str,
    data: serde_json::Value,
}

/// Op data as a reader wants it back: JSON as JSON, other UTF-8 text as a string, anything
/// else as `{"hex": …}` (a JSON string written through `POST /v1/ops` is stored as its own
/// bytes, so text that happens to parse as JSON comes back as that JSON).
pub fn data_json(data: &[u8]) -> serde_json::Value {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        return value;
    }
    match std::str::from_utf8(data) {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => serde_json::json!({ "hex": hex(data) }),
    }
}

#[derive(Serialize)]
struct RowLine<'a> {
    id: &'a str,
    hlc: String,
    op_id: String,
    deleted: bool,
    episode: Option<&'a crate::episode::Episode>,
}

/// Writes the canonical dump: one JSON object per line, ops in (origin, seq) order (op data in
/// hex), then rows in id order. For diagnosis: it holds every op in memory to sort them.
pub fn dump(wal: &Wal, projection: &RowsSnapshot, out: &mut dyn Write) -> Result<()> {
    let mut ops: Vec<Op> = Vec::new();
    each_op(wal, projection.applied_lsn(), &mut |op| ops.push(op))?;
    ops.sort_unstable_by_key(|op| (op.origin, op.seq));
    let io = |e: std::io::Error| Error::Projection(format!("writing the dump: {e}"));
    for op in &ops {
        let line = OpLine {
            origin: op.origin.to_string(),
            seq: op.seq,
            op_id: op.op_id.to_string(),
            hlc: op.hlc.to_string(),
            table: &op.table,
            row_id: &op.row_id,
            kind: op.kind.as_str(),
            data: if op.data.is_empty() { serde_json::Value::Null } else { data_json(&op.data) },
        };
        write_line(out, &line).map_err(io)?;
    }
    projection.for_each_row(&mut |id, row: &Row| {
        let line = RowLine {
            id,
            hlc: row.hlc.to_string(),
            op_id: row.op_id.to_string(),
            deleted: row.episode.is_none(),
            episode: row.episode.as_ref(),
        };
        write_line(out, &line).map_err(io)
    })
}

fn write_line(out: &mut dyn Write, line: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}
