//! Reads criterion's results (`<target>/criterion`) and prints a markdown table: every
//! benchmark's median, per-op time and rate, then each engine figure beside its raw probe (or
//! SQLite) as a ratio, with its target. `benches/run.sh` calls it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One measured line: median seconds and elements per iteration.
#[derive(Debug, Clone, Copy)]
struct Line {
    median_s: f64,
    elements: f64,
}

impl Line {
    fn per_op_s(&self) -> f64 {
        self.median_s / self.elements.max(1.0)
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Every `.../new/benchmark.json` under `dir`, keyed by full id.
fn collect(dir: &Path, out: &mut BTreeMap<String, Line>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let (Some(meta), Some(est)) =
                (read_json(&path.join("benchmark.json")), read_json(&path.join("estimates.json")))
            else {
                continue;
            };
            let id = meta["full_id"].as_str().unwrap_or_default().to_string();
            let elements = meta["throughput"]["Elements"].as_f64().unwrap_or(1.0);
            let median_s = est["median"]["point_estimate"].as_f64().unwrap_or(0.0) / 1e9;
            out.insert(id, Line { median_s, elements });
        } else {
            collect(&path, out);
        }
    }
}

fn time(s: f64) -> String {
    match s {
        s if s >= 1.0 => format!("{s:.2} s"),
        s if s >= 1e-3 => format!("{:.1} ms", s * 1e3),
        s if s >= 1e-6 => format!("{:.2} µs", s * 1e6),
        s => format!("{:.0} ns", s * 1e9),
    }
}

fn rate(per_op: f64) -> String {
    let r = 1.0 / per_op.max(1e-12);
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.0} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

/// (figure, engine id, reference id, how to read, target)
fn pairs(lines: &BTreeMap<String, Line>) -> Vec<(String, String, String, &'static str, String)> {
    let mut out = Vec::new();
    for n in [1, 16, 128, 1024] {
        out.push((
            format!("log append, {n} op(s) per sync"),
            format!("log_append_256B/feral_append_batch/{n}"),
            format!("log_append_256B/raw_write_fdatasync/{n}"),
            "of raw",
            if n == 1024 { ">= 50 %".into() } else { String::new() },
        ));
    }
    out.push((
        "log append, non-durable (128)".into(),
        "log_append_256B_non_durable/feral_append_batch/128".into(),
        "log_append_256B_non_durable/raw_write/128".into(),
        "of raw",
        String::new(),
    ));
    let ingest = "ingest_100k_episodes/feral_ingest/1000";
    out.push((
        "ingest vs raw redb".into(),
        ingest.into(),
        "ingest_100k_episodes/raw_redb_batch/1000".into(),
        "of raw",
        ">= 50 %".into(),
    ));
    out.push((
        "ingest vs SQLite, batches of 1,000".into(),
        ingest.into(),
        "ingest_100k_episodes/sqlite_batch/1000".into(),
        "times",
        ">= 2x".into(),
    ));
    out.push((
        "ingest vs SQLite, one commit per op".into(),
        ingest.into(),
        "ingest_100k_episodes/sqlite_one_commit_per_op/1000".into(),
        "times",
        ">= 50x".into(),
    ));
    out.push((
        "re-apply present ops vs raw redb get".into(),
        "present_100k_ops/feral_reapply_present".into(),
        "present_100k_ops/raw_redb_get".into(),
        "of raw",
        String::new(),
    ));
    out.push((
        "get by op_id vs raw redb get".into(),
        "present_100k_ops/feral_get_by_op_id".into(),
        "present_100k_ops/raw_redb_get".into(),
        "of raw",
        String::new(),
    ));
    out.push((
        "API vs library append".into(),
        "append_100k_episodes_in_batches_of_1000/http_api".into(),
        "append_100k_episodes_in_batches_of_1000/library".into(),
        "of raw",
        ">= 50 %".into(),
    ));
    for id in lines.keys() {
        if let Some(rest) =
            id.strip_prefix("sync_catch_up_").and_then(|r| r.strip_suffix("_ops/feral_sync"))
        {
            out.push((
                format!("sync catch-up {rest} ops vs local ingest"),
                id.clone(),
                format!("sync_catch_up_{rest}_ops/local_ingest"),
                "of raw",
                ">= 80 %".into(),
            ));
            out.push((
                format!("sync catch-up {rest} ops vs raw quinn, same bytes"),
                id.clone(),
                format!("sync_catch_up_{rest}_ops/raw_quinn_stream_same_bytes"),
                "of raw",
                String::new(),
            ));
        }
        if let Some(n) =
            id.strip_prefix("store_").and_then(|r| r.strip_suffix("_ops/rebuild_projection"))
        {
            out.push((
                format!("projection rebuild {n} ops vs ingest (per op)"),
                id.clone(),
                ingest.into(),
                "slower",
                "< 2x".into(),
            ));
        }
    }
    out
}

fn main() {
    let target =
        std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let mut lines = BTreeMap::new();
    collect(&target.join("criterion"), &mut lines);
    println!("| benchmark | median | per op | rate |\n|---|---|---|---|");
    for (id, l) in &lines {
        println!(
            "| `{id}` | {} | {} | {} |",
            time(l.median_s),
            time(l.per_op_s()),
            rate(l.per_op_s())
        );
    }
    println!("\n| figure | engine | reference | result | target |\n|---|---|---|---|---|");
    for (figure, engine, reference, how, target_text) in pairs(&lines) {
        let (Some(e), Some(r)) = (lines.get(&engine), lines.get(&reference)) else { continue };
        let (e_op, r_op) = (e.per_op_s(), r.per_op_s());
        let result = match how {
            "of raw" => format!("{:.0} % of the reference's rate", 100.0 * r_op / e_op),
            "times" => format!("{:.2}x faster", r_op / e_op),
            _ => format!("{:.2}x the time per op", e_op / r_op),
        };
        println!(
            "| {figure} | {} per op | {} per op | {result} | {target_text} |",
            time(e_op),
            time(r_op)
        );
    }
    for id in lines.keys().filter(|k| k.starts_with("sync_incremental_1_op_over_")) {
        println!(
            "| incremental sync of 1 op (`{id}`) | {} | | independent of size | |",
            time(lines[id].median_s)
        );
    }
    for id in lines.keys().filter(|k| k.contains("/reopen_")) {
        println!("| `{id}` | {} | | | < 100 ms clean |", time(lines[id].median_s));
    }
    let Ok(dirs) = std::fs::read_dir(target.join("criterion")) else { return };
    for d in dirs.flatten() {
        if let Some(rss) = read_json(&d.path().join("rss.json")) {
            println!(
                "| peak RSS, {} ops catch-up between processes | receiver {} MiB | sender {} MiB | | < 256 MiB each |",
                rss["ops"], rss["receiver_peak_rss_mib"], rss["sender_peak_rss_mib"]
            );
        }
    }
}
