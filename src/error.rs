//! Failures of the node facade, with the stable codes the CLI and the API report.

use std::path::{Path, PathBuf};

pub use feral_log::Code;
pub use feral_materializer::FieldError;

/// Every failure the `Node` reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] feral_log::Error),
    /// The episodes projection failed.
    #[error(transparent)]
    Projection(feral_materializer::Error),
    /// An episode document failed validation.
    #[error("invalid episode: {0}")]
    Invalid(#[from] FieldError),
    /// The node is paused after a fault; free space or repair, then resume.
    #[error("node is paused ({reason}); free space or repair, then resume")]
    Paused {
        /// Code of the fault behind the pause (`disk_full`, `io_error`, `corruption`…).
        code: Code,
        /// What happened.
        reason: String,
    },
    /// The node key could not be read or created.
    #[error("node identity: {0}")]
    Identity(String),
    /// The conflicts file is damaged (too large, or not a list of conflicts).
    #[error("conflicts: {0}")]
    Conflicts(String),
    /// A revocation statement was refused, or `revoked.json` is damaged.
    #[error("revocation: {0}")]
    Revocation(String),
    /// A backup could not be taken or restored (the message says why and where).
    #[error("backup: {0}")]
    Backup(String),
    /// A damaged directory could not be salvaged into a fresh store (why and where).
    #[error("salvage: {0}")]
    Salvage(String),
    /// An import could not read its source (why and where).
    #[error("import: {0}")]
    Import(String),
    /// A running node's API refused a request made for this one (the CLI going through it).
    #[error("{text}: {message} (through the running node's API)")]
    Api {
        /// The node's code, when it is one of the store's (`disk_full`, `invalid_op`…).
        code: Option<Code>,
        /// The code as the node sent it.
        text: String,
        /// The node's message.
        message: String,
    },
    /// The device is full.
    #[error("disk full under {path}: {source}")]
    DiskFull {
        /// The file or directory the failing call touched.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A postcondition of the store did not hold (a bug, never bad input): what was expected.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// Another I/O failure.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory the failing call touched.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<feral_log::OpError> for Error {
    fn from(e: feral_log::OpError) -> Error {
        Error::Log(e.into())
    }
}

impl From<feral_materializer::Error> for Error {
    fn from(e: feral_materializer::Error) -> Error {
        match e {
            feral_materializer::Error::Log(e) => Error::Log(e),
            feral_materializer::Error::Invalid(e) => Error::Invalid(e),
            other => Error::Projection(other),
        }
    }
}

impl Error {
    /// Classifies an I/O error (ENOSPC and EDQUOT become `DiskFull`).
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        if feral_log::error::is_disk_full(&source) {
            Error::DiskFull { path: path.to_path_buf(), source }
        } else {
            Error::Io { path: path.to_path_buf(), source }
        }
    }

    /// The stable code: `disk_full`, `wal_corruption`, `index_corruption`,
    /// `episodes_corruption`, `invalid_episode`, `locked`, …
    pub fn code(&self) -> Code {
        match self {
            Error::Log(e) => e.code(),
            Error::Projection(e) => e.code(),
            Error::Invalid(_) => Code::InvalidEpisode,
            Error::Paused { code, .. } => *code,
            Error::Identity(_) => Code::IdentityError,
            Error::Conflicts(_) => Code::Corruption,
            Error::Backup(_) | Error::Salvage(_) => Code::BackupError,
            Error::Import(_) => Code::ImportError,
            Error::Api { code, .. } => code.unwrap_or(Code::Internal),
            Error::Revocation(_) => Code::InvalidRevocation,
            Error::DiskFull { .. } => Code::DiskFull,
            Error::Io { .. } => Code::IoError,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// True when the cause is a full device.
    pub fn is_disk_full(&self) -> bool {
        self.code().is_disk_full()
    }

    /// True when the cause is damaged data.
    pub fn is_corruption(&self) -> bool {
        self.code().is_corruption()
    }
}

/// Result with the node's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
