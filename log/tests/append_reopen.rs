//! Append, seal many segments, reopen, read back by LSN, op_id and (origin, seq); check passes.

mod common;

use common::{all_ops, draft, open};

#[test]
fn ops_survive_reopen_across_many_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let origin = wal.origin();
    let mut appended = Vec::new();
    for i in 0..300 {
        let a = wal.append(draft(i, 200)).expect("append");
        assert!(!a.duplicate);
        assert_eq!(a.lsn, i + 1);
        assert_eq!(a.seq, i + 1);
        appended.push(a);
    }
    assert!(wal.status().segments > 5, "expected many segments: {:?}", wal.status());
    let report = wal.check();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 300);
    drop(wal);

    let wal = open(dir.path());
    assert_eq!(wal.origin(), origin);
    assert_eq!(wal.durable_lsn(), 300);
    let ops = all_ops(&wal);
    assert_eq!(ops.len(), 300);
    for (a, r) in appended.iter().zip(&ops) {
        assert_eq!((a.op_id, a.lsn, a.hlc), (r.op.op_id, r.lsn, r.op.hlc));
    }
    let got = wal.get(&appended[150].op_id).expect("get").expect("present");
    assert_eq!(got.op.row_id, "row-150");
    let range = wal.range_by_origin(&origin, 10, 19, 100).expect("range");
    assert_eq!(range.iter().map(|r| r.op.seq).collect::<Vec<_>>(), (10..=19).collect::<Vec<_>>());
    assert_eq!(wal.heads().expect("heads"), vec![(origin, 300)]);
    let next = wal.append(draft(300, 10)).expect("append after reopen");
    assert_eq!((next.lsn, next.seq), (301, 301));
    assert!(next.hlc > appended[299].hlc, "clock must not go back across restart");
    assert!(wal.check().ok);
}

#[test]
fn second_opener_gets_a_clear_lock_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _wal = open(dir.path());
    let err = feral_log::Wal::open(dir.path(), common::config(common::SMALL_SEGMENT_BYTES))
        .expect_err("locked");
    assert!(matches!(err, feral_log::Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
}

/// A child spawned by another thread holds a copy of the lock's descriptor until its exec:
/// closing a log and opening it again at once must still work while children are spawned.
#[test]
fn reopening_while_another_thread_spawns_children_is_not_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = std::process::Command::new("true").status().expect("spawn true");
                assert!(status.success());
            }
        })
    };
    for round in 0..200 {
        let wal = feral_log::Wal::open(dir.path(), common::config(common::SMALL_SEGMENT_BYTES));
        let wal = wal.unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(wal);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spawner.join().expect("spawner");
}
