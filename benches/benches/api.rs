//! Appending through the HTTP API (batches of 1,000 episodes per request, one connection per
//! request) beside the library appending the same batches: the API's cost over the engine's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feral_benches::episode_doc;
use feral_log::Config;
use feral_memory::Node;
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::tls::{Ca, Credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EPISODES: usize = 100_000;
const BATCH: usize = 1000;

fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("FERAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

async fn post(addr: std::net::SocketAddr, token: &str, body: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/episodes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read");
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply[..reply.len().min(300)])
    );
}

fn api_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let bodies: Vec<Vec<u8>> = (0..EPISODES / BATCH)
        .map(|b| {
            let docs: Vec<_> =
                (b * BATCH..(b + 1) * BATCH).map(|i| episode_doc(i as u64)).collect();
            serde_json::to_vec(&docs).expect("json")
        })
        .collect();
    let ca = Ca::generate().expect("ca");
    let mut group = c.benchmark_group("append_100k_episodes_in_batches_of_1000");
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(20)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
    group.throughput(Throughput::Elements(EPISODES as u64));
    group.bench_function("library", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
                let node = Node::open(dir.path(), Config::default()).expect("open");
                let batches: Vec<Vec<serde_json::Value>> =
                    bodies.iter().map(|body| serde_json::from_slice(body).expect("json")).collect();
                let start = Instant::now();
                for docs in batches {
                    let batch = docs
                        .iter()
                        .map(|d| (node.prepare_episode(d, None).expect("valid"), None))
                        .collect();
                    node.append_episodes(batch).expect("append");
                }
                node.settle();
                total += start.elapsed();
                node.close().expect("close");
            }
            total
        })
    });
    group.bench_function("http_api", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
                let node = Arc::new(Node::open(dir.path(), Config::default()).expect("open"));
                let cert = ca.issue_default(node.key()).expect("issue");
                let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).expect("creds");
                total += rt.block_on(async {
                    let config = ServiceConfig {
                        timeouts: Default::default(),
                        scrub: Default::default(),
                        listen: "127.0.0.1:0".parse().expect("addr"),
                        sync_interval: Duration::from_secs(3600),
                        mdns: false,
                        static_peers: vec![],
                    };
                    let service =
                        Arc::new(Service::start(node.clone(), &creds, config).expect("service"));
                    let listener =
                        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    let addr = listener.local_addr().expect("addr");
                    let (stop, stopped) = tokio::sync::watch::channel(false);
                    let token = feral_memory::api::token_for(dir.path()).expect("token");
                    let config = feral_memory::api::ApiConfig::default();
                    let (router, _) =
                        feral_memory::api::routers(service.clone(), &config, token.clone());
                    let server = tokio::spawn(feral_memory::api::serve::serve(
                        feral_memory::api::Listener::Tcp(listener),
                        router,
                        config.limits,
                        stopped,
                    ));
                    let start = Instant::now();
                    for body in &bodies {
                        post(addr, &token, body).await;
                    }
                    node.settle();
                    let took = start.elapsed();
                    let _ = stop.send(true);
                    let _ = server.await;
                    service.stop().await;
                    took
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, api_append);
criterion_main!(benches);
