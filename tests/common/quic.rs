//! Nodes that sync over real QUIC on 127.0.0.1 with certificates of one test CA.

use std::net::SocketAddr;
use std::sync::Arc;

use feral_memory::Node;
use feral_transport::driver::{client_endpoint, server_endpoint};
use feral_transport::tls::{CA_CERT_FILE, Ca, Credentials, NODE_CERT_FILE, write_file};
use feral_transport::{PeerLocks, SyncOptions, SyncResult, Syncer, Timeouts, serve};

/// Where test endpoints bind.
pub const LOCALHOST: &str = "127.0.0.1:0";

/// A node with a certificate of the test CA.
pub struct Peer {
    pub node: Arc<Node>,
    pub creds: Credentials,
    pub _dir: tempfile::TempDir,
}

/// A fresh node with a certificate from `ca`, installed in its data directory as `certs
/// issue` does (the node checks revocations against that `ca.pem`).
pub fn peer(ca: &Ca) -> Peer {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(super::open(dir.path()));
    let cert = ca.issue_default(node.key()).expect("issue");
    write_file(&dir.path().join(NODE_CERT_FILE), cert.as_bytes()).expect("node.pem");
    write_file(&dir.path().join(CA_CERT_FILE), ca.cert_pem.as_bytes()).expect("ca.pem");
    let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).expect("creds");
    Peer { node, creds, _dir: dir }
}

/// [`peer`] without `ca.pem` in its data directory: a store that checks no certificate for
/// new origins (it takes a genesis on its key alone), as one that never joined a cluster.
pub fn peer_without_ca_file(ca: &Ca) -> Peer {
    let p = peer(ca);
    std::fs::remove_file(p._dir.path().join(CA_CERT_FILE)).expect("remove ca.pem");
    p
}

/// `p`'s ops as it stores them, its genesis with its certificate attached (as it sends them).
pub fn sent_ops(p: &Peer) -> Vec<feral_log::OpBytes> {
    let mut ops = super::stored_ops(&p.node);
    let own = p.node.wal().origin();
    for op in ops.iter_mut() {
        if op.head().is_ok_and(|h| h.origin == own && h.seq == 1) {
            assert!(op.attach_certificate(&p.creds.chain[0]), "a genesis takes its certificate");
        }
    }
    ops
}

/// Serves `p` on an ephemeral loopback port until the returned sender is dropped.
pub fn start_server(
    p: &Peer,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let endpoint = server_endpoint(&p.creds, LOCALHOST.parse().expect("addr")).expect("server");
    let addr = endpoint.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        endpoint,
        p.node.clone(),
        p.creds.cluster_id(),
        Timeouts::default(),
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

/// A client of `p` with `options`.
pub fn syncer(p: &Peer, options: SyncOptions) -> Syncer<Node> {
    Syncer {
        host: p.node.clone(),
        endpoint: client_endpoint(&p.creds, LOCALHOST.parse().expect("addr"), true)
            .expect("client"),
        cluster_id: p.creds.cluster_id(),
        locks: Arc::new(PeerLocks::default()),
        options,
    }
}

/// Asserts a sync succeeded.
pub fn ok(result: &SyncResult) {
    assert!(result.success, "{result:?}");
}

/// Stops servers from [`start_server`] and waits for each to end.
pub async fn stop_all(
    servers: Vec<(SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
) {
    for (_, stop, task) in servers {
        drop(stop);
        task.await.expect("server task");
    }
}
