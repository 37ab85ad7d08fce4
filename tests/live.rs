//! Push on write (issue 16): three `feral-node run` processes in a chain A → B → C with the
//! default 30 s schedule; a write on A is read on C within seconds, passed on by B; a burst
//! of 1,000 single writes costs far fewer sessions; a peer that is down does not hold up the
//! push to the others.

mod common;

use std::time::{Duration, Instant};

use common::{RunningNode, wait_for};
use feral_memory::client::ApiClient;
use serde_json::{Value, json};

fn get(api: &ApiClient, path: &str) -> (u16, Value) {
    api.call("GET", path, None).expect("answer")
}

fn write(api: &ApiClient, id: &str) {
    let doc = json!({"id": id, "session_id": "live", "event_type": "chat", "summary": id});
    let (status, answer) = api.call("POST", "/v1/episodes", Some(&doc)).expect("answer");
    assert_eq!(status, 200, "{answer}");
}

fn has(api: &ApiClient, id: &str) -> bool {
    get(api, &format!("/v1/episodes/{id}")).0 == 200
}

/// Sessions this node started, by result, from `/metrics`.
fn sessions(api: &ApiClient) -> u64 {
    let answer =
        api.send_blocking(feral_memory::client::Call::new("GET", "/metrics")).expect("metrics");
    String::from_utf8_lossy(&answer.body)
        .lines()
        .filter(|l| l.starts_with("feral_sync_sessions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Every peer in the node's status has synced once (the start-up sync, due at once).
fn synced_once(api: &ApiClient) -> bool {
    let (_, status) = get(api, "/v1/status");
    status["peers"]
        .as_array()
        .is_some_and(|p| !p.is_empty() && p.iter().all(|p| p["last_sync_secs_ago"].is_u64()))
}

fn start_chain(root: &std::path::Path) -> (RunningNode, RunningNode, RunningNode) {
    let c = RunningNode::start(&root.join("c"), &[]);
    let b = RunningNode::start(&root.join("b"), &["--peers", &c.sync_addr.to_string()]);
    let a = RunningNode::start(&root.join("a"), &["--peers", &b.sync_addr.to_string()]);
    wait_for("the start-up syncs", Duration::from_secs(20), || {
        synced_once(&a.api()) && synced_once(&b.api())
    });
    (a, b, c)
}

#[test]
fn a_write_on_a_reaches_c_through_b_well_before_the_schedule() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = start_chain(root.path());
    let (api_a, api_c) = (a.api(), c.api());
    for i in 0..3 {
        let id = format!("hop-{i}");
        let started = Instant::now();
        write(&api_a, &id);
        // The schedule's next sync is 30 s away: only the push brings it this soon.
        wait_for("the write on A read on C", Duration::from_secs(5), || has(&api_c, &id));
        eprintln!("{id}: A to C in {} ms", started.elapsed().as_millis());
    }
    assert!(a.stop() && b.stop() && c.stop());
}

#[test]
fn a_burst_of_1000_single_writes_costs_far_fewer_sessions() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = start_chain(root.path());
    let (api_a, api_c) = (a.api(), c.api());
    let before = sessions(&api_a);
    let n = 1000;
    for i in 0..n {
        write(&api_a, &format!("burst-{i}"));
    }
    wait_for("the whole burst on C", Duration::from_secs(20), || {
        get(&api_c, "/v1/counts").1["episodes"].as_u64() == Some(n)
    });
    let used = sessions(&api_a) - before;
    eprintln!("{n} writes on A: {used} sessions from A");
    // Each write takes a few ms here; sessions repeat at most every PUSH_REPEAT_GAP.
    assert!(used <= n / 10, "{used} sessions for {n} writes");
    assert!(used >= 1);
    assert!(a.stop() && b.stop() && c.stop());
}

#[test]
fn a_peer_that_is_down_does_not_hold_up_the_push_to_the_others() {
    let root = tempfile::tempdir().expect("tempdir");
    // Nothing answers on this port: a session with it waits out the connect timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let down = silent.local_addr().expect("addr").to_string();
    let b = RunningNode::start(&root.path().join("b"), &[]);
    let peers = format!("{down},{}", b.sync_addr);
    let a = RunningNode::start(&root.path().join("a"), &["--peers", &peers]);
    let (api_a, api_b) = (a.api(), b.api());
    let connect = feral_transport::Timeouts::default().connect;
    for i in 0..3 {
        let id = format!("past-the-dead-{i}");
        let started = Instant::now();
        write(&api_a, &id);
        wait_for("the write on A read on B", connect, || has(&api_b, &id));
        eprintln!("{id}: A to B in {} ms", started.elapsed().as_millis());
    }
    assert!(a.stop() && b.stop());
}

#[test]
fn peers_show_sessions_what_each_side_lacked_and_the_last_error() {
    let root = tempfile::tempdir().expect("tempdir");
    let b = RunningNode::start(&root.path().join("b"), &[]);
    for i in 0..5 {
        write(&b.api(), &format!("on-b-{i}"));
    }
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let down = silent.local_addr().expect("addr");
    let a = RunningNode::start(&root.path().join("a"), &["--peers", &down.to_string()]);
    let api = a.api();
    // A session on demand reports how far apart the two were when it began.
    let (status, result) = api
        .call("POST", "/v1/sync", Some(&json!({"peer": b.sync_addr.to_string()})))
        .expect("sync");
    assert_eq!(status, 200, "{result}");
    let result = &result[0];
    assert_eq!(
        (result["lacked"].as_u64(), result["peer_lacked"].as_u64()),
        (Some(5), Some(0)),
        "{result}"
    );
    // Per origin: B's one origin, five ops this node lacked.
    let (_, b_status) = get(&b.api(), "/v1/status");
    let b_origin = b_status["origin"].as_str().expect("origin").to_string();
    assert_eq!(result["by_origin"][&b_origin], json!({"peer_lacked": 0, "lacked": 5}), "{result}");
    let entry = |addr: std::net::SocketAddr| {
        let (_, list) = get(&api, "/v1/peers");
        list.as_array()
            .and_then(|l| l.iter().find(|p| p["addr"] == addr.to_string()).cloned())
            .unwrap_or(Value::Null)
    };
    let sync_b = entry(b.sync_addr)["sync"].clone();
    assert!(sync_b["last_sync_secs_ago"].is_u64(), "{sync_b}");
    assert!(sync_b["lacked"].is_u64() && sync_b["peer_lacked"].is_u64(), "{sync_b}");
    assert!(sync_b["in_flight"].is_boolean(), "{sync_b}");
    assert!(sync_b.get("by_origin").is_none_or(Value::is_object), "{sync_b}");
    wait_for("the silent peer's failure", Duration::from_secs(30), || {
        entry(down)["sync"]["last_error"].is_string()
    });
    let metrics =
        api.send_blocking(feral_memory::client::Call::new("GET", "/metrics")).expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    for name in ["peer_ahead_ops", "peer_lacked_ops", "peer_sessions_in_flight"] {
        let line = format!("feral_{name}{{peer=\"{}\"}} ", b.sync_addr);
        assert!(text.contains(&line), "{line} in /metrics");
    }
    // The same as a table.
    let printed =
        common::feral_node().arg("--data").arg(&a.data).arg("peers").output().expect("peers");
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let table = String::from_utf8_lossy(&printed.stdout);
    assert!(table.lines().next().is_some_and(|h| h.starts_with("PEER")), "{table}");
    let row = table.lines().find(|l| l.starts_with(&b.sync_addr.to_string())).expect("B's row");
    assert!(row.contains("ago"), "{row}");
    let row = table.lines().find(|l| l.starts_with(&down.to_string())).expect("the silent row");
    assert!(row.contains("never"), "{row}");
    assert!(a.stop() && b.stop());
}

/// `run` stops promptly on SIGTERM even with a session in flight: a peer that never answers
/// holds a session for its connect timeout and retries (seconds), and the stop does not wait
/// for it.
#[test]
fn run_stops_at_once_on_sigterm_with_a_session_in_flight() {
    let root = tempfile::tempdir().expect("tempdir");
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let down = silent.local_addr().expect("addr").to_string();
    let mut a = RunningNode::start(&root.path().join("a"), &["--peers", &down]);
    let api = a.api();
    wait_for("a session with the silent peer in flight", Duration::from_secs(10), || {
        let (_, peers) = get(&api, "/v1/peers");
        peers.as_array().is_some_and(|p| p.iter().any(|p| p["sync"]["in_flight"] == true))
    });
    let started = Instant::now();
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    // The session would hold it 5 s per attempt, and an unanswered connection's drain 3 s.
    let within = Duration::from_secs(2);
    let status = loop {
        if let Some(status) = a.child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < within, "still running {within:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    eprintln!("stopped in {} ms", started.elapsed().as_millis());
}

/// `certs renew` while the node runs: the new certificate is written and taken by the running
/// node at once, and syncing goes on both ways (B pushes to A and pulls from A) with it. A
/// certificate from another cluster's CA is refused and the old one stays.
#[test]
fn a_certificate_renewed_while_running_keeps_syncing() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca_dir = root.path().join("ca");
    let other_ca = root.path().join("other-ca");
    for dir in [&ca_dir, &other_ca] {
        let out = common::feral_node().args(["certs", "new-ca", "--out"]).arg(dir).output();
        assert!(out.expect("new-ca").status.success());
    }
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    for data in [&a_dir, &b_dir] {
        for args in [vec!["init"], vec!["certs", "issue", "--ca", ca_dir.to_str().expect("utf-8")]]
        {
            let out = common::feral_node().arg("--data").arg(data).args(&args).output();
            assert!(out.expect("run").status.success(), "{args:?}");
        }
    }
    let a = RunningNode::start(&a_dir, &[]);
    // B pulls from A every second (A knows no peer: what it writes reaches B by B's pulls).
    let b =
        RunningNode::start(&b_dir, &["--peers", &a.sync_addr.to_string(), "--sync-interval", "1"]);
    let before = std::fs::read_to_string(a_dir.join("node.pem")).expect("node.pem");
    let renew = |ca: &std::path::Path| {
        common::feral_node()
            .arg("--data")
            .arg(&a_dir)
            .args(["certs", "renew", "--ca"])
            .arg(ca)
            .output()
            .expect("renew")
    };
    let out = renew(&ca_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("took its new certificate"));
    let after = std::fs::read_to_string(a_dir.join("node.pem")).expect("node.pem");
    assert_ne!(before, after, "a new certificate");
    // Both directions keep working with it.
    let (code, _) = get(&a.api(), "/v1/status");
    assert_eq!(code, 200);
    let post = |n: &RunningNode, id: &str| {
        let (code, _) =
            n.api().call("POST", "/v1/episodes", Some(&common::doc(id, "s", 1.0))).expect("post");
        assert!(code == 200 || code == 201);
    };
    post(&a, "from-a");
    post(&b, "from-b");
    let has = |n: &RunningNode, id: &str| get(&n.api(), &format!("/v1/episodes/{id}")).0 == 200;
    wait_for("both writes on both nodes", Duration::from_secs(30), || {
        has(&b, "from-a") && has(&a, "from-b")
    });
    // Another cluster's certificate is refused, and the node keeps the one it has.
    let out = renew(&other_ca);
    assert!(!out.status.success(), "another cluster's CA is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(a_dir.join("node.pem")).expect("node.pem"), after);
    post(&a, "after-refusal");
    wait_for("syncing still works", Duration::from_secs(30), || has(&b, "after-refusal"));
}
