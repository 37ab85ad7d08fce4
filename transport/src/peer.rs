//! `sync_with_peer` (SPEC 5): never raises; retries connect + handshake with exponential
//! backoff through an injectable sleeper; holds a per-peer lock across attempts, released on
//! every path; refuses a second concurrent sync with the same peer; short-circuits while the
//! node is paused; leaves no task behind. And the accept loop that serves peers.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Endpoint;

use crate::driver::{Serving, SyncHost, Timeouts, connect_and_sync, serve_connection};
use crate::limits::{SERVED_CONNECTIONS_MAX, SYNC_ATTEMPTS_DEFAULT, SYNC_BACKOFF_BASE};

/// How backoff waits: tokio's timer, or a test's recorder.
pub trait Sleeper: Send + Sync + fmt::Debug {
    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Waits on tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Retry and timeout settings.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Attempts of connect + handshake (default 3).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each (default 1 s).
    pub backoff_base: Duration,
    /// Connect and handshake timeouts.
    pub timeouts: Timeouts,
    /// How the backoff waits.
    pub sleeper: Arc<dyn Sleeper>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            attempts: SYNC_ATTEMPTS_DEFAULT,
            backoff_base: SYNC_BACKOFF_BASE,
            timeouts: Timeouts::default(),
            sleeper: Arc::new(TokioSleeper),
        }
    }
}

/// The outcome of one `sync_with_peer`: `{success, sent, received, peer, attempts}` or
/// `{success:false, error, attempts, io_paused}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncResult {
    /// True when the session completed.
    pub success: bool,
    /// The peer's address.
    pub peer: String,
    /// Attempts made (0 when refused before connecting).
    pub attempts: u32,
    /// Ops sent.
    pub sent: u64,
    /// Ops received.
    pub received: u64,
    /// Stream bytes sent.
    pub bytes_sent: u64,
    /// Stream bytes received.
    pub bytes_received: u64,
    /// At the handshake: ops this node held that the peer lacked (by their heads).
    pub peer_lacked: u64,
    /// At the handshake: ops the peer held that this node lacked.
    pub lacked: u64,
    /// The same two counts per origin, for the origins where the two differed.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub by_origin: std::collections::BTreeMap<String, OriginApart>,
    /// The failure's stable code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// True when the node is paused (disk full…).
    pub io_paused: bool,
}

/// How far two nodes were apart on one origin when a session began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OriginApart {
    /// Ops of the origin this node held that the peer lacked.
    pub peer_lacked: u64,
    /// Ops of the origin the peer held that this node lacked.
    pub lacked: u64,
}

impl OriginApart {
    fn map(
        apart: &[(feral_log::Origin, u64, u64)],
    ) -> std::collections::BTreeMap<String, OriginApart> {
        let mut out = std::collections::BTreeMap::<String, OriginApart>::new();
        for (origin, peer_lacked, lacked) in apart {
            let entry = out.entry(origin.to_string()).or_default();
            entry.peer_lacked += peer_lacked;
            entry.lacked += lacked;
        }
        out
    }
}

impl SyncResult {
    fn failure(
        peer: SocketAddr,
        attempts: u32,
        code: String,
        detail: String,
        io_paused: bool,
    ) -> Self {
        SyncResult {
            success: false,
            peer: peer.to_string(),
            attempts,
            sent: 0,
            received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            peer_lacked: 0,
            lacked: 0,
            by_origin: std::collections::BTreeMap::new(),
            error: Some(code),
            detail: Some(detail),
            io_paused,
        }
    }
}

/// The peers a sync is running with.
#[derive(Debug, Default)]
pub struct PeerLocks {
    held: Mutex<HashSet<SocketAddr>>,
}

/// Held while a sync with one peer runs; dropping it releases the peer (on every path,
/// panics and cancellation included).
#[derive(Debug)]
pub struct PeerGuard {
    locks: Arc<PeerLocks>,
    peer: SocketAddr,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.locks.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.peer);
    }
}

impl PeerLocks {
    /// Takes the peer, or None when a sync with it is already running.
    pub fn try_lock(self: &Arc<Self>, peer: SocketAddr) -> Option<PeerGuard> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(peer).then(|| PeerGuard { locks: self.clone(), peer })
    }

    /// Peers with a sync running.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A node's client side: its endpoint, cluster, locks and options.
#[derive(Debug)]
pub struct Syncer<H> {
    /// The node.
    pub host: Arc<H>,
    /// The client endpoint.
    pub endpoint: Endpoint,
    /// The cluster id.
    pub cluster_id: [u8; 32],
    /// Per-peer locks.
    pub locks: Arc<PeerLocks>,
    /// Retries and timeouts.
    pub options: SyncOptions,
}

impl<H: SyncHost> Syncer<H> {
    /// Syncs with one peer. Never fails: the outcome is in the result.
    pub async fn sync_with_peer(&self, peer: SocketAddr) -> SyncResult {
        self.sync_expecting(peer, None).await
    }

    /// Syncs with one peer that advertised `expected` as its node id (mDNS): a certificate
    /// proving another is refused with `advertised_node_id_mismatch`, without retries.
    pub async fn sync_expecting(&self, peer: SocketAddr, expected: Option<[u8; 16]>) -> SyncResult {
        if self.host.io_paused() {
            let detail = "the node is paused; free space or repair, then resume".to_string();
            return SyncResult::failure(peer, 0, "disk_full".into(), detail, true);
        }
        let Some(_guard) = self.locks.try_lock(peer) else {
            let detail = "a sync with this peer is already running".to_string();
            return SyncResult::failure(peer, 0, "already_syncing".into(), detail, false);
        };
        let mut wait = self.options.backoff_base;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (outcome, handshaken) = connect_and_sync(
                &self.endpoint,
                peer,
                &self.host,
                self.cluster_id,
                self.options.timeouts,
                expected,
            )
            .await;
            let error = match outcome {
                Ok(transfer) => {
                    return SyncResult {
                        success: true,
                        peer: peer.to_string(),
                        attempts: attempt,
                        sent: transfer.stats.sent,
                        received: transfer.stats.received,
                        bytes_sent: transfer.bytes_sent,
                        bytes_received: transfer.bytes_received,
                        peer_lacked: transfer.stats.peer_lacked,
                        lacked: transfer.stats.lacked,
                        by_origin: OriginApart::map(&transfer.apart),
                        error: None,
                        detail: None,
                        io_paused: false,
                    };
                }
                Err(e) => e,
            };
            let retry = !handshaken && error.is_retryable() && attempt < self.options.attempts;
            tracing::warn!(%peer, attempt, error = %error, retry, "sync attempt failed");
            if !retry {
                let paused = self.host.io_paused();
                return SyncResult::failure(peer, attempt, error.code(), error.to_string(), paused);
            }
            self.options.sleeper.sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
}

/// Serves peers on `endpoint` until `shutdown` resolves, then closes the endpoint and waits
/// for every connection task (no task outlives it). At most [`SERVED_CONNECTIONS_MAX`]
/// connections are served at once (more are refused at once), and one session per peer node id.
pub async fn serve<H: SyncHost>(
    endpoint: Endpoint,
    host: Arc<H>,
    cluster_id: [u8; 32],
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let serving = Arc::new(Serving::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if tasks.len() >= SERVED_CONNECTIONS_MAX {
                    tracing::warn!(peer = %incoming.remote_address(), max = SERVED_CONNECTIONS_MAX, "sync connection refused: at the cap");
                    incoming.refuse();
                    continue;
                }
                let (host, serving) = (host.clone(), serving.clone());
                tasks.spawn(async move {
                    let peer = incoming.remote_address();
                    match serve_connection(incoming, &host, cluster_id, timeouts, &serving).await {
                        Ok(t) => tracing::info!(%peer, sent = t.stats.sent, received = t.stats.received, "served a sync"),
                        Err(e) => tracing::warn!(%peer, error = %e, code = %e.code(), "a served sync failed"),
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    endpoint.close(0u32.into(), b"shutting down");
    while tasks.join_next().await.is_some() {}
    let _ = tokio::time::timeout(crate::limits::SHUTDOWN_DRAIN_MAX, endpoint.wait_idle()).await;
}
