//! The parts derived from the log mend themselves: an index or a projection that a check
//! finds damaged is rebuilt from the log by the node (`check_and_repair`, what `GET /v1/check`
//! runs), and a projection that meets a damaged row while a node runs stops, refuses writes
//! for a moment, and is rebuilt by the node itself with no operator's resume.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{RunningNode, doc};
use feral_log::PartStatus;
use serde_json::{Value, json};

const BY_ORIGIN: redb::TableDefinition<'_, (u128, u64), u128> =
    redb::TableDefinition::new("ops_by_origin");
const SEQ_RUNS: redb::TableDefinition<'_, (u128, u64), u128> =
    redb::TableDefinition::new("op_runs_by_origin");
const ROWS: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("episodes");

/// Changes a closed redb file's tables directly, as damage would.
fn tamper(file: &Path, change: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(file).expect("open");
    let txn = db.begin_write().expect("write");
    change(&txn);
    txn.commit().expect("commit");
}

/// A row that no longer decodes, where episode `id` was.
fn garble_row(data: &Path, id: &str) {
    tamper(&data.join("episodes.redb"), |txn| {
        let mut rows = txn.open_table(ROWS).expect("rows");
        assert!(rows.insert(id, b"\xff\xfe not a row".as_slice()).expect("insert").is_some());
    });
}

#[test]
fn a_check_rebuilds_an_index_or_a_projection_it_finds_damaged() {
    for part in ["index", "episodes"] {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("store");
        let before = {
            let node = common::open(&data);
            for i in 0..200 {
                node.append_episode(&doc(&format!("e{i}"), "s", f64::from(i)), None)
                    .expect("append");
            }
            let digest = node.digest().expect("digest");
            assert!(node.wal().status().segments > 2, "several segments, so several runs");
            node.close().expect("close");
            digest
        };
        match part {
            // Seq 1 of this store's origin goes from the by-origin tables (a single or the
            // run it starts: op_ids decide which): the head still agrees with the ops held,
            // so the open does not see it; the check's comparison with the log does.
            "index" => {
                let origin = common::open(&data).wal().origin();
                tamper(&data.join("index.redb"), |txn| {
                    let key = (u128::from_be_bytes(origin.0), 1u64);
                    let mut singles = txn.open_table(BY_ORIGIN).expect("singles");
                    let mut runs = txn.open_table(SEQ_RUNS).expect("runs");
                    let single = singles.remove(key).expect("remove").is_some();
                    let run = runs.remove(key).expect("remove").is_some();
                    assert!(single != run, "seq 1 is held one way");
                })
            }
            _ => garble_row(&data, "e5"),
        }
        let node = common::open(&data);
        assert_eq!(node.wal().pause(), None, "{part}: the open does not see it");
        let (found, repair) = node.check_and_repair();
        assert!(!found.ok, "{part}: {found:?} {repair:?}");
        assert_eq!(found.wal, PartStatus::Ok, "{part}: {found:?}");
        let damaged = if part == "index" { found.index } else { found.episodes };
        assert_eq!(damaged, PartStatus::Corruption, "{part}: {found:?}");
        let repair = repair.expect("a repair ran");
        assert_eq!(repair.rebuilt, vec![part], "{part}: {repair:?}");
        assert!(repair.failed.is_empty() && repair.check.ok, "{part}: {repair:?}");
        assert_eq!(node.repairs(), 1, "{part}");
        assert_eq!(node.status().repairs, 1, "{part}");
        assert_eq!(node.digest().expect("digest"), before, "{part}: the same store again");
        assert!(node.check_and_repair().1.is_none(), "{part}: nothing left to repair");
        let next = node.append_episode(&doc("late", "s", 1e6), None).expect("append");
        assert_eq!(next.seq, 201, "{part}");
    }
}

fn status(api: &feral_memory::client::ApiClient) -> Value {
    let (code, status) = api.call("GET", "/v1/status", None).expect("status");
    assert_eq!(code, 200, "{status}");
    status
}

#[test]
fn a_running_node_rebuilds_a_projection_that_met_a_damaged_row() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("store");
    let docs: Vec<Value> = (0..50).map(|i| doc(&format!("e{i}"), "s", f64::from(i))).collect();
    {
        let node = RunningNode::start(&data, &[]);
        let (code, body) =
            node.api().call("POST", "/v1/episodes", Some(&Value::from(docs))).expect("add");
        assert_eq!(code, 200, "{body}");
        assert!(node.stop(), "a clean stop");
    }
    garble_row(&data, "e7");
    let node = RunningNode::start(&data, &[]);
    let api = node.api();
    assert_eq!(status(&api)["repairs"], 0);
    // Writing e7 again makes the projection read the damaged row: it stops there. The op
    // itself is durable in the log, so the rebuild projects it.
    let mut update = doc("e7", "s", 7.0);
    update["summary"] = json!("written after the damage");
    let (code, body) = api.call("POST", "/v1/episodes", Some(&update)).expect("update");
    assert_eq!(code, 200, "{body}");
    common::wait_for("the node to rebuild its projection", Duration::from_secs(60), || {
        let status = status(&api);
        status["repairs"] == 1 && status["io_paused"] == false
    });
    let status = status(&api);
    assert!(status.get("pause").is_none() && status.get("projection_fault").is_none(), "{status}");
    let (code, e7) = api.call("GET", "/v1/episodes/e7", None).expect("get");
    assert_eq!((code, e7["summary"].as_str()), (200, Some("written after the damage")), "{e7}");
    let (code, body) = api.call("GET", "/v1/episodes?limit=100", None).expect("list");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["episodes"].as_array().map(Vec::len), Some(50), "{body}");
    let (code, check) = api.call("GET", "/v1/check", None).expect("check");
    assert_eq!(
        (code, check["ok"].as_bool(), check.get("repair").is_none()),
        (200, Some(true), true),
        "{check}"
    );
    // Writes go on.
    let (code, body) = api.call("POST", "/v1/episodes", Some(&doc("e50", "s", 50.0))).expect("add");
    assert_eq!(code, 200, "{body}");
}

/// redb's structure check needs no transaction open: checks beside other checks and digests
/// (each holding read snapshots) wait for those to end instead of reporting the projection or
/// the index failed.
#[test]
fn checks_beside_checks_and_digests_report_no_false_failure() {
    let root = tempfile::tempdir().expect("tempdir");
    let node = common::open(&root.path().join("store"));
    for i in 0..300 {
        node.append_episode(&doc(&format!("e{i}"), "s", f64::from(i)), None).expect("append");
    }
    std::thread::scope(|s| {
        let checks: Vec<_> =
            (0..3).map(|_| s.spawn(|| (0..4).map(|_| node.check()).collect::<Vec<_>>())).collect();
        let digests =
            s.spawn(|| (0..8).map(|_| node.digest().expect("digest")).collect::<Vec<_>>());
        for check in checks {
            for report in check.join().expect("checks") {
                assert!(report.ok, "{report:?}");
            }
        }
        let digests = digests.join().expect("digests");
        assert!(digests.iter().all(|d| *d == digests[0]));
    });
}
