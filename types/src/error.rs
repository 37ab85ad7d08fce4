//! The two ways an op or a clock reading can be refused before anything is stored.

/// A refused op or clock reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An op was refused before touching the disk (bad field, size limit, bad id text).
    #[error("invalid op: {0}")]
    InvalidOp(String),
    /// A remote HLC is further ahead of local physical time than the drift bound allows.
    #[error(
        "remote clock {remote_ms} ms is {ahead_ms} ms ahead of local time (limit {limit_ms} ms)"
    )]
    ClockDrift {
        /// The remote wall-clock part.
        remote_ms: u64,
        /// How far ahead it is.
        ahead_ms: u64,
        /// The configured bound.
        limit_ms: u64,
    },
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
