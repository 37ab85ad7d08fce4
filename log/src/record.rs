//! Record framing: `len | crc | lsn | synced_lsn | payload | zero pad to 8 bytes`.
//!
//! The CRC-32 covers the segment's random salt, the length, both LSNs, the payload and its
//! padding, so every byte of a frame is checked and a frame from another segment (or op data
//! that happens to look like a frame) never validates.

use crate::le::{u32_at, u64_at};

/// Bytes before the payload: len u32, crc u32, lsn u64, synced_lsn u64 (all little endian).
pub const FRAME_HEADER_BYTES: usize = 24;
/// Frames start on multiples of this, so recovery can look for later frames.
pub const FRAME_ALIGN_BYTES: usize = 8;

/// The on-disk size of a frame carrying `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len).div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

/// CRC over salt, len, LSNs, and the payload with its padding (`body`), so every byte of a
/// frame is covered.
fn frame_crc(salt: u64, len: u32, lsn: u64, synced_lsn: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(&lsn.to_le_bytes());
    hasher.update(&synced_lsn.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Appends one frame to `out`. `synced_lsn` is the highest LSN already durable when this frame
/// is written; recovery uses it to tell a torn unsynced batch from damage to synced data.
pub fn encode_frame(out: &mut Vec<u8>, salt: u64, lsn: u64, synced_lsn: u64, payload: &[u8]) {
    let start = begin_frame(out);
    out.extend_from_slice(payload);
    finish_frame(out, start, salt, lsn, synced_lsn);
}

/// Reserves a frame header at the end of `out` and returns where the frame starts; the caller
/// then appends the payload in place and calls [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    start
}

/// Completes the frame that starts at `start` and runs to the end of `out`: pads it, and fills
/// in the header (length, LSNs, CRC with this segment's salt).
pub fn finish_frame(out: &mut Vec<u8>, start: usize, salt: u64, lsn: u64, synced_lsn: u64) {
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    debug_assert!(payload_len > 0 && synced_lsn < lsn);
    let len = payload_len as u32;
    out.resize(start + frame_len(payload_len), 0);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&lsn.to_le_bytes());
    out[start + 16..start + 24].copy_from_slice(&synced_lsn.to_le_bytes());
    let crc = frame_crc(salt, len, lsn, synced_lsn, &out[start + FRAME_HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A frame that passed its checks.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Local log position.
    pub lsn: u64,
    /// Highest LSN durable when it was written.
    pub synced_lsn: u64,
    /// The encoded op.
    pub payload: &'a [u8],
    /// Bytes the frame occupies, padding included.
    pub frame_len: usize,
}

/// What lies at a frame position.
#[derive(Debug, Clone, Copy)]
pub enum Decoded<'a> {
    /// A valid frame.
    Frame(Frame<'a>),
    /// An all-zero header: the end of written data (if the rest is zero too).
    Zero,
    /// Anything else: cut short, forged length, bad checksum.
    Bad(&'static str),
}

/// Decodes the frame at the start of `bytes`, which runs to the end of the segment's data
/// region. Never reads past `bytes`; a length that would is reported, not followed.
pub fn decode_frame(bytes: &[u8], salt: u64, payload_max: u32) -> Decoded<'_> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return if bytes.iter().all(|b| *b == 0) {
            Decoded::Zero
        } else {
            Decoded::Bad("frame header cut short")
        };
    }
    let header = &bytes[..FRAME_HEADER_BYTES];
    if header.iter().all(|b| *b == 0) {
        return Decoded::Zero;
    }
    let len = u32_at(header, 0);
    if len == 0 {
        return Decoded::Bad("zero payload length");
    }
    if len > payload_max {
        return Decoded::Bad("payload length over the limit");
    }
    let total = frame_len(len as usize);
    if total > bytes.len() {
        return Decoded::Bad("payload length runs past the segment end");
    }
    let lsn = u64_at(header, 8);
    let synced_lsn = u64_at(header, 16);
    let payload = &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len as usize];
    let body = &bytes[FRAME_HEADER_BYTES..total];
    if frame_crc(salt, len, lsn, synced_lsn, body) != u32_at(header, 4) {
        return Decoded::Bad("checksum mismatch");
    }
    if synced_lsn >= lsn {
        return Decoded::Bad("synced_lsn not below lsn");
    }
    Decoded::Frame(Frame { lsn, synced_lsn, payload, frame_len: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let mut out = Vec::new();
        encode_frame(&mut out, 9, 5, 4, b"hello");
        assert_eq!(out.len(), 32);
        match decode_frame(&out, 9, 1024) {
            Decoded::Frame(frame) => {
                assert_eq!((frame.lsn, frame.synced_lsn, frame.payload), (5, 4, &b"hello"[..]));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(decode_frame(&out, 10, 1024), Decoded::Bad(_)), "other salt");
    }

    #[test]
    fn every_bit_flip_in_header_and_payload_is_caught() {
        let mut out = Vec::new();
        encode_frame(&mut out, 1, 2, 1, b"payload");
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_frame(&bad, 1, 1024), Decoded::Frame(_)),
                "bit {bit} not caught"
            );
        }
    }

    #[test]
    fn forged_length_is_refused_without_reading_past_the_end() {
        let mut out = Vec::new();
        encode_frame(&mut out, 1, 2, 1, b"x");
        out[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&out, 1, 1024), Decoded::Bad(_)));
        out[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(decode_frame(&out, 1, 4096), Decoded::Bad(_)));
        assert!(matches!(decode_frame(&[0u8; 10], 1, 1024), Decoded::Zero));
        assert!(matches!(decode_frame(&[1u8; 10], 1, 1024), Decoded::Bad(_)));
    }
}
