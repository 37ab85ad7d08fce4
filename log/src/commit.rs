//! The group commit: one leader writes every queued record, rolling segments as they fill,
//! syncs once, wakes the waiters and hands the durable records to the indexer.

use std::path::Path;
use std::sync::MutexGuard;

use crate::codec;
use crate::error::{Error, Result};
use crate::index::IndexEntry;
use crate::limits::{BUFFER_BYTES_KEPT, GROUP_RECORDS_MAX};
use crate::op;
use crate::record;
use crate::segment::{ActiveSegment, Header};
use crate::wal::{Body, Chain, Lsn, OpenRun, Pause, PauseKind, Pending, State, Wal, Writer, lock};
use feral_types::OpBytes;
use feral_types::proof::{self, RunDigest, Seal};

impl Wal {
    /// Runs one group commit as leader: takes every queued record, writes and syncs them,
    /// indexes them, and wakes the waiters.
    pub(crate) fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.leader = true;
        let spare = std::mem::take(&mut state.spare);
        let mut batch = std::mem::replace(&mut state.pending, spare);
        let synced = state.durable_lsn;
        drop(state);
        let (durable, entries, failure) = self.write_batch(&mut batch, synced);
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
        self.inner.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.cond.notify_all();
        self.inner.zeroer.wake();
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
            state.inflight.remove(&p.op_id, &p.origin, p.seq);
            if p.local {
                first_local_seq = Some(first_local_seq.map_or(p.seq, |s| s.min(p.seq)));
            }
        }
        if let Some(seq) = first_local_seq {
            state.next_seq = seq;
        }
        state.next_lsn = durable + 1;
        state.failures += 1;
        state.faults.log = Some(Pause { kind, detail: error.to_string() });
        let mut writer = lock(&self.inner.writer);
        writer.active = None;
        // What the failed commit left unsealed is read from the log again after resume.
        writer.chain = None;
    }

    /// Writes a batch into the active segment (sealing and creating segments as they fill) and
    /// syncs it. Returns the highest durable LSN, index entries for the durable records, and
    /// the failure that stopped it, if any.
    fn write_batch(
        &self,
        batch: &mut [Pending],
        synced: Lsn,
    ) -> (Lsn, Vec<IndexEntry>, Option<(PauseKind, Error)>) {
        let mut writer = lock(&self.inner.writer);
        if let Err(failure) = self.seal_batch(&mut writer, batch) {
            return (synced, Vec::new(), Some(failure));
        }
        let batch: &[Pending] = batch;
        let mut frames = std::mem::take(&mut writer.frames);
        frames.clear();
        let outcome = self.write_frames(&mut writer, &mut frames, batch, synced);
        if frames.capacity() <= BUFFER_BYTES_KEPT {
            writer.frames = frames;
        }
        outcome
    }

    /// Encodes the batch's local ops with their proof trailers: the genesis on the origin's
    /// seq 1, and a seal on the last op of each run (consecutive local ops, at most
    /// `SEAL_RUN_OPS_MAX` or about `SEAL_RUN_BYTES_MAX` each). The batch's last local op always
    /// closes its run, so every op acknowledged is covered by a seal written in the same
    /// commit; a run left open by a crash (its seal was in the torn part) is closed by the next
    /// commit's. Without a signer, local ops are encoded by `write_frames` with no proof.
    fn seal_batch(
        &self,
        writer: &mut Writer,
        batch: &mut [Pending],
    ) -> std::result::Result<(), (PauseKind, Error)> {
        let Some(signer) = self.inner.config.signer.as_deref() else { return Ok(()) };
        let Some(last_local) = batch.iter().rposition(|p| p.local) else { return Ok(()) };
        let mut chain = match writer.chain.take() {
            Some(known) => known,
            None => {
                let first = batch.iter().find(|p| p.local).map_or(1, |p| p.seq);
                self.recover_chain(first - 1).map_err(|e| (PauseKind::IoError, e))?
            }
        };
        let mut run = chain.open.take();
        let origin = self.inner.origin;
        for (i, p) in batch.iter_mut().enumerate().take(last_local + 1) {
            let Body::Op(op) = &p.body else { continue };
            // Precondition: local ops continue the open run without a gap.
            debug_assert!(
                run.as_ref().is_none_or(|r| r.first_seq + r.digest.ops() as u64 == p.seq)
            );
            let mut bytes =
                Vec::with_capacity(codec::encoded_len(op) + feral_types::proof::TRAILER_BYTES_MAX);
            codec::encode_op_into(op, &mut bytes);
            let genesis = if p.seq == 1 { self.inner.genesis.as_ref() } else { None };
            proof::write_genesis(&mut bytes, genesis);
            let open = run.get_or_insert_with(|| OpenRun {
                first_seq: p.seq,
                digest: RunDigest::linked(&chain.link),
            });
            open.digest.add(&bytes);
            let seal = if i == last_local || open.digest.full() {
                let Some(closed) = run.take() else { unreachable!("the run was just opened") };
                let first_seq = closed.first_seq;
                let message = closed.digest.message(&origin, first_seq, p.seq);
                let signature = signer.sign(&message).map_err(|reason| {
                    let source = std::io::Error::other(format!("sealing a commit: {reason}"));
                    (PauseKind::IoError, Error::Io { path: "node key".into(), source })
                })?;
                // The next run links to this op (its signed part is all `bytes` holds yet).
                chain.link = proof::link_of(&bytes);
                Some(Seal { first_seq, signature })
            } else {
                None
            };
            proof::finish_trailer(&mut bytes, genesis.is_some(), seal.as_ref());
            p.body = Body::Encoded(bytes);
        }
        chain.open = run;
        writer.chain = Some(chain);
        Ok(())
    }

    /// Where the own origin's chain stands, read back from the log (after an open or a
    /// resume): the ops after its last sealed one (at most one commit's worth, since every
    /// commit closes its runs) and the link of the op before them.
    fn recover_chain(&self, head: u64) -> Result<Chain> {
        if head == 0 {
            return Ok(Chain { open: None, link: proof::LINK_NONE });
        }
        // The last ops only, in windows that double until one holds a seal: a read of the
        // origin's older ops (which may hold a damaged record the node serves around) is not
        // needed, and every commit closes its runs, so the first window almost always does.
        let mut window = CHAIN_WINDOW_OPS.min(GROUP_RECORDS_MAX);
        let (from, ops) = loop {
            let from = head.saturating_sub(window as u64 - 1).max(1);
            let ops =
                self.payloads_by_origin_within(&self.inner.origin, from, head, window, usize::MAX)?;
            if from == 1 || window >= GROUP_RECORDS_MAX || ops.iter().any(OpBytes::is_sealed) {
                break (from, ops);
            }
            window = (window * 2).min(GROUP_RECORDS_MAX + 1);
        };
        let after = ops.iter().rposition(OpBytes::is_sealed).map_or(0, |i| i + 1);
        if after == 0 && from > 1 {
            tracing::error!(
                from,
                head,
                "no seal among the own origin's last ops; the run is sealed from {from}"
            );
        }
        let signed = |op: &OpBytes| -> Result<Vec<u8>> {
            let trailer = proof::parse_trailer(op.as_slice())
                .map_err(|r| Error::Index(format!("own op unreadable: {r}")))?;
            Ok(op.as_slice()[..trailer.signed_len].to_vec())
        };
        let tail = &ops[after..];
        let first_seq = match tail.first() {
            Some(first) => {
                first.head().map_err(|r| Error::Index(format!("own op unreadable: {r}")))?.seq
            }
            None => head + 1,
        };
        let link = if first_seq == 1 {
            proof::LINK_NONE
        } else if after > 0 {
            proof::link_of(&signed(&ops[after - 1])?)
        } else {
            let before = self.payloads_by_origin_within(
                &self.inner.origin,
                first_seq - 1,
                first_seq - 1,
                1,
                usize::MAX,
            )?;
            let op = before.first().ok_or_else(|| {
                Error::Index(format!("own op {} is not in the log", first_seq - 1))
            })?;
            proof::link_of(&signed(op)?)
        };
        if tail.is_empty() {
            return Ok(Chain { open: None, link });
        }
        let mut digest = RunDigest::linked(&link);
        for op in tail {
            let trailer = proof::parse_trailer(op.as_slice())
                .map_err(|r| Error::Index(format!("own op {first_seq}..: {r}")))?;
            digest.add(&op.as_slice()[..trailer.signed_len]);
        }
        tracing::warn!(
            first_seq,
            ops = tail.len(),
            "own ops left unsealed by a cut commit; the next commit seals them"
        );
        Ok(Chain { open: Some(OpenRun { first_seq, digest }), link })
    }

    /// The body of [`Wal::write_batch`], with the writer's buffers lent to it.
    fn write_frames(
        &self,
        writer: &mut Writer,
        buf: &mut Vec<u8>,
        batch: &[Pending],
        synced: Lsn,
    ) -> (Lsn, Vec<IndexEntry>, Option<(PauseKind, Error)>) {
        let mut entries = Vec::with_capacity(batch.len());
        let mut durable = synced;
        let mut buffered = 0u64;
        // Where the current caller's submission starts: its index in `batch`, its first byte
        // in `buf` and its first entry, while all of it is still unwritten in `buf`.
        let mut submission: Option<(usize, usize, usize)> = None;
        // A submission rolled to the start of a fresh segment is not moved again.
        let mut moved: Option<usize> = None;
        let mut i = 0;
        while i < batch.len() {
            let p = &batch[i];
            if p.batch_start && moved != Some(i) {
                submission = Some((i, buf.len(), entries.len()));
            }
            // A local op is encoded by the leader, outside the state lock, straight into the
            // frame buffer; a received op's bytes are copied in as they came.
            let mut start = record::begin_frame(buf);
            match &p.body {
                Body::Op(op) => {
                    codec::encode_op_into(op, buf);
                    proof::finish_trailer(buf, false, None);
                }
                Body::Encoded(bytes) => buf.extend_from_slice(bytes),
            }
            let end = start + record::frame_len(buf.len() - start - record::FRAME_HEADER_BYTES);
            if writer.active.as_ref().is_none_or(|a| a.room() < end as u64) {
                // Roll before the submission this record belongs to, so that a failed roll
                // fails it whole; a submission larger than a segment rolls where it must.
                let restart = submission.filter(|&(first, _, _)| first < i);
                let frame = match restart {
                    Some((first, at, entry)) => {
                        buf.truncate(at);
                        buffered -= (i - first) as u64;
                        entries.truncate(entry);
                        Vec::new()
                    }
                    None => buf.split_off(start),
                };
                let first_lsn = restart.map_or(p.lsn, |(first, _, _)| batch[first].lsn);
                if let Err((flushed, failure)) = self.roll(writer, buf, &mut buffered, first_lsn) {
                    if flushed {
                        // Synced before the seal failed: those records are durable.
                        durable = first_lsn - 1;
                    }
                    entries.retain(|e: &IndexEntry| e.lsn <= durable);
                    return (durable, entries, Some(failure));
                }
                durable = first_lsn - 1;
                submission = None;
                if let Some((first, _, _)) = restart {
                    moved = Some(first);
                    i = first;
                    continue;
                }
                buf.extend_from_slice(&frame);
                start = 0;
            }
            let Some(active) = writer.active.as_ref() else {
                let missing = Error::Index("no active segment".into());
                return (durable, entries, Some((PauseKind::IoError, missing)));
            };
            entries.push(IndexEntry {
                op_id: p.op_id,
                origin: p.origin,
                seq: p.seq,
                hlc: p.hlc,
                lsn: p.lsn,
                segment: active.header.base_lsn,
                offset: active.write_offset + start as u64,
                content_hash: p.content_hash,
            });
            record::finish_frame(buf, start, active.header.salt, p.lsn, durable);
            buffered += 1;
            i += 1;
        }
        if let (Some(at), Some(active)) =
            (crate::failpoint::armed_at("log.torn_write"), writer.active.as_mut())
            && let Some(e) = entries.iter().find(|e| e.lsn == at)
        {
            // Half of that record's frame reaches the file, as when the process dies mid-write.
            let start = (e.offset - active.write_offset) as usize;
            let end = buf.len().min(start + record::FRAME_HEADER_BYTES + 8);
            let _ = active.write(&buf[..end], 0);
            crate::failpoint::pause("log.torn_write", at);
        }
        #[cfg(debug_assertions)]
        if let Some(active) = writer.active.as_ref() {
            let in_buf = &entries[entries.len() - buffered as usize..];
            assert_frames(buf, active.header.salt, self.inner.payload_max, in_buf);
        }
        if let Some(Err(failure)) = writer.active.as_mut().map(|a| flush(a, buf, buffered)) {
            entries.retain(|e| e.lsn <= durable);
            return (durable, entries, Some(failure));
        }
        durable = batch.last().map_or(durable, |p| p.lsn);
        // Postcondition: every record of the batch is durable, in dense LSN order.
        debug_assert!(batch.windows(2).all(|w| w[1].lsn == w[0].lsn + 1), "LSNs not dense");
        debug_assert!(batch.first().is_none_or(|p| p.lsn == synced + 1), "a gap before the batch");
        if let Some(first) = batch.first() {
            crate::failpoint::reached("log.synced", first.lsn, durable);
        }
        (durable, entries, None)
    }

    /// Creates the first segment of an empty log at open, so the segment size chosen when the
    /// store is created holds for its life (later opens take it from the newest segment). A
    /// failure is left to the first append, which retries and reports it.
    pub(crate) fn start_first_segment(&self, state: &State) {
        let mut writer = lock(&self.inner.writer);
        if writer.active.is_some() || !state.segments.is_empty() || state.faults.log.is_some() {
            return;
        }
        if let Err((_, (_, error))) =
            self.roll(&mut writer, &mut Vec::new(), &mut 0, state.next_lsn)
        {
            tracing::warn!(%error, "could not create the first segment; the first append retries");
        }
    }

    /// Seals active segment `base` now, before it is full, and starts the next one at the next
    /// LSN: damage found in the segment being written can then be healed like that of any
    /// sealed one (its footer's checksum is the one of the bytes written, so the damage stays
    /// visible to the scrub). Holds the leader role meanwhile (writers queue and wait). Returns
    /// false when `base` is not the active segment or holds no record; a failed seal or
    /// segment creation pauses the log as a failed group commit does.
    pub(crate) fn seal_active(&self, base: Lsn) -> Result<bool> {
        let mut state = lock(&self.inner.state);
        while state.leader {
            state = self.inner.cond.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(pause) = state.faults.log.as_ref() {
            // While paused, the write path touches no disk.
            return Err(Self::paused_error(pause));
        }
        if state.segments.last() != Some(&base) {
            return Ok(false);
        }
        state.leader = true;
        let next = state.durable_lsn + 1;
        drop(state);
        let outcome = {
            let mut writer = lock(&self.inner.writer);
            match writer.active.as_ref() {
                Some(a) if a.header.base_lsn == base && a.records > 0 => {
                    debug_assert_eq!(a.header.base_lsn + a.records, next, "records past durable");
                    Some(self.roll(&mut writer, &mut Vec::new(), &mut 0, next))
                }
                _ => None,
            }
        };
        let mut state = lock(&self.inner.state);
        let sealed = match outcome {
            Some(Ok(())) => {
                state.segments.push(next);
                Ok(true)
            }
            Some(Err((_, (kind, error)))) => {
                let reported = Error::Paused { kind, reason: error.to_string() };
                let durable = state.durable_lsn;
                self.fail(&mut state, &[], durable, kind, error);
                Err(reported)
            }
            None => Ok(false),
        };
        state.leader = false;
        self.inner.cond.notify_all();
        drop(state);
        self.inner.zeroer.wake();
        sealed
    }

    /// Seals the full active segment (writing what is buffered first) and creates the next one,
    /// whose first record will be `next_lsn`. A failure says whether the buffered records were
    /// synced before it (then they are durable).
    fn roll(
        &self,
        writer: &mut Writer,
        buf: &mut Vec<u8>,
        buffered: &mut u64,
        next_lsn: Lsn,
    ) -> Result<(), (bool, (PauseKind, Error))> {
        if let Some(mut active) = writer.active.take() {
            flush(&mut active, buf, *buffered).map_err(|f| (false, f))?;
            active
                .seal()
                .map_err(|e| (true, stage_error(&active.path, e, PauseKind::SyncFailed)))?;
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
                (true, (kind, e))
            })?;
        writer.active = Some(active);
        Ok(())
    }
}

/// Writes buffered frames and syncs them. When either fails, the bytes of this write are
/// zeroed again and that is synced (best effort: the disk is failing), so a restart without
/// a resume never shows a record whose append was reported failed (a record that reached the
/// disk although its sync failed would otherwise look valid).
fn flush(active: &mut ActiveSegment, buf: &[u8], count: u64) -> Result<(), (PauseKind, Error)> {
    let from = active.write_offset;
    let outcome = if buf.is_empty() {
        Ok(())
    } else {
        active.write(buf, count).map_err(|e| stage_error(&active.path, e, PauseKind::IoError))
    };
    let outcome = outcome.and_then(|()| {
        active.file.sync_data().map_err(|e| stage_error(&active.path, e, PauseKind::SyncFailed))
    });
    if outcome.is_err() && !buf.is_empty() {
        let unwritten = crate::recovery::zero_range(&*active.file, from, buf.len() as u64)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = unwritten {
            tracing::error!(error = %e, segment = %active.path.display(), offset = from,
                "could not zero the records of a failed commit; resume() drops them");
        }
    }
    outcome
}

/// Classifies an I/O failure of one write-path stage; out of space always wins.
fn stage_error(path: &Path, error: std::io::Error, stage: PauseKind) -> (PauseKind, Error) {
    let error = Error::from_io(path, error);
    let kind = if matches!(error, Error::DiskFull { .. }) { PauseKind::DiskFull } else { stage };
    (kind, error)
}

/// Precondition of a write (debug builds, so every test checks it): the buffer holds exactly
/// one whole frame per entry of `entries`, each passing the checksum a reader will check, at
/// the entry's LSN, with a payload that decodes as the entry's op (its op_id, origin and seq:
/// received bytes are the op the checks passed).
#[cfg(debug_assertions)]
fn assert_frames(buf: &[u8], salt: u64, payload_max: u32, entries: &[IndexEntry]) {
    let (mut at, mut seen, mut last) = (0usize, 0usize, None::<u64>);
    while at < buf.len() {
        match record::decode_frame(&buf[at..], salt, payload_max) {
            crate::record::Decoded::Frame(frame) => {
                assert!(last.is_none_or(|l| frame.lsn == l + 1), "frame LSNs not dense");
                let op = codec::decode_payload(frame.payload).expect("a frame's op decodes");
                let entry = entries.get(seen).expect("a frame for every entry");
                assert_eq!(
                    (frame.lsn, op.op_id, op.origin, op.seq),
                    (entry.lsn, entry.op_id, entry.origin, entry.seq),
                    "a frame holds the op its entry names"
                );
                last = Some(frame.lsn);
                at += frame.frame_len;
                seen += 1;
            }
            other => panic!(
                "a frame about to be written does not verify: {:?}",
                matches!(other, crate::record::Decoded::Zero)
            ),
        }
    }
    assert_eq!(seen, entries.len(), "frames in the buffer");
}

/// The own origin's last ops read first when its chain is recovered (see `recover_chain`).
const CHAIN_WINDOW_OPS: usize = 16;
