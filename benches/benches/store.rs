//! The store: durable ingest of episodes (log + index + projection) beside raw redb batch
//! inserts of the same rows; projection rebuild and reopen of a large store.
//!
//! `FERAL_BENCH_OPS` sets the size of the large store (default 1,000,000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use feral_benches::{episode_doc, raw_redb_batches, settle};
use feral_log::Config;
use feral_materializer::Episode;
use feral_memory::Node;

const INGEST_EPISODES: usize = 100_000;
const BATCH: usize = 1000;

fn bench_dir() -> PathBuf {
    std::env::var_os("FERAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

fn large_ops() -> usize {
    std::env::var("FERAL_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn episodes(n: usize) -> Vec<Episode> {
    (0..n as u64).map(|i| Episode::from_input(&episode_doc(i), 0.0).expect("valid")).collect()
}

/// Appends `batches` of episodes, each durable before the next, and returns once the
/// projection and the index hold all of them.
fn ingest(node: &Node, batches: Vec<Vec<(Episode, Option<feral_log::OpId>)>>) {
    for batch in batches {
        node.append_episodes(batch).expect("append");
    }
    node.settle();
    node.wal().heads().expect("index caught up");
}

fn ingest_group(c: &mut Criterion) {
    let eps = episodes(INGEST_EPISODES);
    let rows: Vec<(String, Vec<u8>)> = eps.iter().map(|e| (e.id.clone(), e.to_data())).collect();
    let mut group = c.benchmark_group("ingest_100k_episodes");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(INGEST_EPISODES as u64));
    settle();
    group.bench_function(BenchmarkId::new("raw_redb_batch", BATCH), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
                let start = Instant::now();
                raw_redb_batches(&dir.path().join("raw.redb"), &rows, BATCH).expect("raw redb");
                total += start.elapsed();
            }
            total
        })
    });
    settle();
    group.bench_function(BenchmarkId::new("feral_ingest", BATCH), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
                let node = Node::open(dir.path(), Config::default()).expect("open");
                // The caller's input, built outside the timed part like the raw probe's rows.
                let batches: Vec<Vec<_>> = eps
                    .chunks(BATCH)
                    .map(|c| c.iter().map(|e| (e.clone(), None)).collect())
                    .collect();
                let start = Instant::now();
                ingest(&node, batches);
                total += start.elapsed();
                node.close().expect("close");
            }
            total
        })
    });
    group.finish();
}

/// A store of `n` episode ops, closed cleanly.
fn build_large(dir: &Path, n: usize) {
    let node = Node::open(dir, Config::default()).expect("open");
    for start in (0..n).step_by(BATCH) {
        let chunk: Vec<_> = (start..(start + BATCH).min(n))
            .map(|i| (Episode::from_input(&episode_doc(i as u64), 0.0).expect("valid"), None))
            .collect();
        node.append_episodes(chunk).expect("append");
    }
    node.close().expect("close");
}

fn large_group(c: &mut Criterion) {
    let n = large_ops();
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let started = Instant::now();
    build_large(dir.path(), n);
    println!("built a {n}-op store in {:.1} s", started.elapsed().as_secs_f64());
    let mut group = c.benchmark_group(format!("store_{n}_ops"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    settle();
    group.bench_function("reopen_clean", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let node = Node::open(dir.path(), Config::default()).expect("open");
                total += start.elapsed();
                node.close().expect("close");
            }
            total
        })
    });
    group.sample_size(10).measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("rebuild_projection", |b| {
        b.iter_custom(|iters| {
            let node = Node::open(dir.path(), Config::default()).expect("open");
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let projected = node.rebuild_projection().expect("rebuild");
                total += start.elapsed();
                assert_eq!(projected, n);
            }
            node.close().expect("close");
            total
        })
    });
    group.finish();
}

criterion_group!(benches, ingest_group, large_group);
criterion_main!(benches);
