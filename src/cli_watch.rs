//! `feral-node watch`: prints the change feed. Through a running node it follows the feed
//! (long polls of `GET /v1/changes`) until interrupted, or until the end with `--once`; on a
//! store no node runs it prints the log's changes up to now, since nothing else can write.

use clap::Args;
use feral_memory::changes::{ChangeCursor, ChangeView};
use serde_json::Value;

use crate::cli_remote::{Remote, segment};
use crate::out::out;
use crate::{Failure, Outcome, fail};

/// Long-poll wait of each request while following.
const WATCH_WAIT_SECS: u64 = 30;

/// `watch` arguments.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Start after this cursor (a change's `cursor`; `now` for only what comes next). Default:
    /// the start of the log.
    #[arg(long)]
    since: Option<String>,
    /// Only changes of these tables (comma-separated).
    #[arg(long)]
    table: Option<String>,
    /// Print what is there and stop instead of following.
    #[arg(long)]
    once: bool,
    /// One JSON object per change.
    #[arg(long)]
    json: bool,
}

fn print(change: &Value, json: bool) {
    if json {
        out!("{change}");
    } else {
        let text = |k: &str| change[k].as_str().unwrap_or("").to_string();
        out!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            change["lsn"],
            text("kind"),
            text("table"),
            text("row_id"),
            text("hlc"),
            text("cursor")
        );
    }
}

/// Follows the running node's feed.
pub(crate) fn remote(remote: &Remote, args: WatchArgs) -> Outcome {
    let mut cursor = args.since.clone().unwrap_or_default();
    let tables =
        args.table.as_deref().map(|t| format!("&table={}", segment(t))).unwrap_or_default();
    loop {
        let wait = if args.once { 0 } else { WATCH_WAIT_SECS };
        let path = format!("/v1/changes?since={}&limit=1000&wait={wait}{tables}", segment(&cursor));
        let answer = remote.raw("GET", &path)?;
        let text = String::from_utf8_lossy(&answer.body);
        if answer.status != 200 {
            return Err(fail(1, format!("the running node's API: {} {text}", answer.status)));
        }
        let mut more = false;
        for line in text.lines() {
            let value: Value = serde_json::from_str(line).map_err(|e| {
                fail(1, format!("the running node sent a line that is not JSON: {e}"))
            })?;
            if let Some(next) = value["next_cursor"].as_str() {
                cursor = next.to_string();
                more = value["more"] == true;
            } else {
                print(&value, args.json);
            }
        }
        if args.once && !more {
            return Ok(0);
        }
    }
}

/// Prints the changes of a store no node runs, up to its end.
pub(crate) fn local(node: &feral_memory::Node, args: WatchArgs) -> Outcome {
    let mut cursor =
        ChangeCursor::parse_since(args.since.as_deref(), node).map_err(|e| fail(2, e))?;
    let tables =
        feral_memory::changes::parse_tables(args.table.as_deref()).map_err(|e| fail(2, e))?;
    loop {
        let page = node.changes(cursor, &tables, 1000)?;
        for change in &page.changes {
            print(&to_value(change)?, args.json);
        }
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    if !args.once {
        eprintln!("feral-node: no node is running on this store; printed its changes up to now");
    }
    Ok(0)
}

fn to_value(change: &ChangeView) -> Result<Value, Failure> {
    serde_json::to_value(change).map_err(|e| fail(1, format!("encoding a change: {e}")))
}
