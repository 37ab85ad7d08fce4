//! Byte layouts of the index's values: one op's entry, and a run of consecutive ops.
//!
//! A run is a stretch of ops that were logged one after the other (LSN + 1) from one origin
//! (seq + 1) into one segment, with strictly increasing op_ids: one redb entry describes them
//! all, instead of two per op.

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::le::{u32_at, u64_at};
use crate::op::{OpId, Origin};

/// Bytes of one op's entry in the `ops` table.
pub const ENTRY_BYTES: usize = 76;
const RUN_HEADER_BYTES: usize = 44;
const RUN_OP_BYTES: usize = 44;

/// Where an op lives and what it is, as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The op's id.
    pub op_id: OpId,
    /// Writer incarnation.
    pub origin: Origin,
    /// Per-origin sequence number.
    pub seq: u64,
    /// HLC stamp (its node is the origin).
    pub hlc: Hlc,
    /// Local log position.
    pub lsn: u64,
    /// Base LSN of the segment holding it.
    pub segment: u64,
    /// Byte offset of its frame in that segment.
    pub offset: u64,
    /// [`crate::op::content_hash`] of the writer-supplied fields.
    pub content_hash: u64,
}

impl IndexEntry {
    /// origin 16 | seq | lsn | segment | offset | content hash | wall ms (u64 each) | counter u32.
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[0..16].copy_from_slice(&self.origin.0);
        let numbers =
            [self.seq, self.lsn, self.segment, self.offset, self.content_hash, self.hlc.wall_ms];
        for (i, n) in numbers.iter().enumerate() {
            out[16 + i * 8..24 + i * 8].copy_from_slice(&n.to_le_bytes());
        }
        out[64..68].copy_from_slice(&self.hlc.counter.to_le_bytes());
        out
    }

    /// The inverse of [`IndexEntry::encode`].
    pub fn decode(op_id: OpId, raw: &[u8; ENTRY_BYTES]) -> IndexEntry {
        let origin = Origin(crate::le::array_at(raw, 0));
        IndexEntry {
            op_id,
            origin,
            seq: u64_at(raw, 16),
            lsn: u64_at(raw, 24),
            segment: u64_at(raw, 32),
            offset: u64_at(raw, 40),
            content_hash: u64_at(raw, 48),
            hlc: Hlc { wall_ms: u64_at(raw, 56), counter: u32_at(raw, 64), node: origin },
        }
    }

    /// True when `next` continues a run that ends with `self`.
    pub fn continued_by(&self, next: &IndexEntry) -> bool {
        next.lsn == self.lsn + 1
            && next.seq == self.seq + 1
            && next.origin == self.origin
            && next.segment == self.segment
            && next.op_id > self.op_id
    }
}

/// Encodes a run: origin 16 | first seq | first lsn | segment (u64 each) | count u32, then per
/// op: op_id 16 | offset | content hash | wall ms (u64 each) | counter u32.
pub fn encode_run(run: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RUN_HEADER_BYTES + run.len() * RUN_OP_BYTES);
    let first = &run[0];
    out.extend_from_slice(&first.origin.0);
    out.extend_from_slice(&first.seq.to_le_bytes());
    out.extend_from_slice(&first.lsn.to_le_bytes());
    out.extend_from_slice(&first.segment.to_le_bytes());
    out.extend_from_slice(&(run.len() as u32).to_le_bytes());
    for e in run {
        out.extend_from_slice(&e.op_id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.content_hash.to_le_bytes());
        out.extend_from_slice(&e.hlc.wall_ms.to_le_bytes());
        out.extend_from_slice(&e.hlc.counter.to_le_bytes());
    }
    out
}

/// A checked view of an encoded run.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    raw: &'a [u8],
    count: usize,
}

impl<'a> Run<'a> {
    /// Checks the length against the count; a mismatch is index corruption.
    pub fn parse(raw: &'a [u8]) -> Result<Run<'a>> {
        if raw.len() < RUN_HEADER_BYTES {
            return Err(Error::IndexCorruption("run entry cut short".into()));
        }
        let count = u32_at(raw, 40) as usize;
        if count == 0 || raw.len() != RUN_HEADER_BYTES + count * RUN_OP_BYTES {
            return Err(Error::IndexCorruption("run entry length differs from its count".into()));
        }
        Ok(Run { raw, count })
    }

    /// Ops in the run.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The origin of every op in the run.
    pub fn origin(&self) -> Origin {
        Origin(crate::le::array_at(self.raw, 0))
    }

    /// Seq of the first op.
    pub fn first_seq(&self) -> u64 {
        u64_at(self.raw, 16)
    }

    fn op_id(&self, i: usize) -> OpId {
        OpId(crate::le::array_at(self.raw, RUN_HEADER_BYTES + i * RUN_OP_BYTES))
    }

    /// The i-th op's entry.
    pub fn entry(&self, i: usize) -> IndexEntry {
        let at = RUN_HEADER_BYTES + i * RUN_OP_BYTES;
        let origin = self.origin();
        IndexEntry {
            op_id: self.op_id(i),
            origin,
            seq: self.first_seq() + i as u64,
            lsn: u64_at(self.raw, 24) + i as u64,
            segment: u64_at(self.raw, 32),
            offset: u64_at(self.raw, at + 16),
            content_hash: u64_at(self.raw, at + 24),
            hlc: Hlc {
                wall_ms: u64_at(self.raw, at + 32),
                counter: u32_at(self.raw, at + 40),
                node: origin,
            },
        }
    }

    /// The position of `op_id` (op_ids in a run are strictly increasing).
    pub fn find(&self, op_id: &OpId) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.op_id(mid).cmp(op_id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The position of `seq`, if the run holds it.
    pub fn find_seq(&self, seq: u64) -> Option<usize> {
        let first = self.first_seq();
        (seq >= first && seq - first < self.count as u64).then(|| (seq - first) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> IndexEntry {
        let origin = Origin([3; 16]);
        IndexEntry {
            op_id: OpId::generate(1000 + i),
            origin,
            seq: 10 + i,
            hlc: Hlc { wall_ms: 5 + i, counter: i as u32, node: origin },
            lsn: 100 + i,
            segment: 1,
            offset: 64 + 40 * i,
            content_hash: i * 7,
        }
    }

    #[test]
    fn entry_and_run_round_trip() {
        let e = entry(1);
        assert_eq!(IndexEntry::decode(e.op_id, &e.encode()), e);
        let run: Vec<_> = (0..9).map(entry).collect();
        let raw = encode_run(&run);
        let parsed = Run::parse(&raw).expect("parse");
        for (i, e) in run.iter().enumerate() {
            assert_eq!(parsed.entry(i), *e);
            assert_eq!(parsed.find(&e.op_id), Some(i));
            assert_eq!(parsed.find_seq(e.seq), Some(i));
        }
        assert_eq!(parsed.find(&OpId([0; 16])), None);
        assert_eq!(parsed.find_seq(9), None);
        assert_eq!(parsed.find_seq(19), None);
        assert!(Run::parse(&raw[..raw.len() - 1]).is_err());
    }
}
