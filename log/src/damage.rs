//! Damage the log found in its own segments, kept so the node can go on around it.
//!
//! A frame that fails its checks in a sealed segment does not stop the log: the records around
//! it are intact (each frame has its own CRC), appends go to the active segment, and the ops
//! of the damaged frames are known from the index (op_id, origin, seq, LSN). The register
//! holds, per damaged segment, the LSN stretches whose frames did not verify and the ops the
//! index places there. It is filled by the scrub of sealed segments, by `check`, and by reads
//! that meet a bad frame; status and metrics show it, and a sync never sends those ops (a
//! sender stops each origin before its first damaged op, see `first_damaged_seq`).
//!
//! Architecture invariant: the register is the one place damage is kept; it lives in memory
//! (the scrub and `check` find the same damage again after a restart) and holds at most
//! `DAMAGED_SEGMENTS_MAX` segments and `DAMAGED_OPS_LISTED_MAX` ops listed per segment.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::limits::{DAMAGED_OPS_LISTED_MAX, DAMAGED_SEGMENTS_MAX, SCAN_CHUNK_BYTES};
use crate::op::{OpId, Origin};
use crate::segment::{self, FOOTER_BYTES, SegmentReader};
use crate::wal::{Lsn, Wal};

fn display<T: Display, S: Serializer>(value: &T, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Who found the damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FoundBy {
    /// The background scrub of sealed segments.
    Scrub,
    /// An integrity check.
    Check,
    /// A read of the damaged record.
    Read,
}

/// An op whose record did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DamagedOp {
    /// Its LSN here.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub lsn: Lsn,
    /// Its id.
    #[serde(serialize_with = "display")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub op_id: OpId,
    /// Its origin.
    #[serde(serialize_with = "display")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub origin: Origin,
    /// Its seq.
    pub seq: u64,
    /// Where the index says its frame starts in the segment.
    pub offset: u64,
    /// The index's content hash of it (a copy from a peer must match).
    #[serde(skip)]
    pub content_hash: u64,
}

/// A stretch of consecutive LSNs of one segment whose frames did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DamagedRange {
    /// The segment file's name.
    pub segment: String,
    /// Its base LSN.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub base: Lsn,
    /// First damaged LSN.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub from_lsn: Lsn,
    /// Last damaged LSN.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub to_lsn: Lsn,
    /// The ops the index places there (at most `DAMAGED_OPS_LISTED_MAX` per segment listed;
    /// `ops_unlisted` counts the rest).
    pub ops: Vec<DamagedOp>,
    /// Ops of the stretch past the listed ones.
    pub ops_unlisted: u64,
    /// Why the first damaged frame was refused.
    pub reason: String,
    /// Who found it.
    pub found_by: FoundBy,
    /// When (unix ms).
    pub found_at_ms: u64,
    /// Ops of the stretch a peer has sent a verified copy of so far (the segment is rewritten
    /// once every damaged op of it has one).
    pub fetched: u64,
}

/// One damaged segment: its stretches, and the verified copies of its damaged records
/// received so far, by LSN.
#[derive(Debug, Default)]
pub(crate) struct SegmentDamage {
    pub(crate) ranges: Vec<DamagedRange>,
    pub(crate) fetched: BTreeMap<Lsn, Vec<u8>>,
}

impl SegmentDamage {
    /// True once every damaged LSN has a copy (and every op of the stretches was listed).
    pub(crate) fn complete(&self) -> bool {
        self.ranges.iter().all(|r| {
            r.ops_unlisted == 0
                && r.ops.len() as u64 == r.to_lsn + 1 - r.from_lsn
                && r.ops.iter().all(|op| self.fetched.contains_key(&op.lsn))
        })
    }
}

/// The register (one per log).
#[derive(Debug, Default)]
pub(crate) struct DamageRegister {
    /// Segment base → its damage.
    segments: Mutex<BTreeMap<Lsn, SegmentDamage>>,
}

impl DamageRegister {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Lsn, SegmentDamage>> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The scrub's rate limit: [`Pace::step`] after each chunk read sleeps until the bytes read so
/// far are within `bytes_per_sec` of the time since the pace started, in steps of at most
/// `SCRUB_STOP_POLL`, and says whether to go on (false once `stop` is set).
#[derive(Debug)]
pub struct Pace<'a> {
    bytes_per_sec: u64,
    stop: &'a std::sync::atomic::AtomicBool,
    started: std::time::Instant,
    bytes: u64,
}

/// The longest a paced scrub sleeps before it looks at its stop flag again.
pub const SCRUB_STOP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl<'a> Pace<'a> {
    /// A pace of `bytes_per_sec` (at least 1) from now, ending when `stop` is set.
    pub fn new(bytes_per_sec: u64, stop: &'a std::sync::atomic::AtomicBool) -> Pace<'a> {
        Pace {
            bytes_per_sec: bytes_per_sec.max(1),
            stop,
            started: std::time::Instant::now(),
            bytes: 0,
        }
    }

    /// `n` more bytes were read: sleeps as long as the rate asks; false to stop.
    pub fn step(&mut self, n: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes += n as u64;
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        let mut left = due.saturating_sub(self.started.elapsed());
        while !left.is_zero() && !self.stop.load(Relaxed) {
            let step = left.min(SCRUB_STOP_POLL);
            std::thread::sleep(step);
            left -= step;
        }
        !self.stop.load(Relaxed)
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// What a scrub of one segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrubbed {
    /// Header, frames, footer and the whole-segment checksum verified.
    Clean,
    /// Damage, now in the register: this many LSNs.
    Damaged(u64),
    /// Damage outside every record (header, zero gap, footer): the segment was rewritten
    /// from its intact records, and verifies now.
    Rewritten,
    /// Not a sealed segment of this log (any more): nothing to do.
    Skipped,
}

impl Wal {
    /// Every damaged stretch known, in log order.
    pub fn damage(&self) -> Vec<DamagedRange> {
        let segments = self.inner.damage.lock();
        segments
            .values()
            .flat_map(|d| {
                d.ranges.iter().map(|r| {
                    let fetched = r.ops.iter().filter(|op| d.fetched.contains_key(&op.lsn));
                    DamagedRange { fetched: fetched.count() as u64, ..r.clone() }
                })
            })
            .collect()
    }

    /// Damaged LSNs known, over every segment.
    pub fn damaged_lsns(&self) -> u64 {
        let segments = self.inner.damage.lock();
        segments.values().flat_map(|d| &d.ranges).map(|r| r.to_lsn + 1 - r.from_lsn).sum()
    }

    /// The lowest seq of `origin` in `from..=to` whose record is known to be damaged.
    pub fn first_damaged_seq(&self, origin: &Origin, from: u64, to: u64) -> Option<u64> {
        let segments = self.inner.damage.lock();
        let ops = segments.values().flat_map(|d| &d.ranges).flat_map(|r| &r.ops);
        ops.filter(|op| op.origin == *origin && (from..=to).contains(&op.seq))
            .map(|op| op.seq)
            .min()
    }

    /// The op_id the index gives the damaged record of `origin` at `seq`, if it is one.
    pub fn damaged_op_id(&self, origin: &Origin, seq: u64) -> Option<OpId> {
        let segments = self.inner.damage.lock();
        let mut ops = segments.values().flat_map(|d| &d.ranges).flat_map(|r| &r.ops);
        ops.find(|op| op.origin == *origin && op.seq == seq).map(|op| op.op_id)
    }

    /// Sealed segments, oldest first (the last segment is being written: not scrubbed).
    pub fn sealed_segments(&self) -> Vec<Lsn> {
        let state = self.state();
        let n = state.segments.len().saturating_sub(1);
        state.segments[..n].to_vec()
    }

    /// Verifies sealed segment `base` whole: header, footer, and the whole-segment checksum,
    /// reading `SCAN_CHUNK_BYTES` at a time and calling `pace` with each chunk's size (the
    /// scrub's rate limit; it returns false to stop, and the segment counts as skipped). On a
    /// mismatch the segment's frames are read one by one and its damage registered
    /// ([`Wal::note_damage`]); a clean segment leaves the register.
    pub fn scrub_segment(
        &self,
        base: Lsn,
        pace: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Scrubbed> {
        if !self.sealed_segments().contains(&base) {
            return Ok(Scrubbed::Skipped);
        }
        let verified = self.verify_segment(base, pace)?;
        let Some(verified) = verified else { return Ok(Scrubbed::Skipped) };
        if verified {
            self.inner.damage.lock().remove(&base);
            return Ok(Scrubbed::Clean);
        }
        let lsns = self.note_damage(base, FoundBy::Scrub)?;
        if lsns == 0 && !self.inner.damage.lock().contains_key(&base) {
            // Every record verified: the damage is in the header, the zero gap or the footer,
            // which hold nothing the records do not. The segment is rewritten from them.
            tracing::warn!(segment = %segment::segment_name(base), "a sealed segment's header, gap or footer is damaged; rewriting it from its intact records");
            return match self.rewrite_segment(base) {
                Ok(()) => Ok(Scrubbed::Rewritten),
                Err(e) => Err(e),
            };
        }
        Ok(Scrubbed::Damaged(lsns))
    }

    /// Reads sealed segment `base` whole and compares it with its footer's checksum:
    /// `Some(true)` when header, footer and checksum verify, `Some(false)` when not, `None`
    /// when `pace` asked to stop.
    pub(crate) fn verify_segment(
        &self,
        base: Lsn,
        pace: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<bool>> {
        let path = self.segment_path(base);
        let file = self.storage().open(&path, false).map_err(|e| Error::from_io(&path, e))?;
        let mut reader = SegmentReader::new(file);
        (|| -> std::io::Result<Option<bool>> {
            let Ok(header) = crate::recovery::read_header(&reader, &path, base) else {
                return Ok(Some(false));
            };
            let Ok(Some(footer)) = crate::recovery::read_footer(&reader, &path, &header) else {
                return Ok(Some(false));
            };
            let end = header.capacity - FOOTER_BYTES;
            let mut hasher = crc32fast::Hasher::new();
            let mut at = 0;
            while at < end {
                let chunk = reader.bytes(at, SCAN_CHUNK_BYTES, end)?;
                if chunk.is_empty() {
                    return Ok(Some(false));
                }
                hasher.update(chunk);
                let n = chunk.len();
                at += n as u64;
                if !pace(n) {
                    return Ok(None);
                }
            }
            Ok(Some(hasher.finalize() == footer.segment_crc))
        })()
        .map_err(|e| Error::from_io(&path, e))
    }

    /// Reads segment `base` frame by frame (resynchronising past bad frames, as salvage
    /// does), works out which of its LSNs did not verify and which ops the index places
    /// there, and registers them. Returns the damaged LSNs (0 when every frame verified: a
    /// damaged header or footer alone is not a lost record).
    pub fn note_damage(&self, base: Lsn, found_by: FoundBy) -> Result<u64> {
        let (first, last) = {
            let state = self.state();
            let Some(i) = state.segments.iter().position(|b| *b == base) else {
                return Ok(0);
            };
            let last = state.segments.get(i + 1).map_or(state.durable_lsn, |next| next - 1);
            (base, last)
        };
        if last < first {
            return Ok(0);
        }
        let path = self.segment_path(base);
        let mut intact = Vec::new();
        let report = crate::salvage::salvage_segment(self.storage(), &path, base, &mut |s| {
            intact.push(s.lsn);
            Ok(())
        })?;
        intact.sort_unstable();
        // The LSNs of first..=last that no intact frame holds, as stretches.
        let mut stretches: Vec<(Lsn, Lsn)> = Vec::new();
        let mut next = first;
        for lsn in intact.iter().copied().filter(|l| (first..=last).contains(l)).chain([last + 1]) {
            if lsn > next {
                stretches.push((next, lsn - 1));
            }
            next = next.max(lsn + 1);
        }
        let reason = report.damaged.first().map_or_else(
            || report.unreadable.first().map_or("frames missing".into(), |(_, why)| why.clone()),
            |d| d.reason.clone(),
        );
        let mut ops = if stretches.is_empty() { Vec::new() } else { self.ops_at(&stretches)? };
        ops.sort_by_key(|op| op.lsn);
        let now = self.inner.config.time.now_ms();
        let name = segment::segment_name(base);
        let mut listed = 0usize;
        let ranges: Vec<DamagedRange> = stretches
            .iter()
            .map(|&(from, to)| {
                let all: Vec<DamagedOp> =
                    ops.iter().filter(|op| (from..=to).contains(&op.lsn)).cloned().collect();
                let room = DAMAGED_OPS_LISTED_MAX.saturating_sub(listed);
                let unlisted = all.len().saturating_sub(room) as u64;
                let shown: Vec<DamagedOp> = all.into_iter().take(room).collect();
                listed += shown.len();
                DamagedRange {
                    segment: name.clone(),
                    base,
                    from_lsn: from,
                    to_lsn: to,
                    ops: shown,
                    ops_unlisted: unlisted,
                    reason: reason.clone(),
                    found_by,
                    found_at_ms: now,
                    fetched: 0,
                }
            })
            .collect();
        let lsns = ranges.iter().map(|r| r.to_lsn + 1 - r.from_lsn).sum();
        let mut segments = self.inner.damage.lock();
        if ranges.is_empty() {
            segments.remove(&base);
        } else {
            if !segments.contains_key(&base) && segments.len() >= DAMAGED_SEGMENTS_MAX {
                tracing::error!(segment = %name, "damage register full: this segment's damage is not listed");
                return Ok(lsns);
            }
            tracing::error!(segment = %name, lsns, ?found_by, "damaged records found; the node serves and syncs around them");
            let entry = segments.entry(base).or_default();
            // Copies already received for LSNs still damaged are kept.
            entry
                .fetched
                .retain(|lsn, _| ranges.iter().any(|r| (r.from_lsn..=r.to_lsn).contains(lsn)));
            entry.ranges = ranges;
        }
        Ok(lsns)
    }

    /// The ops the index places at the LSNs of `stretches` (inclusive, ascending).
    fn ops_at(&self, stretches: &[(Lsn, Lsn)]) -> Result<Vec<DamagedOp>> {
        let inside = |lsn: Lsn| {
            let i = stretches.partition_point(|(_, to)| *to < lsn);
            stretches.get(i).is_some_and(|(from, _)| *from <= lsn)
        };
        let heads = self.with_index(|index| index.heads())?;
        let mut out = Vec::new();
        for (origin, head) in heads {
            let mut from = 1;
            while from <= head {
                let page = self.with_index(|index| {
                    index.range_by_origin(&origin, from, head, DAMAGE_INDEX_PAGE)
                })?;
                let Some(last) = page.last() else { break };
                from = last.seq + 1;
                out.extend(page.iter().filter(|e| inside(e.lsn)).map(|e| DamagedOp {
                    lsn: e.lsn,
                    op_id: e.op_id,
                    origin: e.origin,
                    seq: e.seq,
                    offset: e.offset,
                    content_hash: e.content_hash,
                }));
            }
        }
        Ok(out)
    }
}

/// Index entries read per page while looking for the ops of a damaged stretch.
const DAMAGE_INDEX_PAGE: usize = 16 * 1024;
