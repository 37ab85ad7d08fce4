//! `feral-chaos all --quick` as part of `cargo test`: every scenario against real feral-node
//! processes, from a printed seed (set FERAL_CHAOS_SEED to replay one).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// Newest modification time of `path`, or of the files under it.
fn newest(path: &Path) -> SystemTime {
    let Ok(meta) = std::fs::metadata(path) else { return SystemTime::UNIX_EPOCH };
    if !meta.is_dir() {
        return meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    }
    let Ok(entries) = std::fs::read_dir(path) else { return SystemTime::UNIX_EPOCH };
    entries.flatten().map(|e| newest(&e.path())).max().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Makes sure feral-node beside feral-chaos is built from the current sources. After
/// `cargo test --workspace` it is (that run builds it for the root package's tests); otherwise
/// (`cargo test -p feral-chaos`, or sources edited since) it is built here.
fn build_node(chaos: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let crates = ["", "log", "materializer", "transport", "transport/sync"];
    let sources = crates
        .iter()
        .flat_map(|c| [root.join(c).join("src"), root.join(c).join("Cargo.toml")])
        .chain(std::iter::once(root.join("Cargo.lock")))
        .map(|p| newest(&p))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let node = chaos.with_file_name("feral-node");
    let built = std::fs::metadata(&node).and_then(|m| m.modified()).ok();
    if built.is_some_and(|b| b >= sources) {
        return;
    }
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
