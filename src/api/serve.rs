//! The API's listeners (TCP and the Unix socket) with their bounds: a cap on open
//! connections (at the cap, the connection idle the longest is closed for the new one; when
//! every one is busy, the new one gets 503 `busy`), a header-read timeout (it also closes a
//! keep-alive connection that sends nothing), and an idle timeout for connections that stop
//! reading or writing between requests. axum's `serve` sets none of these.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::limits::{
    API_ACCEPT_ERROR_PAUSE, API_HEADERS_MAX, API_SHUTDOWN_GRACE, API_WATCHDOG_TICK,
};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections open at once.
    pub connections_max: usize,
    /// From the start of a connection, or the end of the last response, to a whole request
    /// head.
    pub header_timeout: Duration,
    /// A connection that moves no byte for this long while no request of it is being
    /// handled is closed.
    pub idle_timeout: Duration,
}

/// A byte stream from either listener.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Where connections come from.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener (every request but the health check needs the token).
    Tcp(tokio::net::TcpListener),
    /// The Unix socket in the data directory (its 0600 mode is the credential).
    Unix(tokio::net::UnixListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
            Listener::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// One open connection as the accept loop sees it.
struct Slot {
    /// Requests of it being handled now.
    busy: Arc<AtomicUsize>,
    /// Told to close it (evicted for a newer one).
    evict: Arc<Notify>,
}

/// The open connections, oldest first (keys grow).
#[derive(Default)]
struct Table {
    slots: Mutex<BTreeMap<u64, Slot>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more under `max`: closes the oldest idle connection. False when
    /// every open connection is handling a request.
    fn make_room(&self, max: usize) -> bool {
        let mut slots = self.lock();
        if slots.len() < max {
            return true;
        }
        let victim =
            slots.iter().find(|(_, s)| s.busy.load(Ordering::Acquire) == 0).map(|(k, _)| *k);
        match victim.and_then(|k| slots.remove(&k)) {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `stop` turns true; then finishes the
/// requests in flight (up to a grace period) and returns.
pub async fn serve(
    listener: Listener,
    router: Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) {
    let table = Arc::new(Table::default());
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) => {
                // EMFILE and friends: wait rather than spin; connections that close free room.
                tracing::warn!(error = %e, "api: accept failed");
                tokio::time::sleep(API_ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if !table.make_room(limits.connections_max) {
            tasks.spawn(refuse_busy(io));
            continue;
        }
        next_id += 1;
        let slot = Slot { busy: Arc::new(AtomicUsize::new(0)), evict: Arc::new(Notify::new()) };
        let (busy, evict) = (slot.busy.clone(), slot.evict.clone());
        table.lock().insert(next_id, slot);
        let (router, table, stop, id) = (router.clone(), table.clone(), stop.clone(), next_id);
        tasks.spawn(async move {
            connection(io, router, limits, busy, evict, stop).await;
            table.lock().remove(&id);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(API_SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Every open connection is handling a request: say so and close.
async fn refuse_busy(mut io: Box<dyn Io>) {
    let body =
        r#"{"error":"busy","message":"too many connections handling requests; retry shortly"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        io.write_all(head.as_bytes()).await?;
        io.write_all(body.as_bytes()).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// One connection: HTTP/1.1 with the header timeout, watched for idleness and eviction.
async fn connection(
    io: Box<dyn Io>,
    router: Router,
    limits: ServeLimits,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let epoch = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = Watched { inner: io, activity: activity.clone(), epoch };
    let counter = busy.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (router, counter) = (router.clone(), counter.clone());
            async move {
                let _busy = Busy::enter(counter);
                tower::ServiceExt::oneshot(router, request).await
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(API_HEADERS_MAX)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = evict.notified() => return,
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(API_WATCHDOG_TICK) => {
                let idle_ms = epoch.elapsed().as_millis() as u64 - activity.load(Ordering::Relaxed);
                if busy.load(Ordering::Acquire) == 0
                    && Duration::from_millis(idle_ms) >= limits.idle_timeout
                {
                    return;
                }
            }
        }
    }
}

/// Counts a request as being handled while it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(counter: Arc<AtomicUsize>) -> Busy {
        counter.fetch_add(1, Ordering::AcqRel);
        Busy(counter)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that records when it last moved a byte.
struct Watched {
    inner: Box<dyn Io>,
    activity: Arc<AtomicU64>,
    epoch: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, bytes);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
