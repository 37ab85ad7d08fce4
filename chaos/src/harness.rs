//! Real `feral-node` processes on loopback: a cluster CA, stores, `run` nodes with their API,
//! and one-shot CLI commands.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use feral_memory::client::{ApiClient, Endpoint};

use crate::proc::{Proc, Stream};

/// How long a `run` node may take to come up.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a one-shot command may take.
const CLI_DEADLINE: Duration = Duration::from_secs(300);
/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the processes live: the `feral-node` binary, the run directory, the cluster CA.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The `feral-node` binary.
    pub bin: PathBuf,
    /// This iteration's directory.
    pub root: PathBuf,
    /// The cluster CA's directory.
    pub ca: PathBuf,
}

/// How to start `feral-node run`.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// The QUIC address (port 0 for any).
    pub listen: SocketAddr,
    /// Static peers.
    pub peers: Vec<SocketAddr>,
    /// Seconds between syncs with each peer.
    pub sync_interval_secs: u64,
    /// Leave mDNS on (only ever inside a fresh network namespace).
    pub mdns: bool,
    /// Lines for `<data>/feral.toml`.
    pub config: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            listen: ([127, 0, 0, 1], 0).into(),
            peers: Vec::new(),
            sync_interval_secs: 3600,
            mdns: false,
            config: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A free loopback UDP port (bound, read and released; the node binds it next).
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A valid episode document.
pub fn episode(id: &str, session: &str, created_at: f64) -> Value {
    json!({
        "id": id, "session_id": session, "event_type": "chat",
        "summary": format!("summary of {id}"), "created_at": created_at,
        "emotions": ["calm"], "participants": ["user"], "importance": 0.5,
    })
}

/// The last line of `text` that parses as JSON.
pub fn last_json(text: &str) -> Option<Value> {
    text.lines().rev().find_map(|l| serde_json::from_str(l.trim()).ok())
}

impl Harness {
    /// A run directory under `root` with a fresh cluster CA.
    pub fn new(bin: &Path, root: &Path) -> Result<Harness> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let h = Harness { bin: bin.to_path_buf(), root: root.to_path_buf(), ca: root.join("ca") };
        h.cli_ok(&root.join("ca-scratch"), &["certs", "new-ca", "--out", &h.ca.to_string_lossy()])?;
        Ok(h)
    }

    /// `feral-node --data DIR` with a clean environment for the suite's knobs.
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data").arg(dir);
        for var in ["FERAL_SYNC_PEERS", feral_log::failpoint::ENV, "FERAL_DATA_DIR"] {
            cmd.env_remove(var);
        }
        cmd.env("RUST_LOG", std::env::var("FERAL_CHAOS_NODE_LOG").unwrap_or("warn".into()));
        cmd
    }

    /// Runs a one-shot command; returns its exit code and stdout.
    pub fn cli(&self, dir: &Path, args: &[&str]) -> Result<(i32, String)> {
        let mut cmd = self.command(dir);
        cmd.args(args);
        let mut p = Proc::spawn(cmd, format!("feral-node {}", args.join(" ")))?;
        let status = p.wait(Instant::now() + CLI_DEADLINE)?;
        Ok((status.code().unwrap_or(-1), p.stdout.join("\n")))
    }

    /// Runs a one-shot command that must succeed; returns stdout.
    pub fn cli_ok(&self, dir: &Path, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(dir);
        cmd.args(args);
        let label = format!("feral-node {}", args.join(" "));
        let mut p = Proc::spawn(cmd, label.clone())?;
        let status = p.wait(Instant::now() + CLI_DEADLINE)?;
        if !status.success() {
            bail!("{label} in {}: {status}; last output:\n{}", dir.display(), p.tail());
        }
        Ok(p.stdout.join("\n"))
    }

    /// Runs a one-shot `--json` command; returns its exit code and the JSON it printed.
    pub fn cli_json(&self, dir: &Path, args: &[&str]) -> Result<(i32, Value)> {
        let (code, out) = self.cli(dir, args)?;
        let value = last_json(&out)
            .with_context(|| format!("feral-node {}: no JSON in {out:?}", args.join(" ")))?;
        Ok((code, value))
    }

    /// A store with a certificate from the cluster CA.
    pub fn node(&self, name: &str, segment_bytes: Option<u64>) -> Result<PathBuf> {
        let dir = self.root.join(name);
        let mut init = vec!["init".to_string()];
        if let Some(bytes) = segment_bytes {
            init.extend(["--segment-bytes".to_string(), bytes.to_string()]);
        }
        self.cli_ok(&dir, &init.iter().map(String::as_str).collect::<Vec<_>>())?;
        self.cli_ok(&dir, &["certs", "issue", "--ca", &self.ca.to_string_lossy()])?;
        Ok(dir)
    }

    /// Appends `count` episodes (`<prefix>-<i>`) through `feral-node append --file`.
    pub fn append_episodes(&self, dir: &Path, prefix: &str, count: usize) -> Result<()> {
        let file = self.root.join(format!("{prefix}.jsonl"));
        let mut text = String::with_capacity(count * 200);
        for i in 0..count {
            let doc = episode(&format!("{prefix}-{i}"), &format!("s{}", i % 16), i as f64);
            text.push_str(&doc.to_string());
            text.push('\n');
        }
        std::fs::write(&file, text)?;
        self.cli_ok(dir, &["append", "--file", &file.to_string_lossy()])?;
        Ok(())
    }

    /// `digest --json` of a stopped node.
    pub fn digest(&self, dir: &Path) -> Result<Value> {
        let (code, v) = self.cli_json(dir, &["digest", "--json"])?;
        if code != 0 {
            bail!("digest of {} exited {code}: {v}", dir.display());
        }
        Ok(v)
    }

    /// `status --json` of a stopped node.
    pub fn status(&self, dir: &Path) -> Result<Value> {
        Ok(self.cli_json(dir, &["status", "--json"])?.1)
    }

    /// `check --json` of a stopped node: exit code and report.
    pub fn check(&self, dir: &Path) -> Result<(i32, Value)> {
        self.cli_json(dir, &["check", "--json"])
    }

    /// The op lines of `dump` (by origin, then seq).
    pub fn dump_ops(&self, dir: &Path) -> Result<Vec<Value>> {
        let out = self.cli_ok(dir, &["dump"])?;
        Ok(out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("seq").is_some())
            .collect())
    }

    /// Starts `feral-node run` and waits until it serves sync and its API.
    pub fn start(&self, dir: &Path, opts: &RunOpts) -> Result<Running> {
        if !opts.config.is_empty() {
            std::fs::write(dir.join("feral.toml"), opts.config.join("\n") + "\n")?;
        }
        let mut cmd = self.command(dir);
        cmd.args(["run", "--api", "127.0.0.1:0", "--listen", &opts.listen.to_string()]);
        cmd.args(["--sync-interval", &opts.sync_interval_secs.to_string()]);
        if !opts.mdns {
            cmd.arg("--no-mdns");
        }
        if !opts.peers.is_empty() {
            let list: Vec<String> = opts.peers.iter().map(ToString::to_string).collect();
            cmd.args(["--peers", &list.join(",")]);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let mut proc = Proc::spawn(cmd, format!("feral-node run ({name})"))?;
        let deadline = Instant::now() + START_DEADLINE;
        let listening =
            proc.wait_line(deadline, |s, l| s == Stream::Out && l.starts_with("listening on "))?;
        let api_line =
            proc.wait_line(deadline, |s, l| s == Stream::Out && l.starts_with("api on http://"))?;
        let sync_addr = listening
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no address in {listening:?}"))?;
        let api_addr: SocketAddr = api_line
            .trim_start_matches("api on http://")
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no address in {api_line:?}"))?;
        // Over TCP with the data directory's token, as a caller on this machine would.
        let token = feral_memory::client::token_of(dir)
            .with_context(|| format!("no API token in {}", dir.display()))?;
        let api = ApiClient::new(Endpoint::Tcp(api_addr), Some(token)).with_timeout(API_TIMEOUT);
        Ok(Running { proc, sync_addr, api, dir: dir.to_path_buf() })
    }
}

/// POST /v1/sync with one peer to the API at `api`; returns the result object.
pub fn sync_via(api: &ApiClient, peer: SocketAddr) -> Result<Value> {
    let body = json!({ "peer": peer.to_string() });
    let (status, v) = api.call("POST", "/v1/sync", Some(&body))?;
    if status != 200 {
        bail!("POST /v1/sync: {status} {v}");
    }
    v.get(0).cloned().with_context(|| format!("no result in {v}"))
}

/// A `feral-node run` process.
#[derive(Debug)]
pub struct Running {
    /// The process.
    pub proc: Proc,
    /// Where it serves sync.
    pub sync_addr: SocketAddr,
    /// Its API (TCP with the token).
    pub api: ApiClient,
    /// Its data directory.
    pub dir: PathBuf,
}

impl Running {
    /// GET `path`.
    pub fn get(&self, path: &str) -> Result<(u16, Value)> {
        Ok(self.api.call("GET", path, None)?)
    }

    /// POST `path` with a JSON body.
    pub fn post(&self, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
        let body = body.map(serde_json::from_str::<Value>).transpose()?;
        Ok(self.api.call("POST", path, body.as_ref())?)
    }

    /// POST /v1/sync with one peer; returns the result object.
    pub fn sync_with(&self, peer: SocketAddr) -> Result<Value> {
        sync_via(&self.api, peer)
    }

    /// POST /v1/sync until the session is this call's own (the scheduler may hold the peer:
    /// `already_syncing`), or the deadline; returns the last result.
    pub fn sync_own(&self, peer: SocketAddr, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.sync_with(peer)?;
            if r["error"] != "already_syncing" || Instant::now() >= deadline {
                return Ok(r);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET /v1/status.
    pub fn status(&self) -> Result<Value> {
        let (status, v) = self.get("/v1/status")?;
        if status != 200 {
            bail!("GET /v1/status: {status} {v}");
        }
        Ok(v)
    }

    /// One sample of `/metrics` by its full name (labels included), if present.
    pub fn metric(&self, name: &str) -> Result<Option<f64>> {
        let (_, v) = self.get("/metrics")?;
        let text = v.as_str().unwrap_or_default();
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()))
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> Result<()> {
        self.proc.signal(libc::SIGTERM);
        let status = self.proc.wait(Instant::now() + Duration::from_secs(60))?;
        if !status.success() {
            bail!(
                "{} exited {status} on SIGTERM; last output:\n{}",
                self.proc.label,
                self.proc.tail()
            );
        }
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.proc.kill();
    }
}
