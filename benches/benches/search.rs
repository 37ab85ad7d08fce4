//! Search: two-word queries with a session filter over a large store, beside the same queries
//! on a raw tantivy index of the same corpus (the library's limit) and on SQLite FTS5 (the
//! original system's choice); the index sizes per episode of all three; rebuilding the search
//! index from the projection beside a raw tantivy build; and ingest of the search corpus
//! beside raw tantivy indexing of it.
//!
//! `FERAL_BENCH_OPS` sets the size of the large store (default 1,000,000). Before the timed
//! groups it prints each side's p50 and p99 over 500 queries (100 for FTS5), which criterion's
//! table does not show.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use feral_benches::search::{Fts5, RawSearch, dir_bytes, p50_p99, search_doc, search_queries};
use feral_log::Config;
use feral_materializer::{Episode, SearchQuery};
use feral_memory::Node;

const BATCH: usize = 1000;
const INGEST_EPISODES: u64 = 100_000;
/// The raw probe indexes with the engine's writer memory.
const WRITER_BYTES: usize = feral_materializer::limits::SEARCH_WRITER_BYTES;

fn bench_dir() -> PathBuf {
    std::env::var_os("FERAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

fn large_ops() -> u64 {
    std::env::var("FERAL_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn corpus(n: u64) -> Vec<serde_json::Value> {
    (0..n).map(search_doc).collect()
}

fn batches(docs: &[serde_json::Value]) -> Vec<Vec<(Episode, Option<feral_log::OpId>)>> {
    docs.chunks(BATCH)
        .map(|c| c.iter().map(|d| (Episode::from_input(d, 2e9).expect("valid"), None)).collect())
        .collect()
}

fn query(text: &str, session: &str) -> SearchQuery {
    SearchQuery {
        text: text.to_string(),
        session: Some(session.to_string()),
        half_life_days: 30.0,
        now_s: 2e9,
        limit: 10,
        ..SearchQuery::default()
    }
}

fn feral_search(node: &Node, text: &str, session: &str) -> usize {
    node.search(&query(text, session)).expect("search").0.len()
}

/// `iters` raw tantivy builds of `docs`, each in a fresh directory: their time alone.
fn time_raw_builds(iters: u64, docs: &[serde_json::Value]) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
        feral_benches::settle();
        let start = Instant::now();
        RawSearch::build(dir.path(), docs, WRITER_BYTES).expect("raw tantivy");
        total += start.elapsed();
    }
    total
}

/// p50 and p99 of `run` over `queries`, printed on one line.
fn latency(name: &str, queries: &[(String, String)], run: &mut dyn FnMut(&str, &str) -> usize) {
    let mut samples = Vec::with_capacity(queries.len());
    let mut hits = 0;
    for (text, session) in queries {
        let start = Instant::now();
        hits += run(text, session);
        samples.push(start.elapsed());
    }
    let (p50, p99) = p50_p99(&mut samples);
    println!(
        "latency {name}: p50 {p50:.3} ms, p99 {p99:.3} ms over {} queries ({hits} hits)",
        queries.len()
    );
}

fn search_group(c: &mut Criterion) {
    let n = large_ops();
    let docs = corpus(n);
    let store = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let started = Instant::now();
    let node = Node::open(store.path(), Config::default()).expect("open");
    for batch in batches(&docs) {
        node.append_episodes(batch).expect("append");
    }
    node.settle();
    println!("built a {n}-episode search store in {:.1} s", started.elapsed().as_secs_f64());
    let raw_dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let started = Instant::now();
    let raw = RawSearch::build(raw_dir.path(), &docs, WRITER_BYTES).expect("raw tantivy");
    println!("built a raw tantivy index of it in {:.1} s", started.elapsed().as_secs_f64());
    let fts_dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let started = Instant::now();
    let fts = Fts5::build(&fts_dir.path().join("fts.db"), &docs).expect("fts5");
    println!("built an SQLite FTS5 index of it in {:.1} s", started.elapsed().as_secs_f64());
    drop(docs);
    let queries = search_queries(n, 500);
    // Settles the engine's commit and merges before sizes are read.
    feral_search(&node, &queries[0].0, &queries[0].1);
    let per = |bytes: u64| bytes as f64 / n as f64;
    println!(
        "index size per episode: feral {:.1} B, raw tantivy {:.1} B, sqlite fts5 {:.1} B",
        per(dir_bytes(&store.path().join(feral_materializer::SEARCH_DIR)).expect("size")),
        per(dir_bytes(raw_dir.path()).expect("size")),
        per(dir_bytes(fts_dir.path()).expect("size")),
    );
    latency("raw_tantivy", &queries, &mut |t, s| raw.search(t, s).expect("raw").len());
    latency("feral_search", &queries, &mut |t, s| feral_search(&node, t, s));
    latency("sqlite_fts5", &queries[..100], &mut |t, s| fts.search(t, s).expect("fts5").len());

    let mut group = c.benchmark_group(format!("search_{n}_episodes"));
    group
        .sample_size(20)
        .measurement_time(feral_benches::measure(Duration::from_secs(5)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    let mut cycle = || {
        next = (next + 1) % queries.len();
        &queries[next]
    };
    group.bench_function("raw_tantivy", |b| {
        b.iter(|| {
            let (t, s) = cycle();
            raw.search(t, s).expect("raw")
        })
    });
    group.bench_function("feral_search", |b| {
        b.iter(|| {
            let (t, s) = cycle();
            feral_search(&node, t, s)
        })
    });
    group.sample_size(10).measurement_time(feral_benches::measure(Duration::from_secs(10)));
    group.bench_function("sqlite_fts5", |b| {
        b.iter(|| {
            let (t, s) = cycle();
            fts.search(t, s).expect("fts5")
        })
    });
    group.finish();
    drop(fts);

    // Rebuilding the search index from the projection, beside the raw build of the corpus.
    let docs = corpus(n);
    let mut group = c.benchmark_group(format!("rebuild_search_{n}_episodes"));
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(60)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
    group.throughput(Throughput::Elements(n));
    group.bench_function("raw_tantivy_build", |b| {
        b.iter_custom(|iters| time_raw_builds(iters, &docs))
    });
    group.bench_function("feral_rebuild_search", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                feral_benches::settle();
                let start = Instant::now();
                assert_eq!(node.rebuild_search().expect("rebuild") as u64, n);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
    node.close().expect("close");
}

/// Ingest of the search corpus (log, index, projection and search index, until reads see
/// it), beside tantivy indexing the same episodes alone.
fn ingest_group(c: &mut Criterion) {
    let docs = corpus(INGEST_EPISODES);
    let mut group = c.benchmark_group("ingest_100k_search_corpus");
    group
        .sample_size(10)
        .measurement_time(feral_benches::measure(Duration::from_secs(20)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
    group.throughput(Throughput::Elements(INGEST_EPISODES));
    group.bench_function("raw_tantivy_index", |b| {
        b.iter_custom(|iters| time_raw_builds(iters, &docs))
    });
    group.bench_function(BenchmarkId::new("feral_ingest", BATCH), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
                let node = Node::open(dir.path(), Config::default()).expect("open");
                let input = batches(&docs);
                feral_benches::settle();
                let start = Instant::now();
                for batch in input {
                    node.append_episodes(batch).expect("append");
                }
                node.settle();
                total += start.elapsed();
                node.close().expect("close");
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, ingest_group, search_group);
criterion_main!(benches);
