//! kill_brain_mid_apply and crash_during_recovery: a receiver (`feral-node sync`) SIGKILLed
//! while it applies a peer's ops, at a failpoint (inside a group commit with half a frame on
//! disk, after the log is durable, inside the index or the projection transaction) or at a
//! random moment; then killed again while it recovers; then re-synced to convergence.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::harness::{Harness, Running};
use crate::proc::{Proc, Stream};
use crate::{Ctx, Report};

/// Where the first kill lands.
const FIRST_KILLS: &[&str] =
    &["log.torn_write", "log.synced", "index.commit", "projection.apply", "timed"];

/// How long a sync may take before the suite calls it stuck.
const SYNC_DEADLINE: Duration = Duration::from_secs(300);

/// A sync process killed at `point` (`name@lsn`, or `timed` after `delay`): returns how it
/// went (`true` when the kill landed at the point).
fn killed_sync(
    h: &Harness,
    b: &Path,
    peer: &Running,
    point: &str,
    delay: Duration,
) -> Result<(bool, Duration)> {
    let mut cmd = h.command(b);
    cmd.args(["sync", "--json", "--peer", &peer.sync_addr.to_string()]);
    if point != "timed" {
        cmd.env(feral_log::failpoint::ENV, point);
    }
    let started = Instant::now();
    let mut p = Proc::spawn(cmd, format!("feral-node sync ({point})"))?;
    let landed = if point == "timed" {
        // A random moment: wait on the process's exit until then.
        let exited = p.wait_line(started + delay, |_, _| false).is_err() && !p.running();
        !exited
    } else {
        p.wait_line(started + SYNC_DEADLINE, |s, l| {
            s == Stream::Err && l.starts_with("feral failpoint ")
        })
        .is_ok()
    };
    p.kill();
    Ok((landed, started.elapsed()))
}

/// Copies a store directory (its files and `wal/`).
fn copy_store(from: &Path, to: &Path) -> Result<()> {
    for sub in ["", "wal"] {
        feral_log::private::create_dir_all(&to.join(sub))?;
        for entry in std::fs::read_dir(from.join(sub))? {
            let path = entry?.path();
            if let (true, Some(name)) = (path.is_file(), path.file_name()) {
                std::fs::copy(&path, to.join(sub).join(name))?;
            }
        }
    }
    Ok(())
}

/// `killed_sync`, except that a timed kill which comes after the sync already finished is
/// tried again from the same starting state (B's files as they were), twice as early, up to
/// five times: the moment is random, the kill must still land inside the work.
fn killed_sync_landing(
    h: &Harness,
    b: &Path,
    peer: &Running,
    point: &str,
    delay: Duration,
) -> Result<(bool, Duration)> {
    if point != "timed" {
        return killed_sync(h, b, peer, point, delay);
    }
    let image = b.with_extension("before-kill");
    copy_store(b, &image)?;
    let mut delay = delay;
    let mut outcome = killed_sync(h, b, peer, point, delay)?;
    for _ in 1..5 {
        if outcome.0 {
            break;
        }
        std::fs::remove_dir_all(b)?;
        copy_store(&image, b)?;
        delay /= 2;
        outcome = killed_sync(h, b, peer, point, delay)?;
    }
    std::fs::remove_dir_all(&image)?;
    Ok(outcome)
}

/// Runs a sync to completion; returns its result object.
fn full_sync(h: &Harness, b: &Path, peer: &Running) -> Result<Value> {
    let (code, v) = h.cli_json(b, &["sync", "--json", "--peer", &peer.sync_addr.to_string()])?;
    if code != 0 {
        anyhow::bail!("sync exited {code}: {v}");
    }
    Ok(v)
}

/// `(ms, counter)` of an HLC string `ms.counter.origin`.
fn hlc_key(v: &Value) -> Option<(u64, u64)> {
    let text = v.get("hlc")?.as_str()?;
    let mut parts = text.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn op_id(v: &Value) -> &str {
    v.get("op_id").and_then(Value::as_str).unwrap_or("")
}

/// The shared set-up: A with `ops` episodes, serving; B empty.
fn setup(
    ctx: &mut Ctx,
    report: &mut Report,
    ops: usize,
) -> Result<(Harness, Running, std::path::PathBuf)> {
    let h = ctx.harness()?;
    let a = h.node("a", None)?;
    let started = Instant::now();
    h.append_episodes(&a, "a", ops)?;
    report.figure("ops", ops as u64);
    report.figure("append_ms", started.elapsed().as_millis() as u64);
    let a_run = h.start(&a, &Default::default())?;
    let b = h.node("b", None)?;
    Ok((h, a_run, b))
}

/// Picks the kill point for a receiver holding `from` ops of `ops`: a failpoint at a seeded LSN
/// around the middle, or a seeded moment.
fn pick_point(ctx: &mut Ctx, kind: &str, lo: u64, hi: u64) -> String {
    if kind == "timed" {
        "timed".to_string()
    } else {
        format!("{kind}@{}", ctx.rng.range(lo.max(1), hi.max(1)))
    }
}

/// How long a full sync of the store takes, from a scratch receiver (for timed kills).
fn calibrate(h: &Harness, a_run: &Running) -> Result<Duration> {
    let c = h.node("calibrate", None)?;
    let started = Instant::now();
    full_sync(h, &c, a_run)?;
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&c);
    Ok(took)
}

/// After the crashes: a full re-sync, then every promise of the seeds' recovery suite.
fn converge_and_check(
    h: &Harness,
    report: &mut Report,
    a_run: Running,
    b: &Path,
    ops: usize,
    pre: &[Value],
) -> Result<()> {
    let started = Instant::now();
    let result = full_sync(h, b, &a_run)?;
    report.figure("resync_ms", started.elapsed().as_millis() as u64);
    report.figure("resync_received", result.get("received").cloned().unwrap_or(Value::Null));
    let a = a_run.dir.clone();
    a_run.stop()?;
    let n = ops as u64;
    let status = h.status(b)?;
    let lsn = status["durable_lsn"].as_u64().unwrap_or(0);
    report.check("log_exactly_n_ops", lsn == n, format!("B's log holds {lsn} ops, A wrote {n}"));
    let (code, check) = h.check(b)?;
    let records = check["records"].as_u64().unwrap_or(0);
    report.check(
        "index_exactly_n_ops",
        code == 0 && check["ok"] == Value::Bool(true) && records == n,
        format!("check exit {code}, ok {}, {records} records indexed and verified", check["ok"]),
    );
    let rows = status["projection"]["episodes"].as_u64().unwrap_or(0);
    report.check("episodes_exactly_n_rows", rows == n, format!("{rows} episode rows"));
    let post = h.dump_ops(b)?;
    let monotone = post.windows(2).all(|w| hlc_key(&w[0]) < hlc_key(&w[1]));
    let seqs = post.iter().enumerate().all(|(i, v)| v["seq"].as_u64() == Some(i as u64 + 1));
    report.check(
        "hlc_monotone",
        monotone && seqs,
        format!("{} ops in seq order 1..{}, HLC strictly increasing: {monotone}", post.len(), n),
    );
    let prefix =
        pre.len() <= post.len() && pre.iter().zip(&post).all(|(x, y)| op_id(x) == op_id(y));
    report.check(
        "pre_crash_prefix_kept",
        prefix,
        format!(
            "the {} ops B held after the crash are the first {} after recovery",
            pre.len(),
            pre.len()
        ),
    );
    let (da, db) = (h.digest(&a)?, h.digest(b)?);
    let a_ops = h.dump_ops(&a)?;
    report.check(
        "converged",
        da["digest"] == db["digest"] && a_ops == post,
        format!(
            "digest A {} B {}; every op byte-identical: {}",
            da["digest"],
            db["digest"],
            a_ops == post
        ),
    );
    Ok(())
}

/// Ops in B's recovered log (opening it runs recovery).
fn recovered(h: &Harness, b: &Path, report: &mut Report, label: &str) -> Result<Vec<Value>> {
    let pre = h.dump_ops(b).with_context(|| format!("reading B after the {label}"))?;
    let (code, check) = h.check(b)?;
    report.check(
        &format!("consistent_after_{label}"),
        code == 0,
        format!("check after recovery: exit {code}, {check}"),
    );
    Ok(pre)
}

/// kill_brain_mid_apply: 100 ops (or 100,000 in one variant), B killed at ~50 %.
pub fn kill_brain_mid_apply(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let variant = (ctx.seed % (FIRST_KILLS.len() as u64 + 1)) as usize;
    let (ops, kind) = if variant == FIRST_KILLS.len() {
        (100_000, *ctx.rng.pick(&FIRST_KILLS[..4]))
    } else {
        (100, FIRST_KILLS[variant])
    };
    let (h, a_run, b) = setup(ctx, report, ops)?;
    let n = ops as u64;
    let point = pick_point(ctx, kind, n * 2 / 5, n * 3 / 5);
    let delay = if point == "timed" {
        let full = calibrate(&h, &a_run)?;
        let ms = full.as_millis() as u64;
        Duration::from_millis(ctx.rng.range(ms / 4, ms * 3 / 4))
    } else {
        Duration::ZERO
    };
    report.variant = format!("{ops} ops, kill at {point}");
    let (landed, took) = killed_sync_landing(&h, &b, &a_run, &point, delay)?;
    report.figure("killed_after_ms", took.as_millis() as u64);
    report.check(
        "killed_mid_apply",
        landed,
        format!("SIGKILL at {point} after {} ms", took.as_millis()),
    );
    let pre = recovered(&h, &b, report, "kill")?;
    report.figure("ops_before_resync", pre.len() as u64);
    report.figure("kill_fraction", pre.len() as f64 / n as f64);
    converge_and_check(&h, report, a_run, &b, ops, &pre)
}

/// (first kill, second kill) pairs. The second process is the first to open B after the
/// crash, so its log holds the ops before the first point (all of that group commit, except
/// after a torn write), and its index and projection lag (their unsynced commits are gone) and
/// catch up at open: the second kill lands inside that catch-up, or in the re-sync's group
/// commit after a torn write, or at a random moment.
const KILL_PAIRS: &[(&str, &str)] = &[
    ("log.torn_write", "log.synced"),
    ("log.torn_write", "index.commit"),
    ("log.synced", "projection.apply"),
    ("index.commit", "projection.apply"),
    ("projection.apply", "index.commit"),
    ("log.synced", "timed"),
];

/// crash_during_recovery: B killed mid-apply, then killed again while recovering.
pub fn crash_during_recovery(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let ops = if ctx.quick { 2_000 } else { 20_000 };
    let n = ops as u64;
    let (h, a_run, b) = setup(ctx, report, ops)?;
    let (first_kind, second_kind) = KILL_PAIRS[(ctx.seed % KILL_PAIRS.len() as u64) as usize];
    let first = pick_point(ctx, first_kind, n * 2 / 5, n * 3 / 5);
    let (landed, _) = killed_sync(&h, &b, &a_run, &first, Duration::ZERO)?;
    report.check("first_kill_mid_apply", landed, format!("SIGKILL at {first}"));
    let k: u64 = first.split('@').nth(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    let held = k.saturating_sub(1);
    let second = match second_kind {
        "log.synced" => pick_point(ctx, second_kind, k + 1, n),
        "timed" => "timed".to_string(),
        _ => pick_point(ctx, second_kind, 1, held.max(1)),
    };
    let delay = Duration::from_millis(ctx.rng.range(20, 400));
    report.variant = format!("{ops} ops, kill at {first}, then at {second}");
    let (landed, took) = killed_sync_landing(&h, &b, &a_run, &second, delay)?;
    report.check(
        "second_kill_during_recovery",
        landed,
        format!("SIGKILL at {second} after {} ms (B held {held} ops)", took.as_millis()),
    );
    let pre = recovered(&h, &b, report, "second_kill")?;
    report.figure("ops_before_resync", pre.len() as u64);
    converge_and_check(&h, report, a_run, &b, ops, &pre)
}
