//! Helpers shared by the feral-memory integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use feral_log::Config;
use feral_memory::Node;
use serde_json::{Value, json};

pub mod quic;

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

/// The `feral-node` binary built for these tests. A first `run` creates its local CA in the
/// config directory: the tests' own, never the user's.
pub fn feral_node() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feral-node"));
    cmd.env("XDG_CONFIG_HOME", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config"));
    cmd.env_remove("FERAL_API_TOKEN");
    cmd
}

/// A `feral-node run` process on ephemeral loopback ports (mDNS off), stopped with SIGKILL
/// when dropped.
pub struct RunningNode {
    /// The process.
    pub child: std::process::Child,
    /// Its data directory.
    pub data: PathBuf,
    /// Where it serves sync.
    pub sync_addr: std::net::SocketAddr,
    /// Where its API listens on TCP.
    pub api_addr: std::net::SocketAddr,
}

impl RunningNode {
    /// Starts `run` on `data` with extra arguments; waits for both addresses it prints.
    pub fn start(data: &Path, extra: &[&str]) -> RunningNode {
        Self::start_with(feral_node(), data, extra)
    }

    /// [`RunningNode::start`] from a prepared command (environment, umask…).
    pub fn start_with(mut cmd: Command, data: &Path, extra: &[&str]) -> RunningNode {
        use std::io::BufRead;
        let mut child = cmd
            .arg("--data")
            .arg(data)
            .args(["run", "--no-mdns", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn feral-node run");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = || lines.next().expect("the node printed its addresses").expect("line");
        let sync_line = next();
        let api_line = next();
        std::thread::spawn(move || for _ in lines {});
        let word = |line: &str, n: usize| -> std::net::SocketAddr {
            line.split_whitespace()
                .nth(n)
                .map(|w| w.trim_start_matches("http://"))
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"))
        };
        RunningNode {
            sync_addr: word(&sync_line, 2),
            api_addr: word(&api_line, 2),
            child,
            data: data.to_path_buf(),
        }
    }

    /// The API over TCP with the data directory's token.
    pub fn api(&self) -> feral_memory::client::ApiClient {
        let token = std::fs::read_to_string(self.data.join(feral_memory::api::TOKEN_FILE))
            .expect("the node wrote its token");
        feral_memory::client::ApiClient::new(
            feral_memory::client::Endpoint::Tcp(self.api_addr),
            Some(token.trim().to_string()),
        )
    }

    /// The API over the Unix socket (no token).
    pub fn unix(&self) -> feral_memory::client::ApiClient {
        let socket = self.data.join(feral_memory::api::SOCKET_FILE);
        feral_memory::client::ApiClient::new(feral_memory::client::Endpoint::Unix(socket), None)
    }

    /// Resident memory of the process, bytes (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.child.id())
    }

    /// Stops it with SIGTERM and waits; true when it exited cleanly.
    pub fn stop(mut self) -> bool {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, bytes (VmRSS from /proc).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Waits for `done` up to `within`, polling; panics naming `what` at the deadline.
pub fn wait_for(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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

/// Every op a node holds as the bytes it stores them as (with their seals), by origin and seq.
pub fn stored_ops(node: &Node) -> Vec<feral_log::OpBytes> {
    let mut out = Vec::new();
    for (origin, head) in node.wal().heads().expect("heads") {
        out.extend(
            node.wal()
                .payloads_by_origin_within(&origin, 1, head, usize::MAX, usize::MAX)
                .expect("payloads"),
        );
    }
    out
}

/// Fills the device at `at` until a write fails; returns the filler file to delete later.
pub fn fill_device(at: &Path) -> PathBuf {
    fill_device_as(at, "filler")
}

/// [`fill_device`] into a file of this name (to take space freed after a first filler).
pub fn fill_device_as(at: &Path, name: &str) -> PathBuf {
    use std::io::Write;
    let path = at.join(name);
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![7u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [7u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}
