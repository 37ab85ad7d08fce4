//! A sync whose receiver (a real `feral-node run` process) is SIGKILLed midway, then re-run:
//! the stores converge, and the receiver holds every op exactly once.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{all_ops, doc, feral_node, open};
use feral_transport::driver::client_endpoint;
use feral_transport::tls::{Ca, Credentials};
use feral_transport::{PeerLocks, SyncOptions, Syncer};

const OPS: usize = 20_000;

/// Starts `feral-node run` on an ephemeral port; returns the child and its address.
fn start_receiver(data: &Path) -> (Child, SocketAddr) {
    let mut child = feral_node()
        .arg("--data")
        .arg(data)
        .args(["run", "--no-mdns", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut line).expect("read");
    // Keep draining what it prints, so the node never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr)
}

fn projection_bytes(data: &Path) -> u64 {
    std::fs::metadata(data.join("episodes.redb")).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_sync_converges_on_the_next_sync_without_duplicates() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca_dir = root.path().join("ca");
    let ca = Ca::generate().expect("ca");
    ca.save(&ca_dir, false).expect("save ca");
    // The sender, in this process.
    let a = Arc::new(open(&root.path().join("a")));
    for start in (0..OPS).step_by(1000) {
        let batch = (start..start + 1000)
            .map(|i| {
                let e =
                    a.prepare_episode(&doc(&format!("a{i}"), "s", i as f64), None).expect("valid");
                (e, None)
            })
            .collect();
        a.append_episodes(batch).expect("append");
    }
    let cert = ca.issue_default(a.key()).expect("issue");
    // Installed as `certs issue` does: the sender attaches it to its genesis when it sends it.
    let cert_file = root.path().join("a").join(feral_transport::tls::NODE_CERT_FILE);
    feral_transport::tls::write_file(&cert_file, cert.as_bytes()).expect("node.pem");
    let creds = Credentials::from_pem(&cert, a.key(), &ca.cert_pem).expect("creds");
    // The receiver, a real process.
    let b_dir = root.path().join("b");
    for args in [vec!["init", "--segment-bytes", "262144"], vec!["certs", "issue", "--ca"]] {
        let mut cmd = feral_node();
        cmd.arg("--data").arg(&b_dir).args(&args);
        if args[0] == "certs" {
            cmd.arg(&ca_dir);
        }
        assert!(cmd.output().expect("run").status.success(), "{args:?}");
    }
    let syncer = Arc::new(Syncer {
        host: a.clone(),
        endpoint: client_endpoint(&creds, "127.0.0.1:0".parse().expect("addr"), true)
            .expect("client"),
        cluster_id: creds.cluster_id(),
        locks: Arc::new(PeerLocks::default()),
        options: SyncOptions { attempts: 1, ..SyncOptions::default() },
    });
    let (mut child, addr) = start_receiver(&b_dir);
    let empty = projection_bytes(&b_dir);
    let first = tokio::spawn({
        let syncer = syncer.clone();
        async move { syncer.sync_with_peer(addr).await }
    });
    // Kill the receiver once it has applied part of the stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while projection_bytes(&b_dir) <= empty && !first.is_finished() {
        assert!(Instant::now() < deadline, "the receiver never applied anything");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let first = first.await.expect("first sync");
    println!("first sync after the kill: {first:?}");
    // Restart and sync again.
    let (mut child, addr) = start_receiver(&b_dir);
    let second = syncer.sync_with_peer(addr).await;
    assert!(second.success, "{second:?}");
    // SIGTERM: the receiver shuts down cleanly.
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success(), "clean shutdown on SIGTERM");
    let b = open(&b_dir);
    let ops = all_ops(&b);
    let ids: HashSet<_> = ops.iter().map(|r| r.op.op_id).collect();
    assert_eq!(ids.len(), ops.len(), "no op twice in the receiver's log");
    assert_eq!(ops.len(), OPS);
    assert_eq!(b.digest().expect("digest"), a.digest().expect("digest"));
    assert!(b.check().ok);
}
