//! Ops as their bytes: what the log stores as a record payload is what a sender frames and a
//! receiver appends. A sender never decodes what it sends ([`OpBytes`], read for its head
//! only); a receiver decodes once ([`EncodedOp::decode`]), validates and projects the op, and
//! writes the bytes it received.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::op::{Op, OpId, Origin};
use crate::proof::{self, Trailer};

/// The encoded bytes of one op, as stored and sent. Nothing about them is trusted until
/// [`OpBytes::decode`] (or [`OpBytes::head`] for the fields in front).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpBytes(#[serde(with = "serde_bytes")] Vec<u8>);

/// The fields at the front of an encoded op, read without decoding the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpHead {
    /// The op's id.
    pub op_id: OpId,
    /// Its origin.
    pub origin: Origin,
    /// Its seq in that origin.
    pub seq: u64,
}

#[derive(Deserialize)]
struct Front {
    op_id: OpId,
    origin: Origin,
    seq: u64,
}

impl OpBytes {
    /// Wraps bytes (a record payload read from the log, or a frame's op from a peer).
    pub fn new(bytes: Vec<u8>) -> OpBytes {
        OpBytes(bytes)
    }

    /// Attaches the certificate of its genesis key (see [`proof::attach_certificate`]).
    pub fn attach_certificate(&mut self, certificate: &[u8]) -> bool {
        proof::attach_certificate(&mut self.0, certificate)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never a valid op).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The op_id, origin and seq at the front (the rest is neither read nor checked).
    pub fn head(&self) -> Result<OpHead, String> {
        OpBytes::head_of(&self.0)
    }

    /// [`OpBytes::head`] of bytes not (yet) wrapped.
    pub fn head_of(bytes: &[u8]) -> Result<OpHead, String> {
        let front: Front = codec::decode_prefix(bytes)?;
        Ok(OpHead { op_id: front.op_id, origin: front.origin, seq: front.seq })
    }

    /// Decodes the op, keeping these bytes: see [`EncodedOp::decode`].
    pub fn decode(self) -> Result<EncodedOp, String> {
        EncodedOp::decode(self.0)
    }

    /// True when the op's flags (its last byte) say it carries a seal: it ends a run, and a
    /// sender's frame may end after it.
    pub fn is_sealed(&self) -> bool {
        proof::is_sealed(&self.0)
    }
}

impl fmt::Debug for OpBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.head() {
            Ok(head) => write!(
                f,
                "OpBytes({} bytes, {} {}#{})",
                self.0.len(),
                head.op_id,
                head.origin,
                head.seq
            ),
            Err(_) => write!(f, "OpBytes({} bytes, no valid head)", self.0.len()),
        }
    }
}

/// An op decoded once, with the exact bytes it is stored as (its encoding and its proof
/// trailer, see [`crate::proof`]): the log writes these bytes and never encodes the op again.
/// Built only by encoding an op or by decoding bytes that are its canonical encoding, so the
/// two always agree.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedOp {
    op: Op,
    bytes: Vec<u8>,
    /// Where the signed part ends (the proof trailer was checked when this was made).
    signed_len: usize,
}

impl EncodedOp {
    /// Encodes an op with an empty trailer (no genesis, no seal).
    pub fn encode(op: Op) -> EncodedOp {
        let mut bytes = codec::encode_op(&op);
        let op_len = bytes.len();
        proof::write_trailer(&mut bytes, None, None);
        EncodedOp { op, bytes, signed_len: op_len }
    }

    /// Decodes received bytes. Bytes that decode but are not the op's canonical encoding
    /// (a varint written longer than it needs) are refused: one op has one byte form, so what
    /// a node stores, checksums and passes on is the same everywhere. The trailer is parsed,
    /// not checked: whether its seal is good is the receiver's question.
    pub fn decode(bytes: Vec<u8>) -> Result<EncodedOp, String> {
        let trailer = proof::parse_trailer(&bytes)?;
        let op = codec::decode_op(&bytes[..trailer.op_len])?;
        let canonical = codec::encoded_len(&op);
        if canonical != trailer.op_len {
            return Err(format!(
                "op {} is {} bytes where its canonical encoding is {canonical}",
                op.op_id, trailer.op_len
            ));
        }
        Ok(EncodedOp { op, bytes, signed_len: trailer.signed_len })
    }

    /// The op.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// Its bytes (encoding and trailer).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its proof trailer, read again from its bytes (checked when this was made; only a
    /// genesis allocates).
    pub fn trailer(&self) -> Trailer {
        proof::parse_trailer(&self.bytes).unwrap_or(Trailer {
            genesis: None,
            seal: None,
            certificate: None,
            op_len: self.signed_len,
            signed_len: self.signed_len,
        })
    }

    /// True when its flags say it carries a genesis block.
    pub fn has_genesis(&self) -> bool {
        self.bytes.last().is_some_and(|f| f & proof::FLAG_GENESIS != 0)
    }

    /// The seal it carries, if it ends a run.
    pub fn seal(&self) -> Option<proof::Seal> {
        if proof::is_sealed(&self.bytes) { self.trailer().seal } else { None }
    }

    /// Attaches the certificate of its genesis key (see [`proof::attach_certificate`]); the
    /// signed part stays as it is. False when it has no genesis or carries one already.
    pub fn attach_certificate(&mut self, certificate: &[u8]) -> bool {
        proof::attach_certificate(&mut self.bytes, certificate)
    }

    /// The bytes its run's seal signs (see [`crate::proof`]).
    pub fn signed_part(&self) -> &[u8] {
        &self.bytes[..self.signed_len]
    }

    /// The op and its bytes, apart.
    pub fn into_parts(self) -> (Op, Vec<u8>) {
        (self.op, self.bytes)
    }
}

impl fmt::Debug for EncodedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedOp({} bytes, {:?})", self.bytes.len(), self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::op::OpKind;

    fn sample(seq: u64) -> Op {
        Op {
            op_id: OpId([1; 16]),
            origin: Origin([2; 16]),
            seq,
            hlc: Hlc { wall_ms: 4, counter: 5, node: Origin([2; 16]) },
            table: "notes".into(),
            row_id: "r1".into(),
            kind: OpKind::Insert,
            data: b"{\"a\":1}".to_vec(),
        }
    }

    fn varint_len(n: u64) -> usize {
        match n {
            0..=250 => 1,
            251..=0xffff => 3,
            0x1_0000..=0xffff_ffff => 5,
            _ => 9,
        }
    }

    #[test]
    fn the_head_is_read_without_the_rest_and_decode_keeps_the_bytes() {
        for seq in [1, 250, 251, 65_536, u64::MAX] {
            let encoded = EncodedOp::encode(sample(seq));
            let bytes = OpBytes::new(encoded.bytes().to_vec());
            let head = bytes.head().expect("head");
            assert_eq!((head.op_id, head.origin, head.seq), (OpId([1; 16]), Origin([2; 16]), seq));
            let decoded = bytes.decode().expect("decode");
            assert_eq!(decoded, encoded);
            // The head needs only the front: the rest may be missing.
            let front = OpBytes::new(encoded.bytes()[..34 + varint_len(seq)].to_vec());
            assert_eq!(front.head().map(|h| h.seq), Ok(seq));
            assert!(OpBytes::new(encoded.bytes()[..33].to_vec()).head().is_err());
        }
    }

    #[test]
    fn a_longer_than_canonical_encoding_is_refused() {
        let canonical = EncodedOp::encode(sample(7)).bytes().to_vec();
        // seq 7 is one varint byte at offset 34; write it as the u16 form (251, 7, 0).
        let mut long = canonical[..34].to_vec();
        long.extend_from_slice(&[251, 7, 0]);
        long.extend_from_slice(&canonical[35..]);
        let refused = EncodedOp::decode(long).map(|_| ()).err();
        // bincode may or may not accept the long varint; either way it is not stored.
        assert!(refused.is_some());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_u64;
        for len in 0..300 {
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                bytes.push((seed >> 56) as u8);
            }
            let b = OpBytes::new(bytes);
            let _ = b.head();
            let _ = b.decode();
        }
    }
}
