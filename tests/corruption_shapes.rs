//! The one shape of damage that only a whole node has (the log's shapes are in
//! log/tests/corruption_shapes.rs): the episodes projection ahead of the log, as when the log
//! and index come from an older copy than the projection. The projection is derived state,
//! but one ahead of the log is evidence of lost ops, so it is not rebuilt silently: the node
//! opens with the projection stopped for corruption, `check` names it, writes are refused,
//! and `resume` rebuilds it from the log.

mod common;

use common::{doc, open};
use feral_log::PartStatus;

fn copy_files(from: &std::path::Path, to: &std::path::Path, names: &[&str]) {
    for name in names {
        let (from, to) = (from.join(name), to.join(name));
        if from.is_dir() {
            std::fs::create_dir_all(&to).expect("mkdir");
            for entry in std::fs::read_dir(&from).expect("read_dir") {
                let entry = entry.expect("entry");
                std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
            }
        } else {
            std::fs::copy(&from, &to).expect("copy");
        }
    }
}

#[test]
fn projection_ahead_of_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let early = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    let node = open(&data);
    for i in 0..60 {
        node.append_episode(&doc(&format!("e{i}"), "s", 1.0 + i as f64), None).expect("append");
    }
    drop(node);
    copy_files(&data, early.path(), &["wal", "index.redb"]);
    let node = open(&data);
    for i in 60..150 {
        node.append_episode(&doc(&format!("e{i}"), "s", 1.0 + i as f64), None).expect("append");
    }
    drop(node);
    std::fs::remove_dir_all(data.join("wal")).expect("rm wal");
    copy_files(early.path(), &data, &["wal", "index.redb"]);

    let node = open(&data);
    assert!(node.io_paused(), "a projection ahead of the log stops writes");
    let report = node.check();
    assert!(!report.ok, "{report:?}");
    assert_eq!((report.wal, report.index), (PartStatus::Ok, PartStatus::Ok), "{report:?}");
    assert_eq!(report.episodes, PartStatus::Corruption, "{report:?}");
    let detail = serde_json::to_string(&report).expect("json");
    assert!(detail.contains("applied LSN 150"), "{detail}");
    assert!(node.append_episode(&doc("new", "s", 500.0), None).is_err(), "writes refused");
    // Evidence that the log lost acknowledged ops: the node does not rebuild over it itself.
    assert!(node.repair_stopped().is_none(), "not rebuilt without the operator");
    assert!(node.io_paused(), "still paused");

    let report = node.resume();
    assert!(report.ok, "resume rebuilds the projection from the log: {report:?}");
    assert!(!node.io_paused());
    let listed = node.episodes(1000, None).expect("list");
    assert_eq!(listed.len(), 60, "exactly the log's episodes");
    node.append_episode(&doc("new", "s", 500.0), None).expect("append after resume");
    drop(node);
    let node = open(&data);
    assert!(node.check().ok);
    assert_eq!(node.episodes(1000, None).expect("list").len(), 61);
}
