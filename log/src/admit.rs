//! Taking ops in: validation, duplicate and split-brain checks, LSN, seq and HLC assignment,
//! and the wait for durability (which may make the caller the group-commit leader).

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::index::IndexReader;
use crate::limits::{INFLIGHT_OPS_MAX, SUBMIT_OPS_MAX};
use crate::op::{self, IdMap, Op, OpId, Origin};
use crate::wal::{
    Appended, Body, Inflight, Item, Lsn, Pause, PauseKind, Pending, State, Wal, lock,
};
use feral_types::Error as OpError;

/// What the checks decided for one item.
#[derive(Debug)]
enum Verdict {
    /// Already in the log or in flight (or earlier in this call): nothing to write.
    Duplicate(OpId, Inflight),
    /// To be written under this op_id (generated here when `generated`), with this content
    /// hash.
    New { id: OpId, hash: u64, generated: bool },
}

impl Wal {
    pub(crate) fn paused_error(pause: &Pause) -> Error {
        Error::Paused { kind: pause.kind, reason: pause.detail.clone() }
    }

    /// Takes a caller's items in: checks, queues and waits until they are durable. Returns
    /// one result per item and the received items' ops, moved back out in order.
    pub(crate) fn submit(&self, items: Vec<Item>) -> Result<(Vec<Appended>, Vec<Op>)> {
        self.submit_or_return(items).map_err(|(e, _)| e)
    }

    /// [`Wal::submit`], giving the items back when they are refused before anything of them
    /// is queued (a caller may take a refused op out and submit the rest).
    pub(crate) fn submit_or_return(
        &self,
        items: Vec<Item>,
    ) -> Result<crate::wal::Ingested, crate::wal::Refused<Item>> {
        let outcome = self.submit_inner(items);
        if let Err((e, _)) = &outcome
            && e.code() == crate::code::Code::DiskFull
        {
            // The store paused on a full disk: the reserve's space goes to what must still
            // commit (no lock is held here).
            self.release_reserve();
        }
        outcome
    }

    fn submit_inner(
        &self,
        items: Vec<Item>,
    ) -> Result<crate::wal::Ingested, crate::wal::Refused<Item>> {
        if items.len() > SUBMIT_OPS_MAX {
            return Err((Error::BatchTooLarge { ops: items.len(), max: SUBMIT_OPS_MAX }, items));
        }
        let valid = items.iter().try_for_each(|item| match item {
            Item::Local(draft) => draft.validate(),
            Item::Remote(e) => {
                let op = e.op();
                op::validate_fields(&op.table, &op.row_id, &op.data)
            }
        });
        if let Err(e) = valid {
            return Err((e.into(), items));
        }
        let mut state = lock(&self.inner.state);
        while state.inflight.len() >= INFLIGHT_OPS_MAX && state.faults.first().is_none() {
            state = self.inner.cond.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(pause) = state.faults.first() {
            return Err((Self::paused_error(pause), items));
        }
        let now = self.inner.config.time.now_ms();
        let verdicts = match self.check_all(&mut state, &items, now) {
            Ok(verdicts) => verdicts,
            Err(e) => return Err((e, items)),
        };
        let (results, back, wait_lsn) = self.enqueue(&mut state, items, verdicts, now);
        let generation = state.failures;
        loop {
            if state.durable_lsn >= wait_lsn {
                return Ok((results, back));
            }
            if state.failures != generation {
                let pause = state.faults.log.clone().unwrap_or(Pause {
                    kind: PauseKind::IoError,
                    detail: "group commit failed".into(),
                });
                return Err((Self::paused_error(&pause), Vec::new()));
            }
            if state.leader {
                state = self.inner.cond.wait(state).unwrap_or_else(|p| p.into_inner());
            } else {
                state = self.lead(state);
            }
        }
    }

    /// Assigns LSNs (and, for local ops, seq and HLC) to items every check passed (their
    /// `verdicts`) and queues the records.
    fn enqueue(
        &self,
        state: &mut State,
        items: Vec<Item>,
        verdicts: Vec<Verdict>,
        now: u64,
    ) -> (Vec<Appended>, Vec<Op>, Lsn) {
        let mut results = Vec::with_capacity(items.len());
        let remote = items.iter().filter(|i| matches!(i, Item::Remote(_))).count();
        let mut back = Vec::with_capacity(remote);
        state.pending.reserve(items.len());
        state.inflight.reserve(items.len());
        let first_queued = state.pending.len();
        let mut wait_lsn = 0;
        for (item, verdict) in items.into_iter().zip(verdicts) {
            let appended = match verdict {
                Verdict::Duplicate(op_id, found) => {
                    if let Item::Remote(e) = item {
                        back.push(e.into_parts().0);
                    }
                    // A duplicate of an earlier op of this same call is in flight by now.
                    let found = match found.lsn {
                        0 => *state.inflight.get(&op_id).unwrap_or(&found),
                        _ => found,
                    };
                    Appended {
                        op_id,
                        origin: found.origin,
                        seq: found.seq,
                        hlc: found.hlc,
                        lsn: found.lsn,
                        duplicate: true,
                    }
                }
                Verdict::New { id, hash, generated } => {
                    let (appended, op) = self.place(state, item, id, hash, generated, now);
                    back.extend(op);
                    appended
                }
            };
            wait_lsn = wait_lsn.max(appended.lsn);
            results.push(appended);
        }
        if let Some(first) = state.pending.get_mut(first_queued) {
            first.batch_start = true;
        }
        (results, back, wait_lsn)
    }

    /// Checks every item (borrowed, so nothing large moves) against this call's other items,
    /// the in-flight ops and the index. Any refusal refuses the whole call.
    fn check_all(&self, state: &mut State, items: &[Item], now: u64) -> Result<Vec<Verdict>> {
        let index_guard = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
        let Some(index) = index_guard.as_ref() else {
            return Err(Error::Paused {
                kind: PauseKind::IndexFailed,
                reason: "index not open".into(),
            });
        };
        // One snapshot for every lookup of this call. Ops the indexer commits after it are
        // still in the in-flight set: they leave it only under the state lock held here.
        let index = &index.reader()?;
        let mut seen: IdMap<OpId, Inflight> = IdMap::default();
        // Per origin of this call, the highest seq the snapshot holds: a received op past it
        // (a catch-up's every op) needs no lookup of its seq.
        let mut max_seqs = MaxSeqs::default();
        let mut verdicts = Vec::with_capacity(items.len());
        for item in items {
            let (op_id, hash) = match item {
                Item::Local(d) => (d.op_id, op::content_hash(&d.table, &d.row_id, d.kind, &d.data)),
                Item::Remote(e) => (Some(e.op().op_id), e.op().content_hash()),
            };
            let existing = match op_id {
                Some(id) => find_existing(state, index, &seen, &id)?,
                None => None,
            };
            if let (Some(found), Some(id)) = (existing, op_id) {
                if found.content_hash != hash {
                    return Err(Error::OpIdConflict(id));
                }
                verdicts.push(Verdict::Duplicate(id, found));
                continue;
            }
            if let Item::Remote(e) = item {
                check_remote(state, index, &mut max_seqs, self.inner.origin, e.op(), now)?;
            }
            if estimate_payload(item) > self.inner.payload_max as usize {
                return Err(Error::Op(OpError::InvalidOp(format!(
                    "op larger than the {}-byte record limit",
                    self.inner.payload_max
                ))));
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
            verdicts.push(Verdict::New { id, hash, generated: op_id.is_none() });
        }
        Ok(verdicts)
    }

    /// Gives a checked item its LSN (and seq and HLC when local) and queues it; a received
    /// item's bytes are queued and its op is handed back.
    fn place(
        &self,
        state: &mut State,
        item: Item,
        op_id: OpId,
        hash: u64,
        generated: bool,
        now: u64,
    ) -> (Appended, Option<Op>) {
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let mut back = None;
        let (origin, seq, hlc, body, local) = match item {
            Item::Local(draft) => {
                let seq = state.next_seq;
                state.next_seq += 1;
                let hlc = state.clock.now(now);
                let op = Op {
                    op_id,
                    origin: self.inner.origin,
                    seq,
                    hlc,
                    table: draft.table,
                    row_id: draft.row_id,
                    kind: draft.kind,
                    data: draft.data,
                };
                (op.origin, seq, hlc, Body::Op(op), true)
            }
            // `check_remote` already checked drift and raised the clock.
            Item::Remote(e) => {
                let (op, bytes) = e.into_parts();
                let fields = (op.origin, op.seq, op.hlc);
                back = Some(op);
                (fields.0, fields.1, fields.2, Body::Encoded(bytes), false)
            }
        };
        let appended = Appended { op_id, origin, seq, hlc, lsn, duplicate: false };
        let entry = Inflight { content_hash: hash, lsn, origin, seq, hlc };
        if generated {
            state.inflight.push_generated(op_id, entry);
        } else {
            state.inflight.insert_supplied(op_id, entry, !local);
        }
        state.pending.push(Pending {
            content_hash: hash,
            op_id,
            origin,
            seq,
            hlc,
            body,
            lsn,
            local,
            batch_start: false,
        });
        (appended, back)
    }
}

/// The entry for `id` among this call's items, in-flight ops, or the index.
fn find_existing(
    state: &State,
    index: &IndexReader,
    seen: &IdMap<OpId, Inflight>,
    id: &OpId,
) -> Result<Option<Inflight>> {
    if let Some(found) = seen.get(id).or_else(|| state.inflight.get(id)) {
        return Ok(Some(*found));
    }
    Ok(index.get(id)?.map(|e| Inflight {
        content_hash: e.content_hash,
        lsn: e.lsn,
        origin: e.origin,
        seq: e.seq,
        hlc: e.hlc,
    }))
}

/// The highest seq an index snapshot holds per origin (0 for none), looked up once per origin.
#[derive(Default)]
struct MaxSeqs {
    /// Origins come from peers: SipHash.
    by_origin: std::collections::HashMap<Origin, u64>,
}

impl MaxSeqs {
    fn get(&mut self, index: &IndexReader, origin: &Origin) -> Result<u64> {
        if let Some(max) = self.by_origin.get(origin) {
            return Ok(*max);
        }
        let max = index.max_seq(origin)?.unwrap_or(0);
        self.by_origin.insert(*origin, max);
        Ok(max)
    }
}

/// Refuses a remote op that would break an invariant: bad seq or HLC node, split brain, drift.
///
/// A received op that claims this log's own origin and is not already here is always split
/// brain: this directory is the only writer of its origin (local ops are therefore never in the
/// in-flight seq map, which holds received ops only).
fn check_remote(
    state: &mut State,
    index: &IndexReader,
    max_seqs: &mut MaxSeqs,
    own: Origin,
    op: &Op,
    now: u64,
) -> Result<()> {
    if op.seq == 0 || op.hlc.node != op.origin {
        return Err(Error::Op(OpError::InvalidOp(format!(
            "op {}: seq must be >= 1 and the HLC node must be the origin",
            op.op_id
        ))));
    }
    let holder = match state.inflight.holder(&op.origin, op.seq) {
        Some(id) => Some(id),
        None if op.seq > max_seqs.get(index, &op.origin)? => None,
        None => index.get_seq(&op.origin, op.seq)?,
    };
    if op.origin == own && holder != Some(op.op_id) {
        return Err(Error::SplitBrain {
            origin: op.origin,
            seq: op.seq,
            existing: holder,
            refused: op.op_id,
        });
    }
    if let Some(existing) = holder.filter(|id| *id != op.op_id) {
        return Err(Error::SplitBrain {
            origin: op.origin,
            seq: op.seq,
            existing: Some(existing),
            refused: op.op_id,
        });
    }
    // Counts a refusal; an accepted stamp raises the clock, which is harmless even if the
    // batch is refused later (the clock only has to move forward).
    Ok(state.clock.receive(&op.hlc, now)?)
}

/// An upper bound on the stored size of an item (bincode varints are at most 10 bytes, and
/// the proof trailer at most `TRAILER_BYTES_MAX`); a received item's exact size.
fn estimate_payload(item: &Item) -> usize {
    let (table, row, data) = match item {
        Item::Local(d) => (d.table.len(), d.row_id.len(), d.data.len()),
        Item::Remote(e) => return e.bytes().len(),
    };
    16 + 16
        + 10
        + 10
        + 5
        + 16
        + 10
        + table
        + 10
        + row
        + 5
        + 10
        + data
        + feral_types::proof::TRAILER_BYTES_MAX
}
