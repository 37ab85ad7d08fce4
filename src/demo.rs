//! `feral-node demo`: two nodes on loopback with their own CA write, sync and compare digests.

use crate::out::out;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feral_log::Config;
use feral_memory::Node;
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::driver::client_endpoint;
use feral_transport::tls::{Ca, Credentials};
use feral_transport::{PeerLocks, SyncOptions, Syncer};
use serde_json::json;

use crate::Failure;

fn sample(i: usize) -> serde_json::Value {
    let (event, summary, emotions) = [
        ("conversation", "talked through the week's plan", vec!["focused"]),
        ("reminder", "dentist on Thursday at 9", vec![]),
        ("conversation", "the user prefers short answers", vec!["content"]),
        ("observation", "the garden tomatoes are ripening", vec!["pleased"]),
        ("conversation", "booked train tickets to Lyon", vec!["excited"]),
    ][i % 5]
        .clone();
    json!({
        "id": format!("demo-{i}"),
        "session_id": format!("session-{}", i % 2),
        "event_type": event,
        "summary": summary,
        "importance": 0.3 + 0.05 * (i % 10) as f64,
        "emotions": emotions,
        "participants": ["user", "assistant"],
    })
}

/// Small segments: a demo store should not take 64 MiB of disk.
const DEMO_SEGMENT_BYTES: u64 = 1024 * 1024;

fn config() -> Config {
    Config { segment_bytes: DEMO_SEGMENT_BYTES, ..Config::default() }
}

fn transport(e: feral_transport::TransportError) -> Failure {
    crate::fail(1, e.to_string())
}

/// Two nodes in temporary directories (or under `--data`), one CA, on loopback: both write,
/// they sync over QUIC with mutual TLS, and the demo prints what moved, how long it took, and
/// the two digests.
pub(crate) fn run(data: Option<&Path>) -> Result<(), Failure> {
    let root = match data {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("feral-demo-{}", std::process::id())),
    };
    out!("1. a cluster CA and two nodes under {}", root.display());
    let ca = Ca::generate().map_err(transport)?;
    let mut nodes = Vec::new();
    for name in ["laptop", "desktop"] {
        let node = Arc::new(Node::open(root.join(name), config())?);
        let cert = ca.issue_default(node.key()).map_err(transport)?;
        let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).map_err(transport)?;
        out!("   {name}: node id {}, origin {}", node.node_id(), node.wal().origin());
        nodes.push((name, node, creds));
    }
    out!("2. each writes episodes (durable before acknowledged)");
    for (n, (name, node, _)) in nodes.iter().enumerate() {
        for i in 0..5 {
            let mut doc = sample(i + 5 * n);
            doc["session_id"] = json!(format!("{name}-session"));
            node.append_episode(&doc, None)?;
        }
        out!("   {name}: 5 episodes");
    }
    nodes[1].1.delete_episode("demo-7", None)?;
    out!("   desktop: deleted demo-7 (a tombstone)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::fail(1, e.to_string()))?;
    let (laptop, desktop) = (&nodes[0], &nodes[1]);
    let moved = rt.block_on(async {
        let service_config = ServiceConfig {
            timeouts: Default::default(),
            listen: "127.0.0.1:0".parse().map_err(|e| crate::fail(1, format!("{e}")))?,
            sync_interval: Duration::from_secs(3600),
            mdns: false,
            static_peers: vec![],
            scrub: Default::default(),
        };
        let served =
            Service::start(desktop.1.clone(), &desktop.2, service_config).map_err(transport)?;
        out!(
            "3. desktop serves sync on {} (QUIC, TLS 1.3, both certificates checked)",
            served.local_addr()
        );
        let syncer = Syncer {
            host: laptop.1.clone(),
            endpoint: client_endpoint(
                &laptop.2,
                "127.0.0.1:0".parse().map_err(|e| crate::fail(1, format!("{e}")))?,
                true,
            )
            .map_err(transport)?,
            cluster_id: laptop.2.cluster_id(),
            locks: Arc::new(PeerLocks::default()),
            options: SyncOptions::default(),
        };
        let started = Instant::now();
        let result = syncer.sync_with_peer(served.local_addr()).await;
        let took = started.elapsed();
        syncer.endpoint.wait_idle().await;
        served.stop().await;
        Ok::<_, Failure>((result, took))
    })?;
    let (result, took) = moved;
    if !result.success {
        return Err(crate::fail(1, format!("the demo sync failed: {:?}", result.error)));
    }
    out!(
        "4. laptop synced with desktop in {:.1} ms: sent {} ops, received {} ops, {} bytes on the wire",
        took.as_secs_f64() * 1000.0,
        result.sent,
        result.received,
        result.bytes_sent + result.bytes_received
    );
    let (da, db) = (laptop.1.digest()?.digest, desktop.1.digest()?.digest);
    out!("5. digests\n   laptop  {da}\n   desktop {db}");
    for view in laptop.1.episodes(3, Some("desktop-session"))? {
        out!("   laptop now holds {}: {}", view.episode.id, view.episode.summary);
    }
    if da != db {
        return Err(crate::fail(1, "the digests differ"));
    }
    out!("done: the two stores are byte-identical; see `feral-node run --help` to run a node");
    drop(nodes);
    Ok(())
}
