//! The last resort for a damaged log: every intact record of a `wal/` directory, found by
//! resynchronising on the next valid frame past a bad one, and the stretches that were not.
//!
//! A normal scan stops at the first frame that fails its checks, because everything after it
//! cannot be trusted to be in order. Salvage trusts each frame on its own: a frame is intact
//! when its CRC (which covers its length, LSN, payload and padding, and mixes in its
//! segment's salt) verifies and its payload decodes as an op. Past a bad frame the scan tries
//! every following 8-byte boundary of the segment's data area. Nothing is written: salvage
//! reads a directory that may be a copy moved aside, with no lock and no index.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::limits::SALVAGE_DAMAGED_LISTED_MAX;
use crate::record::{self, Decoded, FRAME_HEADER_BYTES};
use crate::segment::{self, HEADER_BYTES, Header, SegmentReader};
use crate::storage::Storage;
use crate::wal::Lsn;
use feral_types::{OpBytes, codec};

/// One intact record.
#[derive(Debug, Clone)]
pub struct Salvaged {
    /// Its LSN as written.
    pub lsn: Lsn,
    /// Base LSN of the segment it was found in (from the file name).
    pub segment: Lsn,
    /// Frame offset in that segment.
    pub offset: u64,
    /// The frame's synced LSN (the highest LSN durable when it was written).
    pub synced_lsn: Lsn,
    /// The payload as stored: the op's encoding and its proof trailer.
    pub bytes: OpBytes,
}

/// A stretch of a segment that held no intact record where one was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damaged {
    /// The segment file's name.
    pub segment: String,
    /// First damaged byte.
    pub from_offset: u64,
    /// Just past the damaged stretch: the next intact frame, or the end of the data area.
    pub to_offset: u64,
    /// LSN of the last intact record before the stretch, if any.
    pub after_lsn: Option<Lsn>,
    /// LSN of the first intact record after it, if any.
    pub before_lsn: Option<Lsn>,
    /// Why the first frame of the stretch was refused.
    pub reason: String,
}

/// What a salvage found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SalvageReport {
    /// Segment files read.
    pub segments: u64,
    /// Intact records handed to the visitor.
    pub records: u64,
    /// LSNs missing between the intact records (a gap in the LSN sequence, whether inside a
    /// damaged stretch or a whole missing segment).
    pub missing_lsns: u64,
    /// Frames whose checksum verified but whose payload is not an op (not handed over).
    pub undecodable: u64,
    /// The damaged stretches, in log order (at most `SALVAGE_DAMAGED_LISTED_MAX`; the rest
    /// are counted in `damaged_unlisted`).
    pub damaged: Vec<Damaged>,
    /// Damaged stretches past the listed ones.
    pub damaged_unlisted: u64,
    /// Segment files that could not be used at all (unreadable header), with why.
    pub unreadable: Vec<(String, String)>,
}

impl SalvageReport {
    /// True when nothing was damaged or missing.
    pub fn clean(&self) -> bool {
        self.damaged.is_empty()
            && self.damaged_unlisted == 0
            && self.missing_lsns == 0
            && self.undecodable == 0
            && self.unreadable.is_empty()
    }

    fn damaged(&mut self, stretch: Damaged) {
        if self.damaged.len() < SALVAGE_DAMAGED_LISTED_MAX {
            self.damaged.push(stretch);
        } else {
            self.damaged_unlisted += 1;
        }
    }
}

/// Reads every segment file of `wal_dir` in name order and hands each intact record to
/// `visit`, in the order found (ascending LSN in an undamaged log). Errors only when the
/// directory cannot be listed or `visit` fails; damage is reported, never raised.
pub fn salvage(
    storage: &Arc<dyn Storage>,
    wal_dir: &Path,
    visit: &mut dyn FnMut(Salvaged) -> Result<()>,
) -> Result<SalvageReport> {
    let mut report = SalvageReport::default();
    let mut last_lsn: Option<Lsn> = None;
    for (base, path) in crate::recovery::list_segments(storage, wal_dir)? {
        salvage_one(storage, &path, base, &mut last_lsn, &mut report, visit)?;
    }
    Ok(report)
}

/// [`salvage`] of the one segment file `path` (base LSN `base`).
pub(crate) fn salvage_segment(
    storage: &Arc<dyn Storage>,
    path: &Path,
    base: Lsn,
    visit: &mut dyn FnMut(Salvaged) -> Result<()>,
) -> Result<SalvageReport> {
    let mut report = SalvageReport::default();
    salvage_one(storage, path, base, &mut None, &mut report, visit)?;
    Ok(report)
}

fn salvage_one(
    storage: &Arc<dyn Storage>,
    path: &Path,
    base: Lsn,
    last_lsn: &mut Option<Lsn>,
    report: &mut SalvageReport,
    visit: &mut dyn FnMut(Salvaged) -> Result<()>,
) -> Result<()> {
    report.segments += 1;
    let name = segment::segment_name(base);
    let file = match storage.open(path, false) {
        Ok(file) => file,
        Err(e) => {
            report.unreadable.push((name, e.to_string()));
            return Ok(());
        }
    };
    let mut reader = SegmentReader::new(file);
    let header = match lenient_header(&reader, base) {
        Ok(header) => header,
        Err(why) => {
            report.unreadable.push((name, why));
            return Ok(());
        }
    };
    scan_segment(&mut reader, &header, &name, last_lsn, report, visit)
}

/// The header's fields, taken even when its own CRC fails: the salt is what matters, and a
/// wrong salt makes every frame fail its CRC, so a damaged salt cannot pass off bad frames.
pub(crate) fn lenient_header(
    reader: &SegmentReader,
    base: Lsn,
) -> std::result::Result<Header, String> {
    let mut bytes = [0u8; HEADER_BYTES as usize];
    crate::storage::read_exact_at(reader.file(), &mut bytes, 0)
        .map_err(|e| format!("header unreadable: {e}"))?;
    if let Ok(header) = Header::decode(&bytes) {
        return Ok(header);
    }
    let len = reader.file().len().map_err(|e| format!("size unreadable: {e}"))?;
    let salt = u64::from_le_bytes(bytes[32..40].try_into().unwrap_or_default());
    if len < HEADER_BYTES + segment::FOOTER_BYTES {
        return Err(format!("{len} bytes: shorter than a header and a footer"));
    }
    // The file's size is its capacity (a segment is created whole).
    Ok(Header { base_lsn: base, capacity: len, salt })
}

fn scan_segment(
    reader: &mut SegmentReader,
    header: &Header,
    name: &str,
    last_lsn: &mut Option<Lsn>,
    report: &mut SalvageReport,
    visit: &mut dyn FnMut(Salvaged) -> Result<()>,
) -> Result<()> {
    let end = header.data_limit();
    let payload_max = header.payload_max();
    let mut at = HEADER_BYTES;
    // The damaged stretch being crossed: (its first byte, why its first frame was refused).
    let mut bad: Option<(u64, &'static str)> = None;
    // Where the written data ends: the segment's data limit, or the start of its zero tail.
    let mut data_end = end;
    while at + FRAME_HEADER_BYTES as u64 <= end {
        let decoded = segment::read_frame(reader, at, end, header.salt, payload_max)
            .map_err(|e| Error::from_io(name, e))?;
        match decoded {
            Decoded::Frame(frame) => {
                let (lsn, frame_len, synced_lsn) =
                    (frame.lsn, frame.frame_len as u64, frame.synced_lsn);
                let bytes = OpBytes::new(frame.payload.to_vec());
                if let Some((from, reason)) = bad.take() {
                    report.damaged(Damaged {
                        segment: name.to_string(),
                        from_offset: from,
                        to_offset: at,
                        after_lsn: *last_lsn,
                        before_lsn: Some(lsn),
                        reason: reason.to_string(),
                    });
                }
                if codec::decode_payload(bytes.as_slice()).is_err() {
                    report.undecodable += 1;
                } else {
                    let expected = last_lsn.map_or(1, |l| l + 1);
                    report.missing_lsns += lsn.saturating_sub(expected);
                    *last_lsn = Some(last_lsn.map_or(lsn, |l| l.max(lsn)));
                    report.records += 1;
                    visit(Salvaged {
                        lsn,
                        segment: header.base_lsn,
                        offset: at,
                        synced_lsn,
                        bytes,
                    })?;
                }
                at += frame_len;
            }
            Decoded::Zero => {
                // Zeros: the end of the written data, or a zeroed stretch inside it. Skip to
                // the next non-zero 8-byte word, if any.
                match next_nonzero(reader, at, end).map_err(|e| Error::from_io(name, e))? {
                    Some(next) => {
                        bad.get_or_insert((at, "zeroed bytes inside the written data"));
                        at = next;
                    }
                    None => {
                        data_end = at;
                        break;
                    }
                }
            }
            Decoded::Bad(reason) => {
                bad.get_or_insert((at, reason));
                at += record::FRAME_ALIGN_BYTES as u64;
            }
        }
    }
    if let Some((from, reason)) = bad {
        report.damaged(Damaged {
            segment: name.to_string(),
            from_offset: from,
            to_offset: data_end.max(from),
            after_lsn: *last_lsn,
            before_lsn: None,
            reason: reason.to_string(),
        });
    }
    Ok(())
}

/// The offset of the first 8-byte word at or after `at` (a multiple of 8) that is not zero,
/// below `end`; `None` when the rest is zero.
fn next_nonzero(reader: &mut SegmentReader, mut at: u64, end: u64) -> std::io::Result<Option<u64>> {
    while at < end {
        let chunk = reader.bytes(at, crate::limits::SCAN_CHUNK_BYTES, end)?;
        if chunk.is_empty() {
            return Ok(None);
        }
        if let Some(word) = chunk.chunks(8).position(|w| w.iter().any(|b| *b != 0)) {
            return Ok(Some(at + word as u64 * 8));
        }
        at += chunk.len() as u64;
    }
    Ok(None)
}
