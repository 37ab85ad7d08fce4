//! Reading the log: by LSN, by op_id, and by (origin, seq) range. Only durable records are
//! visible; every frame is checked against its CRC and expected LSN before it is decoded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec;
use crate::damage::FoundBy;
use crate::error::{Error, Location, Result};
use crate::index::IndexEntry;
use crate::limits::{POINT_READ_CHUNK_BYTES, SCAN_CHUNK_BYTES};
use crate::op::{Op, OpId, Origin};
use crate::record::Decoded;
use crate::recovery;
use crate::segment::{self, Header, ScanFailure, ScanStop, SegmentReader};
use crate::storage::Storage;
use crate::wal::{Lsn, Wal};
use feral_types::OpBytes;

/// A record as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Local position.
    pub lsn: Lsn,
    /// Base LSN of its segment.
    pub segment: Lsn,
    /// Frame offset in the segment.
    pub offset: u64,
    /// The decoded op.
    pub op: Op,
}

/// Visits records with `from <= lsn <= to` across `segments` (base LSNs, ascending). Stops early
/// when `visit` returns `Ok(false)`. A gap, bad frame or undecodable payload is corruption.
pub(crate) fn for_each_record(
    storage: &Arc<dyn Storage>,
    wal_dir: &Path,
    segments: &[Lsn],
    from: Lsn,
    to: Lsn,
    visit: &mut dyn FnMut(Record) -> Result<bool>,
) -> Result<()> {
    if from > to {
        return Ok(());
    }
    let first = segments.partition_point(|base| *base <= from).saturating_sub(1);
    let mut next = from;
    for (i, base) in segments.iter().enumerate().skip(first) {
        if next > to {
            break;
        }
        let path = wal_dir.join(segment::segment_name(*base));
        let segment_end = segments.get(i + 1).map_or(to, |b| (b - 1).min(to));
        let mut keep_going = true;
        let mut reader = open_reader(storage, &path)?;
        let header = recovery::read_header(&reader, &path, *base).map_err(Error::Corruption)?;
        let end = segment::scan_frames(
            &mut reader,
            &header,
            header.data_limit(),
            segment_end,
            &mut |offset, frame| {
                if frame.lsn < from || !keep_going {
                    return Ok(());
                }
                let op = decode(&path, offset, frame.payload)?;
                keep_going = visit(Record { lsn: frame.lsn, segment: *base, offset, op })?;
                Ok(())
            },
        )
        .map_err(|failure| scan_error(&path, failure))?;
        if !keep_going {
            return Ok(());
        }
        if end.next_lsn <= segment_end {
            let reason = match end.stop {
                ScanStop::Bad { reason } => reason,
                _ => "log ends before an acknowledged record",
            };
            return Err(Error::Corruption(location(&path, end.next_offset, reason)));
        }
        next = end.next_lsn;
    }
    if next <= to {
        return Err(Error::Corruption(Location {
            segment: String::new(),
            offset: 0,
            reason: format!("no segment holds LSN {next}"),
        }));
    }
    Ok(())
}

pub(crate) fn open_reader(storage: &Arc<dyn Storage>, path: &Path) -> Result<SegmentReader> {
    let file = storage.open(path, false).map_err(|e| Error::from_io(path, e))?;
    Ok(SegmentReader::new(file))
}

pub(crate) fn location(path: &Path, offset: u64, reason: impl Into<String>) -> Location {
    Location {
        segment: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        offset,
        reason: reason.into(),
    }
}

pub(crate) fn scan_error(path: &Path, failure: ScanFailure) -> Error {
    match failure {
        ScanFailure::Io(e) => Error::from_io(path, e),
        ScanFailure::Visit(e) => e,
    }
}

fn decode(path: &Path, offset: u64, payload: &[u8]) -> Result<Op> {
    codec::decode_payload(payload).map_err(|reason| {
        Error::Corruption(location(path, offset, format!("undecodable op: {reason}")))
    })
}

/// Where a page of records ended: the next record's LSN and where its frame starts (segment
/// base LSN and offset). Handed back to [`Wal::read_page`], it lets a follower of the log read
/// only what is new instead of each segment from its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPosition {
    /// The next record's LSN.
    pub next_lsn: Lsn,
    /// Base LSN of the segment its frame is in (0: not known).
    pub segment: Lsn,
    /// Offset of its frame in that segment.
    pub offset: u64,
}

/// A segment kept open across reads of consecutive records.
pub(crate) struct OpenSegment {
    base: Lsn,
    path: PathBuf,
    reader: SegmentReader,
    header: Header,
}

impl Wal {
    pub(crate) fn segment_path(&self, base: Lsn) -> PathBuf {
        self.wal_dir().join(segment::segment_name(base))
    }

    /// At most `max` durable records from `from` on, in LSN order, and the position after the
    /// last one. With a `hint` an earlier call returned for this same `from`, the read starts
    /// at that frame; a hint that does not hold there (its frame is not LSN `from`) is ignored
    /// and the segment is read from its first frame.
    pub fn read_page(
        &self,
        from: Lsn,
        hint: Option<ScanPosition>,
        max: usize,
    ) -> Result<(Vec<Record>, ScanPosition)> {
        let from = from.max(1);
        let (segments, durable, corruption) = self.segments_snapshot();
        let mut pos = match hint {
            Some(h) if h.next_lsn == from => h,
            _ => ScanPosition { next_lsn: from, segment: 0, offset: 0 },
        };
        let mut out = Vec::new();
        if from > durable || max == 0 {
            return Ok((out, pos));
        }
        let to = durable.min(from.saturating_add(max as u64 - 1));
        let first = segments.partition_point(|base| *base <= from).saturating_sub(1);
        for (i, base) in segments.iter().enumerate().skip(first) {
            if pos.next_lsn > to {
                break;
            }
            let path = self.segment_path(*base);
            let segment_end = segments.get(i + 1).map_or(to, |b| (b - 1).min(to));
            let mut reader = open_reader(self.storage(), &path)?;
            let header = recovery::read_header(&reader, &path, *base).map_err(Error::Corruption)?;
            let hinted = pos.segment == *base && pos.offset >= segment::HEADER_BYTES;
            let mut scan = |start: (u64, Lsn), out: &mut Vec<Record>| {
                segment::scan_frames_from(
                    &mut reader,
                    &header,
                    start,
                    header.data_limit(),
                    segment_end,
                    &mut |offset, frame| {
                        if frame.lsn >= from {
                            let op = decode(&path, offset, frame.payload)?;
                            out.push(Record { lsn: frame.lsn, segment: *base, offset, op });
                        }
                        Ok(())
                    },
                )
                .map_err(|failure| scan_error(&path, failure))
            };
            let mut end = if hinted {
                scan((pos.offset, pos.next_lsn), &mut out)?
            } else {
                scan((segment::HEADER_BYTES, header.base_lsn), &mut out)?
            };
            if hinted && end.records == 0 && end.next_lsn <= segment_end {
                // The hint's frame is not the record it named: read the segment whole.
                end = scan((segment::HEADER_BYTES, header.base_lsn), &mut out)?;
            }
            if end.next_lsn <= segment_end {
                let reason = match end.stop {
                    ScanStop::Bad { reason } => reason,
                    _ => "log ends before an acknowledged record",
                };
                return Err(Error::Corruption(location(&path, end.next_offset, reason)));
            }
            pos = ScanPosition { next_lsn: end.next_lsn, segment: *base, offset: end.next_offset };
        }
        if pos.next_lsn <= to {
            return Err(Error::Corruption(corruption.unwrap_or_else(|| Location {
                segment: String::new(),
                offset: 0,
                reason: format!("no segment holds LSN {}", pos.next_lsn),
            })));
        }
        Ok((out, pos))
    }

    /// Visits durable records from `from` on, in LSN order, until `visit` returns `Ok(false)`.
    pub fn scan(&self, from: Lsn, visit: &mut dyn FnMut(Record) -> Result<bool>) -> Result<()> {
        let (segments, durable, corruption) = self.segments_snapshot();
        let mut stopped = false;
        for_each_record(
            self.storage(),
            self.wal_dir(),
            &segments,
            from.max(1),
            durable,
            &mut |r| {
                let more = visit(r)?;
                stopped = !more;
                Ok(more)
            },
        )?;
        match corruption {
            Some(at) if !stopped => Err(Error::Corruption(at)),
            _ => Ok(()),
        }
    }

    /// The op with this id, if the log holds it.
    pub fn get(&self, op_id: &OpId) -> Result<Option<Record>> {
        self.inner.indexer.wait_indexed(self.durable_lsn())?;
        match self.with_index(|index| index.lookup(op_id))? {
            Some(entry) => {
                // A point read: small reads, not a scan's buffer.
                let mut open = Some(self.open_segment(entry.segment, POINT_READ_CHUNK_BYTES)?);
                self.read_entry(&mut open, &entry).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Ops of `origin` with `from_seq <= seq <= to_seq`, in seq order, at most `limit`.
    pub fn range_by_origin(
        &self,
        origin: &Origin,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>> {
        self.range_by_origin_within(origin, from_seq, to_seq, limit, usize::MAX)
    }

    /// As [`Wal::range_by_origin`], and no more once the ops' sizes ([`Op::size_hint`])
    /// would pass `bytes_max` (the first op is always taken). Records past the budget are not
    /// read.
    pub fn range_by_origin_within(
        &self,
        origin: &Origin,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<Record>> {
        self.read_range(origin, (from_seq, to_seq), limit, bytes_max, |wal, open, entry| {
            let record = wal.read_entry(open, entry)?;
            let size = record.op.size_hint();
            Ok((record, size))
        })
    }

    /// As [`Wal::range_by_origin_within`], as the records' payloads: the bytes each op is
    /// stored as, checked (checksum, LSN, and the op_id at their front against the index) but
    /// not decoded, for a sender to pass on as they are. `bytes_max` counts payload bytes.
    pub fn payloads_by_origin_within(
        &self,
        origin: &Origin,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<OpBytes>> {
        self.read_range(origin, (from_seq, to_seq), limit, bytes_max, |wal, open, entry| {
            let payload = wal.read_payload(open, entry, |path, payload| {
                let head = OpBytes::head_of(payload).map_err(|reason| {
                    Error::Corruption(location(
                        path,
                        entry.offset,
                        format!("undecodable op: {reason}"),
                    ))
                })?;
                Ok(head.op_id)
            })?;
            Ok((OpBytes::new(payload.to_vec()), payload.len()))
        })
    }

    /// The records of `origin` with seq in `seqs` (inclusive), at most `limit`, read with
    /// `read` (which gives each item and its size) until the sizes pass `bytes_max` (the first
    /// is always taken; records past the budget are not read). One open segment serves
    /// consecutive entries: a range is mostly one stretch of one segment, read through the
    /// reader's buffer instead of an open and two reads per op.
    fn read_range<T>(
        &self,
        origin: &Origin,
        seqs: (u64, u64),
        limit: usize,
        bytes_max: usize,
        mut read: impl FnMut(&Wal, &mut Option<OpenSegment>, &IndexEntry) -> Result<(T, usize)>,
    ) -> Result<Vec<T>> {
        self.inner.indexer.wait_indexed(self.durable_lsn())?;
        let entries =
            self.with_index(|index| index.range_by_origin(origin, seqs.0, seqs.1, limit))?;
        let mut open = None;
        let mut out = Vec::with_capacity(entries.len());
        let mut bytes = 0usize;
        for entry in &entries {
            let (item, size) = match read(self, &mut open, entry) {
                Ok(read) => read,
                Err(e @ Error::Corruption(_)) => {
                    // A damaged record: registered (once per segment), so status shows it
                    // and a sender can stop before it.
                    if self.first_damaged_seq(origin, entry.seq, entry.seq).is_none()
                        && let Err(note) = self.note_damage(entry.segment, FoundBy::Read)
                    {
                        tracing::warn!(error = %note, "could not register a damaged record");
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            bytes = bytes.saturating_add(size);
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            out.push(item);
        }
        Ok(out)
    }

    /// Highest contiguous seq held per origin.
    pub fn heads(&self) -> Result<Vec<(Origin, u64)>> {
        self.inner.indexer.wait_indexed(self.durable_lsn())?;
        self.with_index(|index| index.heads())
    }

    /// Opens segment `base` for reads of `chunk` bytes at a time, checking its header.
    fn open_segment(&self, base: Lsn, chunk: usize) -> Result<OpenSegment> {
        let path = self.segment_path(base);
        let file = self.storage().open(&path, false).map_err(|e| Error::from_io(&path, e))?;
        let reader = SegmentReader::with_chunk(file, chunk);
        let header = recovery::read_header(&reader, &path, base).map_err(Error::Corruption)?;
        Ok(OpenSegment { base, path, reader, header })
    }

    /// Reads one record where the index says it is, checking CRC, LSN and op_id. `open` keeps
    /// the segment last read open for the next call.
    fn read_entry(&self, open: &mut Option<OpenSegment>, entry: &IndexEntry) -> Result<Record> {
        let mut op = None;
        self.read_payload(open, entry, |path, payload| {
            let decoded = decode(path, entry.offset, payload)?;
            let id = decoded.op_id;
            op = Some(decoded);
            Ok(id)
        })?;
        let op = op.ok_or_else(|| Error::Index("a read returned no op".into()))?;
        Ok(Record { lsn: entry.lsn, segment: entry.segment, offset: entry.offset, op })
    }

    /// Reads the payload of the frame the index points at, checking CRC and LSN, and the
    /// op_id that `op_id_of` reads from it against the index. The payload borrows the
    /// segment's read buffer.
    fn read_payload<'a>(
        &self,
        open: &'a mut Option<OpenSegment>,
        entry: &IndexEntry,
        op_id_of: impl FnOnce(&Path, &[u8]) -> Result<OpId>,
    ) -> Result<&'a [u8]> {
        if open.as_ref().is_none_or(|o| o.base != entry.segment) {
            *open = Some(self.open_segment(entry.segment, SCAN_CHUNK_BYTES)?);
        }
        let Some(OpenSegment { path, reader, header, .. }) = open.as_mut() else {
            return Err(Error::Index("segment not open".into()));
        };
        let path: &Path = path;
        let decoded = segment::read_frame(
            reader,
            entry.offset,
            header.data_limit(),
            header.salt,
            header.payload_max(),
        )
        .map_err(|e| Error::from_io(path, e))?;
        let frame = match decoded {
            Decoded::Frame(frame) if frame.lsn == entry.lsn => frame,
            Decoded::Frame(_) => {
                return Err(Error::Corruption(location(
                    path,
                    entry.offset,
                    "frame LSN differs from the index",
                )));
            }
            Decoded::Zero => {
                return Err(Error::Corruption(location(
                    path,
                    entry.offset,
                    "index points at an empty frame",
                )));
            }
            Decoded::Bad(reason) => {
                return Err(Error::Corruption(location(path, entry.offset, reason)));
            }
        };
        if op_id_of(path, frame.payload)? != entry.op_id {
            return Err(Error::Corruption(location(
                path,
                entry.offset,
                "frame op_id differs from the index",
            )));
        }
        Ok(frame.payload)
    }
}
