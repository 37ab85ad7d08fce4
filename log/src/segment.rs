//! One segment file: a 64-byte header, 8-byte aligned frames, and (once sealed) a 40-byte footer
//! in the last bytes of the preallocated file. See docs/format.md for the byte tables.

use crate::le::{u32_at, u64_at};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::limits::{RECORD_PAYLOAD_BYTES_MAX, SCAN_CHUNK_BYTES};
use crate::record::{self, Decoded, Frame};
use crate::storage::{Storage, StorageFile, read_exact_at};

/// Bytes of the segment header.
pub const HEADER_BYTES: u64 = 64;
/// Bytes of the footer at the very end of a sealed segment.
pub const FOOTER_BYTES: u64 = 40;
const HEADER_MAGIC: &[u8; 8] = b"FERALSEG";
const FOOTER_MAGIC: &[u8; 8] = b"FERALEND";
/// 2: every record payload ends with its op's proof trailer (genesis, seal, flags).
const FORMAT_VERSION: u32 = 3;
/// File-name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of a segment still being created (removed on open).
pub const TEMP_SUFFIX: &str = ".seg.tmp";

/// The fixed header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// LSN of the first record in this segment.
    pub base_lsn: u64,
    /// File size, header and footer included.
    pub capacity: u64,
    /// Random per segment; mixed into every frame CRC.
    pub salt: u64,
}

fn crc_without(bytes: &[u8], skip: std::ops::Range<usize>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..skip.start]);
    hasher.update(&bytes[skip.end..]);
    hasher.finalize()
}

impl Header {
    /// magic 8 | version u32 | header crc u32 | base_lsn u64 | capacity u64 | salt u64 | zero 24.
    pub fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut out = [0u8; HEADER_BYTES as usize];
        out[0..8].copy_from_slice(HEADER_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_lsn.to_le_bytes());
        out[24..32].copy_from_slice(&self.capacity.to_le_bytes());
        out[32..40].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc_without(&out, 12..16);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks magic, version, CRC and that the capacity is sane.
    pub fn decode(bytes: &[u8]) -> Result<Header, &'static str> {
        if bytes.len() < HEADER_BYTES as usize {
            return Err("header cut short");
        }
        let bytes = &bytes[..HEADER_BYTES as usize];
        if &bytes[0..8] != HEADER_MAGIC {
            return Err("bad header magic");
        }
        if crc_without(bytes, 12..16) != u32_at(bytes, 12) {
            return Err("header checksum mismatch");
        }
        match u32_at(bytes, 8) {
            FORMAT_VERSION => {}
            1 => {
                return Err("segment format 1 predates signed ops (format 3): this build cannot \
                            read it; see docs/format.md, \"Stores of formats 1 and 2\"");
            }
            2 => {
                return Err("segment format 2 predates chained seals (format 3): this build \
                            cannot read it; see docs/format.md, \"Stores of formats 1 and 2\"");
            }
            _ => return Err("unknown segment format version"),
        }
        let header = Header {
            base_lsn: u64_at(bytes, 16),
            capacity: u64_at(bytes, 24),
            salt: u64_at(bytes, 32),
        };
        if header.base_lsn == 0 || header.capacity < HEADER_BYTES + FOOTER_BYTES + 64 {
            return Err("header fields out of range");
        }
        Ok(header)
    }

    /// First byte past the data region (where the footer starts).
    pub fn data_limit(&self) -> u64 {
        self.capacity - FOOTER_BYTES
    }

    /// The most payload one frame may carry in a segment this size.
    pub fn payload_max(&self) -> u32 {
        let room = self.data_limit() - HEADER_BYTES - record::FRAME_HEADER_BYTES as u64;
        room.min(u64::from(RECORD_PAYLOAD_BYTES_MAX)) as u32
    }
}

/// The footer that seals a full segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Records in the segment.
    pub record_count: u64,
    /// LSN of the last record (base_lsn - 1 when empty).
    pub last_lsn: u64,
    /// End of the last frame.
    pub data_end: u64,
    /// CRC-32 over bytes [0, capacity - FOOTER_BYTES).
    pub segment_crc: u32,
}

impl Footer {
    /// magic 8 | record_count u64 | last_lsn u64 | data_end u64 | segment crc u32 | footer crc u32.
    pub fn encode(&self) -> [u8; FOOTER_BYTES as usize] {
        let mut out = [0u8; FOOTER_BYTES as usize];
        out[0..8].copy_from_slice(FOOTER_MAGIC);
        out[8..16].copy_from_slice(&self.record_count.to_le_bytes());
        out[16..24].copy_from_slice(&self.last_lsn.to_le_bytes());
        out[24..32].copy_from_slice(&self.data_end.to_le_bytes());
        out[32..36].copy_from_slice(&self.segment_crc.to_le_bytes());
        let crc = crc_without(&out, 36..40);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// `Ok(None)` for an all-zero (unsealed) footer area.
    pub fn decode(bytes: &[u8]) -> Result<Option<Footer>, &'static str> {
        if bytes.len() != FOOTER_BYTES as usize {
            return Err("footer cut short");
        }
        if bytes.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        if &bytes[0..8] != FOOTER_MAGIC {
            return Err("bad footer magic");
        }
        if crc_without(bytes, 36..40) != u32_at(bytes, 36) {
            return Err("footer checksum mismatch");
        }
        Ok(Some(Footer {
            record_count: u64_at(bytes, 8),
            last_lsn: u64_at(bytes, 16),
            data_end: u64_at(bytes, 24),
            segment_crc: u32_at(bytes, 32),
        }))
    }
}

/// `00000000000000000001.seg` for base LSN 1.
pub fn segment_name(base_lsn: u64) -> String {
    format!("{base_lsn:020}{SEGMENT_SUFFIX}")
}

/// The base LSN a segment file name carries.
pub fn parse_segment_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Buffered positioned reads over one segment file.
#[derive(Debug)]
pub struct SegmentReader {
    file: Box<dyn StorageFile>,
    buf: Vec<u8>,
    buf_start: u64,
    chunk: usize,
}

impl SegmentReader {
    /// Wraps an open file, for scans (reads of `SCAN_CHUNK_BYTES`).
    pub fn new(file: Box<dyn StorageFile>) -> SegmentReader {
        SegmentReader::with_chunk(file, SCAN_CHUNK_BYTES)
    }

    /// Wraps an open file, reading at least `chunk` bytes at a time.
    pub fn with_chunk(file: Box<dyn StorageFile>, chunk: usize) -> SegmentReader {
        SegmentReader { file, buf: Vec::new(), buf_start: 0, chunk: chunk.max(1) }
    }

    /// Bytes `[offset, min(offset + len, limit))`, read through a buffer of at least the
    /// reader's chunk.
    pub fn bytes(&mut self, offset: u64, len: usize, limit: u64) -> io::Result<&[u8]> {
        let end = (offset + len as u64).min(limit);
        let want = (end.saturating_sub(offset)) as usize;
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || end > buf_end {
            let fill = (limit - offset).min(want.max(self.chunk) as u64) as usize;
            self.buf.resize(fill, 0);
            read_exact_at(self.file.as_ref(), &mut self.buf, offset)?;
            self.buf_start = offset;
        }
        let at = (offset - self.buf_start) as usize;
        Ok(&self.buf[at..at + want])
    }

    /// Gives the file back.
    pub fn into_file(self) -> Box<dyn StorageFile> {
        self.file
    }

    /// The underlying file.
    pub fn file(&self) -> &dyn StorageFile {
        self.file.as_ref()
    }
}

/// Where a scan of frames stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// Reached the requested end offset exactly.
    Limit,
    /// Found an all-zero frame header at `next_offset`.
    Zero,
    /// Found something that is not a valid next frame.
    Bad {
        /// Why the frame was refused.
        reason: &'static str,
    },
}

/// Progress of a scan: the position after the last valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last valid frame.
    pub next_offset: u64,
    /// LSN the next frame must carry.
    pub next_lsn: u64,
    /// Valid frames seen.
    pub records: u64,
    /// Why the scan stopped.
    pub stop: ScanStop,
}

/// Visits valid, LSN-contiguous frames from the first one up to offset `end` or LSN
/// `last_lsn`, stopping at the first zero header or bad frame. `visit` sees each frame with its offset.
pub fn scan_frames(
    reader: &mut SegmentReader,
    header: &Header,
    end: u64,
    last_lsn: u64,
    visit: &mut dyn FnMut(u64, &Frame<'_>) -> crate::Result<()>,
) -> crate::Result<ScanEnd, ScanFailure> {
    scan_frames_from(reader, header, (HEADER_BYTES, header.base_lsn), end, last_lsn, visit)
}

/// [`scan_frames`] starting at the frame at offset `start.0`, which must hold LSN `start.1`
/// (a position an earlier scan returned); `records` counts from there.
pub fn scan_frames_from(
    reader: &mut SegmentReader,
    header: &Header,
    start: (u64, u64),
    end: u64,
    last_lsn: u64,
    visit: &mut dyn FnMut(u64, &Frame<'_>) -> crate::Result<()>,
) -> crate::Result<ScanEnd, ScanFailure> {
    let (mut at, mut next_lsn) = start;
    let mut records = 0;
    let payload_max = header.payload_max();
    let stop = loop {
        if at >= end || next_lsn > last_lsn {
            break ScanStop::Limit;
        }
        match read_frame(reader, at, end, header.salt, payload_max).map_err(ScanFailure::Io)? {
            Decoded::Zero => break ScanStop::Zero,
            Decoded::Bad(reason) => break ScanStop::Bad { reason },
            Decoded::Frame(frame) if frame.lsn != next_lsn => {
                break ScanStop::Bad { reason: "frame LSN out of sequence" };
            }
            Decoded::Frame(frame) => {
                visit(at, &frame).map_err(ScanFailure::Visit)?;
                at += frame.frame_len as u64;
                next_lsn += 1;
                records += 1;
            }
        }
    };
    Ok(ScanEnd { next_offset: at, next_lsn, records, stop })
}

/// Reads and checks the frame at `at`: the header first, then exactly the frame's bytes, so a
/// sequential scan reads each byte once and a forged length never drives a large read.
pub fn read_frame(
    reader: &mut SegmentReader,
    at: u64,
    end: u64,
    salt: u64,
    payload_max: u32,
) -> io::Result<Decoded<'_>> {
    let head = reader.bytes(at, record::FRAME_HEADER_BYTES, end)?;
    let mut len = [0u8; 4];
    if head.len() >= 4 {
        len.copy_from_slice(&head[..4]);
    }
    let len = u32::from_le_bytes(len);
    let want = if len == 0 || len > payload_max {
        record::FRAME_HEADER_BYTES
    } else {
        record::frame_len(len as usize)
    };
    let bytes = reader.bytes(at, want, end)?;
    Ok(record::decode_frame(bytes, salt, payload_max))
}

/// A scan that could not finish: the file could not be read, or the visitor refused.
#[derive(Debug)]
pub enum ScanFailure {
    /// Reading the file failed.
    Io(io::Error),
    /// The visitor returned an error.
    Visit(crate::Error),
}

/// CRC-32 over `[0, end)` of a file, read in chunks.
pub fn crc_prefix(reader: &mut SegmentReader, end: u64) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut at = 0;
    while at < end {
        let chunk = reader.bytes(at, SCAN_CHUNK_BYTES, end)?;
        hasher.update(chunk);
        at += chunk.len() as u64;
    }
    Ok(hasher.finalize())
}

/// Feeds `count` zero bytes into a CRC.
pub fn crc_zeros(hasher: &mut crc32fast::Hasher, mut count: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while count > 0 {
        let n = count.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        count -= n as u64;
    }
}

/// The segment being written. Only the group-commit leader touches it.
#[derive(Debug)]
pub struct ActiveSegment {
    /// The open file.
    pub file: Box<dyn StorageFile>,
    /// Its path.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Where the next frame goes.
    pub write_offset: u64,
    /// Records written so far.
    pub records: u64,
    /// CRC over `[0, write_offset)`.
    pub crc: crc32fast::Hasher,
    /// Where the zeroer (`zeroer.rs`) stopped: it wrote zeros up to here, ahead of the frames,
    /// so frames written there overwrite initialized blocks, whose fdatasync is about twice as
    /// fast as one that converts the unwritten extents a preallocation leaves. The end of the
    /// data area once the zeroer gave up on this segment.
    pub initialized_to: u64,
}

impl ActiveSegment {
    /// Creates a preallocated segment: write the header into a temporary file, reserve the whole
    /// capacity, sync, rename into place, sync the directory. Out of space shows here.
    pub fn create(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        header: Header,
    ) -> crate::Result<ActiveSegment> {
        let path = dir.join(segment_name(header.base_lsn));
        let temp = dir.join(format!("{:020}{TEMP_SUFFIX}", header.base_lsn));
        let io = |e| crate::Error::from_io(&temp, e);
        if storage.list(dir).map_err(io)?.contains(&temp) {
            storage.remove(&temp).map_err(io)?;
        }
        let file = storage.create(&temp).map_err(io)?;
        let bytes = header.encode();
        let ready = file
            .write_all_at(&bytes, 0)
            .and_then(|()| file.allocate(header.capacity))
            .and_then(|()| file.sync_data());
        if let Err(e) = ready {
            drop(file);
            let _ = storage.remove(&temp);
            return Err(crate::Error::from_io(&temp, e));
        }
        storage.rename(&temp, &path).map_err(io)?;
        storage.sync_dir(dir).map_err(|e| crate::Error::from_io(dir, e))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes);
        Ok(ActiveSegment {
            file,
            path,
            header,
            write_offset: HEADER_BYTES,
            records: 0,
            crc,
            initialized_to: HEADER_BYTES,
        })
    }

    /// Room left for frames.
    pub fn room(&self) -> u64 {
        self.header.data_limit() - self.write_offset
    }

    /// Writes frames at the write offset (not synced).
    pub fn write(&mut self, frames: &[u8], count: u64) -> io::Result<()> {
        debug_assert!(frames.len() as u64 <= self.room());
        self.file.write_all_at(frames, self.write_offset)?;
        self.crc.update(frames);
        self.write_offset += frames.len() as u64;
        self.records += count;
        Ok(())
    }

    /// Writes the footer and syncs: the segment becomes immutable.
    pub fn seal(&mut self) -> io::Result<()> {
        let mut crc = self.crc.clone();
        crc_zeros(&mut crc, self.header.data_limit() - self.write_offset);
        let footer = Footer {
            record_count: self.records,
            last_lsn: self.header.base_lsn + self.records - 1,
            data_end: self.write_offset,
            segment_crc: crc.finalize(),
        };
        self.file.write_all_at(&footer.encode(), self.header.data_limit())?;
        self.file.sync_data()?;
        // Sealed and synced: its cached pages are clean and rarely read again soon. Keeping
        // every written segment cached made later writes measurably slower.
        self.file.drop_cache();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_footer_round_trip_and_catch_flips() {
        let header = Header { base_lsn: 7, capacity: 4096, salt: 99 };
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes), Ok(header));
        for bit in 0..HEADER_BYTES as usize * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&bad).is_err(), "bit {bit}");
        }
        let footer = Footer { record_count: 3, last_lsn: 9, data_end: 200, segment_crc: 5 };
        let bytes = footer.encode();
        assert_eq!(Footer::decode(&bytes), Ok(Some(footer)));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(Footer::decode(&bad), Ok(Some(_))), "bit {bit}");
        }
    }

    #[test]
    fn names_round_trip() {
        let name = segment_name(42);
        assert_eq!(parse_segment_name(Path::new(&name)), Some(42));
        assert_eq!(parse_segment_name(Path::new("42.seg")), None);
    }
}
