//! A backup taken while appends run restores to a consistent store: the restored log is a
//! prefix of the source's (every op it holds is the source's op at the same LSN), it passes
//! the check, its projection has a row per op, and it has a new origin.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{all_ops, doc, open};
use feral_memory::backup;

#[test]
fn a_backup_under_load_restores_to_a_consistent_prefix() {
    let root = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(open(&root.path().join("store")));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (node, stop) = (node.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || i < 50 {
                    node.append_episode(&doc(&format!("w{w}-{i}"), "s", i as f64), None)
                        .expect("append");
                    i += 1;
                }
                i
            })
        })
        .collect();
    // Wait (on a condition, with a deadline) until the writers have sealed a few segments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while node.status().segments < 3 {
        assert!(std::time::Instant::now() < deadline, "writers made no progress");
        std::thread::yield_now();
    }
    let manifests: Vec<_> = (0..3)
        .map(|k| node.backup(&root.path().join(format!("bk{k}"))).expect("backup under load"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    let written: usize = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    let source: Vec<_> = all_ops(&node).into_iter().map(|r| r.op).collect();
    assert_eq!(source.len(), written);
    for (k, manifest) in manifests.iter().enumerate() {
        let into = root.path().join(format!("restored{k}"));
        let restored =
            backup::restore(&root.path().join(format!("bk{k}")), &into, false, common::config())
                .expect("restore");
        assert_ne!(restored.origin, node.wal().origin().to_string(), "a restore gets a new origin");
        let copy = open(&into);
        let report = copy.check();
        assert!(report.ok, "backup {k}: {report:?}");
        let held: Vec<_> = all_ops(&copy).into_iter().map(|r| (r.lsn, r.op)).collect();
        assert!(held.len() as u64 >= manifest.durable_lsn, "backup {k} holds its durable LSN");
        for (lsn, op) in &held {
            assert_eq!(
                op,
                &source[*lsn as usize - 1],
                "backup {k}: LSN {lsn} differs from the source"
            );
        }
        let stats = copy.status().projection;
        assert_eq!(stats.episodes, held.len() as u64, "backup {k}: a row per op");
        copy.append_episode(&doc("new", "s", 1.0), None).expect("restored store is writable");
        copy.close().expect("close");
    }
}

/// `feral-node backup` while a node runs goes through its API (`POST /v1/backup`) and does
/// not stop it: three writers keep appending through the API meanwhile; the backup restores
/// into a store whose check passes and whose episodes are all the source's. `rebuild` goes
/// through the running node too.
#[test]
fn a_backup_through_a_running_node_under_three_writers_restores() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("store");
    let node = common::RunningNode::start(&data, &[]);
    let stop = AtomicBool::new(false);
    let (backup, counts) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (api, stop) = (node.api(), &stop);
                s.spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) || i < 20 {
                        let (code, body) = api
                            .call(
                                "POST",
                                "/v1/episodes",
                                Some(&doc(&format!("w{w}-{i}"), "s", i as f64)),
                            )
                            .expect("append");
                        assert!(code == 200 || code == 201, "{code} {body}");
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        let api = node.api();
        common::wait_for("the writers to have written", std::time::Duration::from_secs(30), || {
            api.call("GET", "/v1/status", None).expect("status").1["durable_lsn"].as_u64()
                >= Some(30)
        });
        let out = common::feral_node()
            .arg("--data")
            .arg(&data)
            .args(["backup", "--json", "--to"])
            .arg(root.path().join("backup"))
            .output()
            .expect("backup");
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<usize> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
        (out, counts)
    });
    assert!(backup.status.success(), "{}", String::from_utf8_lossy(&backup.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&backup.stdout).expect("manifest");
    assert!(manifest["durable_lsn"].as_u64() > Some(0), "{manifest}");
    // The node kept serving: a write after the backup is taken.
    let (code, _) =
        node.api().call("POST", "/v1/episodes", Some(&doc("after", "s", 1.0))).expect("append");
    assert!(code == 200 || code == 201);
    // A bad target is refused with a clear error, and nothing is written.
    let (code, body) = node
        .api()
        .call("POST", "/v1/backup", Some(&serde_json::json!({"to": "relative/path"})))
        .expect("call");
    assert_eq!((code, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    // A rebuild through the running node: index, projection and search index recreated from
    // the log, and the node goes on serving what it held.
    let out = common::feral_node()
        .arg("--data")
        .arg(&data)
        .args(["rebuild", "--json"])
        .output()
        .expect("rebuild");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rebuilt: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rebuilt");
    assert!(rebuilt["ops_projected"].as_u64() > Some(0), "{rebuilt}");
    // A restore onto the running node's directory is refused, saying how to do it.
    let out = common::feral_node()
        .arg("--data")
        .arg(&data)
        .args(["restore", "--force", "--from"])
        .arg(root.path().join("backup"))
        .output()
        .expect("restore");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("stop the node") && said.contains("then start it again"), "{said}");
    let (code, _) = node.api().call("GET", "/v1/episodes/after", None).expect("read");
    assert_eq!(code, 200, "a row written before the rebuild is read after it");
    assert!(node.stop());
    let restored = root.path().join("restored");
    let out = common::feral_node()
        .arg("--data")
        .arg(&restored)
        .args(["restore", "--from"])
        .arg(root.path().join("backup"))
        .output()
        .expect("restore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let source = open(&data);
    let copy = open(&restored);
    assert!(copy.check().ok);
    let ids = |n: &feral_memory::Node| -> std::collections::BTreeSet<String> {
        all_ops(n).into_iter().filter(|r| r.op.table == "episodes").map(|r| r.op.row_id).collect()
    };
    let (all, kept) = (ids(&source), ids(&copy));
    assert!(!kept.is_empty() && kept.is_subset(&all), "the backup holds a prefix of the source");
    assert_eq!(all.len(), counts.iter().sum::<usize>() + 1, "every write of the writers");
}
