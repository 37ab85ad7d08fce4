//! The thin quinn driver: one QUIC connection per sync, one bidirectional stream, and the
//! feral-sync state machine fed with the bytes read and asked for the frames to write. Store
//! calls (durable applies) run with `block_in_place`, so the driver needs tokio's multi-thread
//! runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use feral_sync::{FrameDecoder, SyncError, SyncSession, SyncStats, SyncStore, encode_frame};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::task::block_in_place;
use tokio::time::Instant;

use crate::error::{TransportError, from_connection};
use crate::limits::{
    CONNECTION_RECEIVE_WINDOW_BYTES, IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL, READ_CHUNK_BYTES,
    REFUSAL_WRITE_TIMEOUT, SEND_WINDOW_BYTES, SESSION_PROGRESS_TIMEOUT,
    STREAM_RECEIVE_WINDOW_BYTES,
};
use crate::tls::{self, Credentials, SERVER_NAME};

/// What the driver needs from a node.
pub trait SyncHost: Send + Sync + 'static {
    /// A new session from the node's current heads (refused while the node is paused).
    fn session(&self, cluster_id: [u8; 32]) -> Result<SyncSession, SyncError>;
    /// The store the session reads from and applies to.
    fn store(&self) -> Box<dyn SyncStore + Send + '_>;
    /// True while the node refuses writes (disk full, failed sync, corruption).
    fn io_paused(&self) -> bool;
}

/// What one session moved: ops (from the state machine) and bytes on the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Op counters.
    pub stats: SyncStats,
    /// Stream bytes written (frames, prefixes included).
    pub bytes_sent: u64,
    /// Stream bytes read.
    pub bytes_received: u64,
}

/// How long the stages of a sync may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From sending the first packet to an established connection.
    pub connect: Duration,
    /// From the connection to the peer's hello.
    pub handshake: Duration,
    /// After the hello, the longest time without a byte moving either way (keep-alive
    /// packets do not count: a peer that stalls inside a frame is cut off).
    pub progress: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            progress: SESSION_PROGRESS_TIMEOUT,
        }
    }
}

/// The transport settings of both sides: one bidirectional stream per connection (opened by
/// the client), no unidirectional streams and no datagrams, receive windows of about twice
/// the frame limit (quinn's defaults allow 100 + 100 streams of 1.25 MB each).
fn transport_config(server: bool) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    // Keep-alives below the idle timeout: a half-open peer is detected within IDLE_TIMEOUT.
    config.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    config.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    config.max_concurrent_bidi_streams(u32::from(server).into());
    config.max_concurrent_uni_streams(0u32.into());
    config.stream_receive_window(STREAM_RECEIVE_WINDOW_BYTES.into());
    config.receive_window(CONNECTION_RECEIVE_WINDOW_BYTES.into());
    config.send_window(SEND_WINDOW_BYTES);
    config.datagram_receive_buffer_size(None);
    Arc::new(config)
}

/// A server endpoint bound to `addr`.
pub fn server_endpoint(creds: &Credentials, addr: SocketAddr) -> Result<Endpoint, TransportError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_crypto(creds)?)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config(true));
    Endpoint::server(config, addr).map_err(|e| TransportError::Connect(format!("bind {addr}: {e}")))
}

/// A client endpoint on an ephemeral port of `bind`; presents this node's certificate unless
/// `present_certificate` is false.
pub fn client_endpoint(
    creds: &Credentials,
    bind: SocketAddr,
    present_certificate: bool,
) -> Result<Endpoint, TransportError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_crypto(
        creds,
        present_certificate,
    )?)
    .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config(false));
    let mut endpoint =
        Endpoint::client(bind).map_err(|e| TransportError::Connect(format!("bind {bind}: {e}")))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The node id the peer's certificate proves.
fn peer_node_id(connection: &Connection) -> Result<[u8; 16], TransportError> {
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .ok_or(TransportError::Certificate {
            code: "no_client_certificate",
            reason: "the peer presented no certificate".into(),
        })?;
    let spki = certs.first().and_then(|c| tls::spki_of(c)).ok_or(TransportError::Certificate {
        code: "bad_certificate",
        reason: "the peer's certificate has no readable public key".into(),
    })?;
    Ok(tls::node_id_of(spki))
}

/// One sync as the client. `expected` is the node id the peer advertised (mDNS), if any: a
/// certificate that proves another is refused. Returns the session counters, and whether the
/// handshake completed (failures before it are worth a retry; after it, the next sync
/// resumes).
pub async fn connect_and_sync<H: SyncHost>(
    endpoint: &Endpoint,
    addr: SocketAddr,
    host: &H,
    cluster_id: [u8; 32],
    timeouts: Timeouts,
    expected: Option<[u8; 16]>,
) -> (Result<Transfer, TransportError>, bool) {
    let mut handshaken = false;
    let outcome = async {
        let connecting = endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| TransportError::Connect(format!("{addr}: {e}")))?;
        let connection = tokio::time::timeout(timeouts.connect, connecting)
            .await
            .map_err(|_| TransportError::Timeout("connect"))?
            .map_err(|e| from_connection(&e))?;
        let proven = peer_node_id(&connection)?;
        if expected.is_some_and(|id| id != proven) {
            connection.close(1u32.into(), b"node_id_mismatch");
            return Err(TransportError::AdvertisedIdMismatch);
        }
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| from_connection(&e))?;
        let mut session = host.session(cluster_id)?;
        session.expect_peer_node_id(proven);
        let result = session_over(host, &mut session, (&mut send, &mut recv), timeouts).await;
        handshaken = session.peer().is_some();
        connection.close(0u32.into(), b"done");
        result
    }
    .await;
    (outcome, handshaken)
}

/// The sessions this node serves, by peer node id: at most one per node id. A new session
/// from a node id supersedes the one it has (closed with `superseded`): a node restarted after
/// a crash is served at once, and a peer opening many sessions holds only its newest.
#[derive(Debug, Default)]
pub struct Serving {
    held: std::sync::Mutex<std::collections::HashMap<[u8; 16], (u64, Connection)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A node id's served session; dropping it frees the node id unless a newer session took it.
#[derive(Debug)]
pub struct ServingClaim<'a> {
    serving: &'a Serving,
    node_id: [u8; 16],
    generation: u64,
}

impl Serving {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 16], (u64, Connection)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `node_id` for `connection`, closing the session it had, if any.
    pub fn claim(&self, node_id: [u8; 16], connection: &Connection) -> ServingClaim<'_> {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let old = self.lock().insert(node_id, (generation, connection.clone()));
        if let Some((_, old)) = old {
            tracing::warn!(peer = %old.remote_address(), "a newer session from the same node supersedes this one");
            old.close(1u32.into(), b"superseded");
        }
        ServingClaim { serving: self, node_id, generation }
    }
}

impl Drop for ServingClaim<'_> {
    fn drop(&mut self) {
        let mut held = self.serving.lock();
        if held.get(&self.node_id).is_some_and(|(g, _)| *g == self.generation) {
            held.remove(&self.node_id);
        }
    }
}

/// Serves one incoming connection to its end: one session per peer node id at a time.
pub async fn serve_connection<H: SyncHost>(
    incoming: quinn::Incoming,
    host: &H,
    cluster_id: [u8; 32],
    timeouts: Timeouts,
    serving: &Serving,
) -> Result<Transfer, TransportError> {
    let connection = tokio::time::timeout(timeouts.handshake, incoming)
        .await
        .map_err(|_| TransportError::Timeout("handshake"))?
        .map_err(|e| from_connection(&e))?;
    let proven = peer_node_id(&connection)?;
    let _claim = serving.claim(proven, &connection);
    let (mut send, mut recv) = tokio::time::timeout(timeouts.handshake, connection.accept_bi())
        .await
        .map_err(|_| TransportError::Timeout("handshake"))?
        .map_err(|e| from_connection(&e))?;
    let mut session = match host.session(cluster_id) {
        Ok(session) => session,
        Err(e) => {
            connection.close(1u32.into(), e.code().as_bytes());
            return Err(e.into());
        }
    };
    session.expect_peer_node_id(proven);
    let result = session_over(host, &mut session, (&mut send, &mut recv), timeouts).await;
    // The client closes once it has read everything; wait for that (bounded).
    let _ = tokio::time::timeout(IDLE_TIMEOUT, connection.closed()).await;
    result
}

/// Runs `session` over the stream pair against the host's store; what moved, or why not.
async fn session_over<H: SyncHost>(
    host: &H,
    session: &mut SyncSession,
    streams: (&mut SendStream, &mut RecvStream),
    timeouts: Timeouts,
) -> Result<Transfer, TransportError> {
    let mut store = host.store();
    let mut transfer = Transfer::default();
    let result = run_session(session, &mut *store, streams, &mut transfer, timeouts).await;
    transfer.stats = session.stats();
    result.map(|()| transfer)
}

/// Runs one session over one stream pair until both sides are done. A protocol error sends
/// the refusal to the peer before it is returned.
async fn run_session(
    session: &mut SyncSession,
    store: &mut (dyn SyncStore + Send + '_),
    (send, recv): (&mut SendStream, &mut RecvStream),
    transfer: &mut Transfer,
    timeouts: Timeouts,
) -> Result<(), TransportError> {
    let handshake = timeouts.handshake;
    let deadline = Instant::now() + handshake;
    let mut progress = Instant::now();
    let mut decoder = FrameDecoder::default();
    let (mut out, mut at) = (Vec::new(), 0);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut peer_finished = false;
    loop {
        if at == out.len() {
            out.clear();
            at = 0;
            if let Some(message) = block_in_place(|| session.poll_transmit(&*store))? {
                encode_frame(&message, &mut out);
            }
        }
        if at == out.len() && session.is_finished() {
            break;
        }
        if at == out.len() && peer_finished {
            return Err(TransportError::ConnectionLost(
                "the peer ended its stream before the session finished".into(),
            ));
        }
        let handshaking = session.peer().is_none();
        tokio::select! {
            read = recv.read(&mut buf), if !peer_finished => match read.map_err(read_error)? {
                Some(n) => {
                    progress = Instant::now();
                    transfer.bytes_received += n as u64;
                    decoder.push(&buf[..n]);
                    if let Err(e) = deliver(session, store, &mut decoder) {
                        // The frame being written goes out whole first, so the refusal
                        // follows a frame boundary.
                        let mut tail = out[at..].to_vec();
                        tail.extend(refusal_frame(&e).unwrap_or_default());
                        send_refusal(&tail, send).await;
                        return Err(e.into());
                    }
                }
                None => peer_finished = true,
            },
            written = send.write(&out[at..]), if at < out.len() => {
                let n = written.map_err(write_error)?;
                progress = Instant::now();
                transfer.bytes_sent += n as u64;
                at += n;
            }
            () = tokio::time::sleep_until(deadline), if handshaking => {
                return Err(TransportError::Timeout("handshake"));
            }
            () = tokio::time::sleep_until(progress + timeouts.progress), if !handshaking => {
                return Err(TransportError::Timeout("progress"));
            }
        }
    }
    let _ = send.finish();
    // Read the peer's end of stream, so its last frames were taken before we close.
    while !peer_finished {
        match tokio::time::timeout(handshake, recv.read(&mut buf)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => peer_finished = true,
            _ => break,
        }
    }
    Ok(())
}

/// Hands every whole frame received to the session.
fn deliver(
    session: &mut SyncSession,
    store: &mut (dyn SyncStore + Send + '_),
    decoder: &mut FrameDecoder,
) -> Result<(), SyncError> {
    while let Some(message) = decoder.next_message()? {
        block_in_place(|| session.handle(message, store))?;
    }
    Ok(())
}

/// Best effort, bounded: writes the last bytes (ending with the refusal that tells the peer
/// why the session ends) and finishes the stream.
async fn send_refusal(bytes: &[u8], send: &mut SendStream) {
    if !bytes.is_empty() {
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, send.write_all(bytes)).await;
    }
    let _ = send.finish();
}

/// The framed refusal that tells the peer why this side ends the session (none when the
/// peer ended it).
fn refusal_frame(error: &SyncError) -> Option<Vec<u8>> {
    if matches!(error, SyncError::PeerRefused { .. }) {
        return None;
    }
    let refusal = feral_sync::SyncMessage::Refuse {
        code: error.code().to_string(),
        reason: error.to_string(),
    };
    let mut out = Vec::new();
    encode_frame(&refusal, &mut out);
    Some(out)
}

fn read_error(e: quinn::ReadError) -> TransportError {
    match e {
        quinn::ReadError::ConnectionLost(c) => from_connection(&c),
        other => TransportError::ConnectionLost(other.to_string()),
    }
}

fn write_error(e: quinn::WriteError) -> TransportError {
    match e {
        quinn::WriteError::ConnectionLost(c) => from_connection(&c),
        other => TransportError::ConnectionLost(other.to_string()),
    }
}
