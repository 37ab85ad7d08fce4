//! Sync catch-up between two nodes over loopback QUIC with mutual TLS, beside a raw quinn stream
//! moving the same bytes and beside the receiver ingesting the same ops locally; and the
//! incremental sync of one op over a large shared store.
//!
//! `FERAL_BENCH_SYNC_OPS` sets the store sizes (default 100,000 and 1,000,000 ops of about
//! 256 bytes). The last group runs the catch-up between two `feral-node` processes (release
//! binary beside the bench, or `FERAL_NODE_BIN`) and records each side's peak RSS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feral_log::Config;
use feral_materializer::Episode;
use feral_memory::Node;
use feral_transport::driver::{client_endpoint, server_endpoint};
use feral_transport::tls::{Ca, Credentials, SERVER_NAME};
use feral_transport::{PeerLocks, SyncOptions, Syncer, Timeouts, serve};

fn bench_dir() -> PathBuf {
    std::env::var_os("FERAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

/// Store sizes: `FERAL_BENCH_SYNC_OPS` (comma-separated; default 100,000 and 1,000,000).
fn ops_counts() -> Vec<usize> {
    std::env::var("FERAL_BENCH_SYNC_OPS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

fn episode(i: usize) -> Episode {
    let doc = serde_json::json!({
        "id": format!("ep-{i:012}"), "session_id": format!("s{}", i / 100), "event_type": "chat",
        "summary": "x".repeat(120), "created_at": i as f64,
    });
    Episode::from_input(&doc, 2e9).expect("valid")
}

struct Side {
    node: Arc<Node>,
    creds: Credentials,
    _dir: tempfile::TempDir,
}

fn side(ca: &Ca, fill: usize) -> Side {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let node = Arc::new(Node::open(dir.path(), Config::default()).expect("open"));
    for start in (0..fill).step_by(1000) {
        let batch = (start..(start + 1000).min(fill)).map(|i| (episode(i), None)).collect();
        node.append_episodes(batch).expect("append");
    }
    node.settle();
    let cert = ca.issue_default(node.key()).expect("issue");
    let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).expect("creds");
    // Installed as `certs issue` does: the genesis goes out with it, the receiver checks it.
    std::fs::write(dir.path().join(feral_transport::tls::NODE_CERT_FILE), &cert).expect("cert");
    std::fs::write(dir.path().join(feral_transport::tls::CA_CERT_FILE), &ca.cert_pem).expect("ca");
    Side { node, creds, _dir: dir }
}

/// Serves `s` on loopback; returns the address and the stop handle.
fn start(rt: &tokio::runtime::Runtime, s: &Side) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let _guard = rt.enter();
    let endpoint = server_endpoint(&s.creds, "127.0.0.1:0".parse().expect("addr")).expect("server");
    let addr = endpoint.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(serve(endpoint, s.node.clone(), s.creds.cluster_id(), Timeouts::default(), async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn syncer(rt: &tokio::runtime::Runtime, s: &Side) -> Syncer<Node> {
    let _guard = rt.enter();
    Syncer {
        host: s.node.clone(),
        endpoint: client_endpoint(&s.creds, "127.0.0.1:0".parse().expect("addr"), true)
            .expect("client"),
        cluster_id: s.creds.cluster_id(),
        locks: Arc::new(PeerLocks::default()),
        options: SyncOptions::default(),
    }
}

/// Moves `bytes` over one quinn stream on loopback with the same TLS set-up: the transport's limit.
async fn raw_stream(server: &Side, client: &Side, bytes: u64) -> Duration {
    let endpoint =
        server_endpoint(&server.creds, "127.0.0.1:0".parse().expect("addr")).expect("server");
    let addr = endpoint.local_addr().expect("addr");
    let sink = tokio::spawn(async move {
        let connection = endpoint.accept().await.expect("incoming").await.expect("connection");
        let (_send, mut recv) = connection.accept_bi().await.expect("stream");
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
        connection.close(0u32.into(), b"");
    });
    let client =
        client_endpoint(&client.creds, "127.0.0.1:0".parse().expect("addr"), true).expect("client");
    let start = Instant::now();
    let connection = client.connect(addr, SERVER_NAME).expect("connect").await.expect("connected");
    let (mut send, _recv) = connection.open_bi().await.expect("stream");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        send.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    send.finish().expect("finish");
    sink.await.expect("sink");
    start.elapsed()
}

/// The runtime every in-process group here runs its endpoints on: two workers, as the machine.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn catch_up(c: &mut Criterion) {
    for n in ops_counts() {
        catch_up_n(c, n);
    }
}

fn catch_up_n(c: &mut Criterion, n: usize) {
    let rt = runtime();
    let ca = Ca::generate().expect("ca");
    let started = Instant::now();
    let sender = side(&ca, n);
    println!("built the {n}-op sender in {:.1} s", started.elapsed().as_secs_f64());
    // As the sender sends them: its genesis with its certificate, which the receiver checks.
    let mut ops = feral_benches::stored_ops(&sender.node);
    assert!(ops[0].attach_certificate(&sender.creds.chain[0]), "seq 1 takes its certificate");
    let (addr, stop) = start(&rt, &sender);
    let mut group = c.benchmark_group(format!("sync_catch_up_{n}_ops"));
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(30)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
    group.throughput(Throughput::Elements(n as u64));
    let mut stream_bytes = 0;
    group.bench_function("feral_sync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let receiver = side(&ca, 0);
                let s = syncer(&rt, &receiver);
                let t = Instant::now();
                let result = rt.block_on(s.sync_with_peer(addr));
                receiver.node.settle();
                total += t.elapsed();
                assert!(result.success && result.received == n as u64, "{result:?}");
                stream_bytes = result.bytes_received + result.bytes_sent;
            }
            total
        })
    });
    group.bench_function("local_ingest", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let receiver = side(&ca, 0);
                let batches = feral_benches::sealed_batches(&ops, 1024);
                let t = Instant::now();
                let mut taken = 0;
                for batch in batches {
                    taken += receiver.node.ingest(batch).expect("ingest");
                }
                receiver.node.settle();
                total += t.elapsed();
                assert_eq!(taken, n, "every op taken");
            }
            total
        })
    });
    group.bench_function("raw_quinn_stream_same_bytes", |b| {
        b.iter_custom(|iters| {
            let client = side(&ca, 0);
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(raw_stream(&sender, &client, stream_bytes));
            }
            total
        })
    });
    group.finish();
    // Incremental: one new op over n shared.
    let receiver = side(&ca, 0);
    let s = syncer(&rt, &sender);
    let (raddr, rstop) = start(&rt, &receiver);
    assert!(rt.block_on(s.sync_with_peer(raddr)).success);
    let mut group = c.benchmark_group(format!("sync_incremental_1_op_over_{n}"));
    group
        .sample_size(20)
        .measurement_time(feral_benches::measure(Duration::from_secs(10)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
    let mut i = n;
    group.bench_function("feral_sync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                i += 1;
                sender.node.append_episodes(vec![(episode(i), None)]).expect("append");
                let t = Instant::now();
                let result = rt.block_on(s.sync_with_peer(raddr));
                total += t.elapsed();
                assert!(result.success && result.sent == 1, "{result:?}");
            }
            total
        })
    });
    group.finish();
    drop((stop, rstop));
}

/// A closed store of `fill` episodes with a certificate from `ca`, for a `feral-node` process.
fn process_store(ca: &Ca, fill: usize) -> tempfile::TempDir {
    let s = side(ca, fill);
    let Side { node, _dir, .. } = s;
    Arc::into_inner(node).expect("one owner").close().expect("close");
    // `run` refuses a data directory its group or others can reach.
    feral_log::private::restrict(_dir.path()).expect("chmod 700");
    _dir
}

/// Peak resident set (VmHWM) of a live process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// Runs `feral-node sync` against a serving `feral-node run`; returns the time and the peak RSS
/// (KiB) of the receiver and of the sender.
fn process_catch_up(
    bin: &std::path::Path,
    sender: &std::path::Path,
    receiver: &std::path::Path,
) -> (Duration, u64, u64) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut serve = Command::new(bin)
        .arg("--data")
        .arg(sender)
        .args(["run", "--no-mdns", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("feral-node run");
    let mut out = std::io::BufReader::new(serve.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let addr = line.split_whitespace().nth(2).expect("address").to_string();
    let t = Instant::now();
    let mut child = Command::new(bin)
        .arg("--data")
        .arg(receiver)
        .args(["sync", "--json", "--peer", &addr])
        .stdout(Stdio::null())
        .spawn()
        .expect("feral-node sync");
    // VmHWM (peak RSS) starts again at exec and never falls, so its last reading before the
    // exit is the peak. (wait4's ru_maxrss would also count the bench process's own pages,
    // shared with the child between fork and exec.)
    let mut receiver_kib = 0;
    let status = loop {
        receiver_kib = receiver_kib.max(peak_rss_kib(child.id()));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t.elapsed();
    assert!(status.success(), "sync failed: {status}");
    let sender_kib = peak_rss_kib(serve.id());
    // SAFETY: signals our own child.
    unsafe { libc::kill(serve.id() as libc::pid_t, libc::SIGTERM) };
    let _ = serve.wait();
    (took, receiver_kib, sender_kib)
}

/// Catch-up between two real processes, with each side's peak RSS (target: under 256 MiB).
fn catch_up_processes(c: &mut Criterion) {
    let Some(bin) = feral_benches::node_bin() else {
        println!(
            "SKIPPED sync_catch_up_processes: no feral-node beside the bench (cargo build --release --bin feral-node, or FERAL_NODE_BIN)"
        );
        return;
    };
    let n = *ops_counts().last().unwrap_or(&100_000);
    let ca = Ca::generate().expect("ca");
    let sender = process_store(&ca, n);
    let mut group = c.benchmark_group(format!("sync_catch_up_processes_{n}_ops"));
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(30)))
        .warm_up_time(feral_benches::warm_up(Duration::from_millis(1)));
    group.throughput(Throughput::Elements(n as u64));
    let (mut receiver_max, mut sender_max) = (0u64, 0u64);
    group.bench_function("feral_node_processes", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let receiver = process_store(&ca, 0);
                let (took, r, s) = process_catch_up(&bin, sender.path(), receiver.path());
                total += took;
                receiver_max = receiver_max.max(r);
                sender_max = sender_max.max(s);
            }
            total
        })
    });
    group.finish();
    let line = format!(
        "{{\"ops\":{n},\"receiver_peak_rss_mib\":{:.1},\"sender_peak_rss_mib\":{:.1}}}",
        receiver_max as f64 / 1024.0,
        sender_max as f64 / 1024.0
    );
    println!("peak RSS during the {n}-op catch-up: {line}");
    // Beside criterion's own results: <target>/criterion (the bench runs from <target>/<profile>/deps).
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()));
    let dir = target
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion")
        .join(format!("sync_catch_up_processes_{n}_ops"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("rss.json"), line);
}

/// Healing a damaged 64 MiB segment from a loopback peer (target: under 5 s): one byte of
/// the first sealed segment of A flipped and registered by a scrub, then the timed part: a
/// sync with B, which holds every op, whose hello asks for the damaged record, and the
/// rewrite of the whole segment (synced, verified). Beside it, the raw probe of its limit:
/// copying the same segment file and syncing the copy.
fn heal_segment(c: &mut Criterion) {
    let rt = runtime();
    let ca = Ca::generate().expect("ca");
    // About 170,000 episodes fill a 64 MiB segment.
    let a = side(&ca, 200_000);
    let b = side(&ca, 0);
    let (b_addr, b_stop) = start(&rt, &b);
    let s = syncer(&rt, &a);
    assert!(rt.block_on(s.sync_with_peer(b_addr)).success, "B holds every op");
    let base = *a.node.wal().sealed_segments().first().expect("a sealed 64 MiB segment");
    let path = a.node.wal().dir().join("wal").join(feral_log::segment::segment_name(base));
    let capacity = std::fs::metadata(&path).expect("segment").len();
    let mut group = c.benchmark_group("heal_64MiB_segment");
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(20)))
        .warm_up_time(feral_benches::warm_up(Duration::from_millis(1)));
    group.throughput(Throughput::Bytes(capacity));
    let mut flips = 0u64;
    group.bench_function("feral_heal_from_peer", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                use std::os::unix::fs::FileExt;
                let file =
                    std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("open");
                let at = 64 + 24 + 4096 * (1 + flips % 1000);
                flips += 1;
                let mut byte = [0u8; 1];
                file.read_exact_at(&mut byte, at).expect("read");
                file.write_all_at(&[byte[0] ^ 0x01], at).expect("flip");
                drop(file);
                let found = a.node.wal().scrub_segment(base, &mut |_| true).expect("scrub");
                assert!(matches!(found, feral_log::damage::Scrubbed::Damaged(_)), "{found:?}");
                let t = Instant::now();
                let result = rt.block_on(s.sync_with_peer(b_addr));
                total += t.elapsed();
                assert!(result.success, "{result:?}");
                assert_eq!(a.node.wal().damaged_lsns(), 0, "healed");
            }
            total
        })
    });
    let copy = a.node.wal().dir().join("raw-copy.seg");
    group.bench_function("raw_copy_and_fsync_same_file", |bench| {
        bench.iter(|| {
            std::fs::copy(&path, &copy).expect("copy");
            std::fs::File::open(&copy).expect("open").sync_all().expect("sync");
        })
    });
    group.finish();
    let _ = std::fs::remove_file(copy);
    drop(b_stop);
}

criterion_group!(benches, catch_up, catch_up_processes, heal_segment);
criterion_main!(benches);
