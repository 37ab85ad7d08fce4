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

/// SplitMix64: a tiny seeded generator so random tests replay from a printed seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn from_env(name: &str) -> Rng {
        let seed = std::env::var("FERAL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{name}: seed {seed} (replay with FERAL_TEST_SEED={seed})");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A size-limited tmpfs mounted for one test (as root), unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts it, or prints why the test is skipped and returns None.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            other => {
                println!("SKIPPED: mount -t tmpfs failed: {other:?}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
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
