//! The typed errors of feral-log. Callers branch on the variant; every variant is documented.

use std::path::PathBuf;

use crate::code::Code;

use crate::op::{OpId, Origin};
use feral_types::Error as OpError;

/// Where in the log a fault was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Location {
    /// Segment file name (its base LSN, zero padded).
    pub segment: String,
    /// Byte offset inside the segment file.
    pub offset: u64,
    /// What was wrong, in words.
    pub reason: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segment {} offset {}: {}", self.segment, self.offset, self.reason)
    }
}

/// Every failure feral-log reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device is full (ENOSPC, EDQUOT, `StorageFull`). The log is now paused.
    #[error("disk full under {path}: {source}")]
    DiskFull {
        /// The file or directory the failing call touched.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The log is paused after a disk-full, failed sync or corruption; `resume()` re-verifies.
    #[error("log is paused ({reason}); free space or repair, then resume()")]
    Paused {
        /// The kind of fault behind the pause.
        kind: crate::wal::PauseKind,
        /// Why the log paused.
        reason: String,
    },
    /// Any other I/O error from the storage layer.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory the failing call touched.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Data in the log failed its checksum or structure checks.
    #[error("log corruption at {0}")]
    Corruption(Location),
    /// The redb index is damaged or inconsistent with the log; rebuild it from the log.
    #[error("index corruption: {0}")]
    IndexCorruption(String),
    /// The redb index failed for a reason other than corruption.
    #[error("index error: {0}")]
    Index(String),
    /// Another process, or another open handle in this one, holds the data-directory lock.
    #[error("data directory {path} is locked by {holder}")]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// Who: "another process (pid N)", "another process", or "another handle in this
        /// process (pid N)".
        holder: String,
    },
    /// The op_id is already in the log with different content.
    #[error("op {0} already exists with different content")]
    OpIdConflict(OpId),
    /// Two different ops claim the same (origin, seq): two writers share one origin.
    #[error(
        "split brain: origin {origin} seq {seq} is claimed by op {refused}, held: {existing:?}"
    )]
    SplitBrain {
        /// The shared origin.
        origin: Origin,
        /// The contested sequence number.
        seq: u64,
        /// The op already held at that seq, when the index has it (a received op claiming this
        /// node's own origin is refused even when nothing is held there yet, and a local op
        /// still on its way to the index is not named).
        existing: Option<OpId>,
        /// The op refused.
        refused: OpId,
    },
    /// An op or a remote clock stamp was refused before touching the disk: a bad field or
    /// size ([`OpError::InvalidOp`]) or a stamp too far ahead ([`OpError::ClockDrift`]).
    /// Defined once, in feral-types, which the sync protocol shares.
    #[error(transparent)]
    Op(#[from] OpError),
    /// One call submitted more ops than an intake takes at once.
    #[error("batch of {ops} ops is over the limit of {max} per call; split it")]
    BatchTooLarge {
        /// Ops submitted.
        ops: usize,
        /// The bound ([`crate::limits::SUBMIT_OPS_MAX`]).
        max: usize,
    },
    /// A caller-supplied configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// The stable code used in reports and exit statuses.
    pub fn code(&self) -> Code {
        match self {
            Error::DiskFull { .. } => Code::DiskFull,
            Error::Paused { kind: crate::wal::PauseKind::DiskFull, .. } => Code::DiskFull,
            Error::Paused { .. } => Code::IoPaused,
            Error::Io { .. } => Code::IoError,
            Error::Corruption(_) => Code::WalCorruption,
            Error::IndexCorruption(_) => Code::IndexCorruption,
            Error::Index(_) => Code::IndexError,
            Error::Locked { .. } => Code::Locked,
            Error::OpIdConflict(_) => Code::OpIdConflict,
            Error::SplitBrain { .. } => Code::SplitBrain,
            Error::Op(OpError::ClockDrift { .. }) => Code::ClockDrift,
            Error::Op(OpError::InvalidOp(_)) => Code::InvalidOp,
            Error::InvalidConfig(_) => Code::InvalidConfig,
            Error::BatchTooLarge { .. } => Code::BatchTooLarge,
        }
    }

    /// Classifies an I/O error: ENOSPC, EDQUOT and `StorageFull` become `DiskFull`.
    pub fn from_io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        if is_disk_full(&source) {
            Error::DiskFull { path, source }
        } else {
            Error::Io { path, source }
        }
    }
}

/// True for the errors that mean "no space": ENOSPC, EDQUOT, `StorageFull`.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
