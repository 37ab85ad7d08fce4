//! The messages of a sync session and their framing: a u32 little-endian length, then the
//! message in bincode (with a decode limit). Bytes come in; whole messages come out.

use feral_types::{Hlc, OpBytes, OpId, Origin};
use serde::{Deserialize, Serialize};

use crate::error::SyncError;
use crate::limits::{DECODER_IDLE_BYTES_MAX, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

/// Everything one side tells the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// The first message of each side.
    Hello(Hello),
    /// Ops the receiver lacks, in (origin, seq) order, each as the bytes its sender stores it
    /// as (framed without being decoded; the receiver decodes each once).
    Ops(Vec<OpBytes>),
    /// The sender has sent everything the receiver lacked.
    Done {
        /// Ops sent in this session.
        sent: u64,
    },
    /// The sender ends the session for this reason (a refusal code and text).
    Refuse {
        /// Stable code (`wrong_cluster`, `duplicate_node_id`, `protocol_version`, `split_brain`…).
        code: String,
        /// What happened.
        reason: String,
    },
}

/// The handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version.
    pub version: u32,
    /// Hash of the cluster CA certificate.
    pub cluster_id: [u8; 32],
    /// The node id (hash of the node key).
    pub node_id: [u8; 16],
    /// The sender's writer origin.
    pub origin: Origin,
    /// A sample of the sender's clock.
    pub hlc: Hlc,
    /// Highest contiguous seq held per origin, with the op_id held there (two stores that
    /// hold different ops at one (origin, seq) are split brain, even with equal heads).
    pub heads: Vec<Head>,
    /// Ranges below the sender's heads it wants sent again: its copies of those ops were
    /// found damaged. At most `HELLO_WANTS_MAX`.
    pub wants: Vec<Want>,
}

/// A stretch of one origin's ops a side wants again (it holds them, damaged): from the first
/// seq of the run that holds the first damaged op, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Want {
    /// The origin.
    pub origin: Origin,
    /// First seq wanted (a run's first).
    pub from: u64,
    /// Last seq wanted.
    pub to: u64,
}

/// One origin's head in a `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Head {
    /// The origin.
    pub origin: Origin,
    /// Highest contiguous seq held.
    pub seq: u64,
    /// The op held at that seq.
    pub op_id: OpId,
}

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<FRAME_BYTES_MAX>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<FRAME_BYTES_MAX>()
}

/// Appends one framed message to `out`.
pub fn encode_frame(message: &SyncMessage, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    // Writing plain types into a Vec cannot fail.
    let _ = bincode::serde::encode_into_std_write(message, out, config());
    let len = (out.len() - start - FRAME_HEADER_BYTES) as u32;
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&len.to_le_bytes());
}

/// Cuts a byte stream into messages. A length above [`FRAME_BYTES_MAX`] or a frame that does
/// not decode exactly is an error; nothing is allocated for a forged length.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Bytes received. (A peer stalled inside a frame holds at most the frame limit here,
    /// twice that in capacity; the driver reads whatever arrives, so the stream's receive
    /// window is the other bound.)
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes of the frame that is complete or in progress still missing (for a reader that
    /// wants to read exactly that much), checking the announced length first.
    pub fn wanted(&self) -> Result<usize, SyncError> {
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(FRAME_HEADER_BYTES - self.buf.len());
        }
        let len = self.frame_len()?;
        Ok((FRAME_HEADER_BYTES + len).saturating_sub(self.buf.len()))
    }

    fn frame_len(&self) -> Result<usize, SyncError> {
        let mut raw = [0u8; FRAME_HEADER_BYTES];
        raw.copy_from_slice(&self.buf[..FRAME_HEADER_BYTES]);
        let len = u32::from_le_bytes(raw) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(SyncError::FrameTooLarge { len, max: FRAME_BYTES_MAX });
        }
        Ok(len)
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<SyncMessage>, SyncError> {
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let len = self.frame_len()?;
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        let body = &self.buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
        let (message, used): (SyncMessage, usize) =
            bincode::serde::decode_from_slice(body, config())
                .map_err(|e| SyncError::Malformed(e.to_string()))?;
        if used != len {
            return Err(SyncError::Malformed(format!("{} trailing bytes in a frame", len - used)));
        }
        self.buf.drain(..FRAME_HEADER_BYTES + len);
        if self.buf.is_empty() && self.buf.capacity() > DECODER_IDLE_BYTES_MAX {
            // A large frame is done: give its memory back.
            self.buf = Vec::new();
        }
        Ok(Some(message))
    }

    /// True when no partial frame is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> SyncMessage {
        SyncMessage::Hello(Hello {
            version: 1,
            cluster_id: [3; 32],
            node_id: [4; 16],
            origin: Origin([5; 16]),
            hlc: Hlc { wall_ms: 6, counter: 7, node: Origin([5; 16]) },
            heads: vec![Head { origin: Origin([5; 16]), seq: 9, op_id: OpId([6; 16]) }],
            wants: vec![Want { origin: Origin([5; 16]), from: 2, to: 4 }],
        })
    }

    #[test]
    fn frames_round_trip_in_any_split() {
        let mut bytes = Vec::new();
        encode_frame(&hello(), &mut bytes);
        encode_frame(&SyncMessage::Done { sent: 3 }, &mut bytes);
        for split in 0..bytes.len() {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                d.push(part);
                while let Some(m) = d.next_message().expect("valid") {
                    got.push(m);
                }
            }
            assert_eq!(got, vec![hello(), SyncMessage::Done { sent: 3 }]);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn a_forged_length_is_refused_before_allocating() {
        let mut d = FrameDecoder::default();
        d.push(&u32::MAX.to_le_bytes());
        assert!(matches!(d.wanted(), Err(SyncError::FrameTooLarge { .. })));
        assert!(matches!(d.next_message(), Err(SyncError::FrameTooLarge { .. })));
        // A frame within the limit whose body claims a huge vector fails on the decode limit.
        let mut forged = Vec::new();
        let body = [1u8, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
        forged.extend_from_slice(&(body.len() as u32).to_le_bytes());
        forged.extend_from_slice(&body);
        let mut d = FrameDecoder::default();
        d.push(&forged);
        assert!(matches!(d.next_message(), Err(SyncError::Malformed(_))));
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut body = Vec::new();
            for _ in 0..(seed % 64) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                body.push((seed >> 56) as u8);
            }
            let mut d = FrameDecoder::default();
            d.push(&(body.len() as u32).to_le_bytes());
            d.push(&body);
            let _ = d.next_message();
        }
    }
}
