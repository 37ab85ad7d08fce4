//! Resume tried while the disk is still full, then space freed, then resume (on a real tmpfs,
//! as root; skipped with a printed reason otherwise): the store comes back. The early resumes
//! fail and say `disk_full` (the real pause), never a projection that "is not a redb
//! database"; the check while paused reports no false log corruption; after the space is
//! freed one resume clears everything, appends work, and the store checks clean after a
//! restart.

mod common;

use common::{Tmpfs, doc, feral_node, fill_device, fill_device_as, open};
use serde_json::json;

#[test]
fn resume_while_still_full_then_freed_space_then_resume_recovers() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let data = fs.path().join("store");
    let node = open(&data);
    node.append_episode(&doc("before", "s", 1.0), None).expect("append");
    let filler = fill_device(fs.path());
    let mut big = doc("x", "s", 1.0);
    big["detail"] = json!("d".repeat(10_000));
    let mut refused = None;
    for i in 0..5000 {
        big["id"] = json!(format!("x{i}"));
        if let Err(e) = node.append_episode(&big, None) {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("the disk filled");
    assert!(refused.is_disk_full(), "{refused}");
    // Space freed after the refusal (the search index removes the files of a failed or merged
    // segment, partly from its own threads) is taken again before each resume, so the disk
    // really is full when it runs.
    node.settle();
    let mut topups = Vec::new();
    for attempt in 0..3 {
        topups.push(fill_device_as(fs.path(), &format!("filler-{attempt}")));
        let report = node.resume();
        assert!(
            !report.ok,
            "attempt {attempt}: still full, so still paused: {report:?} after {refused}"
        );
        let text = serde_json::to_string(&report).expect("json");
        assert!(!text.contains("redb database") && !text.contains("already open"), "{text}");
        let status = serde_json::to_value(node.status()).expect("json");
        assert_eq!(status["io_paused"], true);
        let shown = status.to_string();
        assert!(
            shown.contains("disk_full") || shown.contains("disk full"),
            "the real pause: {shown}"
        );
        let check = node.check();
        assert_ne!(
            check.wal,
            feral_log::PartStatus::Corruption,
            "no false log corruption: {check:?}"
        );
        assert!(node.append_episode(&doc("refused", "s", 1.0), None).is_err(), "writes refused");
    }
    std::fs::remove_file(filler).expect("free space");
    for topup in topups {
        std::fs::remove_file(topup).expect("free space");
    }
    let report = node.resume();
    assert!(
        report.ok,
        "one resume after freeing space: {}",
        serde_json::to_string(&report).expect("json")
    );
    node.append_episode(&doc("after", "s", 2.0), None).expect("writes work again");
    assert!(node.episode("before").expect("read").is_some(), "nothing acknowledged was lost");
    node.close().expect("close");
    let out =
        feral_node().arg("--data").arg(&data).args(["check", "--json"]).output().expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let node = open(&data);
    assert!(node.episode("after").expect("read").is_some());
    node.close().expect("close");
}
