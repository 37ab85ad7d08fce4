//! The one place ops become bytes and back: bincode 2 (serde) with a decode size limit.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::DECODE_BYTES_MAX;
use crate::op::Op;

type Config = Configuration<LittleEndian, Varint, Limit<DECODE_BYTES_MAX>>;

fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// Encodes an op as a record payload.
pub fn encode_op(op: &Op) -> Vec<u8> {
    // Encoding into a Vec cannot fail for these plain types; an error here is a bug in the
    // types, reported as an empty payload that every reader refuses.
    bincode::serde::encode_to_vec(op, config()).unwrap_or_default()
}

/// Appends the encoding of an op to `out` (no allocation when `out` has room).
pub fn encode_op_into(op: &Op, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail; see `encode_op`.
    let _ = bincode::serde::encode_into_std_write(op, out, config());
}

/// Decodes a record payload; trailing bytes or any allocation past the limit are refused.
pub fn decode_op(bytes: &[u8]) -> Result<Op, String> {
    let (op, used): (Op, usize) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes after the op", bytes.len() - used));
    }
    Ok(op)
}

/// Decodes the op of a stored payload (its encoding followed by its proof trailer, see
/// [`crate::proof`]); the trailer is parsed but not checked.
pub fn decode_payload(payload: &[u8]) -> Result<Op, String> {
    let trailer = crate::proof::parse_trailer(payload)?;
    decode_op(&payload[..trailer.op_len])
}

/// The length of an op's canonical encoding, counted without writing it.
pub fn encoded_len(op: &Op) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    // Counting cannot fail either; see `encode_op`.
    let _ = bincode::serde::encode_into_writer(op, &mut size, config());
    size.bytes_written
}

/// Decodes a value from the front of `bytes`, ignoring what follows (the head of an op).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|e| e.to_string())
}

/// Encodes any other stored value (the materializer's rows) with the same configuration.
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    // As for ops: plain types into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

/// Appends the encoding of a stored value to `out`.
pub fn encode_value_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail; see `encode_op`.
    let _ = bincode::serde::encode_into_std_write(value, out, config());
}

/// Decodes a stored value under the same size limit; trailing bytes are refused.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes after the value", bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::op::{OpId, OpKind, Origin};

    fn sample() -> Op {
        Op {
            op_id: OpId([1; 16]),
            origin: Origin([2; 16]),
            seq: 3,
            hlc: Hlc { wall_ms: 4, counter: 5, node: Origin([2; 16]) },
            table: "episodes".into(),
            row_id: "r1".into(),
            kind: OpKind::Insert,
            data: b"{}".to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let op = sample();
        assert_eq!(decode_op(&encode_op(&op)), Ok(op));
    }

    #[test]
    fn forged_lengths_and_trailing_bytes_are_refused() {
        let mut bytes = encode_op(&sample());
        bytes.push(0);
        assert!(decode_op(&bytes).is_err());
        // A data length claiming ~2^62 bytes must fail on the limit, not allocate.
        let mut forged = encode_op(&sample());
        let data_len_at = forged.len() - 3;
        forged.truncate(data_len_at);
        forged.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
        assert!(decode_op(&forged).is_err());
        for cut in 0..encode_op(&sample()).len() {
            assert!(decode_op(&encode_op(&sample())[..cut]).is_err());
        }
    }
}
