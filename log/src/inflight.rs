//! Ops that are queued or durable but not yet in the redb index, so duplicate checks and
//! split-brain checks never miss them.
//!
//! Ops whose op_id this process generated are kept in a deque in LSN order: generated ids
//! strictly increase within a process and are placed in LSN order, so the deque is sorted by
//! op_id too (found by binary search) and drains from the front as the indexer catches up. Only
//! caller-supplied and received op_ids pay for a hash map entry.

use std::collections::VecDeque;

use crate::index::IndexEntry;
use crate::limits::INFLIGHT_OPS_KEPT;
use crate::op::{IdMap, OpId, Origin};
use crate::wal::Inflight;

/// The in-flight ops.
#[derive(Debug, Default)]
pub(crate) struct InflightSet {
    /// Generated op_ids, in LSN order (and so in op_id order).
    generated: VecDeque<(OpId, Inflight)>,
    /// Caller-supplied and received op_ids.
    supplied: IdMap<OpId, Inflight>,
    /// Received ops by (origin, seq), for split-brain checks.
    seqs: IdMap<(Origin, u64), OpId>,
}

impl InflightSet {
    /// Ops in flight.
    pub(crate) fn len(&self) -> usize {
        self.generated.len() + self.supplied.len()
    }

    /// The entry for an op_id.
    pub(crate) fn get(&self, id: &OpId) -> Option<&Inflight> {
        if let Some(found) = self.supplied.get(id) {
            return Some(found);
        }
        let at = self.generated.binary_search_by(|(g, _)| g.cmp(id)).ok()?;
        self.generated.get(at).map(|(_, entry)| entry)
    }

    /// The op held in flight at (origin, seq), among received ops.
    pub(crate) fn holder(&self, origin: &Origin, seq: u64) -> Option<OpId> {
        self.seqs.get(&(*origin, seq)).copied()
    }

    /// Adds an op whose id this process generated (ids increase with every call).
    pub(crate) fn push_generated(&mut self, id: OpId, entry: Inflight) {
        debug_assert!(self.generated.back().is_none_or(|(last, _)| *last < id));
        self.generated.push_back((id, entry));
    }

    /// Adds an op with a caller-supplied id; `received` ops are also keyed by (origin, seq).
    pub(crate) fn insert_supplied(&mut self, id: OpId, entry: Inflight, received: bool) {
        self.supplied.insert(id, entry);
        if received {
            self.seqs.insert((entry.origin, entry.seq), id);
        }
    }

    /// Room for `n` more supplied ops.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.supplied.reserve(n);
    }

    /// Forgets an op that will never be durable (a failed group commit): always one of the
    /// newest, so a generated one is found from the back.
    pub(crate) fn remove(&mut self, id: &OpId, origin: &Origin, seq: u64) {
        if self.supplied.remove(id).is_some() {
            self.seqs.remove(&(*origin, seq));
            return;
        }
        if let Ok(at) = self.generated.binary_search_by(|(g, _)| g.cmp(id)) {
            self.generated.remove(at);
        }
    }

    /// Drops ops the indexer has committed. Shrinks the maps once they drain: after a backlog
    /// they would otherwise stay large and sparse, and every later insert would miss the cache.
    pub(crate) fn forget_indexed(&mut self, entries: &[IndexEntry]) {
        let Some(last) = entries.last().map(|e| e.lsn) else { return };
        while self.generated.front().is_some_and(|(_, e)| e.lsn <= last) {
            self.generated.pop_front();
        }
        if !self.supplied.is_empty() {
            for entry in entries {
                self.supplied.remove(&entry.op_id);
            }
        }
        if !self.seqs.is_empty() {
            for entry in entries {
                self.seqs.remove(&(entry.origin, entry.seq));
            }
        }
        shrink_sparse(&mut self.supplied);
        shrink_sparse(&mut self.seqs);
        if self.generated.capacity() > INFLIGHT_OPS_KEPT
            && self.generated.len() * 16 < self.generated.capacity()
        {
            self.generated.shrink_to((self.generated.len() * 2).max(INFLIGHT_OPS_KEPT));
        }
    }

    /// Forgets everything (state is being reloaded from disk).
    pub(crate) fn clear(&mut self) {
        self.generated.clear();
        self.supplied.clear();
        self.seqs.clear();
    }
}

/// Gives memory back once a map is mostly empty (amortized: only when under 1/16 full).
fn shrink_sparse<K: std::hash::Hash + Eq, V>(map: &mut IdMap<K, V>) {
    if map.capacity() > INFLIGHT_OPS_KEPT && map.len() * 16 < map.capacity() {
        map.shrink_to((map.len() * 2).max(INFLIGHT_OPS_KEPT));
    }
}
