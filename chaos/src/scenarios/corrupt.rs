//! corrupt_wal: a seeded byte flipped in a sealed segment, in the active segment, or in the
//! index file of a stopped node. The check must report ok:false with the location; restoring
//! the latest backup, resuming, and re-syncing from a peer must give the peer's digest.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::harness::{Harness, RunOpts};
use crate::{Ctx, Report};

const TARGETS: &[&str] = &["sealed_segment", "active_segment", "index"];
/// Small segments, so a few thousand ops seal several.
const SEGMENT_BYTES: u64 = 256 * 1024;
/// The segment header's size (docs/format.md).
const SEGMENT_HEADER_BYTES: u64 = 64;

fn segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    all.sort();
    Ok(all)
}

/// XORs one byte at `at` with a nonzero seeded mask; returns (old, new).
fn flip(path: &Path, at: u64, mask: u8) -> Result<(u8, u8)> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at)?;
    let old = byte[0];
    byte[0] ^= mask.max(1);
    file.write_all_at(&byte, at)?;
    file.sync_all()?;
    Ok((old, byte[0]))
}

/// One past the last nonzero byte (the written part of a preallocated segment).
fn written_end(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path)?;
    Ok(bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p as u64 + 1))
}

/// Chooses and flips the byte; returns (file, offset) for the report.
fn corrupt(ctx: &mut Ctx, h: &Harness, a: &Path, target: &str) -> Result<(PathBuf, u64)> {
    let mask = ctx.rng.range(1, 255) as u8;
    let (path, at) = match target {
        "sealed_segment" => {
            let segs = segments(a)?;
            if segs.len() < 2 {
                bail!("only {} segment(s); nothing sealed", segs.len());
            }
            let path = ctx.rng.pick(&segs[..segs.len() - 1]).clone();
            let len = std::fs::metadata(&path)?.len();
            let at = ctx.rng.range(0, len - 1);
            (path, at)
        }
        "active_segment" => {
            let path = segments(a)?.last().cloned().context("no segment")?;
            // Records a later group commit vouches for: the first half of what is written.
            let end = written_end(&path)?;
            let at = ctx.rng.range(SEGMENT_HEADER_BYTES, (end / 2).max(SEGMENT_HEADER_BYTES));
            (path, at)
        }
        _ => {
            // A byte of a seeded op's op_id, where the index keeps it (live data, not free
            // pages, so the damage is in what the index must answer).
            let ops = h.dump_ops(a)?;
            let op = ctx.rng.pick(&ops);
            let hex = op["op_id"].as_str().context("op_id")?;
            let id: Vec<u8> = (0..16)
                .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0))
                .collect();
            let path = a.join("index.redb");
            let bytes = std::fs::read(&path)?;
            let mut reversed = id.clone();
            reversed.reverse();
            let pos = [id, reversed]
                .iter()
                .find_map(|needle| bytes.windows(16).position(|w| w == needle.as_slice()))
                .context("the op_id is not in the index file")?;
            (path, pos as u64 + ctx.rng.range(0, 15))
        }
    };
    let (old, new) = flip(&path, at, mask)?;
    ctx.rng.next_u64();
    let _ = (old, new);
    Ok((path, at))
}

pub fn run(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let target = TARGETS[(ctx.seed % TARGETS.len() as u64) as usize];
    let h = ctx.harness()?;
    let a = h.node("a", Some(SEGMENT_BYTES))?;
    let b = h.node("b", None)?;
    let (before, after) = if ctx.quick { (2_000, 500) } else { (5_000, 1_000) };
    h.append_episodes(&a, "before", before)?;
    let backup = h.root.join("backup");
    h.cli_ok(&a, &["backup", "--to", &backup.to_string_lossy()])?;
    h.append_episodes(&a, "after", after)?;
    // The peer holds everything A acknowledged, including what came after the backup.
    let a_run = h.start(&a, &RunOpts::default())?;
    h.cli_ok(&b, &["sync", "--peer", &a_run.sync_addr.to_string()])?;
    a_run.stop()?;
    let (path, at) = corrupt(ctx, &h, &a, target)?;
    let file = path.strip_prefix(&a).unwrap_or(&path).display().to_string();
    report.variant = format!("{target}: {file} byte {at}");
    report.figure("ops", (before + after) as u64);
    let (code, check) = h.check(&a)?;
    let located = match target {
        "index" => check.get("index_detail").is_some_and(|d| !d.is_null()),
        _ => check.get("wal_detail").is_some_and(|d| {
            d.to_string().contains(path.file_name().and_then(|n| n.to_str()).unwrap_or("?"))
        }),
    };
    report.check(
        "check_reports_damage_with_location",
        code == 65 && check["ok"] == Value::Bool(false) && located,
        format!("check exit {code}: {check}"),
    );
    let restore = ["restore", "--from", &backup.to_string_lossy(), "--force", "--json"];
    let (code, restored) = h.cli_json(&a, &restore)?;
    report.check("restore_from_backup", code == 0, format!("restore exit {code}: {restored}"));
    let (code, resumed) = h.cli_json(&a, &["resume", "--json"])?;
    report.check(
        "resume_after_restore",
        code == 0 && resumed["ok"] == Value::Bool(true),
        format!("resume exit {code}: {resumed}"),
    );
    let b_run = h.start(&b, &RunOpts::default())?;
    let (code, out) = h.cli(&a, &["sync", "--json", "--peer", &b_run.sync_addr.to_string()])?;
    b_run.stop()?;
    report.figure("resync", crate::harness::last_json(&out).unwrap_or(Value::Null));
    let (da, db) = (h.digest(&a)?, h.digest(&b)?);
    let (code_check, _) = h.check(&a)?;
    report.check(
        "digest_equals_peer_after_resync",
        code == 0 && code_check == 0 && da["digest"] == db["digest"],
        format!(
            "sync exit {code}; check exit {code_check}; A {} B {} ({} ops)",
            da["digest"], db["digest"], da["ops"]
        ),
    );
    Ok(())
}
