//! The `Wal`: segmented log + redb index + clock for one data directory, with group commit,
//! idempotent appends, pause on disk faults, and resume after re-verification.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use crate::codec;
use crate::error::{Error, Result};
use crate::hlc::{Clock, Hlc, SystemTime, TimeSource};
use crate::index::{Index, IndexEntry};
use crate::indexer::IndexQueue;
use crate::limits::{
    BUFFER_BYTES_KEPT, GROUP_RECORDS_MAX, HLC_DRIFT_MS_MAX_DEFAULT, INFLIGHT_OPS_MAX,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
use crate::lock::DirLock;
use crate::op::{self, IdMap, Op, OpDraft, OpId, Origin};
use crate::record;
use crate::recovery::{self, TornTail};
use crate::segment::{ActiveSegment, Header};
use crate::storage::{FsStorage, Storage};

/// Subdirectory holding the segments.
pub const WAL_DIR: &str = "wal";
/// File holding the index.
pub const INDEX_FILE: &str = "index.redb";
/// File holding this directory's origin (32 hex characters).
pub const ORIGIN_FILE: &str = "ORIGIN";

/// Local log position: 1, 2, 3… in the order records were written here.
pub type Lsn = u64;

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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            drift_ms_max: HLC_DRIFT_MS_MAX_DEFAULT,
            storage: Arc::new(FsStorage),
            time: Arc::new(SystemTime),
        }
    }
}

/// Why the log stopped taking writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
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
struct Pending {
    content_hash: u64,
    op: Op,
    lsn: Lsn,
    local: bool,
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    content_hash: u64,
    lsn: Lsn,
    origin: Origin,
    seq: u64,
    hlc: Hlc,
}

/// Everything the group commit shares, under one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) pause: Option<Pause>,
    pub(crate) next_lsn: Lsn,
    pub(crate) durable_lsn: Lsn,
    pub(crate) next_seq: u64,
    pub(crate) clock: Clock,
    pending: Vec<Pending>,
    /// An empty queue with capacity, swapped in when a leader takes `pending`.
    spare: Vec<Pending>,
    inflight: IdMap<OpId, Inflight>,
    inflight_seqs: IdMap<(Origin, u64), OpId>,
    /// True while one thread writes a batch, checks or resumes; others wait on the condvar.
    pub(crate) leader: bool,
    failures: u64,
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
        self.inflight_seqs.clear();
    }

    /// Drops ops the indexer has committed from the in-flight set.
    pub(crate) fn forget_indexed(&mut self, entries: &[IndexEntry]) {
        for entry in entries {
            self.inflight.remove(&entry.op_id);
            self.inflight_seqs.remove(&(entry.origin, entry.seq));
        }
    }
}

/// The active segment; only the leader touches it.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) active: Option<ActiveSegment>,
    capacity: u64,
    /// Frame and payload buffers kept between batches: a fresh large buffer per batch costs an
    /// mmap, page faults and zeroing, more than the copy into it.
    frames: Vec<u8>,
    payload: Vec<u8>,
}

/// Everything the appenders and the indexer thread share.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) dir: PathBuf,
    pub(crate) wal_dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) origin: Origin,
    payload_max: u32,
    pub(crate) state: Mutex<State>,
    /// Signalled when the durable LSN, the leader role, or the in-flight set changes.
    pub(crate) cond: Condvar,
    pub(crate) index: RwLock<Option<Index>>,
    writer: Mutex<Writer>,
    pub(crate) indexer: IndexQueue,
    _lock: DirLock,
}

/// The handle's owner: stops the indexer thread and flushes the index when the last clone goes.
#[derive(Debug)]
pub(crate) struct Inner {
    core: Arc<Core>,
    thread: Option<std::thread::JoinHandle<()>>,
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
enum Item {
    Local(OpDraft),
    Remote(Op),
}

/// Recovers from a poisoned mutex: every critical section leaves state consistent or paused.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_origin(dir: &Path, storage: &Arc<dyn Storage>) -> Result<Origin> {
    let path = dir.join(ORIGIN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Origin::parse(text.trim()).map_err(|_| {
            Error::InvalidConfig(format!("{} does not hold 32 hex characters", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_origin(dir, storage, Origin::random())
        }
        Err(e) => Err(Error::from_io(&path, e)),
    }
}

/// Writes a new origin file atomically (temp file, sync, rename, directory sync).
pub fn write_origin(dir: &Path, storage: &Arc<dyn Storage>, origin: Origin) -> Result<Origin> {
    let path = dir.join(ORIGIN_FILE);
    let temp = dir.join(format!("{ORIGIN_FILE}.tmp"));
    let io = |e| Error::from_io(&path, e);
    let _ = storage.remove(&temp);
    let file = storage.create(&temp).map_err(io)?;
    file.write_all_at(format!("{origin}\n").as_bytes(), 0).map_err(io)?;
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
        fs::create_dir_all(&wal_dir).map_err(|e| Error::from_io(&wal_dir, e))?;
        let dir_lock = DirLock::acquire(&dir)?;
        let origin = read_origin(&dir, &config.storage)?;
        let capacity =
            existing_capacity(&config.storage, &wal_dir)?.unwrap_or(config.segment_bytes);
        let probe = Header { base_lsn: 1, capacity, salt: 0 };
        let core = Arc::new(Core {
            payload_max: probe.payload_max(),
            state: Mutex::new(State {
                pause: None,
                next_lsn: 1,
                durable_lsn: 0,
                next_seq: 1,
                clock: Clock::new(origin, config.drift_ms_max),
                pending: Vec::new(),
                spare: Vec::new(),
                inflight: IdMap::default(),
                inflight_seqs: IdMap::default(),
                leader: true,
                failures: 0,
                segments: Vec::new(),
                torn: None,
                corruption: None,
            }),
            cond: Condvar::new(),
            index: RwLock::new(None),
            writer: Mutex::new(Writer {
                active: None,
                capacity,
                frames: Vec::new(),
                payload: Vec::new(),
            }),
            indexer: IndexQueue::default(),
            dir,
            wal_dir,
            config,
            origin,
            _lock: dir_lock,
        });
        let indexer = core.clone();
        let thread = std::thread::Builder::new()
            .name("feral-indexer".into())
            .spawn(move || crate::indexer::run(&indexer))
            .map_err(|e| Error::from_io("feral-indexer thread", e))?;
        let wal = Wal { inner: Arc::new(Inner { core, thread: Some(thread) }) };
        let mut state = lock(&wal.inner.state);
        wal.load(&mut state, None)?;
        state.leader = false;
        drop(state);
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

    /// Highest durable LSN.
    pub fn durable_lsn(&self) -> Lsn {
        lock(&self.inner.state).durable_lsn
    }

    /// The pause, if the log is paused.
    pub fn pause(&self) -> Option<Pause> {
        lock(&self.inner.state).pause.clone()
    }

    /// True while writes are refused.
    pub fn io_paused(&self) -> bool {
        self.pause().is_some()
    }

    /// A status snapshot.
    pub fn status(&self) -> Status {
        let state = lock(&self.inner.state);
        Status {
            origin: self.inner.origin.to_string(),
            durable_lsn: state.durable_lsn,
            segments: state.segments.len(),
            pause: state.pause.clone(),
            torn_tail: state.torn.clone(),
            clock: state.clock.last().to_string(),
            drift_refusals: state.clock.drift_refusals(),
        }
    }

    /// A new HLC stamp from this log's clock.
    pub fn now(&self) -> Hlc {
        let physical = self.inner.config.time.now_ms();
        lock(&self.inner.state).clock.now(physical)
    }

    /// Appends one local op; returns once it is durable (or was already present).
    pub fn append(&self, draft: OpDraft) -> Result<Appended> {
        let mut out = self.submit(vec![Item::Local(draft)])?;
        out.pop().ok_or_else(|| Error::Index("append returned no result".into()))
    }

    /// Appends local ops; returns once all are durable. Ops already present are reported as
    /// duplicates and not written again.
    pub fn append_batch(&self, drafts: Vec<OpDraft>) -> Result<Vec<Appended>> {
        self.submit(drafts.into_iter().map(Item::Local).collect())
    }

    /// Appends ops received from a peer, keeping their origin, seq and HLC. Refuses the whole
    /// batch before writing anything on a content conflict, split brain or clock drift.
    pub fn ingest(&self, ops: Vec<Op>) -> Result<Vec<Appended>> {
        self.submit(ops.into_iter().map(Item::Remote).collect())
    }

    fn paused_error(pause: &Pause) -> Error {
        Error::Paused { kind: pause.kind, reason: pause.detail.clone() }
    }

    fn submit(&self, items: Vec<Item>) -> Result<Vec<Appended>> {
        for item in &items {
            match item {
                Item::Local(draft) => draft.validate()?,
                Item::Remote(op) => op::validate_fields(&op.table, &op.row_id, &op.data)?,
            }
        }
        let mut state = lock(&self.inner.state);
        while state.inflight.len() >= INFLIGHT_OPS_MAX && state.pause.is_none() {
            state = self.inner.cond.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(pause) = &state.pause {
            return Err(Self::paused_error(pause));
        }
        let (results, wait_lsn) = self.enqueue(&mut state, items)?;
        let generation = state.failures;
        loop {
            if state.durable_lsn >= wait_lsn {
                return Ok(results);
            }
            if state.failures != generation {
                let pause = state.pause.clone().unwrap_or(Pause {
                    kind: PauseKind::IoError,
                    detail: "group commit failed".into(),
                });
                return Err(Self::paused_error(&pause));
            }
            if state.leader {
                state = self.inner.cond.wait(state).unwrap_or_else(|p| p.into_inner());
            } else {
                state = self.lead(state);
            }
        }
    }

    /// Checks every item against the index and in-flight ops, then assigns LSNs (and, for local
    /// ops, seq and HLC) and queues the records. Nothing is queued if any item is refused.
    fn enqueue(&self, state: &mut State, items: Vec<Item>) -> Result<(Vec<Appended>, Lsn)> {
        let index_guard = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
        let Some(index) = index_guard.as_ref() else {
            return Err(Error::Paused {
                kind: PauseKind::IndexFailed,
                reason: "index not open".into(),
            });
        };
        let now = self.inner.config.time.now_ms();
        let mut seen: IdMap<OpId, Inflight> = IdMap::default();
        let mut plan = Vec::with_capacity(items.len());
        for item in items {
            let (op_id, hash) = match &item {
                Item::Local(d) => (d.op_id, op::content_hash(&d.table, &d.row_id, d.kind, &d.data)),
                Item::Remote(o) => (Some(o.op_id), o.content_hash()),
            };
            let existing = match op_id {
                Some(id) => find_existing(state, index, &seen, &id)?,
                None => None,
            };
            if let (Some(found), Some(id)) = (existing, op_id) {
                if found.content_hash != hash {
                    return Err(Error::OpIdConflict(id));
                }
                plan.push(Ok((id, found)));
                continue;
            }
            if let Item::Remote(op) = &item {
                check_remote(state, index, op, now)?;
            }
            if estimate_payload(&item) > self.inner.payload_max as usize {
                return Err(Error::InvalidOp(format!(
                    "op larger than the {}-byte record limit",
                    self.inner.payload_max
                )));
            }
            let id = match op_id {
                Some(id) => {
                    let marker = Inflight {
                        content_hash: hash,
                        lsn: 0,
                        origin: Origin::default(),
                        seq: 0,
                        hlc: Hlc::default(),
                    };
                    seen.insert(id, marker);
                    id
                }
                None => OpId::generate(now),
            };
            plan.push(Err((item, id, hash)));
        }
        drop(index_guard);
        let mut results = Vec::with_capacity(plan.len());
        state.pending.reserve(plan.len());
        state.inflight.reserve(plan.len());
        state.inflight_seqs.reserve(plan.len());
        let mut wait_lsn = 0;
        for step in plan {
            match step {
                Ok((op_id, found)) => {
                    let found = if found.lsn == 0 {
                        *state.inflight.get(&op_id).unwrap_or(&found)
                    } else {
                        found
                    };
                    wait_lsn = wait_lsn.max(found.lsn);
                    results.push(Appended {
                        op_id,
                        origin: found.origin,
                        seq: found.seq,
                        hlc: found.hlc,
                        lsn: found.lsn,
                        duplicate: true,
                    });
                }
                Err((item, op_id, hash)) => {
                    let appended = self.place(state, item, op_id, hash, now);
                    wait_lsn = wait_lsn.max(appended.lsn);
                    results.push(appended);
                }
            }
        }
        Ok((results, wait_lsn))
    }

    /// Gives a checked item its LSN (and seq and HLC when local) and queues it.
    fn place(&self, state: &mut State, item: Item, op_id: OpId, hash: u64, now: u64) -> Appended {
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let (op, local) = match item {
            Item::Local(draft) => {
                let seq = state.next_seq;
                state.next_seq += 1;
                let op = Op {
                    op_id,
                    origin: self.inner.origin,
                    seq,
                    hlc: state.clock.now(now),
                    table: draft.table,
                    row_id: draft.row_id,
                    kind: draft.kind,
                    data: draft.data,
                };
                (op, true)
            }
            // `check_remote` already checked drift and raised the clock.
            Item::Remote(op) => (op, false),
        };
        let appended = Appended {
            op_id: op.op_id,
            origin: op.origin,
            seq: op.seq,
            hlc: op.hlc,
            lsn,
            duplicate: false,
        };
        state.inflight.insert(
            op.op_id,
            Inflight { content_hash: hash, lsn, origin: op.origin, seq: op.seq, hlc: op.hlc },
        );
        state.inflight_seqs.insert((op.origin, op.seq), op.op_id);
        state.pending.push(Pending { op, lsn, local, content_hash: hash });
        appended
    }

    /// Runs one group commit as leader: takes every queued record, writes and syncs them,
    /// indexes them, and wakes the waiters.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.leader = true;
        let spare = std::mem::take(&mut state.spare);
        let mut batch = std::mem::replace(&mut state.pending, spare);
        let synced = state.durable_lsn;
        drop(state);
        let (durable, entries, failure) = self.write_batch(&batch, synced);
        let mut state = lock(&self.inner.state);
        state.durable_lsn = durable;
        for base in entries.iter().map(|e| e.segment) {
            if state.segments.last().is_none_or(|last| *last < base) {
                state.segments.push(base);
            }
        }
        // Durable ops stay in the in-flight set (for duplicate checks and reads) until the
        // indexer has them in redb; the queue is pushed under the state lock so it stays in
        // LSN order.
        self.inner.indexer.push(entries);
        if let Some((kind, error)) = failure {
            self.fail(&mut state, &batch, durable, kind, error);
        }
        batch.clear();
        if batch.capacity() <= GROUP_RECORDS_MAX {
            state.spare = batch; // reused by the next leader: no fresh allocation per batch
        }
        state.leader = false;
        self.inner.cond.notify_all();
        state
    }

    /// After a failed group commit: pause, forget every op not durable, and rewind LSN and seq
    /// counters so nothing that failed is visible.
    fn fail(
        &self,
        state: &mut State,
        batch: &[Pending],
        durable: Lsn,
        kind: PauseKind,
        error: Error,
    ) {
        tracing::error!(%error, ?kind, "group commit failed; log paused");
        let queued = std::mem::take(&mut state.pending);
        let mut first_local_seq: Option<u64> = None;
        for p in batch.iter().filter(|p| p.lsn > durable).chain(queued.iter()) {
            state.inflight.remove(&p.op.op_id);
            state.inflight_seqs.remove(&(p.op.origin, p.op.seq));
            if p.local {
                first_local_seq = Some(first_local_seq.map_or(p.op.seq, |s| s.min(p.op.seq)));
            }
        }
        if let Some(seq) = first_local_seq {
            state.next_seq = seq;
        }
        state.next_lsn = durable + 1;
        state.failures += 1;
        state.pause = Some(Pause { kind, detail: error.to_string() });
        lock(&self.inner.writer).active = None;
    }

    /// Writes a batch into the active segment (sealing and creating segments as they fill) and
    /// syncs it. Returns the highest durable LSN, index entries for the durable records, and
    /// the failure that stopped it, if any.
    fn write_batch(
        &self,
        batch: &[Pending],
        synced: Lsn,
    ) -> (Lsn, Vec<IndexEntry>, Option<(PauseKind, Error)>) {
        let mut writer = lock(&self.inner.writer);
        let mut frames = std::mem::take(&mut writer.frames);
        let mut payload = std::mem::take(&mut writer.payload);
        frames.clear();
        let outcome = self.write_frames(&mut writer, &mut frames, &mut payload, batch, synced);
        if frames.capacity() <= BUFFER_BYTES_KEPT {
            writer.frames = frames;
        }
        writer.payload = payload;
        outcome
    }

    /// The body of [`Wal::write_batch`], with the writer's buffers lent to it.
    fn write_frames(
        &self,
        writer: &mut Writer,
        buf: &mut Vec<u8>,
        payload: &mut Vec<u8>,
        batch: &[Pending],
        synced: Lsn,
    ) -> (Lsn, Vec<IndexEntry>, Option<(PauseKind, Error)>) {
        let mut entries = Vec::with_capacity(batch.len());
        let mut durable = synced;
        let mut buffered = 0u64;
        for p in batch {
            // Encoded here, by the leader, outside the state lock, into a reused buffer.
            payload.clear();
            codec::encode_op_into(&p.op, payload);
            let need = (buf.len() + record::frame_len(payload.len())) as u64;
            if writer.active.as_ref().is_none_or(|a| a.room() < need) {
                if let Err(failure) = self.roll(writer, buf, &mut buffered, p.lsn) {
                    entries.retain(|e: &IndexEntry| e.lsn <= durable);
                    return (durable, entries, Some(failure));
                }
                durable = p.lsn - 1;
            }
            let Some(active) = writer.active.as_ref() else {
                let missing = Error::Index("no active segment".into());
                return (durable, entries, Some((PauseKind::IoError, missing)));
            };
            entries.push(IndexEntry {
                op_id: p.op.op_id,
                origin: p.op.origin,
                seq: p.op.seq,
                hlc: p.op.hlc,
                lsn: p.lsn,
                segment: active.header.base_lsn,
                offset: active.write_offset + buf.len() as u64,
                content_hash: p.content_hash,
            });
            record::encode_frame(buf, active.header.salt, p.lsn, durable, payload);
            buffered += 1;
        }
        if let Some(Err(failure)) = writer.active.as_mut().map(|a| flush(a, buf, buffered)) {
            entries.retain(|e| e.lsn <= durable);
            return (durable, entries, Some(failure));
        }
        durable = batch.last().map_or(durable, |p| p.lsn);
        (durable, entries, None)
    }

    /// Seals the full active segment (writing what is buffered first) and creates the next one,
    /// whose first record will be `next_lsn`.
    fn roll(
        &self,
        writer: &mut Writer,
        buf: &mut Vec<u8>,
        buffered: &mut u64,
        next_lsn: Lsn,
    ) -> Result<(), (PauseKind, Error)> {
        if let Some(mut active) = writer.active.take() {
            flush(&mut active, buf, *buffered)?;
            active.seal().map_err(|e| stage_error(&active.path, e, PauseKind::SyncFailed))?;
            buf.clear();
            *buffered = 0;
        }
        let mut salt = [0u8; 8];
        op::random_bytes(&mut salt);
        let header = Header {
            base_lsn: next_lsn,
            capacity: writer.capacity,
            salt: u64::from_le_bytes(salt),
        };
        let active = ActiveSegment::create(&self.inner.config.storage, &self.inner.wal_dir, header)
            .map_err(|e| {
                let kind = if matches!(e, Error::DiskFull { .. }) {
                    PauseKind::DiskFull
                } else {
                    PauseKind::IoError
                };
                (kind, e)
            })?;
        writer.active = Some(active);
        Ok(())
    }
}

/// Writes buffered frames and syncs them.
fn flush(active: &mut ActiveSegment, buf: &[u8], count: u64) -> Result<(), (PauseKind, Error)> {
    if !buf.is_empty() {
        active.write(buf, count).map_err(|e| stage_error(&active.path, e, PauseKind::IoError))?;
    }
    active.file.sync_data().map_err(|e| stage_error(&active.path, e, PauseKind::SyncFailed))
}

/// Classifies an I/O failure of one write-path stage; out of space always wins.
fn stage_error(path: &Path, error: std::io::Error, stage: PauseKind) -> (PauseKind, Error) {
    let error = Error::from_io(path, error);
    let kind = if matches!(error, Error::DiskFull { .. }) { PauseKind::DiskFull } else { stage };
    (kind, error)
}

/// The entry for `id` among this call's items, in-flight ops, or the index.
fn find_existing(
    state: &State,
    index: &Index,
    seen: &IdMap<OpId, Inflight>,
    id: &OpId,
) -> Result<Option<Inflight>> {
    if let Some(found) = seen.get(id).or_else(|| state.inflight.get(id)) {
        return Ok(Some(*found));
    }
    Ok(index.lookup(id)?.map(|e| Inflight {
        content_hash: e.content_hash,
        lsn: e.lsn,
        origin: e.origin,
        seq: e.seq,
        hlc: e.hlc,
    }))
}

/// Refuses a remote op that would break an invariant: bad seq or HLC node, split brain, drift.
fn check_remote(state: &mut State, index: &Index, op: &Op, now: u64) -> Result<()> {
    if op.seq == 0 || op.hlc.node != op.origin {
        return Err(Error::InvalidOp(format!(
            "op {}: seq must be >= 1 and the HLC node must be the origin",
            op.op_id
        )));
    }
    let holder = match state.inflight_seqs.get(&(op.origin, op.seq)) {
        Some(id) => Some(*id),
        None => index.lookup_seq(&op.origin, op.seq)?,
    };
    if let Some(existing) = holder.filter(|id| *id != op.op_id) {
        return Err(Error::SplitBrain {
            origin: op.origin,
            seq: op.seq,
            existing,
            refused: op.op_id,
        });
    }
    // Counts a refusal; an accepted stamp raises the clock, which is harmless even if the
    // batch is refused later (the clock only has to move forward).
    state.clock.receive(&op.hlc, now)
}

/// An upper bound on the encoded size of an item (bincode varints are at most 10 bytes).
fn estimate_payload(item: &Item) -> usize {
    let (table, row, data) = match item {
        Item::Local(d) => (d.table.len(), d.row_id.len(), d.data.len()),
        Item::Remote(o) => (o.table.len(), o.row_id.len(), o.data.len()),
    };
    16 + 16 + 10 + 10 + 5 + 16 + 10 + table + 10 + row + 5 + 10 + data
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
