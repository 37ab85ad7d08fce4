//! `feral-node export --jsonl`: every live row of every table, one JSON object per line
//! (`{"table","row_id","hlc","op_id","data"}`, an episode's `data` its document), so a user can
//! always leave; `--ops` writes every op of the log instead, in log order.

use std::io::Write;

use feral_materializer::{TABLE, data_json};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::node::Node;

/// Rows read per page of a table.
pub const EXPORT_PAGE_ROWS: usize = 1000;

fn write_line(out: &mut dyn Write, value: &Value) -> Result<()> {
    serde_json::to_writer(&mut *out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| Error::io(std::path::Path::new("stdout"), e))
}

/// Writes every live row of every table to `out`; returns the rows written.
pub fn export_rows(node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut written = 0u64;
    // Episodes from one snapshot of the projection.
    let snapshot = node.rows_snapshot()?;
    let mut failed = None;
    snapshot.for_each_row(&mut |id, row| {
        if failed.is_some() {
            return Ok(());
        }
        if let Some(episode) = &row.episode {
            let line = json!({
                "table": TABLE, "row_id": id, "hlc": row.hlc.to_string(),
                "op_id": row.op_id.to_string(), "data": episode,
            });
            match write_line(out, &line) {
                Ok(()) => written += 1,
                Err(e) => failed = Some(e),
            }
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    for table in node.tables()?.into_iter().filter(|t| t.table != TABLE) {
        let mut after: Option<String> = None;
        loop {
            let (rows, next) = node.rows(&table.table, after.as_deref(), EXPORT_PAGE_ROWS)?;
            for row in rows {
                write_line(
                    out,
                    &serde_json::to_value(&row).map_err(|e| Error::Import(e.to_string()))?,
                )?;
                written += 1;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    Ok(written)
}

/// Writes every op of the log in log order to `out`; returns the ops written.
pub fn export_ops(node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut written = 0u64;
    let mut failed = None;
    node.wal().scan(1, &mut |record| {
        let op = &record.op;
        let line = json!({
            "lsn": record.lsn, "op_id": op.op_id.to_string(), "origin": op.origin.to_string(),
            "seq": op.seq, "hlc": op.hlc.to_string(), "table": op.table, "row_id": op.row_id,
            "kind": op.kind, "data": if op.data.is_empty() { Value::Null } else { data_json(&op.data) },
        });
        match write_line(out, &line) {
            Ok(()) => {
                written += 1;
                Ok(true)
            }
            Err(e) => {
                failed = Some(e);
                Ok(false)
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(written),
    }
}
