//! One flipped byte in the index file, and one in a sealed log segment: the check reports
//! ok:false with the right code (and the CLI exits 65); restoring the backup and resuming gives
//! ok:true and the digest the store had.

mod common;

use std::path::Path;

use common::{doc, feral_node, open};
use feral_memory::backup;

/// A store with several sealed segments, its backup, and its digest.
fn store_with_backup(
    root: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, String, Vec<feral_log::OpId>) {
    let data = root.join("store");
    let node = open(&data);
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            node.append_episode(&doc(&format!("e{i}"), "s", i as f64), None).expect("append").op_id,
        );
    }
    let bk = root.join("backup");
    node.backup(&bk).expect("backup");
    let digest = node.digest().expect("digest").digest;
    node.close().expect("close");
    (data, bk, digest, ids)
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

fn cli_check_status(data: &Path) -> Option<i32> {
    feral_node().arg("--data").arg(data).arg("check").output().expect("check").status.code()
}

fn restore_and_resume(bk: &Path, data: &Path, digest: &str) {
    // A store some process has open is not moved aside under it.
    let open_elsewhere = open(data);
    let refused = backup::restore(bk, data, true, common::config()).expect_err("locked");
    assert_eq!(refused.code(), "locked", "{refused}");
    drop(open_elsewhere);
    let restored = backup::restore(bk, data, true, common::config()).expect("restore");
    assert!(restored.moved_aside.is_some(), "the damaged store is kept aside, not deleted");
    let node = open(data);
    let report = node.resume();
    assert!(report.ok, "{report:?}");
    assert!(!node.io_paused());
    assert_eq!(
        node.digest().expect("digest").digest,
        digest,
        "restored store has the same ops and rows"
    );
    node.append_episode(&doc("after", "s", 1.0), None).expect("writable after restore");
}

#[test]
fn a_flipped_index_byte_is_reported_then_restore_and_resume_recover() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, bk, digest, ids) = store_with_backup(root.path());
    // Flip a byte of a stored op_id, so the damage is in data the index needs.
    let index = data.join("index.redb");
    let bytes = std::fs::read(&index).expect("read index");
    let id = ids[150].0;
    let at = [id, {
        let mut le = id;
        le.reverse();
        le
    }]
    .iter()
    .find_map(|needle| bytes.windows(16).position(|w| w == needle))
    .expect("op_id stored in the index");
    flip(&index, at + 15);
    let node = open(&data);
    let report = node.check();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.wal, feral_log::PartStatus::Ok);
    assert!(
        report.error.map(|c| c.as_str()).is_some_and(|e| e.starts_with("index_")),
        "{report:?}"
    );
    assert!(report.index_detail.is_some());
    node.close().expect("close");
    assert!(matches!(cli_check_status(&data), Some(65) | Some(1)), "check exits non-zero");
    restore_and_resume(&bk, &data, &digest);
}

#[test]
fn a_flipped_sealed_segment_byte_is_reported_with_location_then_restore_recovers() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, bk, digest, _) = store_with_backup(root.path());
    let first = data.join("wal").join("00000000000000000001.seg");
    flip(&first, 4000);
    // Open reads only headers and footers of sealed segments; the check reads every record.
    let node = open(&data);
    let report = node.check();
    assert!(!report.ok);
    assert_eq!(report.error.map(|c| c.as_str()), Some("wal_corruption"), "{report:?}");
    let at = report.wal_detail.expect("location");
    assert_eq!(at.segment, "00000000000000000001.seg");
    assert!(at.offset <= 4000, "{at:?}");
    let err = node.digest().expect_err("reading the damaged record fails");
    assert_eq!(err.code(), "wal_corruption", "{err}");
    node.close().expect("close");
    assert_eq!(cli_check_status(&data), Some(65));
    restore_and_resume(&bk, &data, &digest);
}
