//! Sync catch-up between two nodes over loopback QUIC with mutual TLS, beside a raw quinn stream
//! moving the same bytes and beside the receiver ingesting the same ops locally; and the
//! incremental sync of one op over a large shared store.
//!
//! `FERAL_BENCH_OPS` sets the store size (default 1,000,000 ops of about 256 bytes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feral_log::{Config, Op};
use feral_materializer::Episode;
use feral_memory::Node;
use feral_transport::driver::{client_endpoint, server_endpoint};
use feral_transport::tls::{Ca, Credentials, SERVER_NAME};
use feral_transport::{PeerLocks, SyncOptions, Syncer, Timeouts, serve};

fn bench_dir() -> PathBuf {
    std::env::var_os("FERAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

fn ops_count() -> usize {
    std::env::var("FERAL_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn episode(i: usize) -> Episode {
    let doc = serde_json::json!({
        "id": format!("ep-{i:012}"), "session_id": format!("s{}", i / 100), "event_type": "chat",
        "summary": "x".repeat(120), "created_at": i as f64,
    });
    Episode::from_input(&doc, 0.0).expect("valid")
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
    Side { node, creds, _dir: dir }
}

fn all_ops(node: &Node) -> Vec<Op> {
    let mut out = Vec::new();
    node.wal()
        .scan(1, &mut |r| {
            out.push(r.op);
            Ok(true)
        })
        .expect("scan");
    out
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

fn catch_up(c: &mut Criterion) {
    let n = ops_count();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ca = Ca::generate().expect("ca");
    let started = Instant::now();
    let sender = side(&ca, n);
    println!("built the {n}-op sender in {:.1} s", started.elapsed().as_secs_f64());
    let ops = all_ops(&sender.node);
    let (addr, stop) = start(&rt, &sender);
    let mut group = c.benchmark_group(format!("sync_catch_up_{n}_ops"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .warm_up_time(Duration::from_secs(1));
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
                let batches: Vec<Vec<Op>> = ops.chunks(1024).map(<[Op]>::to_vec).collect();
                let t = Instant::now();
                for batch in batches {
                    receiver.node.ingest(batch).expect("ingest");
                }
                receiver.node.settle();
                total += t.elapsed();
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
    group.sample_size(20).measurement_time(Duration::from_secs(10));
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

criterion_group!(benches, catch_up);
criterion_main!(benches);
