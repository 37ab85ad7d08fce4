//! `feral-chaos all --quick` as part of `cargo test`: every scenario against real feral-node
//! processes, from a printed seed (set FERAL_CHAOS_SEED to replay one).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// Builds feral-node beside feral-chaos (a no-op after `cargo test --workspace`), so the suite
/// never runs a stale node.
fn build_node(chaos: &Path) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "feral-memory", "--bin", "feral-node"]);
    if chaos.components().any(|c| c.as_os_str() == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build --bin feral-node");
    assert!(status.success(), "cargo build --bin feral-node: {status}");
}

#[test]
fn every_guarantee_holds_in_a_quick_run_of_every_scenario() {
    let chaos = Path::new(env!("CARGO_BIN_EXE_feral-chaos"));
    build_node(chaos);
    let seed: u64 =
        std::env::var("FERAL_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    println!("feral-chaos all --quick --seed {seed} (replay: FERAL_CHAOS_SEED={seed})");
    let work = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(chaos)
        .args(["all", "--quick", "--json", "--seed", &seed.to_string()])
        .arg("--work")
        .arg(work.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn feral-chaos");
    let mut failed = Vec::new();
    let mut reports = 0;
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        println!("{line}");
        let report: serde_json::Value =
            serde_json::from_str(&line).expect("one JSON object a line");
        reports += 1;
        if report["held"] != true {
            failed.push(line);
        }
    }
    let status = child.wait().expect("wait");
    assert!(failed.is_empty(), "guarantees broken (seed {seed}):\n{}", failed.join("\n"));
    assert!(status.success(), "feral-chaos exited {status} (seed {seed})");
    assert!(reports >= 7, "only {reports} iterations reported");
}
