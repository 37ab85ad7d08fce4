//! The `Wal`: segmented log + redb index + clock for one data directory, with group commit,
//! idempotent appends, pause on disk faults, and resume after re-verification.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use crate::error::{Error, Result};
use crate::hlc::{Clock, Hlc, SystemTime, TimeSource};
use crate::index::Index;
use crate::indexer::IndexQueue;
use crate::inflight::InflightSet;
use crate::limits::{
    HLC_DRIFT_MS_MAX_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
use crate::lock::DirLock;
use crate::op::{Op, OpDraft, OpId, Origin};
use crate::recovery::{self, TornTail};
use crate::segment::{ActiveSegment, Header};
use crate::storage::{FsStorage, Storage};
use feral_types::EncodedOp;
use feral_types::proof::{Genesis, RunDigest, Signer};

/// Subdirectory holding the segments.
pub const WAL_DIR: &str = "wal";
/// File holding the index.
pub const INDEX_FILE: &str = "index.redb";
/// File holding this directory's origin (32 hex characters).
pub const ORIGIN_FILE: &str = "ORIGIN";

/// Local log position: 1, 2, 3… in the order records were written here.
pub type Lsn = u64;

/// What a submission of received ops gives back: one result per op, and their ops.
pub type Ingested = (Vec<Appended>, Vec<Op>);
/// A submission refused before anything of it was queued, with what was submitted.
pub type Refused<T> = (Error, Vec<T>);

/// How a [`Wal`] is opened.
#[derive(Debug, Clone)]
pub struct Config {
    /// Capacity of each new segment (only when the log is created; later segments copy the last).
    pub segment_bytes: u64,
    /// Remote HLC stamps further ahead of local time than this are refused.
    pub drift_ms_max: u64,
    /// The storage seam (real filesystem by default).
    pub storage: Arc<dyn Storage>,
    /// Physical time source.
    pub time: Arc<dyn TimeSource>,
    /// The node key that owns this store's origin: with it, the origin id is made from the
    /// key, its first op carries the genesis and every commit seals its runs of local ops
    /// (see `feral_types::proof`). Without it (log tools and log tests), local ops carry no
    /// proof and no peer accepts them.
    pub signer: Option<Arc<Signer>>,
    /// Where long operations (the index rebuilt at open or by `rebuild`) report how far they
    /// got; off by default.
    pub meter: crate::meter::Meter,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            drift_ms_max: HLC_DRIFT_MS_MAX_DEFAULT,
            storage: Arc::new(FsStorage),
            time: Arc::new(SystemTime),
            signer: None,
            meter: crate::meter::Meter::off(),
        }
    }
}

/// Why the log stopped taking writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PauseKind {
    /// A write, sync, create or allocation ran out of space.
    DiskFull,
    /// fdatasync failed: the unsynced tail is not trusted until verified.
    SyncFailed,
    /// Another I/O error on the write path.
    IoError,
    /// Recovery or a read found damage that is not a torn tail.
    Corruption,
    /// The index could not be opened, written or trusted.
    IndexFailed,
}

/// The pause flag with its cause.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pause {
    /// The kind of fault.
    pub kind: PauseKind,
    /// The error text.
    pub detail: String,
}

/// The result of one op of an append or ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The op's id.
    pub op_id: OpId,
    /// Its origin.
    pub origin: Origin,
    /// Its seq.
    pub seq: u64,
    /// Its HLC.
    pub hlc: Hlc,
    /// Its local position.
    pub lsn: Lsn,
    /// True when the op was already present and nothing was written.
    pub duplicate: bool,
}

/// A snapshot of the log's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// This directory's writer incarnation.
    pub origin: String,
    /// Highest durable LSN.
    pub durable_lsn: Lsn,
    /// Number of segment files.
    pub segments: usize,
    /// The pause, if any.
    pub pause: Option<Pause>,
    /// The torn tail cut at the last open or resume.
    pub torn_tail: Option<TornTail>,
    /// The latest HLC the clock has reached.
    pub clock: String,
    /// Remote stamps refused for drift.
    pub drift_refusals: u64,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) content_hash: u64,
    pub(crate) op_id: OpId,
    pub(crate) origin: Origin,
    pub(crate) seq: u64,
    pub(crate) hlc: Hlc,
    pub(crate) body: Body,
    pub(crate) lsn: Lsn,
    pub(crate) local: bool,
    /// The first record of one caller's submission: a segment roll never falls inside a
    /// submission that fits in a segment, so a failed roll fails it whole (all or nothing).
    pub(crate) batch_start: bool,
}

/// What a queued record's payload is made from.
#[derive(Debug)]
pub(crate) enum Body {
    /// A local op, encoded by the commit leader outside the state lock.
    Op(Op),
    /// A received op's bytes, written as they came (never encoded again).
    Encoded(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Inflight {
    pub(crate) content_hash: u64,
    pub(crate) lsn: Lsn,
    pub(crate) origin: Origin,
    pub(crate) seq: u64,
    pub(crate) hlc: Hlc,
}

/// The store's one fault register: the log's own pause (disk full, failed sync, I/O error,
/// corruption, index failure) and the fault its embedder reports for a part derived from the
/// log (the episodes projection). Writes are refused while either is set; every reader of
/// "is the store paused, and why" reads it here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Set and cleared by the log (commit, indexer, load, resume).
    pub(crate) log: Option<Pause>,
    /// Set by [`Wal::stop_derived`], cleared by [`Wal::clear_derived`].
    pub(crate) derived: Option<Pause>,
}

impl Faults {
    /// The pause writes see: the log's first.
    pub(crate) fn first(&self) -> Option<&Pause> {
        self.log.as_ref().or(self.derived.as_ref())
    }
}

/// Everything the group commit shares, under one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) faults: Faults,
    pub(crate) next_lsn: Lsn,
    pub(crate) durable_lsn: Lsn,
    pub(crate) next_seq: u64,
    pub(crate) clock: Clock,
    pub(crate) pending: Vec<Pending>,
    /// An empty queue with capacity, swapped in when a leader takes `pending`.
    pub(crate) spare: Vec<Pending>,
    pub(crate) inflight: InflightSet,
    /// True while one thread writes a batch, checks or resumes; others wait on the condvar.
    pub(crate) leader: bool,
    pub(crate) failures: u64,
    pub(crate) segments: Vec<Lsn>,
    pub(crate) torn: Option<TornTail>,
    /// Damage found by the last load; reads past the trusted prefix report it.
    pub(crate) corruption: Option<crate::error::Location>,
}

impl State {
    /// Forgets queued and in-flight ops (used when state is reloaded from disk).
    pub(crate) fn clear_queue(&mut self) {
        self.pending.clear();
        self.inflight.clear();
    }
}

/// The active segment; only the leader touches it.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) active: Option<ActiveSegment>,
    pub(crate) capacity: u64,
    /// The frame buffer, kept between batches: a fresh large buffer per batch costs an
    /// mmap, page faults and zeroing, more than the copy into it.
    pub(crate) frames: Vec<u8>,
    /// Where the own origin's chain of runs stands. `None` until the first commit after a
    /// load (or a resume) reads it from the log.
    pub(crate) chain: Option<Chain>,
}

/// Where the own origin's chain of sealed runs stands (see `feral_types::proof`).
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// The own origin's ops written but not yet covered by a seal (a crash cut their commit):
    /// the next commit's seal covers them.
    pub(crate) open: Option<OpenRun>,
    /// The link a new run starts from: of the own origin's last op ([`proof::LINK_NONE`]
    /// before its first).
    pub(crate) link: [u8; 32],
}

/// A run of the own origin's ops that no seal covers yet.
#[derive(Debug, Clone)]
pub(crate) struct OpenRun {
    pub(crate) first_seq: u64,
    pub(crate) digest: RunDigest,
}

/// Everything the appenders and the indexer thread share.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) dir: PathBuf,
    pub(crate) wal_dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) origin: Origin,
    /// The genesis the origin's first op carries (with a signer).
    pub(crate) genesis: Option<Genesis>,
    pub(crate) payload_max: u32,
    pub(crate) state: Mutex<State>,
    /// Signalled when the durable LSN, the leader role, or the in-flight set changes.
    pub(crate) cond: Condvar,
    pub(crate) index: RwLock<Option<Index>>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) indexer: IndexQueue,
    /// Wakes the zeroer thread (only started when the storage allows it).
    pub(crate) zeroer: crate::zeroer::Zeroer,
    /// Serialises check, resume and rebuild among themselves; writers never take it.
    pub(crate) maintenance: Mutex<()>,
    /// Group commits so far (a check's scan steps aside while it moves).
    pub(crate) commits: std::sync::atomic::AtomicU64,
    /// Damaged records found in sealed segments (the log serves around them).
    pub(crate) damage: crate::damage::DamageRegister,
    /// True while the disk-full reserve file is held (`reserve.rs`).
    pub(crate) reserve_held: std::sync::atomic::AtomicBool,
    pub(crate) _lock: DirLock,
}

/// The handle's owner: stops the indexer thread and flushes the index when the last clone goes.
#[derive(Debug)]
pub(crate) struct Inner {
    core: Arc<Core>,
    thread: Option<std::thread::JoinHandle<()>>,
    zeroer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Core {
    /// Names the index file in place of redb's bare error, so messages point at the directory.
    pub(crate) fn index_error(&self, error: Error) -> Error {
        match error {
            Error::DiskFull { path, source } if path.is_relative() => {
                Error::DiskFull { path: self.dir.join(path), source }
            }
            Error::Io { path, source } if path.is_relative() => {
                Error::Io { path: self.dir.join(path), source }
            }
            other => other,
        }
    }
}

impl std::ops::Deref for Inner {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.core.indexer.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.core.zeroer.shutdown();
        if let Some(thread) = self.zeroer_thread.take() {
            let _ = thread.join();
        }
        let slot = self.core.index.read().unwrap_or_else(|p| p.into_inner());
        if let Some(Err(error)) = slot.as_ref().map(Index::flush) {
            tracing::warn!(%error, "index flush on close failed; the next open replays the log");
        }
    }
}

/// The durable op log of one data directory. Cheap to clone; clones share one log.
#[derive(Debug, Clone)]
pub struct Wal {
    pub(crate) inner: Arc<Inner>,
}

/// One op entering the log: written here, or received from a peer.
#[derive(Debug)]
pub(crate) enum Item {
    Local(OpDraft),
    Remote(EncodedOp),
}

/// Recovers from a poisoned mutex: every critical section leaves state consistent or paused.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This directory's origin, and with a signer its genesis. The origin file holds the origin
/// id and, for an origin made from a key, the nonce (`nonce <32 hex>` on the second line);
/// with a signer the two must make the id (a store whose key was swapped is refused).
fn read_origin(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    signer: Option<&Signer>,
) -> Result<(Origin, Option<Genesis>)> {
    let path = dir.join(ORIGIN_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (origin, nonce) = match signer {
                Some(s) => new_origin(s.spki()),
                None => (Origin::random(), None),
            };
            write_origin(dir, storage, origin, nonce)?;
            let genesis =
                signer.zip(nonce).map(|(s, nonce)| Genesis { spki: s.spki().to_vec(), nonce });
            return Ok((origin, genesis));
        }
        Err(e) => return Err(Error::from_io(&path, e)),
    };
    let bad = |what: &str| Error::InvalidConfig(format!("{}: {what}", path.display()));
    let mut lines = text.lines();
    let origin = lines
        .next()
        .and_then(|l| Origin::parse(l.trim()).ok())
        .ok_or_else(|| bad("the first line does not hold 32 hex characters"))?;
    let nonce = match lines.next().map(str::trim).filter(|l| !l.is_empty()) {
        Some(line) => Some(
            line.strip_prefix("nonce ")
                .and_then(crate::op::parse_hex16)
                .ok_or_else(|| bad("the second line is not `nonce <32 hex characters>`"))?,
        ),
        None => None,
    };
    let Some(signer) = signer else { return Ok((origin, None)) };
    let nonce = nonce.ok_or_else(|| {
        bad("this origin was not made from a node key (no nonce); such a store cannot sign its ops")
    })?;
    if feral_types::proof::origin_of(signer.spki(), &nonce) != origin {
        return Err(bad("the origin does not belong to this node's key (node.key was replaced?)"));
    }
    Ok((origin, Some(Genesis { spki: signer.spki().to_vec(), nonce })))
}

/// A new origin made from a key (SubjectPublicKeyInfo, DER): the id and its nonce.
pub fn new_origin(spki: &[u8]) -> (Origin, Option<[u8; 16]>) {
    let mut nonce = [0u8; 16];
    crate::op::random_bytes(&mut nonce);
    (feral_types::proof::origin_of(spki, &nonce), Some(nonce))
}

/// Writes a new origin file atomically (temp file, sync, rename, directory sync): the origin
/// and, for one made from a key, its nonce.
pub fn write_origin(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    origin: Origin,
    nonce: Option<[u8; 16]>,
) -> Result<Origin> {
    let path = dir.join(ORIGIN_FILE);
    let temp = dir.join(format!("{ORIGIN_FILE}.tmp"));
    let io = |e| Error::from_io(&path, e);
    let _ = storage.remove(&temp);
    let file = storage.create(&temp).map_err(io)?;
    let mut text = format!("{origin}\n");
    if let Some(nonce) = nonce {
        text.push_str("nonce ");
        nonce.iter().for_each(|b| text.push_str(&format!("{b:02x}")));
        text.push('\n');
    }
    file.write_all_at(text.as_bytes(), 0).map_err(io)?;
    file.sync_data().map_err(io)?;
    storage.rename(&temp, &path).map_err(io)?;
    storage.sync_dir(dir).map_err(io)?;
    Ok(origin)
}

impl Wal {
    /// Opens or creates the log in `dir`: takes the directory lock, recovers the segments,
    /// catches the index up. Damage does not fail the open: the log opens paused and
    /// [`Wal::check`] reports where.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&config.segment_bytes)
            || !config.segment_bytes.is_multiple_of(4096)
        {
            return Err(Error::InvalidConfig(format!(
                "segment size must be a multiple of 4096 in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}, got {}",
                config.segment_bytes
            )));
        }
        let wal_dir = dir.join(WAL_DIR);
        crate::private::create_dir_all(&wal_dir).map_err(|e| Error::from_io(&wal_dir, e))?;
        let dir_lock = DirLock::acquire(&dir)?;
        let (origin, genesis) = read_origin(&dir, &config.storage, config.signer.as_deref())?;
        let capacity =
            existing_capacity(&config.storage, &wal_dir)?.unwrap_or(config.segment_bytes);
        let probe = Header { base_lsn: 1, capacity, salt: 0 };
        let core = Arc::new(Core {
            payload_max: probe.payload_max(),
            state: Mutex::new(State {
                faults: Faults::default(),
                next_lsn: 1,
                durable_lsn: 0,
                next_seq: 1,
                clock: Clock::new(origin, config.drift_ms_max),
                pending: Vec::new(),
                spare: Vec::new(),
                inflight: InflightSet::default(),
                leader: true,
                failures: 0,
                segments: Vec::new(),
                torn: None,
                corruption: None,
            }),
            cond: Condvar::new(),
            index: RwLock::new(None),
            writer: Mutex::new(Writer { active: None, capacity, frames: Vec::new(), chain: None }),
            indexer: IndexQueue::default(),
            zeroer: crate::zeroer::Zeroer::default(),
            maintenance: Mutex::new(()),
            commits: std::sync::atomic::AtomicU64::new(0),
            damage: Default::default(),
            reserve_held: std::sync::atomic::AtomicBool::new(false),
            dir,
            wal_dir,
            config,
            origin,
            genesis,
            _lock: dir_lock,
        });
        let indexer = core.clone();
        let thread = std::thread::Builder::new()
            .name("feral-indexer".into())
            .spawn(move || crate::indexer::run(&indexer))
            .map_err(|e| Error::from_io("feral-indexer thread", e))?;
        // Zeros ahead of the frames, from a thread of its own, where the storage allows it.
        let zeroer_thread = match core.config.storage.zero_fill_ahead() {
            true => {
                let zeroer = core.clone();
                std::thread::Builder::new()
                    .name("feral-zeroer".into())
                    .spawn(move || crate::zeroer::run(&zeroer))
                    .map_err(|e| tracing::warn!(error = %e, "no zeroer thread; appends sync into unwritten extents"))
                    .ok()
            }
            false => None,
        };
        let wal = Wal { inner: Arc::new(Inner { core, thread: Some(thread), zeroer_thread }) };
        let mut state = lock(&wal.inner.state);
        wal.load(&mut state, None)?;
        wal.start_first_segment(&state);
        state.leader = false;
        let paused = state.faults.first().is_some();
        drop(state);
        wal.inner.zeroer.wake();
        if !paused {
            wal.hold_reserve();
        }
        Ok(wal)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer> {
        lock(&self.inner.writer)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// This directory's writer incarnation.
    pub fn origin(&self) -> Origin {
        self.inner.origin
    }

    /// How far ahead of local time a received HLC (and a caller's `created_at`) may be.
    pub fn drift_ms_max(&self) -> u64 {
        self.inner.config.drift_ms_max
    }

    /// Where long operations on this log report how far they got (see [`crate::meter`]).
    pub fn meter(&self) -> &crate::meter::Meter {
        &self.inner.config.meter
    }

    /// Highest durable LSN.
    pub fn durable_lsn(&self) -> Lsn {
        lock(&self.inner.state).durable_lsn
    }

    /// Why writes are refused, if they are: the log's own pause, else the derived part's
    /// fault ([`Wal::stop_derived`]).
    pub fn pause(&self) -> Option<Pause> {
        lock(&self.inner.state).faults.first().cloned()
    }

    /// The log's own pause only (what `resume` of the log clears).
    pub fn log_pause(&self) -> Option<Pause> {
        lock(&self.inner.state).faults.log.clone()
    }

    /// The fault of the part derived from the log, if it stopped.
    pub fn derived_fault(&self) -> Option<Pause> {
        lock(&self.inner.state).faults.derived.clone()
    }

    /// Records that a part derived from the log (the embedder's projection) stopped: writes
    /// are refused, with this pause, until [`Wal::clear_derived`]. A fault already recorded
    /// is kept (the first cause wins).
    pub fn stop_derived(&self, pause: Pause) {
        let full = pause.kind == PauseKind::DiskFull;
        {
            let mut state = lock(&self.inner.state);
            state.faults.derived.get_or_insert(pause);
            self.inner.cond.notify_all();
        }
        if full {
            self.release_reserve();
        }
    }

    /// Clears the derived part's fault (its embedder reopened and caught it up).
    pub fn clear_derived(&self) {
        lock(&self.inner.state).faults.derived = None;
    }

    /// True while writes are refused.
    pub fn io_paused(&self) -> bool {
        self.pause().is_some()
    }

    /// The latest HLC this log's clock has reached (a sample for a sync handshake).
    pub fn clock(&self) -> Hlc {
        lock(&self.inner.state).clock.last()
    }

    /// A status snapshot.
    pub fn status(&self) -> Status {
        let state = lock(&self.inner.state);
        Status {
            origin: self.inner.origin.to_string(),
            durable_lsn: state.durable_lsn,
            segments: state.segments.len(),
            pause: state.faults.first().cloned(),
            torn_tail: state.torn.clone(),
            clock: state.clock.last().to_string(),
            drift_refusals: state.clock.drift_refusals(),
        }
    }

    /// Appends one local op; returns once it is durable (or was already present).
    pub fn append(&self, draft: OpDraft) -> Result<Appended> {
        let (mut out, _) = self.submit(vec![Item::Local(draft)])?;
        out.pop().ok_or_else(|| Error::Index("append returned no result".into()))
    }

    /// Appends local ops; returns once all are durable. Ops already present are reported as
    /// duplicates and not written again.
    pub fn append_batch(&self, drafts: Vec<OpDraft>) -> Result<Vec<Appended>> {
        Ok(self.submit(drafts.into_iter().map(Item::Local).collect())?.0)
    }

    /// Appends ops received from a peer, keeping their origin, seq and HLC. Refuses the whole
    /// batch before writing anything on a content conflict, split brain or clock drift.
    pub fn ingest(&self, ops: Vec<Op>) -> Result<Vec<Appended>> {
        Ok(self.ingest_encoded(ops.into_iter().map(EncodedOp::encode).collect())?.0)
    }

    /// As [`Wal::ingest`], for ops that arrived as their bytes: each record's payload is the
    /// bytes given, not a new encoding. Returns the results and, in the same order, the ops
    /// (moved back out, for the caller to project without a copy).
    pub fn ingest_encoded(&self, ops: Vec<EncodedOp>) -> Result<(Vec<Appended>, Vec<Op>)> {
        self.submit(ops.into_iter().map(Item::Remote).collect())
    }

    /// [`Wal::ingest_encoded`], giving the ops back when they are refused before anything of
    /// them was queued (split brain, a bad field, a pause): the caller may take the offending
    /// ops out and try the rest. A refusal after queueing (a failed commit) gives none back.
    pub fn try_ingest_encoded(&self, ops: Vec<EncodedOp>) -> Result<Ingested, Refused<EncodedOp>> {
        self.submit_or_return(ops.into_iter().map(Item::Remote).collect()).map_err(|(e, items)| {
            let ops = items
                .into_iter()
                .filter_map(|i| match i {
                    Item::Remote(e) => Some(e),
                    Item::Local(_) => None,
                })
                .collect();
            (e, ops)
        })
    }
}

/// The capacity of the newest existing segment, if any.
fn existing_capacity(storage: &Arc<dyn Storage>, wal_dir: &Path) -> Result<Option<u64>> {
    let listed = recovery::list_segments(storage, wal_dir)?;
    let Some((base, path)) = listed.last() else {
        return Ok(None);
    };
    let file = storage.open(path, false).map_err(|e| Error::from_io(path, e))?;
    let reader = crate::segment::SegmentReader::new(file);
    Ok(recovery::read_header(&reader, path, *base).ok().map(|h| h.capacity))
}
