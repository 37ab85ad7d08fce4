//! disk_full: the node's data on a small real tmpfs (root only), or the node's fault layer
//! (a flag file makes its log storage return ENOSPC; the only way without root, and every other
//! seed as root). Appends through the API until the device is full: 507 disk_full,
//! status io_paused, sync returns disk_full at once and releases the per-peer lock, reads keep
//! working; then space is freed (the tmpfs grows), resume, and every acknowledged op is there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::harness::{RunOpts, episode};
use crate::{Ctx, Report};

/// The tmpfs, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path, size: &str) -> Result<Mount> {
        std::fs::create_dir_all(at)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()?;
        if !status.success() {
            bail!("mount -t tmpfs failed: {status}");
        }
        Ok(Mount(at.to_path_buf()))
    }

    fn resize(&self, size: &str) -> Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()?;
        if !status.success() {
            bail!("remount failed: {status}");
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// True when this process may mount.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What fills up: a real tmpfs, or the node's fault layer switched by a flag file.
enum Device {
    Tmpfs(Mount),
    Flag(PathBuf),
}

impl Device {
    /// Makes the device full now (the tmpfs fills by itself as the node writes).
    fn fill(&self) -> Result<()> {
        if let Device::Flag(flag) = self {
            std::fs::write(flag, b"full")?;
        }
        Ok(())
    }

    /// Frees space.
    fn free(&self) -> Result<()> {
        match self {
            Device::Tmpfs(mount) => mount.resize("64m"),
            Device::Flag(flag) => Ok(std::fs::remove_file(flag)?),
        }
    }
}

pub fn run(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    // Even seeds use a real tmpfs (as root); odd seeds, and every seed without root, the
    // node's own fault layer (FERAL_FAULT_DISK_FULL_FLAG): ENOSPC from the log's storage while a
    // flag file exists.
    let tmpfs = is_root() && ctx.seed.is_multiple_of(2);
    report.variant = if tmpfs {
        "real tmpfs".into()
    } else if is_root() {
        "fault layer (flag file)".into()
    } else {
        "fault layer (flag file): not root, so no tmpfs".into()
    };
    let h = ctx.harness()?;
    let (device, a, env) = if tmpfs {
        let mount = Mount::new(&ctx.dir.join("tmpfs"), "6m")?;
        let a = h.root.join("tmpfs").join("a");
        (Device::Tmpfs(mount), a, vec![])
    } else {
        let flag = h.root.join("disk-full.flag");
        let env =
            vec![(feral_log::fault::DISK_FULL_FLAG_ENV.to_string(), flag.display().to_string())];
        (Device::Flag(flag), h.root.join("a"), env)
    };
    // A data directory is private (a node refuses to run on a shared one).
    feral_log::private::create_dir_all(&a)?;
    h.cli_ok(&a, &["init", "--segment-bytes", "524288"])?;
    h.cli_ok(&a, &["certs", "issue", "--ca", &h.ca.to_string_lossy()])?;
    let b = h.node("b", None)?;
    h.append_episodes(&b, "b", 10)?;
    let b_run = h.start(&b, &RunOpts::default())?;
    let node = h.start(&a, &RunOpts { env, ..Default::default() })?;
    // The flag device fills after a seeded number of acknowledged batches.
    let fill_after = ctx.rng.range(1, 5);
    // Fill: batches of seeded size until the device refuses.
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut refusal = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut n = 0usize;
    let mut batches = 0;
    while refusal.is_none() && Instant::now() < deadline {
        if batches == fill_after {
            device.fill()?;
        }
        batches += 1;
        let size = ctx.rng.range(50, 400) as usize;
        let docs: Vec<Value> = (n..n + size)
            .map(|i| episode(&format!("a-{i}"), &format!("s{}", i % 8), i as f64))
            .collect();
        n += size;
        let (status, v) =
            node.post("/v1/episodes", Some(&Value::Array(docs.clone()).to_string()))?;
        match status {
            200 => acked.extend(docs.iter().filter_map(|d| d["id"].as_str().map(String::from))),
            _ => refusal = Some((status, v)),
        }
    }
    report.figure("acknowledged_before_full", acked.len() as u64);
    let (status, body) = refusal.unwrap_or((0, Value::Null));
    report.check(
        "append_fails_disk_full",
        status == 507 && body["error"] == "disk_full",
        format!("after {} acknowledged: HTTP {status} {body}", acked.len()),
    );
    let st = node.status()?;
    report.check(
        "status_io_paused",
        st["io_paused"] == true,
        format!("io_paused {}", st["io_paused"]),
    );
    let started = Instant::now();
    let first = node.sync_with(b_run.sync_addr)?;
    let second = node.sync_with(b_run.sync_addr)?;
    let took = started.elapsed();
    report.figure("two_syncs_ms", took.as_millis() as u64);
    report.check(
        "sync_disk_full_at_once",
        first["error"] == "disk_full"
            && first["io_paused"] == true
            && took < Duration::from_secs(2),
        format!("{first} in {} ms for two calls", took.as_millis()),
    );
    report.check(
        "per_peer_lock_released",
        second["error"] == "disk_full",
        format!("the second sync answered {} (not already_syncing)", second["error"]),
    );
    let some = acked.iter().nth(ctx.rng.range(0, acked.len().saturating_sub(1) as u64) as usize);
    let read = match some {
        Some(id) => node.get(&format!("/v1/episodes/{id}"))?.0,
        None => 0,
    };
    report.check("reads_keep_working", read == 200, format!("GET an acknowledged episode: {read}"));
    // Free space, resume.
    device.free()?;
    let (code, resumed) = node.post("/v1/resume", None)?;
    let st = node.status()?;
    report.check(
        "resume_after_freeing_space",
        code == 200 && resumed["ok"] == true && st["io_paused"] == false,
        format!("resume {code} {resumed}; io_paused {}", st["io_paused"]),
    );
    let doc = json!([episode("after-resume", "s", 0.0)]).to_string();
    let (code, _) = node.post("/v1/episodes", Some(&doc))?;
    acked.insert("after-resume".into());
    let synced = node.sync_own(b_run.sync_addr, Duration::from_secs(60))?;
    report.check(
        "writes_and_sync_work_again",
        code == 200 && synced["success"] == true,
        format!("append {code}; sync {synced}"),
    );
    node.stop()?;
    b_run.stop()?;
    let rows: BTreeSet<String> = h
        .cli_ok(&a, &["dump"])?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("seq").is_none())
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    let missing = acked.difference(&rows).count();
    report.check(
        "nothing_acknowledged_lost",
        missing == 0,
        format!("{} acknowledged, {} rows, {missing} missing", acked.len(), rows.len()),
    );
    let (code, check) = h.check(&a)?;
    report.check("check_ok_after", code == 0, format!("check exit {code}: {check}"));
    drop(device);
    Ok(())
}
