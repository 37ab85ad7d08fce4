//! `feral-node`: the command line of one feral-memory store (init, append, read, check,
//! resume, rebuild, digest, backup, restore). Exit codes: 0 ok, 1 other failure, 2 usage,
//! 65 data corruption, 75 disk full. Every error is one line on stderr.

mod cli_append;
mod cli_heal;
mod cli_read;
mod cli_remote;
mod cli_sync;
mod cli_watch;
mod demo;
mod out;
mod progress;

use out::out;

/// mimalloc, not the system allocator: the indexing thread frees every search document the
/// applier thread allocated, and glibc's per-thread arenas made such cross-thread frees cost
/// ingest a third of its throughput in about half of the runs (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use feral_log::Config;
use feral_memory::{CheckReport, Error, Node, backup};
use serde::Serialize;

/// Exit status for damaged data (EX_DATAERR).
pub(crate) const EXIT_CORRUPTION: u8 = 65;
/// Exit status for a full disk (EX_TEMPFAIL: free space and retry).
pub(crate) const EXIT_DISK_FULL: u8 = 75;

#[derive(Debug, Parser)]
#[command(name = "feral-node", version, about = "An assistant's long-term memory store")]
struct Cli {
    /// Data directory (default: $FERAL_DATA_DIR, else the platform data directory).
    #[arg(long, global = true, env = "FERAL_DATA_DIR")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the store (log, index, projection, node key); harmless when it exists.
    Init {
        /// Segment size in bytes (a multiple of 4096), fixed when the store is created.
        #[arg(long)]
        segment_bytes: Option<u64>,
    },
    /// Append episodes: one JSON object per line on stdin (or --file); an optional "op_id" of
    /// 32 hex characters makes a retry idempotent. Prints one line per op: op_id and hlc.
    Append {
        /// Read from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Append nothing if any line is refused.
        #[arg(long)]
        strict: bool,
        /// One JSON object per op instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List episodes, newest first (one page; --all pages through every one).
    Episodes(cli_read::ListArgs),
    /// Search episodes by their words (BM25 over summary and detail), best first.
    Search(cli_read::SearchArgs),
    /// Print the change feed: every op of the log in order, following a running node's.
    Watch(cli_watch::WatchArgs),
    /// The running node's peers as a table: sessions in flight, last sync, last error, and
    /// how far apart the two were at the last session.
    Peers {
        /// The API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one episode.
    Get {
        /// Episode id.
        id: String,
        /// JSON output (one line).
        #[arg(long)]
        json: bool,
    },
    /// Delete an episode (a tombstone that also wins over older inserts arriving later).
    Delete {
        /// Episode id.
        id: String,
        /// A caller-chosen op_id (32 hex characters) so a retry is idempotent.
        #[arg(long)]
        op_id: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show the node's state.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List quarantined conflicts: origins whose key signed two different ops at one seq (a
    /// copied data directory with its key, or a lying node), which stop advancing here.
    Conflicts {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Resolve one instead of listing.
        #[command(subcommand)]
        action: Option<ConflictAction>,
    },
    /// Verify every record, footer, the index and the projection (exit 65 when damaged).
    Check {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Re-verify after a fault (disk full, failed sync, restore) and clear the pause.
    Resume {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Recreate the index and the projection from the log alone.
    Rebuild {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The canonical SHA-256 digest of ops and episodes (equal on stores holding equal ops).
    Digest {
        /// JSON object with both halves and counts.
        #[arg(long)]
        json: bool,
    },
    /// The canonical dump: one JSON line per op, by (origin, seq), then per episode row.
    Dump,
    /// Back the store up into an empty directory while it stays usable.
    Backup {
        /// Target directory (absent or empty).
        #[arg(long)]
        to: PathBuf,
        /// JSON output (the manifest).
        #[arg(long)]
        json: bool,
    },
    /// Certificates: a cluster CA, this node's certificate.
    Certs {
        #[command(subcommand)]
        command: cli_sync::Certs,
    },
    /// Run the node: serve sync, find peers (mDNS and static), sync on a schedule; until
    /// SIGINT or SIGTERM. On a fresh machine it creates the store, a local CA and a certificate.
    Run {
        /// QUIC address to listen on [default 0.0.0.0:7411].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Seconds between syncs with each peer [default 30].
        #[arg(long)]
        sync_interval: Option<u64>,
        /// Do not advertise or browse with mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// Static peers, `host:port,host:port` (also $FERAL_SYNC_PEERS).
        #[arg(long, env = "FERAL_SYNC_PEERS")]
        peers: Option<String>,
        /// HTTP API address [default 127.0.0.1:7412]; off loopback a bearer token from
        /// <data>/api.token is required.
        #[arg(long)]
        api: Option<std::net::SocketAddr>,
        /// A TOML config file [default <data>/feral.toml, if present]: listen, api,
        /// sync_interval_secs, mdns, peers, connect_timeout_ms, handshake_timeout_ms,
        /// scrub_bytes_per_sec, scrub_every_secs. Flags win over it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bytes per second the background scrub of sealed segments reads at most [default
        /// 8388608]; 0 turns it off.
        #[arg(long)]
        scrub_rate: Option<u64>,
        /// Seconds between two scrub passes over the sealed segments [default 600].
        #[arg(long)]
        scrub_every: Option<u64>,
    },
    /// Run one sync session with a peer and print the result object.
    Sync {
        /// The peer's QUIC address.
        #[arg(long)]
        peer: std::net::SocketAddr,
        /// JSON output (one line).
        #[arg(long)]
        json: bool,
    },
    /// Heal damaged log records from the peers through the running node: check (which finds
    /// the damage), sync with every known peer until no damaged record is left or a round
    /// mends nothing more, then check again. Exit 0 when healed, 65 when records stay
    /// damaged (no peer holds them: they are listed).
    Heal {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        within: u64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Two nodes on loopback (in a new temporary directory unless --data is given) with their
    /// own CA: both write episodes, they sync over QUIC with mutual TLS, and the demo prints
    /// what moved, the time it took and the two equal digests.
    Demo,
    /// The last resort for a damaged store with no backup and no peer: every intact record of
    /// the data directory FROM (past damaged ones) into a fresh store at --data (absent or
    /// empty), with FROM's node key and certificates and a new origin. FROM is only read.
    Salvage {
        /// The damaged data directory (for instance the one a restore moved aside).
        #[arg(long)]
        from: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Export every live row of every table as JSON lines on stdout
    /// (`{"table","row_id","hlc","op_id","data"}`), or with --ops every op of the log.
    Export {
        /// JSON lines (the one format; required so a later format is never a surprise).
        #[arg(long, required = true)]
        jsonl: bool,
        /// Every op of the log, in log order, instead of the live rows.
        #[arg(long)]
        ops: bool,
    },
    /// Import the original system's SQLite memory (`memory.db`): its episodes table as
    /// episodes (row ids and created_at kept), every other table as rows of the same name.
    /// Running it again appends nothing new; prints what was imported and what was skipped
    /// and why (exit 1 when anything was skipped).
    Import {
        /// The SQLite database.
        #[arg(long)]
        sqlite: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print the HTTP API's OpenAPI 3.1 description (what `GET /v1/openapi.json` serves;
    /// docs/openapi.json is a copy). Needs no data directory.
    Openapi,
    /// Restore a backup into --data (absent or empty; --force moves an existing one aside).
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// Move an existing store aside instead of refusing.
        #[arg(long)]
        force: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// A failure with its exit status.
struct Failure {
    status: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = if e.is_disk_full() {
            EXIT_DISK_FULL
        } else if e.is_corruption() {
            EXIT_CORRUPTION
        } else {
            1
        };
        Failure { status, message: e.to_string() }
    }
}

fn fail(status: u8, message: impl Into<String>) -> Failure {
    Failure { status, message: message.into() }
}

type Outcome = Result<u8, Failure>;

/// mimalloc's option `purge_delay` (`mi_option_purge_delay` in mimalloc.h, the same number
/// in its versions 2 and 3; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays with the allocator before it goes back to the system.
/// mimalloc's default (1 s) let a node receiving 1,000,000 ops hold 290 MiB resident; 100 ms
/// holds it at 227 MiB at the same speed (0 ms: 254 MiB, 27 % slower). docs/performance.md.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Allocator settings that keep the node's resident memory near what it uses:
/// - transparent huge pages off for this process: mimalloc asks for them on its arenas
///   (`madvise(MADV_HUGEPAGE)`), and a 2 MiB page stays resident while any byte of it is in
///   use (with them the receiver above peaked at 403 MiB). Pages already made huge keep
///   their size; the flag covers every later fault, and children inherit it;
/// - freed memory returned after [`ALLOCATOR_PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY`
///   says otherwise.
fn allocator_settings() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        // Kernels before 3.15 lack it: the node works the same, with more memory.
        eprintln!(
            "feral-node: warning: could not turn off transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; called first thing in main, before any other
        // thread exists (mimalloc reads the option each time it schedules a purge).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
    }
}

fn main() -> ExitCode {
    // Everything this process creates is private to its user whatever umask it inherited
    // (the library also creates each file 0600 and directory 0700 itself; this covers files
    // other code creates, such as temporary files).
    // SAFETY: umask only replaces the process's file mode mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    allocator_settings();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if matches!(cli.command, Command::Demo) {
        return match demo::run(cli.data.as_deref()) {
            Ok(()) if out::failure().is_none() => ExitCode::SUCCESS,
            Ok(()) => {
                eprintln!(
                    "feral-node: error: demo: writing the output: {}",
                    out::failure().unwrap_or_default()
                );
                ExitCode::from(1)
            }
            Err(f) => {
                eprintln!("feral-node: error: demo: {}", f.message);
                ExitCode::from(f.status)
            }
        };
    }
    if matches!(cli.command, Command::Openapi) {
        match feral_memory::api::openapi().to_pretty_json() {
            Ok(text) => out!("{text}"),
            Err(e) => {
                eprintln!("feral-node: error: openapi: {e}");
                return ExitCode::from(1);
            }
        }
        return match out::failure() {
            None => ExitCode::SUCCESS,
            Some(e) => {
                eprintln!("feral-node: error: openapi: writing the output: {e}");
                ExitCode::from(1)
            }
        };
    }
    let data = match cli.data.clone().or_else(default_data_dir) {
        Some(dir) => dir,
        None => {
            eprintln!("feral-node: error: no data directory: pass --data or set FERAL_DATA_DIR");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, &data) {
        Ok(status) => match out::failure() {
            None => ExitCode::from(status),
            Some(e) => {
                eprintln!("feral-node: error: {}: writing the output: {e}", data.display());
                ExitCode::from(1)
            }
        },
        Err(f) => {
            eprintln!("feral-node: error: {}: {}", data.display(), f.message);
            ExitCode::from(f.status)
        }
    }
}

/// `$XDG_DATA_HOME/feral-memory`, else `~/.local/share/feral-memory`
/// (`~/Library/Application Support/feral-memory` on macOS).
fn default_data_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("feral-memory"));
    }
    let home = PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?);
    if cfg!(target_os = "macos") {
        return Some(home.join("Library/Application Support/feral-memory"));
    }
    Some(home.join(".local/share/feral-memory"))
}

fn open(data: &Path) -> Result<Node, Failure> {
    open_with(data, config())
}

/// Opens an existing store with `config`.
fn open_with(data: &Path, config: Config) -> Result<Node, Failure> {
    if !data.join(feral_log::wal::ORIGIN_FILE).exists() {
        return Err(fail(1, "no store here; run `feral-node init` first"));
    }
    Ok(Node::open(data, config)?)
}

/// The store configuration; the chaos suite's disk-full switch when its variable is set.
pub(crate) fn config() -> Config {
    let mut config = Config::default();
    if let Some(storage) = feral_log::fault::storage_from_env() {
        config.storage = storage;
    }
    config
}

/// What an import did; exit 1 when a row was skipped.
pub(crate) fn print_import(imported: &feral_memory::import::Imported, json: bool) -> Outcome {
    if json {
        print_json(imported, false)?;
    } else {
        for t in &imported.tables {
            out!(
                "{}: {} rows, {} imported, {} already there, {} skipped",
                t.table,
                t.rows,
                t.imported,
                t.duplicates,
                t.skipped
            );
        }
        for s in &imported.skips {
            out!("skipped {} {}: {}", s.table, s.row_id.as_deref().unwrap_or("?"), s.reason);
        }
        for note in &imported.notes {
            out!("note: {note}");
        }
    }
    Ok(if imported.complete() { 0 } else { 1 })
}

fn print_json(value: &impl Serialize, pretty: bool) -> Outcome {
    let text =
        if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
    out!("{}", text.map_err(|e| fail(1, e.to_string()))?);
    Ok(0)
}

/// What to do with a quarantined conflict.
#[derive(Debug, Subcommand)]
pub(crate) enum ConflictAction {
    /// Keep this node's branch of ORIGIN: the origin advances again here with the ops that
    /// continue what this node holds; ops of the other branch stay refused (and counted), the
    /// evidence stays in conflicts/. Goes through the node's API when it runs.
    Resolve {
        /// The quarantined origin (32 hex characters).
        origin: String,
    },
}

/// Prints a resolved conflict (as `POST /v1/conflicts/{origin}/resolve` answers it).
fn print_resolved(resolved: &serde_json::Value, json: bool) -> Outcome {
    if json {
        return print_json(resolved, false);
    }
    out!(
        "resolved: origin {} advances again from seq {} with this node's branch",
        resolved["origin"].as_str().unwrap_or("-"),
        resolved["seq"]
    );
    Ok(0)
}

/// Prints the conflicts (a JSON list, as in status): one line each, or that there are none.
fn print_conflicts(conflicts: &serde_json::Value, json: bool) -> Outcome {
    if json {
        return print_json(conflicts, false);
    }
    let list = conflicts.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        out!("no conflicts");
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    for c in list {
        out!(
            "origin {} quarantined from seq {}: held {}, other {}, found at {} ms, evidence {}",
            text(&c["origin"]),
            c["seq"],
            text(&c["held_op_id"]),
            text(&c["other_op_id"]),
            c["found_at_ms"],
            c["evidence"].as_str().map_or("not kept".to_string(), |e| format!("conflicts/{e}"))
        );
    }
    Ok(0)
}

fn run(command: Command, data: &Path) -> Outcome {
    if let Some(remote) = cli_remote::Remote::find(data) {
        return cli_remote::forward(command, &remote);
    }
    match command {
        Command::Init { segment_bytes } => init(data, segment_bytes),
        Command::Append { file, strict, json } => {
            let node = open(data)?;
            let status = cli_append::run(&node, file.as_deref(), strict, json)?;
            node.close()?;
            Ok(status)
        }
        Command::Episodes(args) => {
            let node = open(data)?;
            let status = cli_read::list_local(&node, args)?;
            node.close()?;
            Ok(status)
        }
        Command::Search(args) => {
            let node = open(data)?;
            let status = cli_read::local(&node, args)?;
            node.close()?;
            Ok(status)
        }
        Command::Peers { .. } => Err(fail(
            1,
            "no node is running on this store: its peers are known to a running node (feral-node run)",
        )),
        Command::Watch(args) => {
            let node = open(data)?;
            let status = cli_watch::local(&node, args)?;
            node.close()?;
            Ok(status)
        }
        Command::Get { id, json } => {
            let node = open(data)?;
            match node.episode(&id)? {
                Some(view) => print_json(&view, !json),
                None => Err(fail(1, format!("episode {id:?} not found"))),
            }
        }
        Command::Delete { id, op_id, json } => {
            let node = open(data)?;
            let op_id =
                op_id.map(|t| feral_log::OpId::parse(&t)).transpose().map_err(Error::from)?;
            let done = node.delete_episode(&id, op_id)?;
            node.close()?;
            let line = cli_append::AppendedLine::new(None, &done);
            if json {
                return print_json(&line, false);
            }
            out!("{}", line.text());
            Ok(0)
        }
        Command::Status { json } => {
            let node = open(data)?;
            print_json(&node.status(), !json)
        }
        Command::Conflicts { json, action: None } => {
            let node = open(data)?;
            let conflicts = serde_json::to_value(node.status().conflicts)
                .map_err(|e| fail(1, format!("conflicts as JSON: {e}")))?;
            print_conflicts(&conflicts, json)
        }
        Command::Conflicts { json, action: Some(ConflictAction::Resolve { origin }) } => {
            let origin = feral_memory::log::Origin::parse(&origin)
                .map_err(|_| fail(2, format!("{origin:?} is not an origin (32 hex characters)")))?;
            let node = open(data)?;
            let Some(resolved) = node.resolve_conflict(&origin)? else {
                return Err(fail(1, format!("no conflict is quarantined for origin {origin}")));
            };
            node.close()?;
            let resolved = serde_json::to_value(&resolved).map_err(|e| fail(1, e.to_string()))?;
            print_resolved(&resolved, json)
        }
        Command::Check { json } => {
            let node = open(data)?;
            report(&node.check(), json)
        }
        Command::Resume { json } => {
            let node = open(data)?;
            let outcome = report(&node.resume(), json);
            node.close()?;
            outcome
        }
        Command::Rebuild { json } => {
            let (indexed, projected) = progress::with_meter("rebuild", |meter| {
                let node = open_with(data, Config { meter: meter.clone(), ..config() })?;
                let rebuilt = node.rebuild()?;
                node.close()?;
                Ok::<_, Failure>(rebuilt)
            })?;
            let out = serde_json::json!({
                "ops_indexed_through_lsn": indexed, "ops_projected": projected,
            });
            print_rebuilt(&out, json)
        }
        Command::Digest { json } => {
            let node = open(data)?;
            let digest = node.digest()?;
            if json {
                return print_json(&digest, false);
            }
            out!("{}", digest.digest);
            Ok(0)
        }
        Command::Dump => {
            let node = open(data)?;
            let mut out = std::io::BufWriter::new(out::Stdout);
            node.dump(&mut out)?;
            std::io::Write::flush(&mut out).map_err(|e| fail(1, e.to_string()))?;
            Ok(0)
        }
        Command::Backup { to, json } => {
            let what = format!("backup to {}", to.display());
            let manifest = progress::with_meter(&what, |meter| {
                let node = open_with(data, Config { meter: meter.clone(), ..config() })?;
                Ok::<_, Failure>(node.backup(&to)?)
            })?;
            print_backup(&manifest, &to, json)
        }
        // Both handled before a data directory is chosen.
        Command::Demo | Command::Openapi => Ok(0),
        Command::Certs { command } => cli_sync::certs(command, data),
        Command::Run {
            listen,
            sync_interval,
            no_mdns,
            peers,
            api,
            config,
            scrub_rate,
            scrub_every,
        } => {
            let flags = cli_sync::RunFlags {
                listen,
                sync_interval,
                no_mdns,
                peers,
                api,
                config,
                scrub_rate,
                scrub_every,
            };
            cli_sync::run(data, flags)
        }
        Command::Sync { peer, json } => cli_sync::sync(data, peer, json),
        Command::Heal { .. } => Err(fail(
            1,
            "heal fetches damaged records from the peers through the running node: start it \
             (`feral-node run`), then run `feral-node heal` (on a stopped store, `check` finds \
             damage and `salvage` recovers every intact record)",
        )),
        Command::Salvage { from, json } => {
            let what = format!("salvage of {}", from.display());
            let salvaged = progress::with_meter(&what, |meter| {
                let config = Config { meter: meter.clone(), ..config() };
                feral_memory::salvage::salvage_into(&from, data, config)
            })?;
            if json {
                print_json(&salvaged, false)?;
            } else {
                let s = &salvaged.salvage;
                out!(
                    "salvaged {} records of {} into {} (new origin {}); {} damaged stretches, {} LSNs missing between intact records, {} records refused",
                    salvaged.imported,
                    from.display(),
                    data.display(),
                    salvaged.origin,
                    s.damaged.len() as u64 + s.damaged_unlisted,
                    s.missing_lsns,
                    salvaged.refused
                );
            }
            Ok(if salvaged.salvage.clean() && salvaged.refused == 0 { 0 } else { EXIT_CORRUPTION })
        }
        Command::Export { jsonl: _, ops } => {
            let node = open(data)?;
            let mut out = std::io::BufWriter::new(out::Stdout);
            let written = if ops {
                feral_memory::export::export_ops(&node, &mut out)?
            } else {
                feral_memory::export::export_rows(&node, &mut out)?
            };
            std::io::Write::flush(&mut out).map_err(|e| fail(1, e.to_string()))?;
            let what = if ops { "ops" } else { "rows" };
            eprintln!("exported {written} {what}");
            Ok(0)
        }
        Command::Import { sqlite, json } => {
            let what = format!("import of {}", sqlite.display());
            let imported = progress::with_meter(&what, |meter| {
                let node = open_with(data, config())?;
                let imported = feral_memory::import::import_sqlite(&node, &sqlite, meter)?;
                node.close()?;
                Ok::<_, Failure>(imported)
            })?;
            print_import(&imported, json)
        }
        Command::Restore { from, force, json } => {
            let what = format!("restore from {}", from.display());
            let restored = progress::with_meter(&what, |meter| {
                let config = Config { meter: meter.clone(), ..Config::default() };
                backup::restore(&from, data, force, config)
            })?;
            if json {
                return print_json(&restored, false);
            }
            out!(
                "restored {} into {} with new origin {}",
                from.display(),
                data.display(),
                restored.origin
            );
            if let Some(aside) = &restored.moved_aside {
                out!("the previous directory was moved to {}", aside.display());
            }
            Ok(0)
        }
    }
}

fn init(data: &Path, segment_bytes: Option<u64>) -> Outcome {
    let existed = data.join(feral_log::wal::ORIGIN_FILE).exists();
    let mut config = config();
    if let Some(bytes) = segment_bytes {
        config.segment_bytes = bytes;
    }
    if !existed {
        // Each segment is reserved whole when it is created: a store whose first segment does
        // not fit could take no write at all.
        let free = feral_log::storage::available_bytes(data).map_err(|e| {
            fail(1, format!("cannot read the free space at {}: {e}", data.display()))
        })?;
        if config.segment_bytes > free {
            return Err(fail(
                1,
                format!(
                    "refusing to create a store at {} with segments of {} bytes ({:.1} MiB): the volume has {free} bytes ({:.1} MiB) free, and each segment is reserved whole when it is created; free space, or give --segment-bytes of at most {} (a multiple of 4096)",
                    data.display(),
                    config.segment_bytes,
                    config.segment_bytes as f64 / 1048576.0,
                    free as f64 / 1048576.0,
                    free / 2 / 4096 * 4096,
                ),
            ));
        }
    }
    let node = Node::open(data, config)?;
    let (id, origin) = (node.node_id(), node.wal().origin());
    node.close()?;
    let verb = if existed { "already initialised" } else { "initialised" };
    out!("{verb} {} (node id {id}, origin {origin})", data.display());
    if existed && segment_bytes.is_some() {
        eprintln!("feral-node: note: --segment-bytes only applies when a store is created");
    }
    Ok(0)
}

/// Prints what a rebuild did (`ops_indexed_through_lsn`, `ops_projected`).
pub(crate) fn print_rebuilt(rebuilt: &serde_json::Value, json: bool) -> Outcome {
    if json {
        return print_json(rebuilt, false);
    }
    out!(
        "index rebuilt through LSN {}; {} ops projected",
        rebuilt["ops_indexed_through_lsn"],
        rebuilt["ops_projected"]
    );
    Ok(0)
}

/// Prints what a backup wrote.
pub(crate) fn print_backup(
    manifest: &feral_memory::backup::Manifest,
    to: &Path,
    json: bool,
) -> Outcome {
    if json {
        return print_json(manifest, false);
    }
    let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    out!(
        "backed up {} files ({bytes} bytes, through LSN {}) to {}",
        manifest.files.len(),
        manifest.durable_lsn,
        to.display()
    );
    Ok(0)
}

/// Prints a check report; exit 0 when ok, 65 when damaged, 1 when a part could not be read.
fn report(report: &CheckReport, json: bool) -> Outcome {
    if json {
        print_json(report, false)?;
    } else if report.ok {
        out!(
            "ok: {} records in {} segments verified; index and episodes ok",
            report.records,
            report.segments
        );
    } else {
        print_json(report, true)?;
    }
    Ok(match report.error {
        None => 0,
        Some(code) if code.is_corruption() => EXIT_CORRUPTION,
        Some(_) => 1,
    })
}
