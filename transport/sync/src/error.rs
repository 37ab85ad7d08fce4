//! Why a sync session failed, each cause distinct.

/// The refusal codes a peer may send that are reported as they are; see
/// [`SyncError::peer_refused`].
pub const PEER_CODES: &[&str] = &[
    "frame_too_large",
    "malformed_frame",
    "protocol_version",
    "wrong_cluster",
    "duplicate_node_id",
    "node_id_mismatch",
    "split_brain",
    "clock_drift",
    "disk_full",
    "io_paused",
    "already_syncing",
    "superseded",
    "revoked",
    "busy",
    "bad_signature",
    "revoked",
    "conflict",
    "store_error",
    "handshake_timeout",
    "progress_timeout",
    "session_timeout",
];
/// Characters of a peer's refusal text kept.
pub const PEER_REASON_CHARS_MAX: usize = 512;

/// Which deadline of a session passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No hello in time.
    Handshake,
    /// No frame progress in time.
    Progress,
    /// The whole session took too long.
    Session,
}

impl Stage {
    /// The stage's name (`handshake`, `progress`, `session`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Handshake => "handshake",
            Stage::Progress => "progress",
            Stage::Session => "session",
        }
    }

    /// Its code (`handshake_timeout`…).
    pub fn code(self) -> &'static str {
        match self {
            Stage::Handshake => "handshake_timeout",
            Stage::Progress => "progress_timeout",
            Stage::Session => "session_timeout",
        }
    }
}

/// Every failure of a sync session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// A frame announced more bytes than the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame did not decode, or a message came out of order.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {peer}, this node {local}")]
    ProtocolVersion {
        /// The peer's version.
        peer: u32,
        /// Ours.
        local: u32,
    },
    /// The peer belongs to another cluster (another CA).
    #[error("peer belongs to another cluster")]
    WrongCluster,
    /// The node id in the peer's hello is not the one its certificate proves.
    #[error("peer's hello names node {claimed}, its certificate {proven}")]
    NodeIdMismatch {
        /// From the hello.
        claimed: String,
        /// From the certificate.
        proven: String,
    },
    /// The peer has this node's own node id (a copied key).
    #[error("peer has this node's own node id")]
    DuplicateNodeId,
    /// Two writers share one origin: the same (origin, seq) holds different ops.
    #[error("split brain: {0}")]
    SplitBrain(String),
    /// The peer's clock is too far ahead.
    #[error("clock drift: {0}")]
    ClockDrift(String),
    /// This node's store is paused on a full disk.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The peer ended the session.
    #[error("peer refused: {code}: {reason}")]
    PeerRefused {
        /// Its code.
        code: String,
        /// Its text.
        reason: String,
    },
    /// A deadline of the session passed.
    #[error("{} timed out", .0.name())]
    Timeout(Stage),
    /// The local store failed otherwise.
    #[error("store error ({code}): {reason}")]
    Store {
        /// The store's error code.
        code: String,
        /// Its text.
        reason: String,
    },
}

impl SyncError {
    /// The stable code reported in sync results.
    pub fn code(&self) -> &str {
        match self {
            SyncError::FrameTooLarge { .. } => "frame_too_large",
            SyncError::Malformed(_) => "malformed_frame",
            SyncError::ProtocolVersion { .. } => "protocol_version",
            SyncError::WrongCluster => "wrong_cluster",
            SyncError::DuplicateNodeId => "duplicate_node_id",
            SyncError::NodeIdMismatch { .. } => "node_id_mismatch",
            SyncError::SplitBrain(_) => "split_brain",
            SyncError::ClockDrift(_) => "clock_drift",
            SyncError::DiskFull(_) => "disk_full",
            SyncError::PeerRefused { code, .. } => code,
            SyncError::Store { code, .. } => code,
            SyncError::Timeout(stage) => stage.code(),
        }
    }

    /// A refusal that came from the peer: its code is taken only if it is one this build
    /// knows (anything else is `other`, with the peer's text kept, bounded, in the reason),
    /// so a peer can never put its own strings into metrics labels or log fields.
    pub fn peer_refused(code: &str, reason: &str) -> SyncError {
        let known = PEER_CODES.iter().find(|c| **c == code).copied().unwrap_or("other");
        let mut reason: String = reason.chars().take(PEER_REASON_CHARS_MAX).collect();
        if known == "other" {
            let shown: String = code.chars().take(PEER_REASON_CHARS_MAX).collect();
            reason = format!("code {shown:?}: {reason}");
        }
        SyncError::PeerRefused { code: known.to_string(), reason }
    }

    /// Classifies a store failure by its code.
    pub fn from_store(code: &str, reason: String) -> SyncError {
        match code {
            "split_brain" => SyncError::SplitBrain(reason),
            "clock_drift" => SyncError::ClockDrift(reason),
            "disk_full" => SyncError::DiskFull(reason),
            _ => SyncError::Store { code: code.to_string(), reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_refusal_code_is_one_of_a_closed_set() {
        let known = SyncError::peer_refused("disk_full", "full");
        assert_eq!(known.code(), "disk_full");
        let odd = SyncError::peer_refused("evil\"}\nfake_metric 1", &"x".repeat(10_000));
        assert_eq!(odd.code(), "other");
        let SyncError::PeerRefused { reason, .. } = odd else { panic!("a refusal") };
        assert!(reason.len() < 2 * PEER_REASON_CHARS_MAX, "bounded: {}", reason.len());
        assert!(reason.contains("evil"), "the peer's code is kept in the text");
    }
}
