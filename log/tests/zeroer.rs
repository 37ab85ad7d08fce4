//! The zeroer writes zeros over the active segment's data area from its own thread, beside
//! appends: it never touches a frame. Appends made while it runs (from the first moment after
//! open, in a full-size segment, and across a roll into a segment it then zeroes) all read back
//! and verify after a restart, and the log's tail is zeros where recovery expects them.

mod common;

use common::{all_ops, draft};
use feral_log::{Config, Wal};

#[test]
fn appends_beside_the_zeroer_all_verify_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 4 MiB segments: the zeroer is still writing when the appends start, and several rolls
    // hand it fresh segments.
    let config = || Config { segment_bytes: 4 * 1024 * 1024, ..Config::default() };
    let wal = Wal::open(dir.path(), config()).expect("open");
    let mut appended = Vec::new();
    for round in 0..200u64 {
        let batch = (0..256).map(|i| draft(round * 1000 + i, 200 + (i as usize % 300))).collect();
        appended.extend(wal.append_batch(batch).expect("append"));
        appended.push(wal.append(draft(900_000 + round, 50)).expect("single append"));
    }
    assert!(wal.status().segments >= 4, "want several rolls, got {}", wal.status().segments);
    let report = wal.check();
    assert!(report.ok, "{report:?}");
    drop(wal);
    let wal = Wal::open(dir.path(), config()).expect("reopen");
    assert_eq!(wal.pause(), None, "a clean restart");
    assert_eq!(wal.status().torn_tail, None, "no torn tail: nothing but zeros after the frames");
    let ops = all_ops(&wal);
    assert_eq!(ops.len(), appended.len());
    for (a, r) in appended.iter().zip(&ops) {
        assert_eq!((a.op_id, a.lsn), (r.op.op_id, r.lsn));
    }
    let report = wal.check();
    assert!(report.ok && report.records == appended.len() as u64, "{report:?}");
}
