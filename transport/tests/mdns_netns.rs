//! Real mDNS, but never on the host's interfaces: the test re-runs itself inside a fresh
//! network namespace (`unshare -n`, as root; skipped with a message otherwise) where only
//! loopback exists. Two discoveries find each other (ignoring themselves), and a departed one
//! is removed. With loopback down, discovery starts without an error and the static peers stand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use feral_transport::discovery::{Discovery, PeerBook, PeerSource, add_static, parse_static_peers};

#[path = "common/netns.rs"]
mod netns;

use netns::{inside_fresh_netns, loopback_with_multicast, run_in_netns};

/// Polls a condition, with a deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_nodes_find_each_other_by_mdns_in_a_netns() {
    run_in_netns("inner_two_nodes_find_each_other");
}

#[test]
#[ignore = "runs only inside the network namespace its outer test creates"]
fn inner_two_nodes_find_each_other() {
    assert!(inside_fresh_netns(), "refusing to run mDNS outside a fresh network namespace");
    loopback_with_multicast();
    let (book_a, book_b) = (Arc::new(PeerBook::default()), Arc::new(PeerBook::default()));
    let a = Discovery::start(book_a.clone(), "aaaa", 7001, "1");
    let b = Discovery::start(book_b.clone(), "bbbb", 7002, "1");
    assert!(a.is_running() && b.is_running());
    let knows = |book: &PeerBook, id: &str| {
        book.list().iter().any(|p| p.node_id.as_deref() == Some(id) && p.source == PeerSource::Mdns)
    };
    wait_until("both to be found", || knows(&book_a, "bbbb") && knows(&book_b, "aaaa"));
    assert!(!knows(&book_a, "aaaa") && !knows(&book_b, "bbbb"), "a node ignores itself");
    let port =
        book_a.list().iter().find(|p| p.node_id.as_deref() == Some("bbbb")).map(|p| p.addr.port());
    assert_eq!(port, Some(7002));
    b.shutdown();
    wait_until("the departed peer to be removed", || !knows(&book_a, "bbbb"));
    a.shutdown();
    println!("found each other over loopback mDNS, and the departure was seen");
}

#[test]
fn without_mdns_the_static_peers_stand() {
    run_in_netns("inner_without_mdns_the_static_peers_stand");
}

#[test]
#[ignore = "runs only inside the network namespace its outer test creates"]
fn inner_without_mdns_the_static_peers_stand() {
    assert!(inside_fresh_netns(), "refusing to run mDNS outside a fresh network namespace");
    // Loopback stays down: mDNS has no interface at all.
    let book = Arc::new(PeerBook::default());
    add_static(&book, &parse_static_peers("127.0.0.1:7411,bad entry,127.0.0.1:7412"));
    let discovery = Discovery::start(book.clone(), "cccc", 7003, "1");
    let peers = book.list();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.source == PeerSource::Static));
    discovery.shutdown();
    println!("discovery started without an interface and the static peers stand");
}
