//! Why a sync session failed, each cause distinct.

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
        }
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
