//! Helpers shared by the feral-memory integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use feral_log::Config;
use feral_memory::Node;
use serde_json::{Value, json};

/// A small segment so tests seal several.
pub const SMALL_SEGMENT_BYTES: u64 = 16 * 1024;

pub fn config() -> Config {
    Config { segment_bytes: SMALL_SEGMENT_BYTES, ..Config::default() }
}

pub fn open(dir: &Path) -> Node {
    Node::open(dir, config()).expect("open node")
}

/// A valid episode document.
pub fn doc(id: &str, session: &str, created_at: f64) -> Value {
    json!({
        "id": id, "session_id": session, "event_type": "chat",
        "summary": format!("summary of {id}"), "created_at": created_at,
        "emotions": ["calm"], "participants": ["user"], "importance": 0.7,
    })
}

/// The `feral-node` binary built for these tests.
pub fn feral_node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_feral-node"))
}

#[path = "../../log/tests/common/rng.rs"]
mod rng;
#[path = "../../log/tests/common/tmpfs.rs"]
mod tmpfs;

#[allow(unused_imports)]
pub use rng::Rng;
#[allow(unused_imports)]
pub use tmpfs::Tmpfs;

/// Runs `feral-node --data DATA append --json` with piped stdin, stdout and stderr.
pub fn spawn_append(data: &Path) -> std::process::Child {
    feral_node()
        .arg("--data")
        .arg(data)
        .args(["append", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn feral-node append")
}

/// Every op in a node's log, in LSN order.
pub fn all_ops(node: &Node) -> Vec<feral_log::Record> {
    let mut out = Vec::new();
    node.wal()
        .scan(1, &mut |r| {
            out.push(r);
            Ok(true)
        })
        .expect("scan");
    out
}

/// Fills the device at `at` until a write fails; returns the filler file to delete later.
pub fn fill_device(at: &Path) -> PathBuf {
    use std::io::Write;
    let path = at.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![7u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [7u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}
