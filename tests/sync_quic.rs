//! Sync over real QUIC on 127.0.0.1 with real certificates: nodes converge with writes on every
//! side; a certificate from another CA, none, or an expired one is refused with its own code; a
//! peer that drops mid-handshake gets exactly 3 attempts with 1 s and 2 s of backoff (an
//! injected sleeper records them), the lock is free afterwards and no task is left; a second
//! concurrent sync with one peer returns already_syncing; one new op crosses alone.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::doc;
use common::quic::{LOCALHOST, Peer, ok, peer, start_server, stop_all, syncer};
use feral_transport::driver::{client_endpoint, server_endpoint};
use feral_transport::tls::{Ca, Credentials};
use feral_transport::{Sleeper, SyncOptions, Timeouts};
use time::OffsetDateTime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_over_quic_and_one_new_op_crosses_alone() {
    let ca = Ca::generate().expect("ca");
    let peers: Vec<Peer> = (0..3).map(|_| peer(&ca)).collect();
    for (n, p) in peers.iter().enumerate() {
        for i in 0..300 {
            p.node.append_episode(&doc(&format!("n{n}-{i}"), "s", i as f64), None).expect("append");
        }
    }
    let servers: Vec<_> = peers.iter().map(start_server).collect();
    let syncers: Vec<_> = peers.iter().map(|p| syncer(p, SyncOptions::default())).collect();
    for (x, y) in [(0, 1), (1, 2), (2, 0), (0, 1)] {
        ok(&syncers[x].sync_with_peer(servers[y].0).await);
    }
    let digests: Vec<_> = peers.iter().map(|p| p.node.digest().expect("digest")).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert_eq!(digests[0].ops, 900);
    peers[1].node.append_episode(&doc("late", "s", 1.0), None).expect("append");
    let result = syncers[0].sync_with_peer(servers[1].0).await;
    ok(&result);
    assert_eq!((result.sent, result.received, result.attempts), (0, 1, 1));
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_certificates_give_distinct_errors() {
    let ca = Ca::generate().expect("ca");
    let server = peer(&ca);
    let (addr, stop, task) = start_server(&server);
    let client = peer(&ca);
    let once = SyncOptions { attempts: 1, ..SyncOptions::default() };
    // A certificate from another CA (the client still trusts the cluster CA).
    let other = Ca::generate().expect("other ca");
    let foreign = other.issue_default(client.node.key()).expect("issue");
    let mut s = syncer(&client, once.clone());
    let creds = Credentials::from_pem(&foreign, client.node.key(), &ca.cert_pem).expect("creds");
    s.endpoint = client_endpoint(&creds, LOCALHOST.parse().expect("addr"), true).expect("client");
    let result = s.sync_with_peer(addr).await;
    assert_eq!(result.error.as_deref(), Some("unknown_ca"), "{result:?}");
    // No certificate at all.
    s.endpoint =
        client_endpoint(&client.creds, LOCALHOST.parse().expect("addr"), false).expect("client");
    let result = s.sync_with_peer(addr).await;
    assert_eq!(result.error.as_deref(), Some("no_client_certificate"), "{result:?}");
    // An expired certificate.
    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue(client.node.key(), now - time::Duration::days(30), now - time::Duration::days(1))
        .expect("issue");
    let creds = Credentials::from_pem(&expired, client.node.key(), &ca.cert_pem).expect("creds");
    s.endpoint = client_endpoint(&creds, LOCALHOST.parse().expect("addr"), true).expect("client");
    let result = s.sync_with_peer(addr).await;
    assert_eq!(result.error.as_deref(), Some("certificate_expired"), "{result:?}");
    assert!(!result.success && result.attempts == 1);
    // The valid certificate still works.
    s.endpoint =
        client_endpoint(&client.creds, LOCALHOST.parse().expect("addr"), true).expect("client");
    ok(&s.sync_with_peer(addr).await);
    drop(stop);
    task.await.expect("server task");
}

/// Records the backoff it is asked for and returns at once.
#[derive(Debug, Default)]
struct RecordingSleeper {
    slept: Mutex<Vec<Duration>>,
}

impl Sleeper for RecordingSleeper {
    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        self.slept.lock().expect("lock").push(duration);
        Box::pin(async {})
    }
}

/// A peer with a valid certificate that accepts the connection, reads the first bytes of the
/// handshake and drops the connection.
fn start_dropping_peer(p: &Peer) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let endpoint = server_endpoint(&p.creds, LOCALHOST.parse().expect("addr")).expect("server");
    let addr = endpoint.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(connection) = incoming.await else { continue };
            if let Ok((_send, mut recv)) = connection.accept_bi().await {
                let mut buf = [0u8; 16];
                let _ = recv.read(&mut buf).await;
            }
            connection.close(7u32.into(), b"gone");
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dropping_mid_handshake_gets_three_attempts_with_backoff() {
    let ca = Ca::generate().expect("ca");
    let (client, dropper) = (peer(&ca), peer(&ca));
    let (addr, task) = start_dropping_peer(&dropper);
    let sleeper = Arc::new(RecordingSleeper::default());
    let options = SyncOptions { sleeper: sleeper.clone(), ..SyncOptions::default() };
    let s = syncer(&client, options);
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let result = s.sync_with_peer(addr).await;
    assert!(!result.success, "{result:?}");
    assert_eq!(result.attempts, 3, "{result:?}");
    assert!(result.error.is_some());
    assert_eq!(
        *sleeper.slept.lock().expect("lock"),
        [Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(s.locks.held(), 0, "the per-peer lock is free");
    // Closed connections finish draining on their own; wait for that, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::runtime::Handle::current().metrics().num_alive_tasks() > tasks_before {
        assert!(std::time::Instant::now() < deadline, "a task outlived the sync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_sync_with_one_peer_is_already_syncing() {
    let ca = Ca::generate().expect("ca");
    let (client, silent) = (peer(&ca), peer(&ca));
    // A peer that accepts and never says anything: the first sync waits for its handshake.
    let endpoint =
        server_endpoint(&silent.creds, LOCALHOST.parse().expect("addr")).expect("server");
    let addr = endpoint.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(incoming) = endpoint.accept().await {
            if let Ok(c) = incoming.await {
                kept.push(c);
            }
        }
    });
    let options = SyncOptions {
        attempts: 1,
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(2),
            ..Timeouts::default()
        },
        ..SyncOptions::default()
    };
    let s = Arc::new(syncer(&client, options));
    let first = tokio::spawn({
        let s = s.clone();
        async move { s.sync_with_peer(addr).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.locks.held() == 0 {
        assert!(std::time::Instant::now() < deadline, "the first sync never started");
        tokio::task::yield_now().await;
    }
    let second = s.sync_with_peer(addr).await;
    assert_eq!(second.error.as_deref(), Some("already_syncing"), "{second:?}");
    let first = first.await.expect("first");
    assert_eq!(first.error.as_deref(), Some("handshake_timeout"), "{first:?}");
    assert_eq!(s.locks.held(), 0);
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_frame_length_is_refused_and_the_server_carries_on() {
    let ca = Ca::generate().expect("ca");
    let (server, client) = (peer(&ca), peer(&ca));
    let (addr, stop, task) = start_server(&server);
    let endpoint =
        client_endpoint(&client.creds, LOCALHOST.parse().expect("addr"), true).expect("client");
    let connection = endpoint
        .connect(addr, feral_transport::tls::SERVER_NAME)
        .expect("connect")
        .await
        .expect("connected");
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    // A length prefix of 2 GiB: refused from the prefix alone, nothing allocated for it.
    send.write_all(&0x7fff_ffffu32.to_le_bytes()).await.expect("write");
    let mut decoder = feral_sync::FrameDecoder::default();
    let mut buf = [0u8; 4096];
    // Every frame the server sent, until it ends its stream (one read may hold several).
    let mut frames = Vec::new();
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                decoder.push(&buf[..n]);
                while let Some(m) = decoder.next_message().expect("the server's frames are valid") {
                    frames.push(m);
                }
            }
            Ok(None) => break,
            Err(e) => panic!("the stream failed: {e}"),
        }
    }
    let reply = frames.pop().expect("the server sent a refusal last");
    match reply {
        feral_sync::SyncMessage::Refuse { code, .. } => assert_eq!(code, "frame_too_large"),
        other => panic!("{other:?}"),
    }
    connection.close(0u32.into(), b"");
    // The server is still serving.
    ok(&syncer(&client, SyncOptions::default()).sync_with_peer(addr).await);
    drop(stop);
    task.await.expect("server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_new_op_on_a_hundred_thousand_shared_costs_a_handshake_and_that_op() {
    const SHARED: usize = 100_000;
    let ca = Ca::generate().expect("ca");
    let (a, b) = (peer(&ca), peer(&ca));
    for start in (0..SHARED).step_by(1000) {
        let batch = (start..start + 1000)
            .map(|i| {
                let e = a.node.prepare_episode(&doc(&format!("e{i}"), "s", i as f64), None);
                (e.expect("valid"), None)
            })
            .collect();
        a.node.append_episodes(batch).expect("append");
    }
    let (addr, stop, task) = start_server(&b);
    let s = syncer(&a, SyncOptions::default());
    let first = s.sync_with_peer(addr).await;
    ok(&first);
    assert_eq!(first.sent, SHARED as u64);
    a.node.append_episode(&doc("new", "s", 1.0), None).expect("append");
    let second = s.sync_with_peer(addr).await;
    ok(&second);
    assert_eq!((second.sent, second.received), (1, 0));
    let bytes = second.bytes_sent + second.bytes_received;
    println!("incremental sync of 1 op over {SHARED} shared: {bytes} bytes on the stream");
    assert!(bytes < 2048, "a handshake and one op, not the store: {bytes} bytes");
    assert_eq!(a.node.digest().expect("digest"), b.node.digest().expect("digest"));
    drop(stop);
    task.await.expect("server task");
}
