//! Durable log append with group commit, beside the raw probe of the disk's limit in the same
//! criterion group (one write + fdatasync of the same bytes per group), so the ratio holds on a
//! noisy machine; and the limit of a per-op redb index, measured after them.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use feral_benches::{NoSyncStorage, RawAppender, RawIndex, frame_bytes, settle};
use feral_log::{Config, OpDraft, Wal};

const DATA_BYTES: usize = 256;
const GROUPS: [usize; 4] = [1, 16, 128, 1024];

fn draft(i: usize) -> OpDraft {
    OpDraft::insert("bench", format!("row-{i}"), vec![b'x'; DATA_BYTES])
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let wal = Wal::open(dir.path().join("log"), Config::default()).expect("open");
    let storage = Arc::new(feral_benches::NoZeroerStorage::default());
    let unzeroed =
        Wal::open(dir.path().join("log-unzeroed"), Config { storage, ..Config::default() })
            .expect("open");
    let mut raw = RawAppender::create(&dir.path().join("raw"), 64 << 20).expect("raw file");
    let mut raw_zeroed =
        RawAppender::create_zeroed(&dir.path().join("raw-zeroed"), 64 << 20).expect("raw file");
    let frame = frame_bytes(DATA_BYTES);
    let mut group = c.benchmark_group("log_append_256B");
    timing(&mut group, 20);
    for &n in &GROUPS {
        group.throughput(Throughput::Elements(n as u64));
        settle();
        group.bench_with_input(BenchmarkId::new("raw_write_fdatasync", n), &n, |b, &n| {
            b.iter(|| raw.append_group(n, frame).expect("raw append"))
        });
        settle();
        group.bench_with_input(BenchmarkId::new("raw_overwrite_fdatasync", n), &n, |b, &n| {
            b.iter(|| raw_zeroed.append_group(n, frame).expect("raw overwrite"))
        });
        settle();
        group.bench_with_input(BenchmarkId::new("feral_append_batch", n), &n, |b, &n| {
            // The drafts are the caller's input: built outside the timed part, like the raw
            // probe's buffer.
            b.iter_batched(
                || (0..n).map(draft).collect::<Vec<_>>(),
                |drafts| black_box(wal.append_batch(drafts).expect("append")),
                BatchSize::SmallInput,
            )
        });
        settle();
        group.bench_with_input(BenchmarkId::new("feral_append_batch_no_zeroer", n), &n, |b, &n| {
            b.iter_batched(
                || (0..n).map(draft).collect::<Vec<_>>(),
                |drafts| black_box(unzeroed.append_batch(drafts).expect("append")),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    // Non-durable: every fsync skipped (through the storage seam), beside raw writes without
    // fdatasync; the log's own cost per op with the disk flush taken away.
    let fast = Wal::open(
        dir.path().join("nosync"),
        Config { storage: std::sync::Arc::new(NoSyncStorage::default()), ..Config::default() },
    )
    .expect("open");
    let mut group = c.benchmark_group("log_append_256B_non_durable");
    timing(&mut group, 20);
    let n = 128;
    group.throughput(Throughput::Elements(n as u64));
    group.bench_with_input(BenchmarkId::new("raw_write", n), &n, |b, &n| {
        b.iter(|| raw.append_group_unsynced(n, frame).expect("raw append"))
    });
    group.bench_with_input(BenchmarkId::new("feral_append_batch", n), &n, |b, &n| {
        b.iter_batched(
            || (0..n).map(draft).collect::<Vec<_>>(),
            |drafts| black_box(fast.append_batch(drafts).expect("append")),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The index's limit: two redb inserts per op, as a per-op index would make them. A group of
/// its own, run after the appends: its heap and page-cache footprint slowed the appends measured
/// after it in the same process.
fn index_limit(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let mut raw_index = RawIndex::create(&dir.path().join("raw.redb")).expect("raw redb");
    let mut group = c.benchmark_group("index_insert_256B");
    timing(&mut group, 20);
    for &n in &GROUPS {
        group.throughput(Throughput::Elements(n as u64));
        settle();
        group.bench_with_input(BenchmarkId::new("raw_redb_per_op", n), &n, |b, &n| {
            b.iter(|| raw_index.insert_group(n).expect("raw redb"))
        });
    }
    group.finish();
}

/// Concurrent single-op appenders sharing fdatasyncs through group commit, beside the raw
/// probe at the group size they achieved.
fn concurrent(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let wal = Arc::new(Wal::open(dir.path().join("log"), Config::default()).expect("open"));
    let mut group = c.benchmark_group("log_append_concurrent_256B");
    timing(&mut group, 10);
    for threads in [4usize, 16] {
        let per_thread = 32;
        group.throughput(Throughput::Elements((threads * per_thread) as u64));
        group.bench_with_input(
            BenchmarkId::new("feral_threads", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::thread::scope(|s| {
                            for t in 0..threads {
                                let wal = &wal;
                                s.spawn(move || {
                                    for i in 0..per_thread {
                                        wal.append(draft(t * 1000 + i)).expect("append");
                                    }
                                });
                            }
                        });
                    }
                    start.elapsed()
                })
            },
        );
    }
    group.finish();
}

/// Appends while a full `check` runs over and over beside them (one thread checking a log of
/// 200,000 ops, about 80 MB), beside the same appends with nothing else running, on the same
/// log in the same run: the check reads durable records and an index snapshot without the
/// state lock, so appends keep their pace (the target is at least 80 %).
fn during_check(c: &mut Criterion) {
    let filled = if std::env::var_os("FERAL_BENCH_QUICK").is_some() { 50_000 } else { 200_000 };
    let (_dir, wal) = filled_log(Config::default(), filled, 1_000_000);
    let n = 128;
    let mut group = c.benchmark_group("log_append_during_check_256B");
    timing(&mut group, 20);
    group.throughput(Throughput::Elements(n as u64));
    let mut next = 0usize;
    settle();
    bench_batches(&mut group, "feral_append_batch_alone", &wal, n, &mut next);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let checks = std::thread::scope(|s| {
        let checker = s.spawn(|| {
            let (mut checks, started) = (0u64, std::time::Instant::now());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(wal.check().ok, "check beside appends");
                checks += 1;
            }
            (checks, started.elapsed())
        });
        bench_batches(&mut group, "feral_append_batch_beside_check", &wal, n, &mut next);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        checker.join().expect("checker")
    });
    group.finish();
    let (checks, took) = checks;
    eprintln!(
        "log_append_during_check: {checks} full checks of {filled}+ records ran beside the appends, {:.2} s each",
        took.as_secs_f64() / checks.max(1) as f64
    );
}

/// Appends while the background scrub (its default 8 MiB/s, `feral-node run`'s) reads the
/// sealed segments of the same log over and over, beside the same appends with no scrub, in
/// the same run (the target: the scrub costs appends less than 10 %); then a scrub pass at
/// full speed, the raw read of the same segments (its limit).
fn during_scrub(c: &mut Criterion) {
    let config = Config { segment_bytes: 8 * 1024 * 1024, ..Config::default() };
    let filled = if std::env::var_os("FERAL_BENCH_QUICK").is_some() { 100_000 } else { 200_000 };
    let (_dir, wal) = filled_log(config, filled, 2_000_000);
    let n = 128;
    let mut group = c.benchmark_group("log_append_during_scrub_256B");
    timing(&mut group, 20);
    group.throughput(Throughput::Elements(n as u64));
    let mut next = 0usize;
    settle();
    bench_batches(&mut group, "feral_append_batch_alone", &wal, n, &mut next);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let scrubbed = std::thread::scope(|s| {
        let scrubber = s.spawn(|| {
            let mut pace = feral_log::damage::Pace::new(8 * 1024 * 1024, &stop);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for base in wal.sealed_segments() {
                    let found = wal.scrub_segment(base, &mut |n| pace.step(n)).expect("scrub");
                    assert_ne!(found, feral_log::damage::Scrubbed::Damaged(0), "clean");
                }
            }
            pace.bytes()
        });
        bench_batches(&mut group, "feral_append_batch_beside_scrub", &wal, n, &mut next);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        scrubber.join().expect("scrubber")
    });
    let segments = wal.sealed_segments();
    group.throughput(Throughput::Bytes(segments.len() as u64 * 8 * 1024 * 1024));
    group.bench_function("scrub_pass_full_speed", |b| {
        b.iter(|| {
            for base in &segments {
                black_box(wal.scrub_segment(*base, &mut |_| true).expect("scrub"));
            }
        })
    });
    group.bench_function("raw_read_same_segments", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for base in &segments {
                let path = wal.dir().join("wal").join(feral_log::segment::segment_name(*base));
                let bytes = std::fs::read(path).expect("read");
                sum += u64::from(crc32fast::hash(&bytes));
            }
            black_box(sum)
        })
    });
    group.finish();
    eprintln!("log_append_during_scrub: the scrub read {scrubbed} bytes beside the appends");
}

/// A log of `filled` ops (`first` + i), then the 128-op batches the "beside" groups append:
/// their numbering continues from 0 (other ids than the fill's).
fn filled_log(config: Config, filled: usize, first: usize) -> (tempfile::TempDir, Wal) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let wal = Wal::open(dir.path().join("log"), config).expect("open");
    for start in (0..filled).step_by(4096) {
        let drafts = (start..(start + 4096).min(filled)).map(|i| draft(first + i)).collect();
        wal.append_batch(drafts).expect("fill");
    }
    (dir, wal)
}

/// Benches `wal.append_batch` of the next `n` ops under `id` (`next` numbers them).
fn bench_batches(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    wal: &Wal,
    n: usize,
    next: &mut usize,
) {
    let mut batch = || {
        *next += n;
        (*next..*next + n).map(draft).collect::<Vec<_>>()
    };
    group.bench_function(BenchmarkId::new(id, n), |b| {
        b.iter_batched(
            &mut batch,
            |d| black_box(wal.append_batch(d).expect("append")),
            BatchSize::SmallInput,
        )
    });
}

/// The timing every group here uses: 1 s warm-up, 4 s of measurement, `samples` samples.
fn timing(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    samples: usize,
) {
    group
        .sample_size(samples)
        .measurement_time(feral_benches::measure(Duration::from_secs(4)))
        .warm_up_time(feral_benches::warm_up(Duration::from_secs(1)));
}

/// Where benchmark files go: `FERAL_BENCH_DIR`, else the system temp directory.
fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("FERAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

criterion_group!(benches, append, concurrent, during_check, during_scrub, index_limit);
criterion_main!(benches);
