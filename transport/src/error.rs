//! Failures of the transport, each with the stable code a sync result reports.

use std::path::{Path, PathBuf};

use feral_sync::SyncError;

/// Every failure of feral-transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Building or reading certificates or TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A file could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The peer could not be reached or the connection failed before the handshake ended.
    #[error("connect: {0}")]
    Connect(String),
    /// A CA directory already holds a CA (its key would be replaced).
    #[error("{} already holds a cluster CA; replacing it cuts off every node it issued (pass --force to replace it)", .0.display())]
    CaExists(PathBuf),
    /// The connect or the handshake took longer than its timeout.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The peer's TLS refused this node's certificate, or this node refused the peer's.
    #[error("certificate refused ({code}): {reason}")]
    Certificate {
        /// `unknown_ca`, `certificate_expired`, `certificate_not_yet_valid`,
        /// `no_client_certificate`, `bad_certificate`.
        code: &'static str,
        /// Details.
        reason: String,
    },
    /// The peer's certificate proves another node id than the one it advertised (mDNS).
    #[error("the peer's certificate proves another node id than it advertised")]
    AdvertisedIdMismatch,
    /// The peer's certificate is of a node the cluster CA revoked.
    #[error("node {} is revoked by the cluster CA", hex16(.0))]
    Revoked([u8; 16]),
    /// The connection dropped during the session.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The sync protocol failed (refusal, malformed frame, store error).
    #[error(transparent)]
    Sync(#[from] SyncError),
}

fn hex16(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl TransportError {
    /// Wraps an I/O error with its path.
    pub fn io(path: &Path, source: std::io::Error) -> TransportError {
        TransportError::Io { path: path.to_path_buf(), source }
    }

    /// The stable code.
    pub fn code(&self) -> String {
        match self {
            TransportError::Tls(_) => "tls_error".into(),
            TransportError::Io { .. } => "io_error".into(),
            TransportError::CaExists(_) => "ca_exists".into(),
            TransportError::Connect(_) => "connect_failed".into(),
            TransportError::Timeout(what) => format!("{}_timeout", what.replace(' ', "_")),
            TransportError::Certificate { code, .. } => (*code).into(),
            TransportError::ConnectionLost(_) => "connection_lost".into(),
            TransportError::AdvertisedIdMismatch => "advertised_node_id_mismatch".into(),
            TransportError::Revoked(_) => "revoked".into(),
            TransportError::Sync(e) => e.code().into(),
        }
    }

    /// True for failures before the handshake completed (connect + handshake are retried).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Connect(_)
                | TransportError::Timeout(_)
                | TransportError::ConnectionLost(_)
        )
    }
}

/// Classifies a quinn connection error: a TLS alert from the peer becomes a certificate
/// refusal with its own code.
pub fn from_connection(error: &quinn::ConnectionError) -> TransportError {
    use quinn::ConnectionError as E;
    let close = match error {
        E::ConnectionClosed(close) => Some(u64::from(close.error_code)),
        E::TransportError(e) => Some(u64::from(e.code)),
        _ => None,
    };
    if let Some(code) = close.filter(|c| (0x100..0x200).contains(c)) {
        let alert = (code - 0x100) as u8;
        let code = match alert {
            48 => "unknown_ca",
            45 => "certificate_expired",
            116 => "no_client_certificate",
            42 | 43 | 46 => "bad_certificate",
            120 => "no_application_protocol",
            _ => "tls_alert",
        };
        return TransportError::Certificate { code, reason: error.to_string() };
    }
    if let E::ApplicationClosed(close) = error
        && u64::from(close.error_code) == 1
    {
        // The peer refused the session before a stream carried its reason.
        let code = String::from_utf8_lossy(&close.reason);
        return TransportError::Sync(SyncError::peer_refused(
            &code,
            "the peer closed the connection",
        ));
    }
    TransportError::ConnectionLost(error.to_string())
}
