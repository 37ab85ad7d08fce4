//! feral-wal: operator tool for one log directory: append synthetic ops, check, dump.
//!
//! Exit codes: 0 ok, 1 other error, 2 usage, 65 corruption, 75 disk full.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use feral_log::limits::SEGMENT_BYTES_DEFAULT;
use feral_log::{Config, Error, OpDraft, PauseKind, Wal};

const EXIT_OTHER: u8 = 1;
const EXIT_CORRUPTION: u8 = 65;
const EXIT_DISK_FULL: u8 = 75;

#[derive(Parser, Debug)]
#[command(name = "feral-wal", version, about = "Operate on a feral-memory log directory")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append synthetic ops; prints one JSON line per acknowledged (durable) op.
    Append {
        /// The log directory (created if missing).
        dir: PathBuf,
        /// How many ops to append.
        #[arg(long)]
        count: u64,
        /// Size of each op's data in bytes.
        #[arg(long, default_value_t = 256)]
        bytes: usize,
        /// Segment size, used only when the log is created.
        #[arg(long, default_value_t = SEGMENT_BYTES_DEFAULT)]
        segment_bytes: u64,
        /// Concurrent appenders (they share fdatasyncs through group commit).
        #[arg(long, default_value_t = 1)]
        threads: u64,
    },
    /// Verify every record, footer and the index; exit 0 only when all is well.
    Check {
        /// The log directory.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A round trip: append ops from several threads, reopen, verify, read back.
    Demo {
        /// Where to put the log (a new temporary directory when omitted).
        dir: Option<PathBuf>,
        /// How many ops to append.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
    },
    /// List the records in LSN order.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Past a damaged record, go on with the next intact one (resynchronising on the next
        /// valid frame) instead of stopping; read-only, without the log's lock, so it works on a
        /// directory moved aside. Lists every intact record, reports the damaged stretches on
        /// stderr, and exits 65 when there were any.
        #[arg(long)]
        salvage: bool,
    },
}

fn exit_code(error: &Error) -> u8 {
    match error {
        Error::DiskFull { .. } => EXIT_DISK_FULL,
        Error::Paused { kind: PauseKind::DiskFull, .. } => EXIT_DISK_FULL,
        Error::Corruption(_) | Error::IndexCorruption(_) => EXIT_CORRUPTION,
        Error::Paused { kind: PauseKind::Corruption, .. } => EXIT_CORRUPTION,
        _ => EXIT_OTHER,
    }
}

fn open(dir: &PathBuf, segment_bytes: u64) -> Result<Wal, Error> {
    Wal::open(dir, Config { segment_bytes, ..Config::default() })
}

fn append(
    dir: &PathBuf,
    count: u64,
    bytes: usize,
    segment_bytes: u64,
    threads: u64,
) -> Result<(), Error> {
    let wal = open(dir, segment_bytes)?;
    if let Some(pause) = wal.pause() {
        return Err(Error::Paused { kind: pause.kind, reason: pause.detail });
    }
    let threads = threads.clamp(1, 256);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let wal = wal.clone();
            let next = next.clone();
            std::thread::spawn(move || -> Result<(), Error> {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return Ok(());
                    }
                    let mut data = vec![b'x'; bytes];
                    let tag = i.to_string();
                    let n = tag.len().min(data.len());
                    data[..n].copy_from_slice(&tag.as_bytes()[..n]);
                    let done =
                        wal.append(OpDraft::insert("synthetic", format!("row-{i}"), data))?;
                    println!(
                        "{{\"lsn\":{},\"op_id\":\"{}\",\"seq\":{},\"hlc\":\"{}\"}}",
                        done.lsn, done.op_id, done.seq, done.hlc
                    );
                }
            })
        })
        .collect();
    let mut first_error = None;
    for worker in workers {
        let outcome = worker
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidConfig("appender thread panicked".into())));
        if let (Err(e), None) = (outcome, &first_error) {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Opens an existing log for reading commands; they never create one.
fn open_existing(dir: &PathBuf) -> Result<Wal, Error> {
    if !dir.join(feral_log::wal::WAL_DIR).is_dir() {
        return Err(Error::InvalidConfig(format!("no log at {}", dir.display())));
    }
    open(dir, SEGMENT_BYTES_DEFAULT)
}

fn check(dir: &PathBuf, json: bool) -> Result<u8, Error> {
    let wal = open_existing(dir)?;
    let report = wal.check();
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else if report.ok {
        println!("ok: {} records in {} segments", report.records, report.segments);
    } else {
        println!(
            "FAILED: {} (wal {:?}, index {:?})",
            report.error.map_or("unknown", feral_log::Code::as_str),
            report.wal_detail,
            report.index_detail
        );
    }
    Ok(if report.ok { 0 } else { EXIT_CORRUPTION })
}

fn dump(dir: &PathBuf, json: bool) -> Result<(), Error> {
    let wal = open_existing(dir)?;
    wal.scan(1, &mut |record| {
        print_record(record.lsn, record.segment, record.offset, &record.op, json);
        Ok(true)
    })
}

fn print_record(lsn: u64, segment: u64, offset: u64, op: &feral_log::Op, json: bool) {
    if json {
        let line = serde_json::json!({
            "lsn": lsn, "segment": segment, "offset": offset,
            "op_id": op.op_id.to_string(), "origin": op.origin.to_string(), "seq": op.seq,
            "hlc": op.hlc.to_string(), "table": op.table, "row_id": op.row_id,
            "kind": op.kind.as_str(), "data_bytes": op.data.len(),
        });
        println!("{line}");
    } else {
        println!(
            "{} {} {} {} {} {}/{} {} {}B",
            lsn,
            op.op_id,
            op.origin,
            op.seq,
            op.hlc,
            op.table,
            op.row_id,
            op.kind.as_str(),
            op.data.len()
        );
    }
}

/// `dump --salvage`: every intact record of `dir`'s `wal/` (or of `dir` itself when it holds
/// the segments), then the report on stderr. Exit 0 when nothing was damaged, 65 otherwise.
fn salvage(dir: &std::path::Path, json: bool) -> Result<u8, Error> {
    let wal_dir = if dir.join(feral_log::wal::WAL_DIR).is_dir() {
        dir.join(feral_log::wal::WAL_DIR)
    } else {
        dir.to_path_buf()
    };
    let storage: Arc<dyn feral_log::Storage> = Arc::new(feral_log::FsStorage);
    let report = feral_log::salvage::salvage(&storage, &wal_dir, &mut |found| {
        // Salvage hands over only payloads that decode.
        if let Ok(op) = feral_log::codec::decode_payload(found.bytes.as_slice()) {
            print_record(found.lsn, found.segment, found.offset, &op, json);
        }
        Ok(())
    })?;
    if json {
        eprintln!("{}", serde_json::json!({ "salvage": report }));
    } else {
        eprintln!(
            "salvage: {} intact records in {} segments; {} damaged stretches, {} LSNs missing between intact records, {} frames that are not ops, {} unreadable segments",
            report.records,
            report.segments,
            report.damaged.len() as u64 + report.damaged_unlisted,
            report.missing_lsns,
            report.undecodable,
            report.unreadable.len()
        );
        for d in &report.damaged {
            let after = d.after_lsn.map_or("the start".to_string(), |l| format!("LSN {l}"));
            let before = d.before_lsn.map_or("the end".to_string(), |l| format!("LSN {l}"));
            eprintln!(
                "  damaged: {} bytes {}..{} (after {after}, before {before}): {}",
                d.segment, d.from_offset, d.to_offset, d.reason
            );
        }
        for (segment, why) in &report.unreadable {
            eprintln!("  unreadable: {segment}: {why}");
        }
    }
    Ok(if report.clean() { 0 } else { EXIT_CORRUPTION })
}

fn demo(dir: Option<PathBuf>, count: u64) -> Result<u8, Error> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("feral-wal-demo-{}", std::process::id()))
    });
    println!("log directory: {}", dir.display());
    let started = std::time::Instant::now();
    let wal = open(&dir, SEGMENT_BYTES_DEFAULT)?;
    let first = wal.durable_lsn() + 1;
    let threads = 8;
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|s| -> Result<(), Error> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || -> Result<(), Error> {
                    for i in 0..per_thread {
                        let row = format!("row-{t}-{i}");
                        wal.append(OpDraft::insert("demo", row, vec![b'x'; 256]))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .unwrap_or_else(|_| Err(Error::InvalidConfig("thread panicked".into())))?;
        }
        Ok(())
    })?;
    let appended = wal.durable_lsn() + 1 - first;
    let elapsed = started.elapsed();
    println!(
        "appended {appended} durable ops from {threads} threads in {:.2?} ({:.0} ops/s)",
        elapsed,
        appended as f64 / elapsed.as_secs_f64()
    );
    drop(wal);
    let wal = open(&dir, SEGMENT_BYTES_DEFAULT)?;
    let report = wal.check();
    println!("reopened and checked: {}", serde_json::to_string(&report).unwrap_or_default());
    let mut shown = 0;
    wal.scan(first, &mut |record| {
        println!(
            "  lsn {} op {} seq {} hlc {}",
            record.lsn, record.op.op_id, record.op.seq, record.op.hlc
        );
        shown += 1;
        Ok(shown < 3)
    })?;
    println!("status: {}", serde_json::to_string(&wal.status()).unwrap_or_default());
    Ok(if report.ok { 0 } else { EXIT_CORRUPTION })
}

fn main() -> ExitCode {
    tracing_init();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Append { dir, count, bytes, segment_bytes, threads } => {
            append(dir, *count, *bytes, *segment_bytes, *threads).map(|()| 0)
        }
        Command::Check { dir, json } => check(dir, *json),
        Command::Dump { dir, json, salvage: true } => salvage(dir, *json),
        Command::Dump { dir, json, salvage: false } => dump(dir, *json).map(|()| 0),
        Command::Demo { dir, count } => demo(dir.clone(), *count),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("feral-wal: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (warnings by default).
fn tracing_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
