//! The store: durable ingest of episodes (log + index + projection) beside raw redb batch
//! inserts of the same rows and beside SQLite doing the original system's upserts; re-apply and
//! point gets of present ops beside raw redb gets; reopen of a large store after a clean stop
//! and after a crash; projection rebuild.
//!
//! `FERAL_BENCH_OPS` sets the size of the large store (default 1,000,000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use feral_benches::{
    RawIndex, episode_doc, raw_redb_batches, settle, sqlite_ingest, sqlite_open, sqlite_ops,
};
use feral_log::Config;
use feral_materializer::Episode;
use feral_memory::Node;

const INGEST_EPISODES: usize = 100_000;
const BATCH: usize = 1000;
/// Ops in the one-commit-per-op SQLite line (each commit waits for an fsync).
const SQLITE_SINGLE_OPS: usize = 1000;

fn bench_dir() -> PathBuf {
    std::env::var_os("FERAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

fn large_ops() -> usize {
    std::env::var("FERAL_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn episodes(n: usize) -> Vec<Episode> {
    (0..n as u64).map(|i| Episode::from_input(&episode_doc(i), 2e9).expect("valid")).collect()
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

/// `iters` fresh SQLite stores each ingesting `ops`, `per_commit` per transaction; the time of
/// the ingests alone.
fn time_sqlite(iters: u64, ops: &[feral_benches::SqliteOp], per_commit: usize) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
        let mut store = sqlite_open(dir.path()).expect("sqlite");
        let start = Instant::now();
        sqlite_ingest(&mut store, ops, per_commit).expect("sqlite ingest");
        total += start.elapsed();
    }
    total
}

fn ingest_group(c: &mut Criterion) {
    let eps = episodes(INGEST_EPISODES);
    let rows: Vec<(String, Vec<u8>)> = eps.iter().map(|e| (e.id.clone(), e.to_data())).collect();
    let mut group = c.benchmark_group("ingest_100k_episodes");
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(20)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
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
    let sql_ops = sqlite_ops(&eps);
    group.bench_function(BenchmarkId::new("sqlite_batch", BATCH), |b| {
        b.iter_custom(|iters| time_sqlite(iters, &sql_ops, BATCH))
    });
    settle();
    // One commit per op, as the original did: fewer ops (each commit is an fsync); compare
    // per-op times (the table divides by each line's own element count).
    group.throughput(Throughput::Elements(SQLITE_SINGLE_OPS as u64));
    group.bench_function(BenchmarkId::new("sqlite_one_commit_per_op", SQLITE_SINGLE_OPS), |b| {
        b.iter_custom(|iters| time_sqlite(iters, &sql_ops[..SQLITE_SINGLE_OPS], 1))
    });
    group.throughput(Throughput::Elements(INGEST_EPISODES as u64));
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
            .map(|i| (Episode::from_input(&episode_doc(i as u64), 2e9).expect("valid"), None))
            .collect();
        node.append_episodes(chunk).expect("append");
    }
    node.close().expect("close");
}

/// Copies a store directory (files and `wal/`).
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("wal")).expect("mkdir");
    for sub in [Path::new(""), Path::new("wal")] {
        for entry in std::fs::read_dir(from.join(sub)).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                let name = path.file_name().expect("name");
                std::fs::copy(&path, to.join(sub).join(name)).expect("copy");
            }
        }
    }
}

/// Builds a clean `n`-op store in `dir`, and in `crash` the image a crash leaves: the same ops
/// with the last tenth written by a process that never closed (the files as its kill would
/// leave them: the log durable, index and projection commits since the last durable one not).
fn build_large_with_crash(dir: &Path, crash: &Path, n: usize) {
    let tail = n / 10;
    build_large(dir, n - tail);
    let node = Node::open(dir, Config::default()).expect("open");
    for start in (n - tail..n).step_by(BATCH) {
        let chunk: Vec<_> = (start..(start + BATCH).min(n))
            .map(|i| (Episode::from_input(&episode_doc(i as u64), 2e9).expect("valid"), None))
            .collect();
        node.append_episodes(chunk).expect("append");
    }
    node.settle();
    copy_store(dir, crash);
    node.close().expect("close");
}

fn large_group(c: &mut Criterion) {
    let n = large_ops();
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let crash = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let started = Instant::now();
    build_large_with_crash(dir.path(), crash.path(), n);
    println!("built a {n}-op store in {:.1} s", started.elapsed().as_secs_f64());
    let mut group = c.benchmark_group(format!("store_{n}_ops"));
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(10)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
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
    // After a crash: recovery of the log, then the index and projection catch up on what their
    // lost commits held (a tenth of the store), until every read is served.
    group.bench_function("reopen_after_crash", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let copy = tempfile::tempdir_in(bench_dir()).expect("tempdir");
                copy_store(crash.path(), copy.path());
                settle();
                let start = Instant::now();
                let node = Node::open(copy.path(), Config::default()).expect("open after crash");
                node.settle();
                node.wal().heads().expect("index caught up");
                total += start.elapsed();
                node.close().expect("close");
            }
            total
        })
    });
    group.sample_size(10).measurement_time(feral_benches::measure(Duration::from_secs(60)));
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

/// Ops already present: re-applying them (as a sync that resends them would) beside the raw
/// floor of one redb get per op; point gets by op_id beside raw redb gets.
fn present_group(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    build_large(dir.path(), INGEST_EPISODES);
    let node = Node::open(dir.path(), Config::default()).expect("open");
    let ops = feral_benches::stored_ops(&node);
    let ids: Vec<feral_log::OpId> = ops.iter().map(|o| o.head().expect("head").op_id).collect();
    let batches = feral_benches::sealed_batches(&ops, BATCH);
    let raw_dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let mut raw = RawIndex::create(&raw_dir.path().join("raw.redb")).expect("raw index");
    for _ in 0..INGEST_EPISODES / BATCH {
        raw.insert_group(BATCH).expect("raw insert");
    }
    let mut group = c.benchmark_group("present_100k_ops");
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(10)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
    group.throughput(Throughput::Elements(INGEST_EPISODES as u64));
    settle();
    group.bench_function("raw_redb_get", |b| {
        b.iter(|| assert_eq!(raw.get_all().expect("get"), INGEST_EPISODES))
    });
    group.bench_function("feral_reapply_present", |b| {
        b.iter(|| {
            for batch in &batches {
                assert_eq!(node.ingest(batch.clone()).expect("ingest"), 0);
            }
        })
    });
    group.bench_function("feral_get_by_op_id", |b| {
        b.iter(|| {
            for id in &ids {
                assert!(node.wal().get(id).expect("get").is_some());
            }
        })
    });
    group.finish();
    node.close().expect("close");
}

criterion_group!(benches, ingest_group, present_group, large_group);
criterion_main!(benches);
