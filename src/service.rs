//! `feral-node run` as a service: serve sync, find peers (mDNS and a static list), and sync
//! with each on the schedule (every interval, at once when found, on demand, with backoff).
//! Everything it starts is stopped and joined by [`Service::stop`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use feral_transport::discovery::{BookFull, Discovery, PeerBook, PeerInfo, PeerSource, add_static};
use feral_transport::driver::{client_endpoint, server_endpoint};
use feral_transport::limits::{PEER_FAILURES_MAX, PUSH_COALESCE_WINDOW};
use feral_transport::scheduler::{PeerSchedule, Schedule};
use feral_transport::tls::Credentials;
use feral_transport::{
    PeerLocks, SyncOptions, SyncResult, Syncer, Timeouts, TransportError, serve,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::node::Node;

/// How often the scheduler looks at its peers (new ones are synced within this).
const SCHEDULER_TICK: Duration = Duration::from_secs(1);
/// How long a sync on demand waits for a running session with the same peer to end before it
/// answers `already_syncing`.
const MANUAL_SYNC_WAIT: Duration = Duration::from_secs(30);
/// How often it looks whether that session ended.
const MANUAL_SYNC_RETRY: Duration = Duration::from_millis(10);

/// How often the node looks whether a part derived from the log stopped on damage
/// ([`Node::repair_stopped`]): one lock and two reads of the fault register.
const REPAIR_POLL: Duration = Duration::from_secs(1);
/// The wait before the first retry of a rebuild that failed or whose check after it did not
/// pass; it doubles with each failure, up to [`REPAIR_RETRY_MAX`].
const REPAIR_RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between two rebuilds of a part that keeps failing.
const REPAIR_RETRY_MAX: Duration = Duration::from_secs(600);

/// What `run` was asked to do.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// QUIC address to serve sync on.
    pub listen: SocketAddr,
    /// How often every peer is synced.
    pub sync_interval: Duration,
    /// Advertise and browse with mDNS.
    pub mdns: bool,
    /// Peers from `--peers`, `FERAL_SYNC_PEERS` or the config file.
    pub static_peers: Vec<SocketAddr>,
    /// Connect and handshake timeouts, for the sessions this node starts and serves.
    pub timeouts: Timeouts,
    /// The background scrub of sealed segments.
    pub scrub: Scrub,
}

/// The scrub: every sealed segment's checksum verified in the background, at a bounded rate,
/// pass after pass, so damage shows in status (and is served around) before a read or a
/// sync meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrub {
    /// Bytes read per second at most (0: no scrub).
    pub bytes_per_sec: u64,
    /// Pause between two passes over the sealed segments.
    pub every: Duration,
}

impl Default for Scrub {
    fn default() -> Scrub {
        Scrub { bytes_per_sec: SCRUB_BYTES_PER_SEC, every: SCRUB_EVERY }
    }
}

/// The scrub's default rate: a 64 MiB segment in 8 s, a fraction of any disk's bandwidth.
pub const SCRUB_BYTES_PER_SEC: u64 = 8 * 1024 * 1024;
/// The default pause between scrub passes.
pub const SCRUB_EVERY: Duration = Duration::from_secs(600);

/// A running node service.
#[derive(Debug)]
pub struct Service {
    /// The store.
    pub node: Arc<Node>,
    /// Known peers.
    pub book: Arc<PeerBook>,
    schedule: Arc<Mutex<Schedule>>,
    /// The client side: replaced whole when the certificate is renewed (sessions in flight
    /// keep the one they started with).
    syncer: SyncerSlot,
    /// The server endpoint (its configuration is replaced when the certificate is renewed).
    server: feral_transport::Endpoint,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    tasks: Mutex<JoinSet<()>>,
    discovery: Mutex<Option<Discovery>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Set on stop, for work on blocking threads (the scrub) to end promptly.
    stop_flag: Arc<std::sync::atomic::AtomicBool>,
}

/// The client side of sync, as of the last certificate installed.
type SyncerSlot = Arc<std::sync::RwLock<Arc<Syncer<Node>>>>;

fn current(slot: &SyncerSlot) -> Arc<Syncer<Node>> {
    slot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Counters the service keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ops appended through the API.
    pub ops_appended: std::sync::atomic::AtomicU64,
    /// Ops received by sync (sessions this node started).
    pub ops_received: std::sync::atomic::AtomicU64,
    /// Stream bytes sent by sync.
    pub bytes_sent: std::sync::atomic::AtomicU64,
    /// Stream bytes received by sync.
    pub bytes_received: std::sync::atomic::AtomicU64,
    /// Sync sessions by result (`ok` or the error code).
    pub sessions: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Metrics {
    /// Counts one finished sync.
    pub fn record(&self, result: &SyncResult) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ops_received.fetch_add(result.received, Relaxed);
        self.bytes_sent.fetch_add(result.bytes_sent, Relaxed);
        self.bytes_received.fetch_add(result.bytes_received, Relaxed);
        let key = result.error.clone().unwrap_or_else(|| "ok".into());
        *self.sessions.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert(0) += 1;
    }
}

impl Service {
    /// Starts serving, discovering and scheduling on the current tokio runtime.
    pub fn start(
        node: Arc<Node>,
        creds: &Credentials,
        config: ServiceConfig,
    ) -> Result<Service, TransportError> {
        let endpoint = server_endpoint(creds, config.listen)?;
        let addr = endpoint.local_addr().map_err(|e| TransportError::Connect(e.to_string()))?;
        let bind: SocketAddr =
            if addr.is_ipv6() { ([0u16; 8], 0).into() } else { ([0u8; 4], 0).into() };
        let syncer = Arc::new(Syncer {
            host: node.clone(),
            endpoint: client_endpoint(creds, bind, true)?,
            cluster_id: creds.cluster_id(),
            locks: Arc::new(PeerLocks::default()),
            options: SyncOptions { timeouts: config.timeouts, ..SyncOptions::default() },
        });
        let syncer: SyncerSlot = Arc::new(std::sync::RwLock::new(syncer));
        let server = endpoint.clone();
        let (stop, stopped) = watch::channel(false);
        let stop_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let mut on_stop = stopped.clone();
        tasks.spawn(serve(
            endpoint,
            node.clone(),
            creds.cluster_id(),
            config.timeouts,
            async move {
                let _ = on_stop.wait_for(|s| *s).await;
            },
        ));
        let book = Arc::new(PeerBook::default());
        add_static(&book, &config.static_peers);
        let discovery = config.mdns.then(|| {
            Discovery::start(
                book.clone(),
                &node.node_id().to_string(),
                addr.port(),
                env!("CARGO_PKG_VERSION"),
            )
        });
        let schedule = Arc::new(Mutex::new(Schedule::new(config.sync_interval)));
        let wake = Arc::new(Notify::new());
        let metrics = Arc::new(Metrics::default());
        tasks.spawn(push_loop(
            node.subscribe_writes(),
            schedule.clone(),
            wake.clone(),
            stopped.clone(),
        ));
        tasks.spawn(schedule_loop(
            book.clone(),
            schedule.clone(),
            syncer.clone(),
            wake.clone(),
            metrics.clone(),
            stopped,
        ));
        tasks.spawn(repair_loop(node.clone(), stop.subscribe()));
        if config.scrub.bytes_per_sec > 0 {
            tasks.spawn(scrub_loop(
                node.clone(),
                config.scrub,
                stop_flag.clone(),
                stop.subscribe(),
                (schedule.clone(), wake.clone()),
            ));
        }
        tracing::info!(%addr, node_id = %node.node_id(), mdns = config.mdns, "serving sync");
        Ok(Service {
            node,
            book,
            schedule,
            syncer,
            server,
            addr,
            stop,
            wake,
            tasks: Mutex::new(tasks),
            discovery: Mutex::new(discovery),
            metrics,
            stop_flag,
        })
    }

    /// Turns true when the service is told to stop (long-lived API streams end on it).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// The QUIC address sync is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Known peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.book.list()
    }

    /// Every peer's schedule (last sync, backoff).
    pub fn schedule(&self) -> Vec<PeerSchedule> {
        self.schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status(tokio::time::Instant::now().into_std())
    }

    /// Syncs with one peer now (it joins the book as a manual peer, within the cap of manual
    /// peers) and returns the result.
    pub async fn sync_now(&self, peer: SocketAddr) -> Result<SyncResult, BookFull> {
        let known = self.book.get(peer);
        if known.is_none() {
            self.book.add(PeerInfo { addr: peer, node_id: None, source: PeerSource::Manual })?;
        }
        // A scheduled or pushed session with the peer may be running (they are frequent with
        // push on write): wait for it to end, then run this one, within a bound.
        let deadline = tokio::time::Instant::now() + MANUAL_SYNC_WAIT;
        let result = loop {
            let result = sync_once(&current(&self.syncer), known.as_ref(), peer).await;
            let busy = result.error.as_deref() == Some("already_syncing");
            if !busy || tokio::time::Instant::now() >= deadline {
                break result;
            }
            tokio::time::sleep(MANUAL_SYNC_RETRY).await;
        };
        self.metrics.record(&result);
        if result.error.as_deref() == Some("already_syncing") {
            // The schedule's own session with the peer is still running: its outcome is the
            // one to record, not a backoff for this refusal.
            return Ok(result);
        }
        let failures = {
            let now = tokio::time::Instant::now().into_std();
            let mut schedule = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
            // A peer new to the book is in the schedule from now on, with this session's
            // outcome (and no second session at once: this one just ended).
            let known: Vec<SocketAddr> = self.book.list().iter().map(|p| p.addr).collect();
            schedule.set_peers(&known, now);
            if result.success {
                schedule.note_behind(peer, &result);
            }
            schedule.record(peer, now, result.error.clone())
        };
        forget_if_failing(&self.book, peer, &result, failures);
        Ok(result)
    }

    /// Asks the scheduler to sync every healthy peer now.
    pub fn sync_all_soon(&self) {
        let now = tokio::time::Instant::now().into_std();
        self.schedule.lock().unwrap_or_else(|p| p.into_inner()).request(None, now);
        self.wake.notify_one();
    }

    /// Takes a renewed certificate (for this node's key, from the same cluster CA) without a
    /// restart: sessions served and started from now on present it; sessions in flight finish
    /// with the one they started with.
    pub fn renew(&self, creds: &Credentials) -> Result<(), TransportError> {
        creds.verify_own()?;
        let old = current(&self.syncer);
        if creds.cluster_id() != old.cluster_id {
            return Err(TransportError::Certificate {
                code: "wrong_cluster",
                reason: "the new certificate is from another cluster CA; a node changes cluster only with a restart".into(),
            });
        }
        let bind: SocketAddr =
            if self.addr.is_ipv6() { ([0u16; 8], 0).into() } else { ([0u8; 4], 0).into() };
        let renewed = Arc::new(Syncer {
            host: old.host.clone(),
            endpoint: client_endpoint(creds, bind, true)?,
            cluster_id: old.cluster_id,
            locks: old.locks.clone(),
            options: old.options.clone(),
        });
        self.server.set_server_config(Some(feral_transport::driver::server_config(creds)?));
        *self.syncer.write().unwrap_or_else(|p| p.into_inner()) = renewed;
        // The old client endpoint ends once its sessions do.
        tracing::info!("took a renewed certificate: new sessions present it");
        Ok(())
    }

    /// Stops everything it started and waits for it: no task outlives the service.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        self.stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
        let discovery = self.discovery.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(discovery) = discovery {
            let _ = tokio::task::spawn_blocking(move || discovery.shutdown()).await;
        }
        let syncer = current(&self.syncer);
        syncer.endpoint.close(0u32.into(), b"stopping");
        let drain = feral_transport::limits::SHUTDOWN_DRAIN_MAX;
        let _ = tokio::time::timeout(drain, syncer.endpoint.wait_idle()).await;
    }
}

/// The scrub: each sealed segment in turn on a blocking thread, at most `scrub.bytes_per_sec`
/// (it sleeps after each chunk for as long as the chunk's share of a second), then a pause of
/// `scrub.every`. Damage found goes to the log's damage register (status, metrics); the node
/// goes on serving around it.
async fn scrub_loop(
    node: Arc<Node>,
    scrub: Scrub,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut stopped: watch::Receiver<bool>,
    (schedule, wake): (Arc<Mutex<Schedule>>, Arc<Notify>),
) {
    use std::sync::atomic::Ordering::Relaxed;
    let pass = {
        let stop = stop.clone();
        move || {
            let started = std::time::Instant::now();
            let mut pace = feral_log::damage::Pace::new(scrub.bytes_per_sec, &stop);
            let mut damaged = 0u64;
            for base in node.wal().sealed_segments() {
                match node.wal().scrub_segment(base, &mut |n| pace.step(n)) {
                    Ok(feral_log::damage::Scrubbed::Damaged(n)) => damaged += n,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, base, "scrub could not read a segment"),
                }
                if stop.load(Relaxed) {
                    break;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            tracing::debug!(bytes = pace.bytes(), damaged, secs, "scrub pass");
            damaged
        }
    };
    while !stop.load(Relaxed) {
        let pass = pass.clone();
        let Ok(damaged) = tokio::task::spawn_blocking(pass).await else {
            tracing::error!("a scrub pass panicked; the scrub stops");
            return;
        };
        if damaged > 0 {
            // Every peer now, so the damaged records' copies come at once (each session's
            // hello asks for them) rather than at the next scheduled sync.
            let now = tokio::time::Instant::now().into_std();
            schedule.lock().unwrap_or_else(|p| p.into_inner()).request(None, now);
            wake.notify_one();
        }
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            () = tokio::time::sleep(scrub.every) => {}
        }
    }
}

/// Self-repair: a part derived from the log that stopped on damage while the node runs (the
/// index, the projection, the search index) is rebuilt from the log on the blocking pool,
/// without waiting for an operator's resume; a rebuild that does not mend it is tried again
/// after a wait that doubles up to [`REPAIR_RETRY_MAX`].
async fn repair_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut retry = REPAIR_RETRY_FIRST;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            () = tokio::time::sleep(REPAIR_POLL) => {}
        }
        let node = node.clone();
        let Ok(repair) = tokio::task::spawn_blocking(move || node.repair_stopped()).await else {
            tracing::error!("a self-repair panicked; self-repair stops");
            return;
        };
        let Some(repair) = repair else { continue };
        if repair.failed.is_empty() && repair.check.ok {
            tracing::info!(rebuilt = ?repair.rebuilt, "self-repair done; the store checks out");
            retry = REPAIR_RETRY_FIRST;
            continue;
        }
        tracing::error!(
            rebuilt = ?repair.rebuilt,
            failed = ?repair.failed,
            check_ok = repair.check.ok,
            retry_secs = retry.as_secs(),
            "self-repair did not mend the store; trying again later"
        );
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(REPAIR_RETRY_MAX);
    }
}

/// Push on write: new ops (written here or received from a peer) make every healthy peer due,
/// after [`PUSH_COALESCE_WINDOW`] so a burst shares its sessions. Ops received from one peer
/// are passed on to the others this way, so a chain or a star converges without the schedule.
async fn push_loop(
    mut written: watch::Receiver<feral_log::Lsn>,
    schedule: Arc<Mutex<Schedule>>,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            changed = written.changed() => if changed.is_err() { break },
        }
        tokio::time::sleep(PUSH_COALESCE_WINDOW).await;
        written.mark_unchanged();
        let now = tokio::time::Instant::now().into_std();
        schedule.lock().unwrap_or_else(|p| p.into_inner()).push(now);
        wake.notify_one();
    }
}

/// Syncs due peers, each in its own task, until told to stop; then waits for them.
async fn schedule_loop(
    book: Arc<PeerBook>,
    schedule: Arc<Mutex<Schedule>>,
    syncer: SyncerSlot,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut running = JoinSet::new();
    loop {
        let now = tokio::time::Instant::now().into_std();
        let due = {
            let mut s = schedule.lock().unwrap_or_else(|p| p.into_inner());
            let known: Vec<SocketAddr> = book.list().iter().map(|p| p.addr).collect();
            s.set_peers(&known, now);
            s.take_due(now)
        };
        for peer in due {
            let (syncer, schedule, metrics) = (current(&syncer), schedule.clone(), metrics.clone());
            let book = book.clone();
            running.spawn(async move {
                let result = sync_once(&syncer, book.get(peer).as_ref(), peer).await;
                metrics.record(&result);
                if !result.success {
                    tracing::warn!(%peer, error = ?result.error, "scheduled sync failed");
                }
                let now = tokio::time::Instant::now().into_std();
                let failures = {
                    let mut schedule = schedule.lock().unwrap_or_else(|p| p.into_inner());
                    if result.success {
                        schedule.note_behind(peer, &result);
                    }
                    schedule.record(peer, now, result.error.clone())
                };
                forget_if_failing(&book, peer, &result, failures);
            });
        }
        // Until the next peer is due (a push repeats within milliseconds), at most one tick.
        let next = schedule.lock().unwrap_or_else(|p| p.into_inner()).next_due();
        let tick = now + SCHEDULER_TICK;
        let until = next.map_or(tick, |n| n.min(tick));
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(until.into()) => {}
            () = wake.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
    // Sessions in flight end now: what they applied is durable, the rest comes next time.
    running.abort_all();
    while running.join_next().await.is_some() {}
}

/// One sync with a peer, holding its certificate to the node id it advertised (mDNS).
async fn sync_once(syncer: &Syncer<Node>, info: Option<&PeerInfo>, peer: SocketAddr) -> SyncResult {
    let advertised = info.and_then(|i| i.node_id.as_deref());
    let expected = match advertised.map(feral_log::op::parse_hex16) {
        None => None,
        Some(Some(id)) => Some(id),
        // An advertisement whose node id is not 32 hex characters can match no certificate.
        Some(None) => Some([0u8; 16]),
    };
    syncer.sync_expecting(peer, expected).await
}

/// Forgets a discovered or manual peer whose certificate is not the node it advertised, or
/// that failed [`PEER_FAILURES_MAX`] times in a row (static peers stay).
fn forget_if_failing(book: &PeerBook, peer: SocketAddr, result: &SyncResult, failures: u32) {
    let mismatch = result.error.as_deref() == Some("advertised_node_id_mismatch");
    if (mismatch || failures >= PEER_FAILURES_MAX) && book.forget(peer, mismatch) {
        tracing::warn!(%peer, failures, error = ?result.error, "peer forgotten");
    }
}
