//! Failures of the materializer.

use std::path::PathBuf;

use crate::episode::FieldError;

/// Every failure feral-materializer reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log failed (its error carries its own code).
    #[error(transparent)]
    Log(#[from] feral_log::Error),
    /// The projection file is damaged or disagrees with the log; rebuild it from the log.
    #[error("episodes projection corruption: {0}")]
    Corruption(String),
    /// The device holding the projection is full.
    #[error("disk full under {path}: {source}")]
    DiskFull {
        /// The projection file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Any other failure of the projection's redb file.
    #[error("episodes projection error: {0}")]
    Projection(String),
    /// An episode document failed validation.
    #[error("invalid episode: {0}")]
    Invalid(#[from] FieldError),
    /// The search index is damaged or of another format; it is rebuilt from the projection.
    #[error("search index corruption: {0}")]
    SearchCorruption(String),
    /// Any other failure of the search index.
    #[error("search index error: {0}")]
    Search(String),
    /// A query that cannot be run as asked (the message says why).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Ops were handed over with a gap after the applied LSN; catch up from the log instead.
    #[error("ops start at LSN {first} but the projection has applied up to {applied}")]
    Gap {
        /// The projection's applied LSN.
        applied: u64,
        /// The first LSN handed over.
        first: u64,
    },
}

impl Error {
    /// The stable code used in reports, HTTP errors and exit statuses.
    pub fn code(&self) -> feral_log::Code {
        match self {
            Error::Log(e) => e.code(),
            Error::Corruption(_) => feral_log::Code::EpisodesCorruption,
            Error::DiskFull { .. } => feral_log::Code::DiskFull,
            Error::Projection(_) => feral_log::Code::EpisodesError,
            Error::Invalid(_) => feral_log::Code::InvalidEpisode,
            Error::Gap { .. } => feral_log::Code::EpisodesGap,
            Error::SearchCorruption(_) => feral_log::Code::SearchCorruption,
            Error::Search(_) => feral_log::Code::SearchError,
            Error::InvalidQuery(_) => feral_log::Code::InvalidQuery,
        }
    }

    /// True when the device is full (in the log or the projection).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. } | Error::Log(feral_log::Error::DiskFull { .. }))
    }
}

/// Result with the materializer's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
