//! Loading state from disk (open and resume), the integrity check, resume, and index rebuild.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use crate::check::{self, IntegrityReport, PartStatus, Scope};
use crate::code::Code;
use crate::error::{Error, Result};
use crate::index::{Index, IndexEntry, IndexReader};
use crate::limits::{CHECK_YIELD, INDEX_REPLAY_BATCH_OPS};
use crate::read::for_each_record;
use crate::recovery;
use crate::storage::Storage;
use crate::wal::{INDEX_FILE, Lsn, Pause, PauseKind, State, Wal, lock};

fn pause(kind: PauseKind, error: &Error) -> Pause {
    Pause { kind, detail: error.to_string() }
}

impl Wal {
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.config.storage
    }

    pub(crate) fn wal_dir(&self) -> &Path {
        &self.inner.wal_dir
    }

    /// Segment base LSNs and the durable LSN, read together.
    pub(crate) fn segments_snapshot(&self) -> (Vec<Lsn>, Lsn, Option<crate::error::Location>) {
        let state = self.state();
        (state.segments.clone(), state.durable_lsn, state.corruption.clone())
    }

    /// Runs `f` on the open index.
    pub(crate) fn with_index<T>(&self, f: impl FnOnce(&Index) -> Result<T>) -> Result<T> {
        let guard = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(index) => f(index),
            None => {
                Err(Error::Paused { kind: PauseKind::IndexFailed, reason: "index not open".into() })
            }
        }
    }

    /// Waits until no group commit runs, then holds the leader role (blocking writers).
    /// Also waits for the indexer to finish what is queued, so the index is complete.
    fn become_leader(&self) -> MutexGuard<'_, State> {
        let mut state = self.state();
        while state.leader {
            state = self.inner.cond.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.leader = true;
        drop(state);
        self.inner.indexer.drain();
        self.state()
    }

    fn release_leader(&self, mut state: MutexGuard<'_, State>) {
        state.leader = false;
        self.inner.cond.notify_all();
    }

    /// Rebuilds every in-memory fact from disk: reopens the index, recovers the segments
    /// (zeroing a torn or unsynced tail), replays records the index lacks, restores the clock
    /// and counters. Damage pauses the log instead of failing; only I/O errors fail.
    pub(crate) fn load(&self, state: &mut State, keep_through: Option<Lsn>) -> Result<()> {
        let mut index_slot = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
        *index_slot = None;
        let mut found_pause = None;
        let path = self.inner.dir.join(INDEX_FILE);
        let origin = self.origin();
        let open_index = || {
            Index::open(&path).and_then(|index| {
                let meta = index.meta()?;
                // LSNs are dense and each is one op, so a sound index has indexed exactly as many
                // ops as its watermark. One that has not is damaged: its watermark is no evidence
                // that the log lost acknowledged records (garbage could claim any LSN), and it is
                // rebuilt from the log instead.
                if meta.op_count != meta.indexed_lsn {
                    return Err(Error::IndexCorruption(format!(
                        "the index's markers disagree: {} ops indexed through LSN {}",
                        meta.op_count, meta.indexed_lsn
                    )));
                }
                // The next local seq comes from the heads: ones that disagree with the ops
                // indexed are damage too, or an append would reuse a seq.
                index.reader()?.verified_own_head(&origin)?;
                Ok((index, meta))
            })
        };
        let opened = match open_index() {
            // The index is derived from the log: a damaged one is set aside for forensics and
            // rebuilt from the log at once (the replay below indexes every record). An index
            // that is sound but ahead of the log is not this case: it is evidence that the log
            // lost acknowledged records, and stays a pause.
            Err(e @ (Error::IndexCorruption(_) | Error::Index(_))) => {
                tracing::error!(error = %e, "the index is damaged; it is set aside and rebuilt from the log");
                self.set_aside_index(&path).and_then(|()| open_index())
            }
            other => other,
        };
        let (index, meta) = match opened {
            Ok((index, meta)) => (Some(index), meta),
            Err(e) => {
                tracing::error!(error = %e, "index cannot be opened; resume() rebuilds it from the log");
                found_pause = Some(pause(PauseKind::IndexFailed, &e));
                (None, Default::default())
            }
        };
        let recovered = recovery::recover(
            self.storage(),
            self.wal_dir(),
            keep_through.unwrap_or(0).max(meta.indexed_lsn),
            keep_through,
        )?;
        state.segments = recovered.segments;
        state.torn = recovered.torn;
        state.corruption = recovered.corruption.clone();
        state.durable_lsn = recovered.last_lsn;
        state.next_lsn = recovered.last_lsn + 1;
        state.clear_queue();
        {
            let mut writer = self.writer();
            writer.active = recovered.active;
            writer.chain = None;
        }
        if let Some(at) = recovered.corruption {
            tracing::error!(%at, "log corruption found on open; writes paused");
            state.faults.log = Some(pause(PauseKind::Corruption, &Error::Corruption(at)));
            // The index is not caught up past the damage: index reads fail instead of waiting.
            let reason = "log corruption: the index is not caught up".to_string();
            self.inner.indexer.reset(meta.indexed_lsn, Some(reason));
            *index_slot = index;
            return Ok(());
        }
        let mut index = index;
        let mut reopen = false;
        if let Some(index) = &index {
            if meta.indexed_lsn > recovered.last_lsn {
                let e = Error::IndexCorruption(format!(
                    "index reflects LSN {} but the log ends at {}",
                    meta.indexed_lsn, recovered.last_lsn
                ));
                found_pause = Some(pause(PauseKind::IndexFailed, &e));
            } else {
                state.clock.observe(&crate::hlc::Hlc {
                    wall_ms: meta.max_hlc.0,
                    counter: meta.max_hlc.1,
                    node: self.origin(),
                });
                let segments = state.segments.clone();
                if let Err(e) =
                    self.replay(index, &segments, meta.indexed_lsn + 1, recovered.last_lsn, state)
                {
                    if let Error::Corruption(at) = &e {
                        state.corruption = Some(at.clone());
                    }
                    let kind = match e {
                        Error::Corruption(_) => PauseKind::Corruption,
                        Error::DiskFull { .. } => PauseKind::DiskFull,
                        _ => PauseKind::IndexFailed,
                    };
                    // A failed redb commit poisons the handle (PreviousIo) until reopened.
                    reopen = !matches!(e, Error::Corruption(_));
                    found_pause = Some(pause(kind, &self.inner.index_error(e)));
                }
            }
        }
        if reopen {
            drop(index.take()); // redb refuses a second handle on one file
            index = Index::open(&self.inner.dir.join(INDEX_FILE)).ok();
        }
        match index.as_ref().map(|i| i.reader().and_then(|r| r.verified_own_head(&origin))) {
            Some(Ok(head)) => state.next_seq = head + 1,
            Some(Err(e)) => found_pause = found_pause.or(Some(pause(PauseKind::IndexFailed, &e))),
            None => {}
        }
        let index_failed = found_pause
            .as_ref()
            .filter(|p| matches!(p.kind, PauseKind::IndexFailed | PauseKind::DiskFull))
            .map(|p| p.detail.clone())
            .or_else(|| index.is_none().then(|| "index not open".to_string()));
        // When catching up failed, the index holds only what it committed: reads past that
        // must fail (with the reason), not find nothing.
        let indexed = match (&index_failed, index.as_ref()) {
            (None, _) => state.durable_lsn,
            (Some(_), Some(index)) => index.meta().map_or(0, |m| m.indexed_lsn),
            (Some(_), None) => 0,
        };
        self.inner.indexer.reset(indexed, index_failed);
        state.faults.log = found_pause;
        *index_slot = index;
        Ok(())
    }

    /// Moves a damaged index to `damaged/index.redb.<unix ms>` (a rename: no space needed), so
    /// a fresh one is made in its place.
    fn set_aside_index(&self, path: &std::path::Path) -> Result<()> {
        let kept = self.inner.dir.join(crate::heal::DAMAGED_DIR);
        crate::private::create_dir_all(&kept).map_err(|e| Error::from_io(&kept, e))?;
        let ms = self.inner.config.time.now_ms();
        let to = kept.join(format!("{INDEX_FILE}.{ms}"));
        std::fs::rename(path, &to).map_err(|e| Error::from_io(path, e))?;
        crate::private::sync_parent(&to).map_err(|e| Error::from_io(&kept, e))?;
        self.storage().sync_dir(&self.inner.dir).map_err(|e| Error::from_io(&self.inner.dir, e))
    }

    /// Indexes records `from..=to` from the log, raising the clock past each, then commits
    /// durably.
    fn replay(
        &self,
        index: &Index,
        segments: &[Lsn],
        from: Lsn,
        to: Lsn,
        state: &mut State,
    ) -> Result<()> {
        let mut batch: Vec<IndexEntry> = Vec::with_capacity(INDEX_REPLAY_BATCH_OPS.min(1024));
        let meter = self.meter();
        meter.stage("indexing the log", crate::meter::Unit::Records, (to + 1).saturating_sub(from));
        for_each_record(self.storage(), self.wal_dir(), segments, from, to, &mut |record| {
            state.clock.observe(&record.op.hlc);
            batch.push(IndexEntry {
                op_id: record.op.op_id,
                origin: record.op.origin,
                seq: record.op.seq,
                hlc: record.op.hlc,
                lsn: record.lsn,
                segment: record.segment,
                offset: record.offset,
                content_hash: record.op.content_hash(),
            });
            if batch.len() >= INDEX_REPLAY_BATCH_OPS {
                index.commit(&batch, false)?;
                meter.add(batch.len() as u64);
                batch.clear();
            }
            Ok(true)
        })?;
        index.commit(&batch, true)?;
        meter.add(batch.len() as u64);
        index.flush()
    }

    /// Verifies every record CRC, every sealed footer and segment CRC, and the index against
    /// the log (every table's content: by op_id, by origin and seq, the heads), beside appends
    /// and reads: it reads the records durable when it starts and an index snapshot, holds no
    /// lock while it reads them, and steps aside while group commits run. redb's page-level
    /// structure check is left to resume, which holds writes anyway. Never fails: problems are
    /// in the report.
    pub fn check(&self) -> IntegrityReport {
        let _one = lock(&self.inner.maintenance);
        // The index snapshot first, the durable LSN second (see `verify_log_and_index`).
        let reader = self.with_index(Index::reader).ok();
        let (durable, known) = {
            let state = self.state();
            (state.durable_lsn, state.corruption.clone())
        };
        let report = self.verify(durable, known, reader, false);
        // Damage inside a segment goes to the register, which names the ops it cost (the
        // check stops at the first bad frame; the register reads the whole segment).
        if let Some(base) = report
            .wal_detail
            .as_ref()
            .filter(|_| report.wal == crate::check::PartStatus::Corruption)
            .and_then(|at| crate::segment::parse_segment_name(std::path::Path::new(&at.segment)))
            && let Err(e) = self.note_damage(base, crate::damage::FoundBy::Check)
        {
            tracing::warn!(error = %e, "could not read the damaged segment's records one by one");
        }
        report
    }

    /// The check while nothing writes (the caller is the leader, the indexer drained).
    fn check_quiet(&self, state: &State) -> IntegrityReport {
        let reader = self.with_index(Index::reader).ok();
        self.verify(state.durable_lsn, state.corruption.clone(), reader, true)
    }

    /// `known` is the damage recovery found, if any: it stopped there, so the durable LSN
    /// says nothing of what lies past it (the whole directory is checked; nothing writes to
    /// a log paused for corruption), and damage only recovery can see (acknowledged ops
    /// missing from the end of the log) is reported even when every segment verifies.
    /// `structure` adds redb's page-level structure check of the index, which needs the
    /// database to itself: only where writes are held already (resume, rebuild), never beside
    /// appends (they would wait for it). The scan checks every index table's content either way.
    fn verify(
        &self,
        durable: Lsn,
        known: Option<crate::error::Location>,
        reader: Option<IndexReader>,
        structure: bool,
    ) -> IntegrityReport {
        let scope = if known.is_some() { Scope::Quiet } else { Scope::Online };
        let last_commits = AtomicU64::new(self.inner.commits.load(Ordering::Relaxed));
        let scan = || {
            check::verify_log_and_index(
                self.storage(),
                self.wal_dir(),
                durable,
                scope,
                reader.as_ref(),
                &|| self.step_aside(&last_commits),
            )
        };
        // At the lowest CPU priority: appends beside a check keep their pace.
        let (wal, index) = crate::background::at_lowest_priority("feral-check", &scan);
        drop(reader); // redb's structure check needs no transaction open
        let wal = match (wal, known) {
            (Ok(_), Some(at)) => Err(Error::Corruption(at)),
            (wal, _) => wal,
        };
        let index = index.and_then(|()| {
            if !structure {
                return Ok(());
            }
            let mut slot = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
            match slot.as_mut() {
                Some(index) => check::verify_index_structure(index),
                None => Err(Error::Index("index could not be opened".into())),
            }
        });
        IntegrityReport::from_parts(wal, index)
    }

    /// Called by a check's scan every few hundred records: when group commits happened since
    /// the last call, the scan sleeps a moment, so appends keep their pace (SCHED_IDLE alone
    /// is not enough: the scan's reads and lookups still contend for caches, the allocator
    /// and redb's page cache).
    fn step_aside(&self, last: &AtomicU64) {
        let now = self.inner.commits.load(Ordering::Relaxed);
        if last.swap(now, Ordering::Relaxed) != now {
            std::thread::sleep(CHECK_YIELD);
        }
    }

    /// Re-reads everything from disk (dropping any unsynced tail), rebuilds the index if it
    /// cannot be trusted, runs the full check, and clears the pause only if the check passes.
    pub fn resume(&self) -> IntegrityReport {
        let _one = lock(&self.inner.maintenance);
        let mut state = self.become_leader();
        let known = state.durable_lsn;
        let outcome = self.load(&mut state, Some(known)).map(|()| {
            let index_failed =
                state.faults.log.as_ref().is_some_and(|p| p.kind == PauseKind::IndexFailed);
            (!index_failed).then(|| self.check_quiet(&state))
        });
        let outcome = outcome.and_then(|first| match first {
            // The log is sound and only the index failed: rebuild it and check again.
            Some(report) if report.ok || report.wal != PartStatus::Ok => Ok(report),
            _ => {
                tracing::warn!("index not trusted; rebuilding it from the log");
                self.rebuild_locked(&mut state)?;
                Ok(self.check_quiet(&state))
            }
        });
        let report = outcome.unwrap_or_else(|e| {
            IntegrityReport::from_parts(Err(e), Err(Error::Index("not checked".into())))
        });
        if report.ok {
            if state.faults.log.take().is_some() {
                tracing::info!("integrity check passed; writes resumed");
            }
        } else if state.faults.log.is_none()
            || state.faults.log.as_ref().is_some_and(|p| p.kind != PauseKind::Corruption)
        {
            state.faults.log = Some(Pause {
                kind: PauseKind::Corruption,
                detail: format!(
                    "integrity check failed: {}",
                    report.error.map_or("", Code::as_str)
                ),
            });
        }
        self.release_leader(state);
        if report.ok {
            // Taken again only with room for it and a segment besides (else a warning).
            self.hold_reserve();
        }
        report
    }

    /// Deletes the index and recreates it from the log alone. Returns the ops indexed.
    pub fn rebuild(&self) -> Result<u64> {
        let _one = lock(&self.inner.maintenance);
        let mut state = self.become_leader();
        let result = self.rebuild_locked(&mut state);
        self.release_leader(state);
        result
    }

    fn rebuild_locked(&self, state: &mut State) -> Result<u64> {
        let path = self.inner.dir.join(INDEX_FILE);
        *self.inner.index.write().unwrap_or_else(|p| p.into_inner()) = None;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::from_io(&path, e));
            }
            _ => {}
        }
        let known = state.durable_lsn;
        self.load(state, Some(known))?;
        Ok(state.durable_lsn)
    }

    /// Makes the index durable and releases the directory. Dropping the last handle does the same.
    pub fn close(self) -> Result<()> {
        self.with_index(|index| index.flush())
    }
}
