//! The sync port's doors against a real `feral-node run`: a peer holding a valid certificate
//! that opens 30 sessions and stalls each inside a frame of the 4 MiB limit, and one that tries to open
//! 200 streams, cost the node less than 64 MiB and do not stop another peer from syncing
//! (one session per peer node id: the newest supersedes the others; one stream per connection, bounded receive windows). And a
//! peer found by mDNS whose certificate proves another node id than it advertised is dropped
//! and counted.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{RunningNode, doc, feral_node, open};
use feral_memory::client::Call;
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::discovery::{PeerInfo, PeerSource};
use feral_transport::driver::client_endpoint;
use feral_transport::tls::{Ca, Credentials, SERVER_NAME};
use rcgen::KeyPair;

/// A data directory with a store and a certificate from `ca_dir`.
fn store_issued_by(ca_dir: &std::path::Path, data: &std::path::Path) {
    for args in [vec!["init"], vec!["certs", "issue", "--ca", ca_dir.to_str().expect("utf-8")]] {
        let out = feral_node().arg("--data").arg(data).args(&args).output().expect("run");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Credentials for a fresh key from `ca` (a stolen or misbehaving node of the cluster).
fn rogue(ca: &Ca) -> Credentials {
    let key = KeyPair::generate().expect("key");
    let cert = ca.issue_default(&key).expect("issue");
    Credentials::from_pem(&cert, &key, &ca.cert_pem).expect("creds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sessions_and_stream_floods_cost_little_and_others_still_sync() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca_dir = root.path().join("ca");
    let out = feral_node().args(["certs", "new-ca", "--out"]).arg(&ca_dir).output().expect("ca");
    assert!(out.status.success());
    let ca = Ca::load(&ca_dir).expect("load ca");
    let (b_dir, c_dir) = (root.path().join("b"), root.path().join("c"));
    store_issued_by(&ca_dir, &b_dir);
    store_issued_by(&ca_dir, &c_dir);
    let b = RunningNode::start(&b_dir, &[]);
    let c = RunningNode::start(&c_dir, &[]);
    let posted = c.unix().send(Call::new("POST", "/v1/episodes").json(&doc("c1", "s", 1.0))).await;
    assert_eq!(posted.expect("answer").status, 200);
    let rss_before = b.rss_bytes();

    // 30 sessions from one rogue node, each stalled inside a first frame of the limit.
    let stalling = rogue(&ca);
    let endpoint =
        client_endpoint(&stalling, "127.0.0.1:0".parse().expect("addr"), true).expect("endpoint");
    let frame_max = feral_sync::limits::FRAME_BYTES_MAX;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let (endpoint, addr) = (endpoint.clone(), b.sync_addr);
        attempts.spawn(async move {
            let connecting = endpoint.connect(addr, SERVER_NAME).expect("connect");
            let conn = connecting.await.ok()?;
            let (mut send, recv) = conn.open_bi().await.ok()?;
            let mut frame = (frame_max as u32).to_le_bytes().to_vec();
            frame.extend(std::iter::repeat_n(0xAB, frame_max - 64 * 1024));
            // Well inside the node's 10 s handshake deadline, so every attempt overlaps.
            let _ = tokio::time::timeout(Duration::from_secs(2), send.write_all(&frame)).await;
            Some((conn, send, recv))
        });
    }
    let mut held = Vec::new();
    while let Some(joined) = attempts.join_next().await {
        if let Some(attempt) = joined.expect("task") {
            held.push(attempt);
        }
    }
    // The node keeps one of them (until its handshake deadline) and closes the others.
    let open = |held: &Vec<(quinn::Connection, quinn::SendStream, quinn::RecvStream)>| {
        held.iter().filter(|(conn, ..)| conn.close_reason().is_none()).count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open(&held) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let superseded = held
        .iter()
        .filter(|(conn, ..)| {
            conn.close_reason().is_some_and(|r| r.to_string().contains("superseded"))
        })
        .count();
    eprintln!("of 30 concurrent sessions: {} open, {superseded} superseded", open(&held));
    assert!(open(&held) <= 1, "one session per peer node id: {} open", open(&held));
    let reasons: std::collections::BTreeSet<String> =
        held.iter().filter_map(|(conn, ..)| conn.close_reason().map(|r| r.to_string())).collect();
    eprintln!("close reasons: {reasons:?}");
    assert!(superseded >= 1, "older sessions were closed as superseded");

    // Another rogue node tries to open 200 bidirectional and 200 unidirectional streams.
    let flooding = rogue(&ca);
    let endpoint2 =
        client_endpoint(&flooding, "127.0.0.1:0".parse().expect("addr"), true).expect("endpoint");
    let conn =
        endpoint2.connect(b.sync_addr, SERVER_NAME).expect("connect").await.expect("connection");
    let (mut bidi, mut uni) = (Vec::new(), 0);
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(50), conn.open_bi()).await {
            Ok(Ok((mut s, r))) => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    s.write_all(&vec![7u8; 1 << 20]),
                )
                .await;
                bidi.push((s, r));
            }
            _ => break,
        }
    }
    for _ in 0..200 {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_millis(50), conn.open_uni()).await
        {
            let _ =
                tokio::time::timeout(Duration::from_millis(200), s.write_all(&[7u8; 1024])).await;
            uni += 1;
        } else {
            break;
        }
    }
    eprintln!(
        "the flooding peer opened {} bidirectional and {uni} unidirectional streams",
        bidi.len()
    );
    assert!(bidi.len() <= 1, "one stream per connection: {} opened", bidi.len());
    assert_eq!(uni, 0, "no unidirectional streams");

    let grew = b.rss_bytes().saturating_sub(rss_before);
    eprintln!("RSS of the attacked node grew by {} KiB", grew / 1024);
    assert!(grew < 64 * 1024 * 1024, "the node's RSS grew by {grew} bytes");

    // Meanwhile a real peer syncs with the attacked node.
    let body = serde_json::json!({"peer": b.sync_addr.to_string()});
    let answer = c.unix().send(Call::new("POST", "/v1/sync").json(&body)).await.expect("answer");
    let result = answer.json();
    assert_eq!(result[0]["success"], true, "a real peer still syncs: {result}");
    assert_eq!(result[0]["sent"], 1, "{result}");
    drop((held, bidi, conn));
    endpoint.close(0u32.into(), b"done");
    endpoint2.close(0u32.into(), b"done");
    assert!(b.stop() && c.stop(), "clean shutdowns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mdns_peer_whose_certificate_proves_another_node_id_is_dropped_and_counted() {
    let ca = Ca::generate().expect("ca");
    let member = |dir: &std::path::Path| {
        let node = Arc::new(open(dir));
        let cert = ca.issue_default(node.key()).expect("issue");
        let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).expect("creds");
        (node, creds)
    };
    let (da, db) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let ((a, ca_creds), (b, cb_creds)) = (member(da.path()), member(db.path()));
    let config = |peers: Vec<SocketAddr>| ServiceConfig {
        timeouts: Default::default(),
        scrub: Default::default(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        sync_interval: Duration::from_secs(3600),
        mdns: false,
        static_peers: peers,
    };
    let sb = Service::start(b.clone(), &cb_creds, config(vec![])).expect("b");
    let sa = Service::start(a.clone(), &ca_creds, config(vec![])).expect("a");
    // As if B's address had been advertised by mDNS under another node's id.
    let liar = "00112233445566778899aabbccddeeff".to_string();
    sa.book
        .add(PeerInfo { addr: sb.local_addr(), node_id: Some(liar), source: PeerSource::Mdns })
        .expect("room");
    sa.sync_all_soon();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !sa.peers().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the lying peer was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sa.book.counters().refused, 1, "and counted");
    assert_eq!(a.digest().expect("digest").ops, 0, "nothing was taken from it");
    // Advertised under its real id, the same peer is synced.
    let real = b.node_id().to_string();
    sa.book
        .add(PeerInfo { addr: sb.local_addr(), node_id: Some(real), source: PeerSource::Mdns })
        .expect("room");
    b.append_episode(&doc("b1", "s", 1.0), None).expect("append");
    let result = sa.sync_now(sb.local_addr()).await.expect("known peer");
    assert!(result.success, "{result:?}");
    assert_eq!(result.received, 1);
    sa.stop().await;
    sb.stop().await;
}
