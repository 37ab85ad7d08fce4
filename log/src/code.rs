//! The closed set of fault codes the store reports (in errors, check reports, the HTTP API's
//! `error` field and the CLI's exit statuses), as one enum: callers match on variants and ask
//! [`Code::is_corruption`], never on suffixes of strings.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// A stable fault code. Its text (`disk_full`, `wal_corruption`…) never changes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code's text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// The code with this text, if it is one.
            pub fn parse(text: &str) -> Option<Code> {
                match text {
                    $($text => Some(Code::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// The device is full.
    DiskFull => "disk_full",
    /// Writes are refused after a fault; resume after repairing it.
    IoPaused => "io_paused",
    /// Another I/O error.
    IoError => "io_error",
    /// The log is damaged.
    WalCorruption => "wal_corruption",
    /// The log could not be opened or read for the check.
    WalOpenFailed => "wal_open_failed",
    /// The index disagrees with the log or with itself.
    IndexCorruption => "index_corruption",
    /// The index could not be opened for the check.
    IndexOpenFailed => "index_open_failed",
    /// The index failed (not damage).
    IndexError => "index_error",
    /// Another process holds the data directory.
    Locked => "locked",
    /// One op_id was used for two different contents.
    OpIdConflict => "op_id_conflict",
    /// Two different ops claim one (origin, seq).
    SplitBrain => "split_brain",
    /// A remote clock is too far ahead.
    ClockDrift => "clock_drift",
    /// An op was refused before touching the disk.
    InvalidOp => "invalid_op",
    /// A configuration value is out of range.
    InvalidConfig => "invalid_config",
    /// One call submitted more ops than an intake takes at once.
    BatchTooLarge => "batch_too_large",
    /// The episodes projection is damaged.
    EpisodesCorruption => "episodes_corruption",
    /// The episodes projection could not be opened for the check.
    EpisodesOpenFailed => "episodes_open_failed",
    /// The episodes projection failed (not damage).
    EpisodesError => "episodes_error",
    /// The projection is missing ops the log has (caught up by itself).
    EpisodesGap => "episodes_gap",
    /// The episodes projection cannot be read until resume.
    EpisodesUnavailable => "episodes_unavailable",
    /// An episode document failed validation.
    InvalidEpisode => "invalid_episode",
    /// The search index is damaged (rebuilt from the projection by resume).
    SearchCorruption => "search_corruption",
    /// The search index failed (not damage).
    SearchError => "search_error",
    /// A read's query cannot be run as asked (a bad parameter, limit or cursor).
    InvalidQuery => "invalid_query",
    /// A stopped part was found damaged (the pause of a projection that failed its check).
    Corruption => "corruption",
    /// The node key could not be read or created.
    IdentityError => "identity_error",
    /// A backup could not be taken or restored.
    BackupError => "backup_error",
    /// An import could not read its source (not an SQLite database, an unreadable table).
    ImportError => "import_error",
    /// A revocation statement that does not verify, or cannot be taken.
    InvalidRevocation => "invalid_revocation",
    /// A postcondition did not hold: a bug, never bad input.
    Internal => "internal",
}

impl Code {
    /// True for damaged data (of the log, index or projection): the operator's runbook is
    /// check, resume, and restore if that fails (exit status 3 in the CLI).
    pub fn is_corruption(self) -> bool {
        matches!(
            self,
            Code::WalCorruption
                | Code::IndexCorruption
                | Code::EpisodesCorruption
                | Code::SearchCorruption
                | Code::Corruption
        )
    }

    /// True for a full device (exit status 4, HTTP 507).
    pub fn is_disk_full(self) -> bool {
        self == Code::DiskFull
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn text_parse_and_serde_agree() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(*code));
            let json = serde_json::to_string(code).expect("json");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(Code::parse("wal_corruptio"), None);
    }
}
