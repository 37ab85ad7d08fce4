//! Live memory (issue 16), three `feral-node run` processes in a chain A → B → C on loopback
//! with the default 30 s schedule, so only the push brings a write across:
//! - a write on A (its HTTP acknowledgment) until B, then C, answer it over their APIs;
//! - a write on A until A's change feed (an event stream) delivers it;
//! - a one-shot `feral-node sync` of one op, as a whole process;
//! - 1,000 writes/s on A for 5 s, and how far B stays behind.
//!
//! Before criterion's lines it prints p50 and p99 over `FERAL_BENCH_LIVE_WRITES` (default 200)
//! isolated writes. Needs the release `feral-node` beside the bench (or `FERAL_NODE_BIN`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use feral_benches::search::p50_p99;
use feral_memory::client::{ApiClient, Call, Endpoint};
use serde_json::json;

fn writes() -> usize {
    std::env::var("FERAL_BENCH_LIVE_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

/// One `run` process.
struct Running {
    child: Child,
    data: PathBuf,
    sync: SocketAddr,
    api: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(bin: &Path, config: &Path, data: &Path, peers: &[SocketAddr]) -> Running {
        let mut cmd = Command::new(bin);
        cmd.env("XDG_CONFIG_HOME", config).arg("--data").arg(data).args([
            "run",
            "--no-mdns",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ]);
        if !peers.is_empty() {
            let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            cmd.args(["--peers", &list.join(",")]);
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("feral-node run");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = || lines.next().expect("a line").expect("line");
        let (sync_line, api_line) = (next(), next());
        std::thread::spawn(move || for _ in lines {});
        let word = |line: &str| -> SocketAddr {
            let w = line.split_whitespace().nth(2).expect("address");
            w.trim_start_matches("http://").parse().expect("address")
        };
        Running { sync: word(&sync_line), api: word(&api_line), child, data: data.to_path_buf() }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data.join(feral_memory::api::TOKEN_FILE))
            .expect("token")
            .trim()
            .to_string()
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(Endpoint::Tcp(self.api), Some(self.token()))
    }
}

struct Chain {
    a: Running,
    b: Running,
    c: Running,
    config: tempfile::TempDir,
    _root: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Chain {
    fn start(bin: &Path) -> Chain {
        let root = tempfile::tempdir().expect("tempdir");
        let config = tempfile::tempdir().expect("tempdir");
        let c = Running::start(bin, config.path(), &root.path().join("c"), &[]);
        let b = Running::start(bin, config.path(), &root.path().join("b"), &[c.sync]);
        let a = Running::start(bin, config.path(), &root.path().join("a"), &[b.sync]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        Chain { a, b, c, config, _root: root, rt }
    }

    fn write(&self, client: &ApiClient, id: &str) {
        let doc = json!({"id": id, "session_id": "live", "event_type": "chat", "summary": id});
        let answer = self.rt.block_on(client.send(Call::new("POST", "/v1/episodes").json(&doc)));
        assert_eq!(answer.expect("write").status, 200);
    }

    /// Polls `client` until it answers episode `id`.
    fn until_visible(&self, client: &ApiClient, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let path = format!("/v1/episodes/{id}");
        while self.rt.block_on(client.send(Call::new("GET", &path))).expect("read").status != 200 {
            assert!(Instant::now() < deadline, "{id} never became visible");
        }
    }
}

/// Reads A's change feed as an event stream, timestamping each change by its row id.
fn follow_feed(node: &Running, seen: Arc<Mutex<Vec<(String, Instant)>>>) {
    let mut socket = TcpStream::connect(node.api).expect("connect");
    write!(
        socket,
        "GET /v1/changes?since=now HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        node.api,
        node.token()
    )
    .expect("request");
    std::thread::spawn(move || {
        let reader = BufReader::new(socket);
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                && let Some(row) = v["row_id"].as_str()
            {
                seen.lock().expect("lock").push((row.to_string(), Instant::now()));
            }
        }
    });
}

fn latencies(chain: &Chain, n: usize) {
    let (a, b, c) = (chain.a.client(), chain.b.client(), chain.c.client());
    let seen = Arc::new(Mutex::new(Vec::new()));
    follow_feed(&chain.a, seen.clone());
    std::thread::sleep(Duration::from_millis(200));
    let (mut one, mut two, mut feed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let id = format!("lat-{i}");
        let start = Instant::now();
        chain.write(&a, &id);
        chain.until_visible(&b, &id);
        one.push(start.elapsed());
        chain.until_visible(&c, &id);
        two.push(start.elapsed());
        let arrived = seen.lock().expect("lock").iter().find(|(r, _)| *r == id).map(|(_, t)| *t);
        if let Some(t) = arrived {
            feed.push(t.duration_since(start));
        }
    }
    for (name, samples) in [
        ("write_on_a_visible_on_b", &mut one),
        ("write_on_a_visible_on_c", &mut two),
        ("write_to_feed_delivery", &mut feed),
    ] {
        let count = samples.len();
        let (p50, p99) = p50_p99(samples);
        println!("latency {name}: p50 {p50:.2} ms, p99 {p99:.2} ms over {count} writes");
    }
}

/// 1,000 writes/s on A from four writers for 5 s; a watcher keeps taking the newest write and
/// timing until B answers it.
fn sustained(chain: &Chain) {
    let per_writer = 250;
    let secs = 5;
    let written = Arc::new(AtomicUsize::new(0));
    let stamps: Arc<Vec<AtomicU64>> =
        Arc::new((0..4 * per_writer * secs).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, written, stamps) = (chain.a.client(), written.clone(), stamps.clone());
        writers.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            for k in 0..per_writer * secs {
                let due = epoch + Duration::from_micros((k as u64) * 1_000_000 / per_writer as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let i = k * 4 + w;
                let doc = json!({"id": format!("s-{i}"), "session_id": "s", "event_type": "chat", "summary": "x"});
                let answer = rt.block_on(client.send(Call::new("POST", "/v1/episodes").json(&doc)));
                assert_eq!(answer.expect("write").status, 200);
                stamps[i].store(epoch.elapsed().as_micros() as u64, Ordering::Release);
                written.fetch_max(i, Ordering::AcqRel);
            }
        }));
    }
    let b = chain.b.client();
    let mut lags = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        let i = written.load(Ordering::Acquire);
        let at = stamps[i].load(Ordering::Acquire);
        if at == 0 {
            continue;
        }
        chain.until_visible(&b, &format!("s-{i}"));
        let now = epoch.elapsed().as_micros() as u64;
        lags.push(Duration::from_micros(now.saturating_sub(at)));
    }
    for w in writers {
        w.join().expect("writer");
    }
    let total = epoch.elapsed();
    let count = lags.len();
    let worst = lags.iter().max().copied().unwrap_or_default();
    let (p50, p99) = p50_p99(&mut lags);
    println!(
        "latency sustained_1000_per_s_b_behind_a: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.1} ms over {count} samples; {} writes in {:.2} s",
        worst.as_secs_f64() * 1e3,
        4 * per_writer * secs,
        total.as_secs_f64()
    );
}

/// A closed store holding one new op, with a certificate from the chain's local CA.
fn oneshot_store(bin: &Path, config: &Path, dir: &Path, i: usize) {
    let run = |args: &[&str], input: Option<&str>| {
        let mut cmd = Command::new(bin);
        cmd.env("XDG_CONFIG_HOME", config).arg("--data").arg(dir).args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("feral-node");
        if let Some(text) = input {
            child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("stdin");
        }
        drop(child.stdin.take());
        assert!(child.wait().expect("wait").success(), "feral-node {args:?}");
    };
    if !dir.join("node.pem").exists() {
        run(&["init"], None);
        let ca = config.join("feral-memory").join("local-ca");
        run(&["certs", "issue", "--ca", ca.to_str().expect("path")], None);
    }
    let doc =
        json!({"id": format!("one-{i}"), "session_id": "s", "event_type": "chat", "summary": "x"});
    run(&["append"], Some(&format!("{doc}\n")));
}

fn live(c: &mut Criterion) {
    let Some(bin) = feral_benches::node_bin() else {
        println!(
            "SKIPPED live: no feral-node beside the bench (cargo build --release --bin feral-node, or FERAL_NODE_BIN)"
        );
        return;
    };
    let chain = Chain::start(&bin);
    latencies(&chain, writes());
    sustained(&chain);
    let mut group = c.benchmark_group("live_three_nodes");
    group
        .sample_size(20)
        .measurement_time(feral_benches::measure(Duration::from_secs(5)))
        .warm_up_time(feral_benches::warm_up(Duration::from_millis(500)));
    let (a, b) = (chain.a.client(), chain.b.client());
    let next = AtomicUsize::new(0);
    group.bench_function("write_on_a_visible_on_b", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = format!("crit-{}", next.fetch_add(1, Ordering::Relaxed));
                let start = Instant::now();
                chain.write(&a, &id);
                chain.until_visible(&b, &id);
                total += start.elapsed();
            }
            total
        })
    });
    let store = tempfile::tempdir().expect("tempdir");
    let dir = store.path().join("d");
    let peer = chain.b.sync.to_string();
    group.bench_function("oneshot_sync_process", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                oneshot_store(
                    &bin,
                    chain.config.path(),
                    &dir,
                    next.fetch_add(1, Ordering::Relaxed),
                );
                let start = Instant::now();
                let status = Command::new(&bin)
                    .env("XDG_CONFIG_HOME", chain.config.path())
                    .arg("--data")
                    .arg(&dir)
                    .args(["sync", "--peer", &peer])
                    .stdout(Stdio::null())
                    .status()
                    .expect("feral-node sync");
                total += start.elapsed();
                assert!(status.success());
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, live);
criterion_main!(benches);
