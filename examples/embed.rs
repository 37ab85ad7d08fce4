//! Embedding feral-memory in a Rust program: open a store, append episodes, read them back,
//! and sync with a second store over QUIC with mutual TLS on loopback. It needs only the
//! library (`default-features = false`: no HTTP server, no command line).
//!
//! ```sh
//! cargo run --example embed
//! ```

use std::sync::Arc;
use std::time::Duration;

use feral_log::Config;
use feral_memory::Node;
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::driver::client_endpoint;
use feral_transport::tls::{Ca, Credentials};
use feral_transport::{PeerLocks, SyncOptions, Syncer};
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A store in `dir` with a certificate from `ca`.
fn store(ca: &Ca, dir: &std::path::Path) -> Result<(Arc<Node>, Credentials)> {
    let node = Arc::new(Node::open(dir, Config::default())?);
    let cert = ca.issue_default(node.key())?;
    let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem)?;
    Ok((node, creds))
}

fn main() -> Result<()> {
    let root = tempfile::tempdir()?;
    let ca = Ca::generate()?;
    let (laptop, laptop_creds) = store(&ca, &root.path().join("laptop"))?;
    let (desktop, desktop_creds) = store(&ca, &root.path().join("desktop"))?;

    // Append: the call returns once the op is durable (fdatasync); an op_id makes a retry
    // idempotent.
    let doc = json!({"id": "e1", "session_id": "s1", "event_type": "chat",
                     "summary": "the user prefers short answers"});
    let appended = laptop.append_episode(&doc, None)?;
    println!("appended e1 as op {} at {}", appended.op_id, appended.hlc);

    // Read: every acknowledged append is visible.
    let episode = laptop.episode("e1")?.ok_or("e1 is missing")?;
    println!("read back: {}", serde_json::to_string(&episode)?);

    // Sync: the desktop serves, the laptop connects; both directions in one session.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let config = ServiceConfig {
            timeouts: Default::default(),
            scrub: Default::default(),
            listen: "127.0.0.1:0".parse()?,
            sync_interval: Duration::from_secs(3600),
            mdns: false,
            static_peers: vec![],
        };
        let served = Service::start(desktop.clone(), &desktop_creds, config)?;
        let syncer = Syncer {
            host: laptop.clone(),
            endpoint: client_endpoint(&laptop_creds, "127.0.0.1:0".parse()?, true)?,
            cluster_id: laptop_creds.cluster_id(),
            locks: Arc::new(PeerLocks::default()),
            options: SyncOptions::default(),
        };
        let result = syncer.sync_with_peer(served.local_addr()).await;
        syncer.endpoint.close(0u32.into(), b"done");
        served.stop().await;
        Ok::<_, Box<dyn std::error::Error>>(result)
    })?;
    println!(
        "synced: success {}, sent {}, received {}",
        result.success, result.sent, result.received
    );
    let copy = desktop.episode("e1")?.ok_or("the desktop did not receive e1")?;
    assert_eq!(copy.episode.summary, "the user prefers short answers");
    assert_eq!(laptop.digest()?, desktop.digest()?, "both stores hold the same ops and rows");
    println!("the desktop holds e1; the two digests are equal");
    drop(rt);
    for node in [laptop, desktop] {
        Arc::into_inner(node).ok_or("the store is still shared")?.close()?;
    }
    Ok(())
}
