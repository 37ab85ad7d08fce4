//! Reading every table: the rows of tables other than `episodes` (last writer wins, as
//! written through `POST /v1/ops`), the list of tables, and each row's history: every op
//! that touched it, with the origin and the node whose key owns that origin.

use std::collections::HashMap;

use feral_log::{Lsn, Origin};
use feral_materializer::{TABLE, TableRow};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Code, Error, Result};
use crate::node::Node;

/// A table and its live rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TableInfo {
    /// The table's name.
    pub table: String,
    /// Its live rows.
    pub rows: u64,
}

/// One live row of any table, with the op that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RowView {
    /// The table.
    pub table: String,
    /// The row id.
    pub row_id: String,
    /// The data as written: JSON as JSON, other UTF-8 text as a string, anything else as
    /// `{"hex": …}`.
    pub data: Value,
    /// HLC of the op that wrote it.
    pub hlc: String,
    /// That op's id.
    pub op_id: String,
}

/// One op in a row's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// The op's id.
    pub op_id: String,
    /// `insert` or `delete`.
    pub kind: &'static str,
    /// Its HLC (when it was written, by its writer's clock).
    pub hlc: String,
    /// The origin (writer incarnation) that wrote it, and its seq there.
    pub origin: String,
    /// Its seq in the origin.
    pub seq: u64,
    /// The node whose key owns the origin (from its genesis; none for an unsigned origin).
    pub node_id: Option<String>,
    /// Its position in this node's log.
    #[cfg_attr(feature = "server", schema(value_type = u64))]
    pub lsn: Lsn,
    /// Its data, as in [`RowView::data`] (null for a delete).
    pub data: Value,
}

use feral_materializer::data_json as data_value;

fn view(table: &str, row_id: String, row: TableRow) -> RowView {
    RowView {
        table: table.to_string(),
        row_id,
        data: row.data.as_deref().map_or(Value::Null, data_value),
        hlc: row.hlc.to_string(),
        op_id: row.op_id.to_string(),
    }
}

impl Node {
    /// Every table with live rows counted, `episodes` first.
    pub fn tables(&self) -> Result<Vec<TableInfo>> {
        let slot = self.settled();
        let mat = crate::node::readable(&self.wal, &slot)?;
        let mut out = vec![TableInfo { table: TABLE.into(), rows: mat.stats()?.episodes }];
        out.extend(mat.tables()?.into_iter().map(|(table, rows)| TableInfo { table, rows }));
        Ok(out)
    }

    /// The live row `row_id` of `table` (an episode as its document).
    pub fn row(&self, table: &str, row_id: &str) -> Result<Option<RowView>> {
        if table == TABLE {
            return Ok(self.episode(row_id)?.map(|e| RowView {
                table: TABLE.into(),
                row_id: row_id.into(),
                data: serde_json::to_value(&e.episode).unwrap_or(Value::Null),
                hlc: e.hlc,
                op_id: e.op_id,
            }));
        }
        let slot = self.settled();
        let mat = crate::node::readable(&self.wal, &slot)?;
        let row = mat.table_row(table, row_id)?.filter(|r| r.data.is_some());
        Ok(row.map(|r| view(table, row_id.to_string(), r)))
    }

    /// Live rows of `table` (not `episodes`: it pages newest first through
    /// [`Node::episodes_page`]) in row id order after `after`, at most `limit`; and the row
    /// id the next page starts after.
    pub fn rows(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RowView>, Option<String>)> {
        let slot = self.settled();
        let mat = crate::node::readable(&self.wal, &slot)?;
        let (rows, next) = mat.table_rows(table, after, limit)?;
        Ok((rows.into_iter().map(|(id, row)| view(table, id, row)).collect(), next))
    }

    /// The ops that touched row `row_id` of `table`, in this node's log order after LSN
    /// `after`, at most `limit`, each with the origin and the node that wrote it; and the
    /// LSN the next page starts after.
    pub fn history(
        &self,
        table: &str,
        row_id: &str,
        after: Lsn,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, Option<Lsn>)> {
        let (found, next) = {
            let slot = self.settled();
            crate::node::readable(&self.wal, &slot)?.history(table, row_id, after, limit)?
        };
        let mut nodes: HashMap<Origin, Option<String>> = HashMap::new();
        let mut out = Vec::with_capacity(found.len());
        for (lsn, op_id) in found {
            let record = self.wal.get(&op_id)?.ok_or_else(|| Error::Paused {
                code: Code::EpisodesUnavailable,
                reason: format!("the history names op {op_id}, which the log does not hold"),
            })?;
            let op = record.op;
            if op.table != table || op.row_id != row_id {
                continue; // another row with the same hash
            }
            let node_id = match nodes.get(&op.origin) {
                Some(known) => known.clone(),
                None => {
                    let id =
                        crate::verify::genesis_node(&self.wal, &op.origin)?.map(|n| n.to_string());
                    nodes.insert(op.origin, id.clone());
                    id
                }
            };
            out.push(HistoryEntry {
                op_id: op.op_id.to_string(),
                kind: op.kind.as_str(),
                hlc: op.hlc.to_string(),
                origin: op.origin.to_string(),
                seq: op.seq,
                node_id,
                lsn,
                data: if op.data.is_empty() { Value::Null } else { data_value(&op.data) },
            });
        }
        Ok((out, next))
    }
}
