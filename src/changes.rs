//! The change feed: every op this node's log holds, in local log order (written here or
//! received by sync), read from the log itself from a cursor. A cursor is the position after
//! a change: the next LSN and where its frame starts, so a follower at the tail reads only
//! what is new. Nothing is buffered per follower: what one has not read stays in the log.

use feral_log::{Lsn, ScanPosition};
use serde::Serialize;

use crate::error::Result;
use crate::limits::{CHANGES_SCAN_RECORDS_MAX, CHANGES_TABLES_MAX};
use crate::node::Node;

/// Where a follower of the feed is: the position after the last change it was given.
/// Written as `<next LSN>.<segment>.<offset>` in hex; opaque to clients, and local to this node
/// (another node's log has other positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCursor(pub ScanPosition);

impl ChangeCursor {
    /// The start of the log.
    pub const START: ChangeCursor =
        ChangeCursor(ScanPosition { next_lsn: 1, segment: 0, offset: 0 });

    /// Parses a cursor the feed gave (`now` is the end of the log at the time of asking).
    pub fn parse(text: &str, node: &Node) -> std::result::Result<ChangeCursor, String> {
        if text == "now" {
            let next_lsn = node.wal().durable_lsn() + 1;
            return Ok(ChangeCursor(ScanPosition { next_lsn, segment: 0, offset: 0 }));
        }
        let bad = || format!("cursor {text:?} is not a change-feed cursor of this node");
        let mut parts = text.split('.').map(|p| u64::from_str_radix(p, 16));
        let (Some(Ok(next_lsn)), Some(Ok(segment)), Some(Ok(offset)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let durable = node.wal().durable_lsn();
        if next_lsn == 0 || next_lsn > durable + 1 {
            return Err(format!(
                "cursor {text:?} is past the end of this node's log (LSN {durable}); cursors are local to the node that gave them"
            ));
        }
        Ok(ChangeCursor(ScanPosition { next_lsn, segment, offset }))
    }

    /// The cursor a feed's `since` names: the start of the log when it is absent or empty.
    pub fn parse_since(
        since: Option<&str>,
        node: &Node,
    ) -> std::result::Result<ChangeCursor, String> {
        match since {
            None | Some("") => Ok(ChangeCursor::START),
            Some(text) => ChangeCursor::parse(text, node),
        }
    }

    /// The LSN of the next change.
    pub fn next_lsn(&self) -> Lsn {
        self.0.next_lsn
    }
}

/// The tables a feed is filtered on, from a comma-separated list (empty names are dropped;
/// none at all: every table). At most [`CHANGES_TABLES_MAX`].
pub fn parse_tables(list: Option<&str>) -> std::result::Result<Vec<String>, String> {
    let tables: Vec<String> = list
        .map(|t| t.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if tables.len() > CHANGES_TABLES_MAX {
        return Err(format!(
            "{} tables; a feed filters on at most {CHANGES_TABLES_MAX}",
            tables.len()
        ));
    }
    Ok(tables)
}

impl std::fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.0;
        write!(f, "{:x}.{:x}.{:x}", p.next_lsn, p.segment, p.offset)
    }
}

/// One change: the op that made it, and the cursor after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ChangeView {
    /// Resume after this change with this cursor.
    pub cursor: String,
    /// This node's log position of the op.
    #[cfg_attr(feature = "server", schema(value_type = u64))]
    pub lsn: Lsn,
    /// The op's table.
    pub table: String,
    /// The row it wrote.
    pub row_id: String,
    /// `insert` or `delete`.
    pub kind: &'static str,
    /// Its HLC.
    pub hlc: String,
    /// The writer incarnation it came from.
    pub origin: String,
    /// Its id.
    pub op_id: String,
}

/// A page of the feed.
#[derive(Debug, Clone)]
pub struct ChangePage {
    /// The changes, in log order.
    pub changes: Vec<ChangeView>,
    /// Where the next page starts.
    pub next: ChangeCursor,
    /// More of the log follows (the page stopped at its limit, not at the end).
    pub more: bool,
}

impl Node {
    /// At most `limit` changes after `cursor`, of the given tables (all when empty). Looks
    /// through at most [`CHANGES_SCAN_RECORDS_MAX`] records; when the asked tables are rare
    /// the page can be empty with `more`.
    pub fn changes(
        &self,
        cursor: ChangeCursor,
        tables: &[String],
        limit: usize,
    ) -> Result<ChangePage> {
        let mut changes = Vec::new();
        let mut at = cursor.0;
        let mut scanned = 0;
        loop {
            let want = if tables.is_empty() { limit - changes.len() } else { limit.max(256) };
            let want = want.min(CHANGES_SCAN_RECORDS_MAX - scanned);
            let (records, end) = self.wal().read_page(at.next_lsn, Some(at), want)?;
            scanned += records.len();
            let count = records.len();
            for (i, record) in records.iter().enumerate() {
                // The position after this record: the next one's, or the page's end.
                let after = match records.get(i + 1) {
                    Some(next) => ScanPosition {
                        next_lsn: next.lsn,
                        segment: next.segment,
                        offset: next.offset,
                    },
                    None => end,
                };
                at = after;
                let op = &record.op;
                if tables.is_empty() || tables.contains(&op.table) {
                    changes.push(ChangeView {
                        cursor: ChangeCursor(after).to_string(),
                        lsn: record.lsn,
                        table: op.table.clone(),
                        row_id: op.row_id.clone(),
                        kind: op.kind.as_str(),
                        hlc: op.hlc.to_string(),
                        origin: op.origin.to_string(),
                        op_id: op.op_id.to_string(),
                    });
                    if changes.len() == limit {
                        let more = at.next_lsn <= self.wal().durable_lsn();
                        return Ok(ChangePage { changes, next: ChangeCursor(at), more });
                    }
                }
            }
            at = if count == 0 { end } else { at };
            let at_end = at.next_lsn > self.wal().durable_lsn();
            if at_end || count < want || scanned >= CHANGES_SCAN_RECORDS_MAX {
                return Ok(ChangePage { changes, next: ChangeCursor(at), more: !at_end });
            }
        }
    }
}
