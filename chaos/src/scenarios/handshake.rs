//! kill_peer_mid_handshake: a peer that accepts the QUIC connection (real certificate from the
//! cluster CA), reads the first handshake frame, and then dies on its own, is SIGKILLed, or
//! never answers. The node (`feral-node run`, driven through its API) must make exactly 3
//! attempts with 1 s then 2 s between them, return a structured failure, leave no task or
//! descriptor behind, keep the per-peer lock free, and sync normally once the peer is back.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::harness::{Harness, RunOpts, Running, free_udp_port};
use crate::proc::{Proc, Stream};
use crate::{Ctx, Report};

/// The node's session timeouts in this scenario (feral.toml), so an attempt fails fast.
const HANDSHAKE_MS: u64 = 1500;
const MODES: &[&str] = &["exit", "hold", "silent"];

fn fake_peer(ctx: &Ctx, dir: &Path, addr: SocketAddr, mode: &str) -> Result<Proc> {
    let mut cmd = Command::new(&ctx.chaos_bin);
    cmd.arg("__fake-peer").arg("--dir").arg(dir);
    cmd.args(["--listen", &addr.to_string(), "--mode", mode]);
    let mut p = Proc::spawn(cmd, format!("fake peer ({mode})"))?;
    p.wait_line(Instant::now() + Duration::from_secs(30), |s, l| {
        s == Stream::Out && l.starts_with("ready ")
    })?;
    Ok(p)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Polls until alive tasks (from `/metrics`) and open descriptors are back to their baselines
/// (or the deadline); returns the last values.
fn settle(node: &Running, tasks: f64, fds: usize, deadline: Instant) -> Result<(f64, usize)> {
    loop {
        let now_tasks = node.metric("feral_runtime_alive_tasks")?.unwrap_or(f64::MAX);
        let now_fds = open_fds(node.proc.pid());
        if (now_tasks <= tasks && now_fds <= fds) || Instant::now() >= deadline {
            return Ok((now_tasks, now_fds));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let mode = MODES[(ctx.seed % MODES.len() as u64) as usize];
    report.variant = match mode {
        "exit" => "peer exits after the first frame",
        "hold" => "peer SIGKILLed after the first frame",
        _ => "peer never answers",
    }
    .to_string();
    let h: Harness = ctx.harness()?;
    let a = h.node("a", None)?;
    let writes = ctx.rng.range(1, 20) as usize;
    h.append_episodes(&a, "a", writes)?;
    let peer_dir = h.node("peer", None)?;
    let opts = RunOpts {
        config: vec![
            format!("connect_timeout_ms = {HANDSHAKE_MS}"),
            format!("handshake_timeout_ms = {HANDSHAKE_MS}"),
        ],
        ..Default::default()
    };
    let node = h.start(&a, &opts)?;
    let peer: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
    let baseline_tasks = node.metric("feral_runtime_alive_tasks")?.unwrap_or(0.0);
    let baseline_fds = open_fds(node.proc.pid());
    let mut fake = fake_peer(ctx, &peer_dir, peer, mode)?;
    let started = Instant::now();
    let (result, hellos) = std::thread::scope(|scope| -> Result<(Value, Vec<(u64, u64)>)> {
        let api = node.api.clone();
        let call = scope.spawn(move || crate::harness::sync_via(&api, peer));
        let mut hellos = Vec::new();
        while hellos.len() < 3 {
            let line = fake.wait_line(Instant::now() + Duration::from_secs(30), |s, l| {
                s == Stream::Out && l.starts_with("hello ")
            });
            let Ok(line) = line else { break };
            // `hello <arrived ms> <frame read ms>`: an attempt is timed by when it arrived.
            let mut times = line.split_whitespace().skip(1).map(|t| t.parse().unwrap_or(0));
            let (arrived, read): (u64, u64) =
                (times.next().unwrap_or(0), times.next().unwrap_or(0));
            hellos.push((arrived, read));
            match mode {
                "hold" => fake.kill(),
                "exit" => {
                    fake.wait(Instant::now() + Duration::from_secs(10))?;
                }
                _ => continue,
            }
            if hellos.len() < 3 {
                fake = fake_peer(ctx, &peer_dir, peer, mode)?;
            }
        }
        let result = match call.join() {
            Ok(r) => r?,
            Err(_) => bail!("the sync call panicked"),
        };
        Ok((result, hellos))
    })?;
    let took = started.elapsed();
    fake.kill();
    report.figure("sync_ms", took.as_millis() as u64);
    report.figure("result", result.clone());
    let attempts = result["attempts"].as_u64().unwrap_or(0);
    report.check(
        "exactly_3_attempts",
        attempts == 3 && hellos.len() == 3,
        format!("result attempts {attempts}; the peer saw {} first frames", hellos.len()),
    );
    let code = result["error"].as_str().unwrap_or_default().to_string();
    report.check(
        "structured_failure",
        result["success"] == Value::Bool(false) && code == "handshake_timeout",
        format!("success {}, error {code:?}, detail {}", result["success"], result["detail"]),
    );
    let gaps: Vec<i64> =
        hellos.windows(2).map(|w| w[1].0 as i64 - w[0].0 as i64 - HANDSHAKE_MS as i64).collect();
    report.figure("backoff_ms", gaps.clone());
    // How long each first frame took to be read after its connection arrived, for the record.
    let frame_ms: Vec<i64> = hellos.iter().map(|(a, r)| *r as i64 - *a as i64).collect();
    report.figure("first_frame_ms", frame_ms);
    let within = |got: i64, want: i64| got >= want - 150 && got <= want + 750;
    report.check(
        "backoff_1s_then_2s",
        gaps.len() == 2 && within(gaps[0], 1000) && within(gaps[1], 2000),
        format!("waits between attempts (after the {HANDSHAKE_MS} ms timeout): {gaps:?} ms"),
    );
    let (tasks, fds) =
        settle(&node, baseline_tasks, baseline_fds, Instant::now() + Duration::from_secs(15))?;
    report.figure("alive_tasks", serde_json::json!({ "before": baseline_tasks, "after": tasks }));
    report.figure("open_fds", serde_json::json!({ "before": baseline_fds, "after": fds }));
    report.check(
        "no_leaked_task",
        tasks <= baseline_tasks && fds <= baseline_fds,
        format!("alive tasks {baseline_tasks} before, {tasks} after; fds {baseline_fds} / {fds}"),
    );
    // The peer comes back (a real node on the same address): the next sync just works, which
    // also shows the per-peer lock was released.
    let back = h.start(&peer_dir, &RunOpts { listen: peer, ..Default::default() })?;
    let again = node.sync_with(peer)?;
    report.check(
        "lock_free_and_next_sync_works",
        again["success"] == Value::Bool(true) && again["sent"].as_u64() == Some(writes as u64),
        format!("next sync: {again}"),
    );
    back.stop()?;
    node.stop()
}
