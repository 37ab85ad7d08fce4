//! partition: three nodes syncing on schedule; every packet to and from C crosses a lossy UDP
//! relay (5 % loss, reordering). All write throughout; C is cut off for 10 s (A and B keep
//! syncing, C keeps taking writes); after the partition heals, all three converge within 60 s
//! and their digests are equal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::harness::{RunOpts, Running, episode, free_udp_port};
use crate::relay::{Impairment, Relay};
use crate::{Ctx, Report};

const PARTITION: Duration = Duration::from_secs(10);
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

/// Appends `count` episodes named `<name>-<round>-<i>` through the API.
fn write(node: &Running, name: &str, round: u32, count: u64) -> Result<()> {
    let docs: Vec<Value> = (0..count)
        .map(|i| {
            episode(&format!("{name}-{round}-{i}"), name, f64::from(round) * 1000.0 + i as f64)
        })
        .collect();
    let (status, v) = node.post("/v1/episodes", Some(&Value::Array(docs).to_string()))?;
    if status != 200 {
        bail!("append on {name}: {status} {v}");
    }
    Ok(())
}

/// Heads and episode count of a running node.
fn state(node: &Running) -> Result<(Value, u64)> {
    let s = node.status()?;
    Ok((s["heads"].clone(), s["projection"]["episodes"].as_u64().unwrap_or(0)))
}

/// Waits until every node in `nodes` has `want` episodes and the same heads.
fn wait_converged(nodes: &[&Running], want: u64, deadline: Instant) -> Result<Option<Duration>> {
    let started = Instant::now();
    loop {
        let states: Vec<(Value, u64)> = nodes.iter().map(|n| state(n)).collect::<Result<_>>()?;
        if states.iter().all(|s| s.1 == want && s.0 == states[0].0) {
            return Ok(Some(started.elapsed()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn run(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    report.variant = "5% loss, reordering, 10 s partition of C".into();
    let h = ctx.harness()?;
    let dirs = [h.node("a", None)?, h.node("b", None)?, h.node("c", None)?];
    let ports: Vec<SocketAddr> =
        (0..3).map(|_| Ok(([127, 0, 0, 1], free_udp_port()?).into())).collect::<Result<_>>()?;
    let net = Arc::new(Impairment::new(0.05, 0.05, ctx.rng.next_u64()));
    // C's port, and A's and B's as C sees them, all behind the relay.
    let to_c = Relay::start(ports[2], net.clone())?;
    let c_to_a = Relay::start(ports[0], net.clone())?;
    let c_to_b = Relay::start(ports[1], net.clone())?;
    let opts = |listen: SocketAddr, peers: Vec<SocketAddr>| RunOpts {
        listen,
        peers,
        sync_interval_secs: 1,
        config: vec!["connect_timeout_ms = 2000".into(), "handshake_timeout_ms = 3000".into()],
        ..Default::default()
    };
    let a = h.start(&dirs[0], &opts(ports[0], vec![ports[1], to_c.addr]))?;
    let b = h.start(&dirs[1], &opts(ports[1], vec![ports[0], to_c.addr]))?;
    let c = h.start(&dirs[2], &opts(ports[2], vec![c_to_a.addr, c_to_b.addr]))?;
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    let mut total = 0u64;
    let mut round = 0u32;
    let write_all = |round: u32, rng: &mut crate::Rng| -> Result<u64> {
        let mut n = 0;
        for (name, node) in nodes {
            let count = rng.range(10, 100);
            write(node, name, round, count)?;
            n += count;
        }
        Ok(n)
    };
    // Lossy but connected: everyone converges.
    total += write_all(round, &mut ctx.rng)?;
    let lossy = wait_converged(&[&a, &b, &c], total, Instant::now() + CONVERGE_WITHIN)?;
    report.check(
        "converge_over_lossy_links",
        lossy.is_some(),
        format!("{total} episodes everywhere after {:?}", lossy.map(|d| d.as_millis())),
    );
    // The partition: C is cut off for 10 s while everyone writes.
    net.partitioned.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    let c_before = state(&c)?.1;
    // A write round every 500 ms through the first half of the cut (the workload's pace).
    while cut.elapsed() < PARTITION / 2 {
        round += 1;
        total += write_all(round, &mut ctx.rng)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    let c_count = state(&c)?.1;
    report.check(
        "isolated_node_keeps_taking_writes",
        c_count > c_before,
        format!("C went from {c_before} to {c_count} episodes while cut off"),
    );
    // A and B still sync with each other (C's writes from the cut are not there yet).
    let ab_converged = (|| -> Result<bool> {
        let deadline = cut + PARTITION - Duration::from_millis(500);
        loop {
            let (ha, na) = state(&a)?;
            let (hb, nb) = state(&b)?;
            if ha == hb && na == nb && na > 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })()?;
    report.check("majority_side_keeps_syncing", ab_converged, "A and B equal during the partition");
    // Whatever time is left of the 10 s.
    std::thread::sleep(PARTITION.saturating_sub(cut.elapsed()));
    net.partitioned.store(false, Ordering::Relaxed);
    let healed = Instant::now();
    let converged = wait_converged(&[&a, &b, &c], total, healed + CONVERGE_WITHIN)?;
    report.figure("heal_to_converge_ms", converged.map(|d| d.as_millis() as u64));
    report.check(
        "converge_within_60s_of_heal",
        converged.is_some(),
        format!(
            "{total} episodes on all three {:?} ms after the heal",
            converged.map(|d| d.as_millis())
        ),
    );
    report.figure("packets", net.packets.load(Ordering::Relaxed));
    report.figure("dropped", net.dropped.load(Ordering::Relaxed));
    report.figure("reordered", net.reordered.load(Ordering::Relaxed));
    a.stop()?;
    b.stop()?;
    c.stop()?;
    let digests: Vec<Value> = dirs.iter().map(|d| h.digest(d)).collect::<Result<_>>()?;
    let equal = digests.iter().all(|d| d["digest"] == digests[0]["digest"]);
    report.check(
        "digests_equal",
        equal,
        format!("{:?}", digests.iter().map(|d| d["digest"].to_string()).collect::<Vec<_>>()),
    );
    Ok(())
}
