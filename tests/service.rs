//! The node service: with mDNS disabled and static peers given, a node starts, lists every peer
//! as `static`, and converges with them on its schedule; inside a fresh network namespace (as
//! root; skipped otherwise), two services find each other by real mDNS and converge without any
//! static peer.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{doc, open};
use feral_memory::Node;
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::discovery::PeerSource;
use feral_transport::tls::{Ca, Credentials};

#[path = "../transport/tests/common/netns.rs"]
mod netns;

use netns::{inside_fresh_netns, loopback_with_multicast, run_in_netns};

struct Member {
    node: Arc<Node>,
    creds: Credentials,
    _dir: tempfile::TempDir,
}

fn member(ca: &Ca, name: &str) -> Member {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(open(dir.path()));
    for i in 0..50 {
        node.append_episode(&doc(&format!("{name}-{i}"), "s", i as f64), None).expect("append");
    }
    let cert = ca.issue_default(node.key()).expect("issue");
    let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).expect("creds");
    Member { node, creds, _dir: dir }
}

fn config(mdns: bool, static_peers: Vec<SocketAddr>) -> ServiceConfig {
    ServiceConfig {
        timeouts: Default::default(),
        scrub: Default::default(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        sync_interval: Duration::from_secs(30),
        mdns,
        static_peers,
    }
}

async fn converge(a: &Node, b: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (da, db) = (a.digest().expect("digest"), b.digest().expect("digest"));
        if da == db && da.ops == 100 {
            return;
        }
        assert!(Instant::now() < deadline, "did not converge: {da:?} vs {db:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mdns_disabled_static_peers_are_used_and_sync() {
    let ca = Ca::generate().expect("ca");
    let (a, b) = (member(&ca, "a"), member(&ca, "b"));
    let sb = Service::start(b.node.clone(), &b.creds, config(false, vec![])).expect("start b");
    let sa = Service::start(a.node.clone(), &a.creds, config(false, vec![sb.local_addr()]))
        .expect("start a");
    let peers = sa.peers();
    assert_eq!(peers.len(), 1);
    assert!(peers.iter().all(|p| p.source == PeerSource::Static));
    converge(&a.node, &b.node).await;
    let schedule = sa.schedule();
    assert_eq!(schedule.len(), 1);
    assert_eq!(schedule[0].failures, 0);
    let result = sa.sync_now(sb.local_addr()).await.expect("a known peer");
    assert!(result.success && result.sent == 0 && result.received == 0, "{result:?}");
    sa.stop().await;
    sb.stop().await;
}

#[test]
fn two_services_find_each_other_by_mdns_and_converge() {
    run_in_netns("inner_mdns_converge");
}

#[test]
#[ignore = "runs only inside the network namespace its outer test creates"]
fn inner_mdns_converge() {
    assert!(inside_fresh_netns(), "refusing to run mDNS outside a fresh network namespace");
    loopback_with_multicast();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let ca = Ca::generate().expect("ca");
        let (a, b) = (member(&ca, "a"), member(&ca, "b"));
        let sa = Service::start(a.node.clone(), &a.creds, config(true, vec![])).expect("start a");
        let sb = Service::start(b.node.clone(), &b.creds, config(true, vec![])).expect("start b");
        converge(&a.node, &b.node).await;
        let found = sa.peers();
        assert!(found.iter().all(|p| p.source == PeerSource::Mdns), "{found:?}");
        assert!(found.iter().any(|p| p.addr.port() == sb.local_addr().port()), "{found:?}");
        sa.stop().await;
        sb.stop().await;
        println!("two services found each other by mDNS and converged");
    });
}
