//! The op: the unit every change travels as, with its identifiers (`OpId`, `Origin`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::limits::{OP_DATA_BYTES_MAX, OP_NAME_BYTES_MAX};

/// Writes 16 bytes as 32 lowercase hex characters.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

/// Parses exactly 32 hex characters into 16 bytes (op ids, origins, node ids).
pub fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Fast non-cryptographic randomness for id bits: SplitMix64 over a process-wide state seeded
/// once from the operating system (a syscall per op id cost more than the rest of an append).
pub fn fast_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    static SEEDED: std::sync::Once = std::sync::Once::new();
    SEEDED.call_once(|| {
        let mut seed = [0u8; 8];
        random_bytes(&mut seed);
        STATE.store(u64::from_le_bytes(seed), Ordering::Relaxed);
    });
    let mut z = STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The OS source never fails on Linux after boot; fall back to a time-seeded mix so an
        // id is still produced rather than a panic.
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        for byte in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
    }
}

/// The unique id of an op: 16 bytes in UUIDv7 layout so generated ids sort by time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(#[serde(with = "serde_bytes")] pub [u8; 16]);

/// Last (unix_ms << 12 | counter) handed out, so ids from one process strictly increase.
static OP_ID_CLOCK: AtomicU64 = AtomicU64::new(0);

impl OpId {
    /// A new time-ordered id: 48-bit unix milliseconds, version 7, a 12-bit per-millisecond
    /// counter (monotone within this process), variant bits, 62 random bits.
    pub fn generate(unix_ms: u64) -> OpId {
        let wanted = (unix_ms & 0xffff_ffff_ffff) << 12;
        let stamp = OP_ID_CLOCK
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(if wanted > last { wanted } else { last + 1 })
            })
            .map_or(wanted, |last| if wanted > last { wanted } else { last + 1 });
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&fast_random().to_le_bytes());
        let ms = stamp >> 12;
        let counter = (stamp & 0xfff) as u16;
        bytes[0..6].copy_from_slice(&ms.to_be_bytes()[2..8]);
        bytes[6] = 0x70 | (counter >> 8) as u8;
        bytes[7] = counter as u8;
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        OpId(bytes)
    }

    /// Parses 32 hex characters.
    pub fn parse(text: &str) -> Result<OpId> {
        parse_hex16(text)
            .map(OpId)
            .ok_or_else(|| Error::InvalidOp(format!("op_id {text:?} is not 32 hex characters")))
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({self})")
    }
}

/// A writer incarnation: random, created with a data directory and anew on restore.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Origin(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl Origin {
    /// A fresh random origin.
    pub fn random() -> Origin {
        let mut bytes = [0u8; 16];
        random_bytes(&mut bytes);
        Origin(bytes)
    }

    /// Parses 32 hex characters.
    pub fn parse(text: &str) -> Result<Origin> {
        parse_hex16(text)
            .map(Origin)
            .ok_or_else(|| Error::InvalidOp(format!("origin {text:?} is not 32 hex characters")))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

/// What an op does to its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// Insert or replace the row with `data`.
    Insert,
    /// Delete the row, leaving a tombstone.
    Delete,
}

impl OpKind {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Insert => "insert",
            OpKind::Delete => "delete",
        }
    }
}

/// One change, as stored in the log and sent between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique id; equal ids with equal content are one op.
    pub op_id: OpId,
    /// The writer incarnation that produced it.
    pub origin: Origin,
    /// 1, 2, 3… contiguous per origin.
    pub seq: u64,
    /// Hybrid logical clock stamp.
    pub hlc: Hlc,
    /// Table name (`episodes`, or any other).
    pub table: String,
    /// Row key inside the table.
    pub row_id: String,
    /// Insert or delete.
    pub kind: OpKind,
    /// Row document (JSON for `episodes`); empty for deletes. Encoded as one byte string
    /// (the same bytes as a sequence of u8, written with one copy instead of one call a byte).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A fast hasher for maps keyed by ids (random or time-ordered bytes, not attacker-chosen
/// strings): folds 8-byte words with a multiply. SipHash cost more than the rest of the in-memory
/// append work.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix(self.0, bytes);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

/// Builds [`IdHasher`]s.
pub type IdHashBuilder = std::hash::BuildHasherDefault<IdHasher>;

/// A map keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHashBuilder>;

/// What a local writer supplies; the log assigns origin, seq and HLC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpDraft {
    /// Set for retry-idempotency; generated when `None`.
    pub op_id: Option<OpId>,
    /// Table name.
    pub table: String,
    /// Row key.
    pub row_id: String,
    /// Insert or delete.
    pub kind: OpKind,
    /// Row document.
    pub data: Vec<u8>,
}

impl OpDraft {
    /// An insert draft with a generated op_id.
    pub fn insert(table: impl Into<String>, row_id: impl Into<String>, data: Vec<u8>) -> OpDraft {
        OpDraft {
            op_id: None,
            table: table.into(),
            row_id: row_id.into(),
            kind: OpKind::Insert,
            data,
        }
    }

    /// Sets a caller-chosen op_id.
    pub fn with_op_id(mut self, op_id: OpId) -> OpDraft {
        self.op_id = Some(op_id);
        self
    }

    /// Checks the size limits before anything touches the disk.
    pub fn validate(&self) -> Result<()> {
        validate_fields(&self.table, &self.row_id, &self.data)
    }
}

/// Size and emptiness checks shared by local drafts and remote ops.
pub fn validate_fields(table: &str, row_id: &str, data: &[u8]) -> Result<()> {
    if table.is_empty() || table.len() > OP_NAME_BYTES_MAX {
        return Err(Error::InvalidOp(format!(
            "table must be 1..={OP_NAME_BYTES_MAX} bytes, got {}",
            table.len()
        )));
    }
    if row_id.is_empty() || row_id.len() > OP_NAME_BYTES_MAX {
        return Err(Error::InvalidOp(format!(
            "row_id must be 1..={OP_NAME_BYTES_MAX} bytes, got {}",
            row_id.len()
        )));
    }
    if data.len() > OP_DATA_BYTES_MAX {
        return Err(Error::InvalidOp(format!(
            "data must be at most {OP_DATA_BYTES_MAX} bytes, got {}",
            data.len()
        )));
    }
    Ok(())
}

const MIX_K: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix_word(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(MIX_K).rotate_left(29)
}

fn word_at(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

/// A 64-bit multiply-rotate hash over four independent lanes of 8-byte words (so the CPU runs
/// them in parallel), stable across builds and platforms; used to compare op content under one
/// op_id (not a defence against a hostile peer).
fn mix(hash: u64, bytes: &[u8]) -> u64 {
    let mut blocks = bytes.chunks_exact(32);
    let mut hash = if bytes.len() >= 32 {
        let mut lanes = [hash, hash ^ 1, hash ^ 2, hash ^ 3];
        for block in &mut blocks {
            for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
                *lane = mix_word(*lane, word_at(word));
            }
        }
        lanes.iter().fold(0, |acc, lane| mix_word(acc, *lane))
    } else {
        hash
    };
    let mut words = blocks.remainder().chunks_exact(8);
    for word in &mut words {
        hash = mix_word(hash, word_at(word));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // The last 1–7 bytes as one zero-padded word (callers mix in each part's length).
        let mut raw = [0u8; 8];
        raw[..rest.len()].copy_from_slice(rest);
        hash = mix_word(hash, u64::from_le_bytes(raw));
    }
    hash
}

/// Hash of the writer-supplied content (table, row, kind, data): equal for a retried op.
pub fn content_hash(table: &str, row_id: &str, kind: OpKind, data: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for part in [table.as_bytes(), row_id.as_bytes(), kind.as_str().as_bytes(), data] {
        hash = mix(mix_word(hash, part.len() as u64), part);
    }
    hash ^ (hash >> 32)
}

impl Op {
    /// See [`content_hash`].
    pub fn content_hash(&self) -> u64 {
        content_hash(&self.table, &self.row_id, self.kind, &self.data)
    }

    /// About how many bytes the op takes encoded: its variable fields plus 64 for the fixed
    /// ones (ids, seq, HLC, kind). Frame budgets are counted in it.
    pub fn size_hint(&self) -> usize {
        self.data.len() + self.row_id.len() + self.table.len() + 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_time_ordered_and_v7() {
        let a = OpId::generate(1_000);
        let b = OpId::generate(1_000);
        let c = OpId::generate(999); // clock went back: still increases
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a.0[6] >> 4, 7);
        assert_eq!(a.0[8] >> 6, 0b10);
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_text() {
        let id = OpId::generate(42);
        assert_eq!(OpId::parse(&id.to_string()).ok(), Some(id));
        assert!(OpId::parse("xyz").is_err());
        assert!(OpId::parse(&"g".repeat(32)).is_err());
    }

    #[test]
    fn content_hash_separates_fields() {
        let a = content_hash("ab", "c", OpKind::Insert, b"");
        let b = content_hash("a", "bc", OpKind::Insert, b"");
        assert_ne!(a, b);
    }
}
