//! Open-time recovery of the segment directory: check the chain of headers and footers, find
//! the end of the active segment, truncate a torn tail and nothing else.
//!
//! A damaged frame in the active segment is a torn tail only when no later frame proves it was
//! durable: a later valid frame whose `synced_lsn` covers it, or an index that already holds it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Location, Result};
use crate::record::Decoded;
use crate::record::FRAME_ALIGN_BYTES;
use crate::segment::{
    self, ActiveSegment, FOOTER_BYTES, Footer, HEADER_BYTES, Header, ScanFailure, ScanStop,
    SegmentReader, TEMP_SUFFIX,
};
use crate::storage::{Storage, read_exact_at};

/// A torn tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// Segment file name.
    pub segment: String,
    /// Offset where the valid data ends.
    pub offset: u64,
    /// Bytes zeroed after it.
    pub bytes: u64,
    /// What the first damaged frame looked like.
    pub reason: String,
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// Every segment's base LSN, in order.
    pub segments: Vec<u64>,
    /// The unsealed last segment, positioned after its last valid frame.
    pub active: Option<ActiveSegment>,
    /// LSN of the last record (0 for an empty log).
    pub last_lsn: u64,
    /// A torn tail that was truncated, if any.
    pub torn: Option<TornTail>,
    /// Damage that is not a torn tail; the log must not be written.
    pub corruption: Option<Location>,
}

fn name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Location {
    Location { segment: name_of(path), offset, reason: reason.into() }
}

/// Lists segment files in LSN order.
///
/// Only lists: a half-created segment (`.seg.tmp`) may belong to a roll running right now,
/// so only recovery, which runs while nothing writes, removes them ([`remove_temporaries`]).
pub fn list_segments(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let io = |e| Error::from_io(dir, e);
    let mut found = Vec::new();
    for path in storage.list(dir).map_err(io)? {
        if let Some(base) = segment::parse_segment_name(&path) {
            found.push((base, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes segments whose creation a crash interrupted (`.seg.tmp`). Only while nothing writes.
pub fn remove_temporaries(storage: &Arc<dyn Storage>, dir: &Path) -> Result<()> {
    let io = |e| Error::from_io(dir, e);
    let mut removed = false;
    for path in storage.list(dir).map_err(io)? {
        if name_of(&path).ends_with(TEMP_SUFFIX) {
            storage.remove(&path).map_err(io)?;
            removed = true;
        }
    }
    if removed {
        storage.sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

/// Reads and checks the header of one segment (base LSN must match the name, size the capacity).
pub fn read_header(reader: &SegmentReader, path: &Path, base: u64) -> Result<Header, Location> {
    let file = reader.file();
    let len = file.len().map_err(|e| corrupt(path, 0, format!("cannot stat: {e}")))?;
    let mut raw = [0u8; HEADER_BYTES as usize];
    read_exact_at(file, &mut raw, 0).map_err(|e| corrupt(path, 0, format!("header: {e}")))?;
    let header = Header::decode(&raw).map_err(|reason| corrupt(path, 0, reason))?;
    if header.base_lsn != base {
        return Err(corrupt(path, 16, "header base LSN differs from the file name"));
    }
    if header.capacity != len {
        return Err(corrupt(path, 24, "file size differs from the header capacity"));
    }
    Ok(header)
}

/// Reads the footer area of a segment.
pub fn read_footer(
    reader: &SegmentReader,
    path: &Path,
    header: &Header,
) -> Result<Option<Footer>, Location> {
    let at = header.data_limit();
    let mut raw = [0u8; FOOTER_BYTES as usize];
    read_exact_at(reader.file(), &mut raw, at).map_err(|e| corrupt(path, at, e.to_string()))?;
    Footer::decode(&raw).map_err(|reason| corrupt(path, at, reason))
}

/// Recovers the log directory. `known_durable_lsn` is the highest LSN known to have been
/// acknowledged (from the index or memory); damage at or below it is never a torn tail.
/// `keep_through` (on resume) drops every record after it: they were written by a group commit
/// that failed, so their appends were reported as failed and must not appear later.
pub fn recover(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    known_durable_lsn: u64,
    keep_through: Option<u64>,
) -> Result<Recovered> {
    remove_temporaries(storage, dir)?;
    let listed = list_segments(storage, dir)?;
    let mut out =
        Recovered { segments: Vec::new(), active: None, last_lsn: 0, torn: None, corruption: None };
    let count = listed.len();
    for (i, (base, path)) in listed.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let expected_base = out.last_lsn + 1;
        if base != expected_base {
            out.corruption = Some(corrupt(
                &path,
                0,
                format!(
                    "segment starts at LSN {base}, expected {expected_base}: a segment is missing"
                ),
            ));
            return Ok(out);
        }
        let file = storage.open(&path, is_last).map_err(|e| Error::from_io(&path, e))?;
        let reader = SegmentReader::new(file);
        let mut torn_footer = None;
        let step = read_header(&reader, &path, base).and_then(|header| {
            match read_footer(&reader, &path, &header) {
                // The last segment's seal was cut short by a crash or failed write: the footer
                // holds nothing the frames do not, so it is dropped and the segment reopened.
                Err(bad) if is_last => {
                    torn_footer = Some(bad);
                    Ok((header, None))
                }
                found => Ok((header, found?)),
            }
        });
        let (header, mut footer) = match step {
            Ok(found) => found,
            Err(location) => {
                out.corruption = Some(location);
                return Ok(out);
            }
        };
        if let Some(bad) = torn_footer {
            zero_range(reader.file(), bad.offset, FOOTER_BYTES)
                .map_err(|e| Error::from_io(&path, e))?;
            tracing::warn!(segment = %bad.segment, reason = %bad.reason, "dropped a torn footer of the last segment");
        }
        let sealed_past = |f: Footer| keep_through.is_some_and(|keep| f.last_lsn > keep);
        if is_last && footer.is_some_and(sealed_past) {
            zero_range(reader.file(), header.data_limit(), FOOTER_BYTES)
                .and_then(|()| reader.file().sync_data())
                .map_err(|e| Error::from_io(&path, e))?;
            tracing::warn!(segment = %name_of(&path), "unsealed a segment sealed by a failed group commit");
            footer = None;
        }
        if is_last && footer.is_some() {
            // A seal whose sync failed (its records were synced before it, so they are kept)
            // or a crash right after a seal: make the footer as durable as what it covers, so
            // a power loss can never leave a sealed segment behind unsealed.
            reader.file().sync_data().map_err(|e| Error::from_io(&path, e))?;
        }
        match footer {
            Some(footer) => {
                let consistent = footer.last_lsn + 1 >= base
                    && footer.record_count == footer.last_lsn + 1 - base
                    && footer.data_end >= HEADER_BYTES
                    && footer.data_end <= header.data_limit();
                if !consistent {
                    out.corruption =
                        Some(corrupt(&path, header.data_limit(), "footer fields inconsistent"));
                    return Ok(out);
                }
                out.last_lsn = footer.last_lsn;
            }
            None if !is_last => {
                out.corruption = Some(corrupt(
                    &path,
                    header.data_limit(),
                    "segment before the last one is not sealed",
                ));
                return Ok(out);
            }
            None => match recover_active(reader, &path, header, known_durable_lsn, keep_through)? {
                Ok((active, torn)) => {
                    out.last_lsn = header.base_lsn + active.records - 1;
                    out.torn = torn;
                    out.active = Some(active);
                }
                Err(location) => {
                    out.corruption = Some(location);
                    return Ok(out);
                }
            },
        }
        out.segments.push(base);
    }
    // Postconditions: segments ascend, and the active one ends at the recovered last LSN.
    debug_assert!(out.segments.windows(2).all(|w| w[0] < w[1]), "segments out of order");
    debug_assert!(
        out.active.as_ref().is_none_or(|a| a.header.base_lsn + a.records == out.last_lsn + 1),
        "the active segment does not end at the last LSN"
    );
    if out.last_lsn < known_durable_lsn && out.corruption.is_none() {
        out.corruption = Some(Location {
            segment: String::new(),
            offset: 0,
            reason: format!(
                "log ends at LSN {} but LSN {known_durable_lsn} was acknowledged",
                out.last_lsn
            ),
        });
    }
    Ok(out)
}

type ActiveOutcome = std::result::Result<(ActiveSegment, Option<TornTail>), Location>;

/// Finds the end of the unsealed segment, classifies any damage after it, and truncates a torn
/// tail by zeroing it (the file stays preallocated).
fn recover_active(
    mut reader: SegmentReader,
    path: &Path,
    header: Header,
    known_durable_lsn: u64,
    keep_through: Option<u64>,
) -> Result<ActiveOutcome> {
    let limit = header.data_limit();
    let keep = keep_through.unwrap_or(u64::MAX);
    let end = match segment::scan_frames(&mut reader, &header, limit, keep, &mut |_, _| Ok(())) {
        Ok(end) => end,
        Err(ScanFailure::Io(e)) => return Err(Error::from_io(path, e)),
        Err(ScanFailure::Visit(e)) => return Err(e),
    };
    let at = end.next_offset;
    let garbage =
        find_after(&mut reader, &header, at, end.next_lsn).map_err(|e| Error::from_io(path, e))?;
    let reason = match end.stop {
        // The scan stops at the last acknowledged LSN whether or not anything follows it:
        // only bytes after it make a tail to cut.
        ScanStop::Limit if end.next_lsn > keep && garbage.nonzero_end > at => {
            Some("records after the last acknowledged LSN")
        }
        ScanStop::Limit => None,
        ScanStop::Zero => None,
        ScanStop::Bad { reason } => Some(reason),
    };
    let mut torn = None;
    if reason.is_some() || garbage.nonzero_end > at {
        let reason = reason.unwrap_or("non-zero bytes after the last frame");
        if let Some(proof) = garbage.synced_frame_at {
            return Ok(Err(corrupt(
                path,
                at,
                format!("{reason}; a later frame at offset {proof} shows this data was synced"),
            )));
        }
        if end.next_lsn <= known_durable_lsn {
            return Ok(Err(corrupt(
                path,
                at,
                format!("{reason}; LSN {} was acknowledged", end.next_lsn),
            )));
        }
        let bytes = garbage.nonzero_end.max(at + 1) - at;
        zero_range(reader.file(), at, bytes).map_err(|e| Error::from_io(path, e))?;
        tracing::warn!(segment = %name_of(path), offset = at, bytes, reason, "truncated torn tail");
        torn = Some(TornTail {
            segment: name_of(path),
            offset: at,
            bytes,
            reason: reason.to_string(),
        });
    }
    let crc = segment::crc_prefix(&mut reader, at).map_err(|e| Error::from_io(path, e))?;
    let hasher = crc32fast::Hasher::new_with_initial_len(crc, at);
    // What the zeroer wrote before is still written (a data run of zeros past `at`): it need
    // not be zeroed again. Zeros it wrote that a crash lost read as zeros anyway.
    let initialized_to = match reader.file().data_run(at).map_err(|e| Error::from_io(path, e))? {
        Some((from, to)) if from <= at => to.clamp(at, limit),
        _ => at,
    };
    let active = ActiveSegment {
        file: reader.into_file(),
        path: path.to_path_buf(),
        header,
        write_offset: at,
        records: end.records,
        crc: hasher,
        initialized_to,
    };
    Ok(Ok((active, torn)))
}

const PAGE_BYTES: u64 = 4096;

/// True when every byte is zero. OR-folds 64-byte blocks without an early exit per byte, so
/// the compiler vectorizes it: the rest of a zeroed 64 MiB segment is read at every open.
fn all_zero(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, b| acc | b) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|b| *b == 0)
}

/// What lies after the end of valid data in the active segment.
struct After {
    /// End of the last non-zero 8-byte word (== start when all zero).
    nonzero_end: u64,
    /// Offset of a valid frame that proves earlier data was synced.
    synced_frame_at: Option<u64>,
}

/// Walks `[start, data_limit)` in 8-byte steps: records where non-zero bytes end, and whether a
/// valid frame for an LSN at or after `next_lsn` says (via `synced_lsn`) that LSN `next_lsn`
/// was already durable when it was written.
fn find_after(
    reader: &mut SegmentReader,
    header: &Header,
    start: u64,
    next_lsn: u64,
) -> std::io::Result<After> {
    let limit = header.data_limit();
    let payload_max = header.payload_max();
    let mut out = After { nonzero_end: start, synced_frame_at: None };
    let mut at = start;
    // Data is known to run to here; past it, ask the file where data is next: the rest of a
    // preallocated segment is unwritten extents, which read as zeros and need no reading.
    let mut run_end = at;
    while at < limit {
        if at >= run_end {
            match reader.file().data_run(at)? {
                None => break,
                Some((from, to)) => {
                    let from = from - from % FRAME_ALIGN_BYTES as u64;
                    at = at.max(from);
                    run_end = to.max(at + 1);
                    if at >= limit {
                        break;
                    }
                }
            }
        }
        if at.is_multiple_of(PAGE_BYTES) && at + PAGE_BYTES <= limit {
            let page = reader.bytes(at, PAGE_BYTES as usize, limit)?;
            if all_zero(page) {
                at += PAGE_BYTES;
                continue;
            }
        }
        let word = reader.bytes(at, FRAME_ALIGN_BYTES, limit)?;
        if word.iter().all(|b| *b == 0) {
            at += FRAME_ALIGN_BYTES as u64;
            continue;
        }
        let step = match segment::read_frame(reader, at, limit, header.salt, payload_max)? {
            Decoded::Frame(frame) if frame.lsn >= next_lsn => {
                if frame.synced_lsn >= next_lsn && out.synced_frame_at.is_none() {
                    out.synced_frame_at = Some(at);
                }
                frame.frame_len as u64
            }
            _ => FRAME_ALIGN_BYTES as u64,
        };
        at += step;
        out.nonzero_end = at.min(limit);
    }
    Ok(out)
}

/// Overwrites `[at, at + bytes)` with zeros and syncs.
pub fn zero_range(
    file: &dyn crate::storage::StorageFile,
    at: u64,
    bytes: u64,
) -> std::io::Result<()> {
    const CHUNK: u64 = 1024 * 1024;
    let zeros = vec![0u8; bytes.min(CHUNK) as usize];
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(CHUNK);
        file.write_all_at(&zeros[..n as usize], at + done)?;
        done += n;
    }
    file.sync_data()
}
