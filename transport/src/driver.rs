//! The thin quinn driver: one QUIC connection per sync, one bidirectional stream, and the
//! sans-IO feral-sync state machine fed with the bytes read, the results of its store
//! requests and the time, and asked for the frames to write, the requests to run and its
//! next deadline. Store requests (reads, durable applies) run on tokio's blocking pool, one at
//! a time per session; no async worker ever blocks on the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use feral_sync::{
    FrameDecoder, Request, Response, SessionStart, SyncError, SyncSession, SyncStats, encode_frame,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::task::JoinHandle;

use crate::error::{TransportError, from_connection};
use crate::limits::{
    CONNECTION_RECEIVE_WINDOW_BYTES, IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL, READ_CHUNK_BYTES,
    REFUSAL_WRITE_TIMEOUT, SEND_WINDOW_BYTES, STREAM_RECEIVE_WINDOW_BYTES,
};
use crate::tls::{self, Credentials, SERVER_NAME};

/// What the driver needs from a node. `begin` and `execute` block (they read the index and
/// the log, and apply durably): the driver calls them on the blocking pool.
pub trait SyncHost: Send + Sync + 'static {
    /// The start of a session: identity, clock sample and current heads (refused while the
    /// node is paused).
    fn begin(&self, cluster_id: [u8; 32]) -> Result<SessionStart, SyncError>;
    /// Runs one store request of a session (see [`feral_sync::execute`]).
    fn execute(&self, request: Request) -> Result<Response, SyncError>;
    /// True while the node refuses writes (disk full, failed sync, corruption).
    fn io_paused(&self) -> bool;
    /// True when the cluster CA revoked `node_id`: its handshakes are refused (`revoked`).
    fn is_revoked(&self, node_id: &[u8; 16]) -> bool;
}

/// What one session moved: ops (from the state machine) and bytes on the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Op counters.
    pub stats: SyncStats,
    /// Where the two sides differed at the hello, per origin (see [`SyncSession::apart`]).
    pub apart: Vec<(feral_log::Origin, u64, u64)>,
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
    /// After the hello, the longest time without a whole frame moving either way (keep-alive
    /// packets and bytes trickling inside a frame do not count).
    pub progress: Duration,
    /// The whole session.
    pub session: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let session = feral_sync::Timeouts::default();
        Timeouts {
            connect: Duration::from_secs(5),
            handshake: session.handshake,
            progress: session.progress,
            session: session.session,
        }
    }
}

impl Timeouts {
    /// The deadlines the session state machine enforces.
    pub fn session(&self) -> feral_sync::Timeouts {
        feral_sync::Timeouts {
            handshake: self.handshake,
            progress: self.progress,
            session: self.session,
        }
    }
}

/// Runs blocking store work on the blocking pool.
async fn blocking<H: SyncHost, T: Send + 'static>(
    host: &Arc<H>,
    work: impl FnOnce(&H) -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    let host = host.clone();
    tokio::task::spawn_blocking(move || work(&host)).await.unwrap_or_else(|e| Err(joined(&e)))
}

fn joined(e: &tokio::task::JoinError) -> SyncError {
    SyncError::Store { code: "store_error".into(), reason: format!("a store task failed: {e}") }
}

/// A session's deadline passing is a transport timeout (with its stage's code); anything
/// else is the protocol's error.
fn from_sync(error: SyncError) -> TransportError {
    match error {
        SyncError::Timeout(stage) => TransportError::Timeout(stage.name()),
        other => TransportError::Sync(other),
    }
}

/// A new session of `host`, started now.
async fn start_session<H: SyncHost>(
    host: &Arc<H>,
    cluster_id: [u8; 32],
    timeouts: Timeouts,
) -> Result<SyncSession, SyncError> {
    let start = blocking(host, move |h| h.begin(cluster_id)).await?;
    Ok(start.session(timeouts.session(), std::time::Instant::now()))
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
    Endpoint::server(server_config(creds)?, addr)
        .map_err(|e| TransportError::Connect(format!("bind {addr}: {e}")))
}

/// The server side's QUIC configuration for `creds` (its transport limits included): what
/// [`server_endpoint`] serves with, and what a renewed certificate replaces it with
/// (`Endpoint::set_server_config`: new connections use it, live ones keep theirs).
pub fn server_config(creds: &Credentials) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_crypto(creds)?)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config(true));
    Ok(config)
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
    host: &Arc<H>,
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
        if host.is_revoked(&proven) {
            connection.close(1u32.into(), b"revoked");
            return Err(TransportError::Revoked(proven));
        }
        if expected.is_some_and(|id| id != proven) {
            connection.close(1u32.into(), b"node_id_mismatch");
            return Err(TransportError::AdvertisedIdMismatch);
        }
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| from_connection(&e))?;
        let mut session = start_session(host, cluster_id, timeouts).await?;
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
    host: &Arc<H>,
    cluster_id: [u8; 32],
    timeouts: Timeouts,
    serving: &Serving,
) -> Result<Transfer, TransportError> {
    let connection = tokio::time::timeout(timeouts.handshake, incoming)
        .await
        .map_err(|_| TransportError::Timeout("handshake"))?
        .map_err(|e| from_connection(&e))?;
    let proven = peer_node_id(&connection)?;
    if host.is_revoked(&proven) {
        // Refused before any stream: the peer reads `revoked` as the close reason.
        connection.close(1u32.into(), b"revoked");
        return Err(TransportError::Revoked(proven));
    }
    let _claim = serving.claim(proven, &connection);
    let (mut send, mut recv) = tokio::time::timeout(timeouts.handshake, connection.accept_bi())
        .await
        .map_err(|_| TransportError::Timeout("handshake"))?
        .map_err(|e| from_connection(&e))?;
    let mut session = match start_session(host, cluster_id, timeouts).await {
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
    host: &Arc<H>,
    session: &mut SyncSession,
    streams: (&mut SendStream, &mut RecvStream),
    timeouts: Timeouts,
) -> Result<Transfer, TransportError> {
    let mut transfer = Transfer::default();
    let result = run_session(host, session, streams, &mut transfer, timeouts).await;
    transfer.stats = session.stats();
    transfer.apart = session.apart().to_vec();
    result.map(|()| transfer)
}

/// Waits for the running store request.
async fn finished(
    running: &mut Option<JoinHandle<Result<Response, SyncError>>>,
) -> Result<Response, SyncError> {
    match running.as_mut() {
        Some(task) => task.await.unwrap_or_else(|e| Err(joined(&e))),
        None => std::future::pending().await,
    }
}

/// Runs one session over one stream pair until both sides are done: moves bytes, runs the
/// session's store requests on the blocking pool, and wakes it at its deadlines. A session
/// error sends the refusal to the peer before it is returned.
async fn run_session<H: SyncHost>(
    host: &Arc<H>,
    session: &mut SyncSession,
    (send, recv): (&mut SendStream, &mut RecvStream),
    transfer: &mut Transfer,
    timeouts: Timeouts,
) -> Result<(), TransportError> {
    let mut decoder = FrameDecoder::default();
    let (mut out, mut at) = (Vec::new(), 0);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut peer_finished = false;
    let mut running: Option<JoinHandle<Result<Response, SyncError>>> = None;
    let outcome = loop {
        if let Err(e) = deliver(session, &mut decoder) {
            break Err(e);
        }
        if running.is_none()
            && let Some(request) = session.poll_request()
        {
            let host = host.clone();
            running = Some(tokio::task::spawn_blocking(move || host.execute(request)));
        }
        if at == out.len() {
            out.clear();
            at = 0;
            if let Some(message) = session.poll_transmit() {
                encode_frame(&message, &mut out);
            }
        }
        if at == out.len() && session.is_finished() {
            break Ok(());
        }
        if at == out.len() && peer_finished && running.is_none() {
            break Err(TransportError::ConnectionLost(
                "the peer ended its stream before the session finished".into(),
            ));
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            read = recv.read(&mut buf), if !peer_finished && session.wants_input() => {
                match read {
                    Ok(Some(n)) => {
                        transfer.bytes_received += n as u64;
                        decoder.push(&buf[..n]);
                    }
                    Ok(None) => peer_finished = true,
                    Err(e) => break Err(read_error(e)),
                }
            }
            written = send.write(&out[at..]), if at < out.len() => match written {
                Ok(n) => {
                    transfer.bytes_sent += n as u64;
                    at += n;
                    if at == out.len() {
                        session.on_transmitted(std::time::Instant::now());
                    }
                }
                Err(e) => break Err(write_error(e)),
            },
            result = finished(&mut running), if running.is_some() => {
                running = None;
                if let Err(e) = session.complete(result, std::time::Instant::now()) {
                    break Err(from_sync(e));
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                if let Err(e) = session.handle_timeout(std::time::Instant::now()) {
                    break Err(from_sync(e));
                }
            }
        }
    };
    if let Some(task) = running.take() {
        // A durable apply runs to its end; the session waits for it rather than leave it
        // behind (bounded by the store's own speed).
        let _ = task.await;
    }
    if outcome.is_err() {
        if session.is_failed() {
            // The frame being written goes out whole first, so the refusal follows a frame
            // boundary.
            let mut tail = out[at..].to_vec();
            if let Some(refusal) = session.poll_transmit() {
                encode_frame(&refusal, &mut tail);
            }
            send_refusal(&tail, send).await;
        }
        return outcome;
    }
    let _ = send.finish();
    // Read the peer's end of stream, so its last frames were taken before we close.
    while !peer_finished {
        match tokio::time::timeout(timeouts.handshake, recv.read(&mut buf)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => peer_finished = true,
            _ => break,
        }
    }
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands the session every whole frame received, while it takes input.
fn deliver(session: &mut SyncSession, decoder: &mut FrameDecoder) -> Result<(), TransportError> {
    while session.wants_input() {
        let message = match decoder.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => break,
            // A bad frame ends the session like a bad message: the peer is told why.
            Err(e) => return Err(from_sync(session.refuse(e))),
        };
        session.handle(message, std::time::Instant::now()).map_err(from_sync)?;
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
