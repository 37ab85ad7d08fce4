//! The integrity report (SPEC 7 shape) and the verification of segments and index behind it.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::code::Code;
use crate::error::{Error, Location};
use crate::index::{Index, IndexReader};
use crate::limits::CHECK_PACE_RECORDS;
use crate::op::{IdMap, Origin};
use crate::read::{location, open_reader, scan_error};
use crate::recovery;
use crate::segment::{self, ScanStop};
use crate::storage::Storage;
use crate::wal::Lsn;
use feral_types::OpHead;

/// State of one checked part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PartStatus {
    /// Verified.
    Ok,
    /// Checksums or structure are wrong.
    Corruption,
    /// The part could not be opened or read.
    OpenFailed,
}

/// Where the index check failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexDetail {
    /// What was wrong.
    pub reason: String,
}

/// `{"ok":true,"wal":"ok","index":"ok"}`, or on failure the failing part's code, a
/// `<part>_detail` object and `error` (a log error wins over an index error). Never raises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrityReport {
    /// True when every part verified.
    pub ok: bool,
    /// The log.
    pub wal: PartStatus,
    /// The index.
    pub index: PartStatus,
    /// Where the log failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_detail: Option<Location>,
    /// Where the index failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_detail: Option<IndexDetail>,
    /// `wal_corruption`, `wal_open_failed`, `index_corruption`, `index_open_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Code>,
    /// Records verified.
    pub records: u64,
    /// Segments verified.
    pub segments: u64,
}

impl IntegrityReport {
    /// Builds the report from the two parts' outcomes.
    pub fn from_parts(wal: Result<(u64, u64), Error>, index: Result<(), Error>) -> IntegrityReport {
        let (wal_status, wal_detail, records, segments) = match wal {
            Ok((records, segments)) => (PartStatus::Ok, None, records, segments),
            Err(Error::Corruption(at)) => (PartStatus::Corruption, Some(at), 0, 0),
            Err(other) => (
                PartStatus::OpenFailed,
                Some(Location { segment: String::new(), offset: 0, reason: other.to_string() }),
                0,
                0,
            ),
        };
        let (index_status, index_detail) = match index {
            Ok(()) => (PartStatus::Ok, None),
            Err(Error::IndexCorruption(reason)) => {
                (PartStatus::Corruption, Some(IndexDetail { reason }))
            }
            Err(other) => (PartStatus::OpenFailed, Some(IndexDetail { reason: other.to_string() })),
        };
        let error = match (wal_status, index_status) {
            (PartStatus::Corruption, _) => Some(Code::WalCorruption),
            (PartStatus::OpenFailed, _) => Some(Code::WalOpenFailed),
            (_, PartStatus::Corruption) => Some(Code::IndexCorruption),
            (_, PartStatus::OpenFailed) => Some(Code::IndexOpenFailed),
            _ => None,
        };
        IntegrityReport {
            ok: error.is_none(),
            wal: wal_status,
            index: index_status,
            wal_detail,
            index_detail,
            error,
            records,
            segments,
        }
    }
}

/// One record as the log check saw it, for the index cross-check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub lsn: Lsn,
    pub segment: Lsn,
    pub offset: u64,
}

/// What a log check may assume about writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Nothing writes (open, resume): every listed segment is checked, and the active
    /// segment's unwritten tail must be zero.
    Quiet,
    /// Appends run beside the check: the segments and records up to the durable LSN taken at
    /// its start are checked; the active segment past it is being written and is not read
    /// (recovery checks that tail at every open and resume).
    Online,
}

/// Verifies every segment: header, frame CRCs and LSN order, footer, whole-segment CRC of sealed
/// segments, and that the segments hold every record up to `durable`. Returns
/// (records, segments); `seen` gets every record's position and the head of its op.
pub(crate) fn verify_log(
    storage: &Arc<dyn Storage>,
    wal_dir: &Path,
    durable: Lsn,
    scope: Scope,
    seen: &mut dyn FnMut(Seen, OpHead) -> Result<(), Error>,
) -> Result<(u64, u64), Error> {
    let mut listed = recovery::list_segments(storage, wal_dir)?;
    if scope == Scope::Online {
        // Segments created after the check started hold only records past `durable`.
        listed.retain(|(base, _)| *base <= durable.max(1));
    }
    let mut next = 1;
    let count = listed.len();
    for (i, (base, path)) in listed.iter().enumerate() {
        if *base != next {
            return Err(Error::Corruption(location(
                path,
                0,
                format!("segment starts at LSN {base}, expected {next}: a segment is missing"),
            )));
        }
        let mut reader = open_reader(storage, path)?;
        let header = recovery::read_header(&reader, path, *base).map_err(Error::Corruption)?;
        let footer = recovery::read_footer(&reader, path, &header).map_err(Error::Corruption)?;
        let end = match footer {
            Some(f) => f.data_end,
            None if i + 1 == count => header.data_limit(),
            None => {
                return Err(Error::Corruption(location(
                    path,
                    header.data_limit(),
                    "segment before the last one is not sealed",
                )));
            }
        };
        let last = match (footer, scope) {
            (Some(f), _) => f.last_lsn,
            (None, Scope::Quiet) => u64::MAX,
            (None, Scope::Online) => durable,
        };
        let scanned =
            segment::scan_frames(&mut reader, &header, end, last, &mut |offset, frame| {
                let op = crate::codec::decode_payload(frame.payload).map_err(|r| {
                    Error::Corruption(location(path, offset, format!("undecodable op: {r}")))
                })?;
                let head = OpHead { op_id: op.op_id, origin: op.origin, seq: op.seq };
                seen(Seen { lsn: frame.lsn, segment: *base, offset }, head)
            })
            .map_err(|f| scan_error(path, f))?;
        if let ScanStop::Bad { reason } = scanned.stop {
            return Err(Error::Corruption(location(path, scanned.next_offset, reason)));
        }
        let last = match footer {
            Some(f) if scanned.next_lsn != f.last_lsn + 1 => {
                return Err(Error::Corruption(location(
                    path,
                    scanned.next_offset,
                    "records end before the footer's last LSN",
                )));
            }
            Some(f) => f.last_lsn,
            None if scope == Scope::Online => scanned.next_lsn - 1,
            None => {
                let tail = first_nonzero(&mut reader, scanned.next_offset, header.data_limit())
                    .map_err(|e| Error::from_io(path, e))?;
                if let Some(at) = tail {
                    return Err(Error::Corruption(location(
                        path,
                        at,
                        "non-zero bytes after the last record",
                    )));
                }
                scanned.next_lsn - 1
            }
        };
        if let Some(footer) = footer {
            if scanned.next_offset != footer.data_end {
                return Err(Error::Corruption(location(
                    path,
                    scanned.next_offset,
                    "frames end before the footer's data end",
                )));
            }
            let crc = segment::crc_prefix(&mut reader, header.data_limit())
                .map_err(|e| Error::from_io(path, e))?;
            if crc != footer.segment_crc {
                return Err(Error::Corruption(location(path, 0, "segment checksum mismatch")));
            }
        }
        next = last + 1;
    }
    // Online, a segment sealed while the check ran may hold records past `durable`.
    let complete = match scope {
        Scope::Quiet => next == durable + 1,
        Scope::Online => next > durable,
    };
    if !complete {
        return Err(Error::Corruption(Location {
            segment: String::new(),
            offset: 0,
            reason: format!("log ends at LSN {}, acknowledged LSN is {durable}", next - 1),
        }));
    }
    Ok((next - 1, count as u64))
}

/// The first non-zero byte in `[start, end)`, if any.
fn first_nonzero(
    reader: &mut crate::segment::SegmentReader,
    start: u64,
    end: u64,
) -> std::io::Result<Option<u64>> {
    let mut at = start;
    while at < end {
        let chunk = reader.bytes(at, crate::limits::SCAN_CHUNK_BYTES, end)?;
        if let Some(i) = chunk.iter().position(|b| *b != 0) {
            return Ok(Some(at + i as u64));
        }
        at += chunk.len() as u64;
    }
    Ok(None)
}

/// Verifies the log and, in the same scan, that an index snapshot holds exactly the log's
/// records, in every table: each op by op_id at the position the log has it, by (origin, seq),
/// and each origin's head as the highest seq below which the log holds every seq. The
/// snapshot must be taken before `durable` is read: the indexer only indexes durable records,
/// so the snapshot's indexed LSN is at most `durable`, and records past it may be missing from
/// it (catch-up pending) but nothing it holds may differ from the log. This needs no lock: it
/// is the online check of the index's content (redb's page-level structure check, which needs
/// the database to itself, runs where writes are held: resume and rebuild). Returns the log's
/// outcome and the index's.
pub(crate) fn verify_log_and_index(
    storage: &Arc<dyn Storage>,
    wal_dir: &Path,
    durable: Lsn,
    scope: Scope,
    index: Option<&IndexReader>,
    pace: &dyn Fn(),
) -> (Result<(u64, u64), Error>, Result<(), Error>) {
    let Some(reader) = index else {
        let wal = verify_log(storage, wal_dir, durable, scope, &mut |_, _| Ok(()));
        return (wal, Err(Error::Index("index could not be opened".into())));
    };
    let mut verifier = match IndexVerifier::new(reader) {
        Ok(v) => v,
        Err(e) => {
            let wal = verify_log(storage, wal_dir, durable, scope, &mut |_, _| Ok(()));
            return (wal, Err(e));
        }
    };
    let wal = verify_log(storage, wal_dir, durable, scope, &mut |seen, head| {
        if seen.lsn % CHECK_PACE_RECORDS == 0 {
            pace();
        }
        if verifier.error.is_none()
            && let Err(e) = verifier.record(seen, head)
        {
            verifier.error = Some(e);
        }
        Ok(())
    });
    let index = match (&wal, verifier.error.take()) {
        (_, Some(e)) => Err(e),
        // The log's damage is the log's report.
        (Err(_), None) => Ok(()),
        (Ok(_), None) => verifier.finish(),
    };
    (wal, index)
}

/// The index side of [`verify_log_and_index`]: what the log's records must find in the
/// snapshot, and the counts its totals must match.
struct IndexVerifier<'a> {
    reader: &'a IndexReader,
    indexed_lsn: Lsn,
    matched: u64,
    /// Per origin: its head in the snapshot and how many of the log's indexed records have a
    /// seq at or below it (all of 1..=head when the head is right).
    heads: IdMap<Origin, (u64, u64)>,
    error: Option<Error>,
}

impl<'a> IndexVerifier<'a> {
    fn new(reader: &'a IndexReader) -> Result<IndexVerifier<'a>, Error> {
        let heads = reader.heads()?.into_iter().map(|(o, h)| (o, (h, 0))).collect();
        let indexed_lsn = reader.meta().indexed_lsn;
        Ok(IndexVerifier { reader, indexed_lsn, matched: 0, heads, error: None })
    }

    fn record(&mut self, seen: Seen, head: OpHead) -> Result<(), Error> {
        let OpHead { op_id, origin, seq } = head;
        match self.reader.get(&op_id)? {
            Some(e)
                if e.lsn == seen.lsn && e.segment == seen.segment && e.offset == seen.offset =>
            {
                self.matched += 1;
            }
            None if seen.lsn > self.indexed_lsn => return Ok(()),
            Some(e) => {
                return Err(Error::IndexCorruption(format!(
                    "op {op_id} at LSN {} is indexed at LSN {}",
                    seen.lsn, e.lsn
                )));
            }
            None => {
                return Err(Error::IndexCorruption(format!(
                    "op {op_id} at LSN {} is missing from the index",
                    seen.lsn
                )));
            }
        }
        let by_seq = self.reader.get_seq(&origin, seq)?;
        if by_seq != Some(op_id) {
            return Err(Error::IndexCorruption(format!(
                "origin {origin} seq {seq} is indexed as {by_seq:?}, the log holds op {op_id} there"
            )));
        }
        if let Some((h, below)) = self.heads.get_mut(&origin)
            && seq <= *h
        {
            *below += 1;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        let held = self.reader.meta().op_count;
        if held != self.matched {
            return Err(Error::IndexCorruption(format!(
                "index holds {held} ops, the log {}",
                self.matched
            )));
        }
        for (origin, (head, below)) in &self.heads {
            let next = self.reader.get_seq(origin, head + 1)?;
            if *below != *head || next.is_some() {
                return Err(Error::IndexCorruption(format!(
                    "origin {origin}: the index's head is seq {head}, the log holds {below} of \
                     seqs 1..={head} and {} seq {}",
                    if next.is_some() { "also" } else { "not" },
                    head + 1
                )));
            }
        }
        Ok(())
    }
}

/// redb's own structure check of the index, as a check outcome.
pub(crate) fn verify_index_structure(index: &mut Index) -> Result<(), Error> {
    if index.check_structure()? {
        Ok(())
    } else {
        Err(Error::IndexCorruption(
            "redb integrity check failed (the file was repaired in memory)".into(),
        ))
    }
}
