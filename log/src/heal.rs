//! Healing: a damaged segment rewritten whole from its intact records and peers' copies of
//! the damaged ones.
//!
//! The caller (the node, after it verified a received run's seal) hands over received ops;
//! those that are a damaged record's op (same origin, seq and op_id as the index says, and the
//! same content hash) are kept in the damage register. Once every damaged record of a segment
//! has its copy, the segment is rewritten: the same base LSN, salt and capacity, every record
//! at the LSN and offset it had (so the index stays right), a new footer; written to a
//! temporary file and synced, the damaged file kept under `damaged/` (a hard link, for
//! forensics), the new one renamed over it, the directories synced. A scrub of the new file
//! must then verify, or the heal is reported as failed. Nothing is written while a copy is
//! missing or does not fit its frame. Damage in the active segment (found by `check` or a
//! read) is healed the same way once its copies are in: the segment is sealed early
//! (`Wal::seal_active`) and the writes go on in a fresh one.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::record;
use crate::segment::{self, FOOTER_BYTES, Footer, HEADER_BYTES, Header};
use crate::wal::{Lsn, Wal};
use feral_types::EncodedOp;

/// The directory (in the data directory) damaged segments are kept in after a heal.
pub const DAMAGED_DIR: &str = "damaged";

impl Wal {
    /// Takes the copies of damaged records among `ops` (received, their seals verified by the
    /// caller) and rewrites every damaged segment they complete. Returns the segments
    /// healed. A rewrite that fails is logged and leaves the damage registered (a later copy
    /// tries again).
    pub fn heal_from(&self, ops: &[EncodedOp]) -> Result<u64> {
        let complete: Vec<Lsn> = {
            let mut segments = self.inner.damage.lock();
            if segments.is_empty() {
                return Ok(0);
            }
            for op in ops {
                let o = op.op();
                for damage in segments.values_mut() {
                    let found = damage.ranges.iter().flat_map(|r| &r.ops).find(|d| {
                        d.origin == o.origin
                            && d.seq == o.seq
                            && d.op_id == o.op_id
                            && d.content_hash == o.content_hash()
                    });
                    if let Some(d) = found {
                        damage.fetched.insert(d.lsn, op.bytes().to_vec());
                    }
                }
            }
            segments.iter().filter(|(_, d)| d.complete()).map(|(base, _)| *base).collect()
        };
        let mut healed = 0;
        for base in complete {
            // Damage in the segment being written: it is sealed first, then healed whole.
            let sealed = match self.sealed_segments().contains(&base) {
                true => Ok(()),
                false => self.seal_active(base).map(|_| ()),
            };
            match sealed.and_then(|()| self.rewrite_segment(base)) {
                Ok(()) => {
                    healed += 1;
                    tracing::info!(segment = %segment::segment_name(base), "healed a damaged segment from peers' copies");
                }
                Err(e) => {
                    tracing::error!(error = %e, segment = %segment::segment_name(base), "could not heal a damaged segment");
                }
            }
        }
        Ok(healed)
    }

    /// Rewrites damaged sealed segment `base` from its intact frames and the copies in the
    /// register (see the module).
    pub(crate) fn rewrite_segment(&self, base: Lsn) -> Result<()> {
        let _one = crate::wal::lock(&self.inner.maintenance);
        // No entry: every record verified, only the header, the zero gap or the footer is
        // damaged, and the intact records are all a rewrite needs.
        let (damaged, fetched) = {
            let segments = self.inner.damage.lock();
            match segments.get(&base) {
                Some(d) => {
                    let ops: BTreeMap<Lsn, u64> = d
                        .ranges
                        .iter()
                        .flat_map(|r| &r.ops)
                        .map(|op| (op.lsn, op.offset))
                        .collect();
                    (ops, d.fetched.clone())
                }
                None => (BTreeMap::new(), BTreeMap::new()),
            }
        };
        if !self.sealed_segments().contains(&base) {
            return Err(Error::Index(format!("segment {base} is not a sealed segment")));
        }
        let path = self.segment_path(base);
        let file = self.storage().open(&path, false).map_err(|e| Error::from_io(&path, e))?;
        let reader = segment::SegmentReader::new(file);
        let header = crate::salvage::lenient_header(&reader, base).map_err(|why| {
            Error::Index(format!("segment {} cannot be healed: {why}", segment::segment_name(base)))
        })?;
        let footer = crate::recovery::read_footer(&reader, &path, &header).ok().flatten();
        drop(reader);
        // Every intact frame, by LSN.
        let mut intact: BTreeMap<Lsn, crate::salvage::Salvaged> = BTreeMap::new();
        crate::salvage::salvage_segment(self.storage(), &path, base, &mut |s| {
            intact.insert(s.lsn, s);
            Ok(())
        })?;
        let last = {
            let state = self.state();
            let i = state.segments.iter().position(|b| *b == base);
            i.and_then(|i| state.segments.get(i + 1)).map(|next| next - 1)
        }
        .ok_or_else(|| Error::Index(format!("segment {base} has no successor")))?;
        // Where each LSN's frame starts: from the intact frames and the index.
        let offset_of =
            |lsn: Lsn| intact.get(&lsn).map(|s| s.offset).or(damaged.get(&lsn).copied());
        let end_of_data = footer.map(|f| f.data_end);
        let mut frames = Vec::new();
        let mut at = HEADER_BYTES;
        let mut synced = base.saturating_sub(1);
        for lsn in base..=last {
            let expected_next = if lsn == last { end_of_data } else { offset_of(lsn + 1) };
            let (payload, synced_lsn) = match intact.get(&lsn) {
                Some(s) => (s.bytes.as_slice().to_vec(), s.synced_lsn),
                None => {
                    let copy = fetched.get(&lsn).ok_or_else(|| {
                        Error::Index(format!("no copy of LSN {lsn} to heal with"))
                    })?;
                    let fits = |p: &Vec<u8>| {
                        expected_next
                            .is_none_or(|next| at + record::frame_len(p.len()) as u64 == next)
                    };
                    let mut payload = copy.clone();
                    if !fits(&payload) {
                        // A genesis this node stored before its certificate was attached.
                        let mut bare = payload.clone();
                        if feral_types::proof::detach_certificate(&mut bare) && fits(&bare) {
                            payload = bare;
                        }
                    }
                    // A synced LSN below this one, as every frame's is (only recovery of an
                    // active segment reads it).
                    (payload, synced.min(lsn - 1))
                }
            };
            if offset_of(lsn).is_some_and(|o| o != at) {
                return Err(Error::Index(format!(
                    "LSN {lsn} would land at offset {at}, not where the index has it"
                )));
            }
            synced = synced_lsn;
            let start = frames.len();
            record::encode_frame(&mut frames, header.salt, lsn, synced_lsn, &payload);
            at += (frames.len() - start) as u64;
        }
        if end_of_data.is_some_and(|end| end != at) {
            return Err(Error::Index(format!(
                "the rewritten frames end at {at}, not {end_of_data:?}"
            )));
        }
        let header = Header { base_lsn: base, capacity: header.capacity, salt: header.salt };
        let data_limit = header.data_limit();
        if at > data_limit {
            return Err(Error::Index("the rewritten frames do not fit the segment".into()));
        }
        let mut hasher = crc32fast::Hasher::new();
        let head = header.encode();
        hasher.update(&head);
        hasher.update(&frames);
        segment::crc_zeros(&mut hasher, data_limit - at);
        let footer = Footer {
            record_count: last + 1 - base,
            last_lsn: last,
            data_end: at,
            segment_crc: hasher.finalize(),
        };
        // The new file beside the old one, synced whole before it takes the old one's name.
        let name = segment::segment_name(base);
        let temp = self.wal_dir().join(format!("{base:020}.heal{}", segment::TEMP_SUFFIX));
        let io = |e| Error::from_io(&temp, e);
        let _ = self.storage().remove(&temp);
        let file = self.storage().create(&temp).map_err(io)?;
        file.allocate(header.capacity).map_err(io)?;
        file.write_all_at(&head, 0).map_err(io)?;
        file.write_all_at(&frames, HEADER_BYTES).map_err(io)?;
        file.write_all_at(&footer.encode(), header.capacity - FOOTER_BYTES).map_err(io)?;
        file.sync_data().map_err(io)?;
        drop(file);
        // The damaged file is kept for forensics, then replaced atomically.
        let kept_dir = self.dir().join(DAMAGED_DIR);
        crate::private::create_dir_all(&kept_dir).map_err(|e| Error::from_io(&kept_dir, e))?;
        let kept = kept_dir.join(format!("{name}.{}", self.inner.config.time.now_ms()));
        std::fs::hard_link(&path, &kept).map_err(|e| Error::from_io(&kept, e))?;
        crate::private::sync_parent(&kept).map_err(|e| Error::from_io(&kept_dir, e))?;
        self.storage().rename(&temp, &path).map_err(|e| Error::from_io(&path, e))?;
        self.storage().sync_dir(self.wal_dir()).map_err(|e| Error::from_io(self.wal_dir(), e))?;
        // The rewritten segment must verify whole; that also clears its damage.
        if self.verify_segment(base, &mut |_| true)? == Some(true) {
            self.inner.damage.lock().remove(&base);
            Ok(())
        } else {
            Err(Error::Index(format!("the healed segment {name} does not verify")))
        }
    }
}
