//! ENOSPC at every Nth write of a 100-op workload, fsync EIO at every Nth sync, and torn
//! writes, through the fault layer (a failed segment creation or seal reports its EIO as
//! `io_error` or `sync_failed`, whichever stage failed): the log pauses, refuses appends without touching the disk,
//! loses no acknowledged op, shows no partial record, and resumes once the fault is gone.

mod common;

use std::sync::Arc;

use common::{all_ops, draft};
use feral_log::fault::{FaultHandle, FaultStorage};
use feral_log::{Error, OpId, PauseKind, Wal};

const OPS: u64 = 100;
const SEGMENT_BYTES: u64 = 4096;

fn open_faulty(dir: &std::path::Path) -> (Wal, FaultHandle) {
    let (storage, handle) = FaultStorage::new();
    let wal = Wal::open(dir, common::config_with(SEGMENT_BYTES, Arc::new(storage))).expect("open");
    (wal, handle)
}

/// Runs the workload with `arm` applied after open; on each failure checks the pause, heals,
/// resumes and retries. Returns the acknowledged op_ids and how many failures were seen.
fn workload(
    dir: &std::path::Path,
    arm: &dyn Fn(&FaultHandle),
    expect: &[PauseKind],
) -> (Vec<OpId>, u32) {
    let (wal, handle) = open_faulty(dir);
    arm(&handle);
    let mut acked = Vec::new();
    let mut failures = 0;
    for i in 0..OPS {
        match wal.append(draft(i, 100)) {
            Ok(done) => acked.push(done.op_id),
            Err(error) => {
                failures += 1;
                let pause = wal.pause().expect("a failed append pauses the log");
                assert!(expect.contains(&pause.kind), "op {i}: {:?} for {error}", pause.kind);
                if expect == [PauseKind::DiskFull] {
                    assert_eq!(error.code(), "disk_full", "{error}");
                }
                let (writes, syncs) = (handle.writes(), handle.syncs());
                let refused = wal.append(draft(i, 100)).expect_err("paused log refuses");
                assert!(matches!(refused, Error::Paused { .. }), "{refused}");
                assert_eq!(
                    (handle.writes(), handle.syncs()),
                    (writes, syncs),
                    "paused append touched the disk"
                );
                handle.free_space();
                let report = wal.resume();
                assert!(report.ok, "op {i}: resume check failed: {report:?}");
                assert!(!wal.io_paused());
                acked.push(wal.append(draft(i, 100)).expect("append after resume").op_id);
            }
        }
    }
    (acked, failures)
}

fn assert_exactly(dir: &std::path::Path, acked: &[OpId], what: &str) {
    let wal = Wal::open(dir, common::config(SEGMENT_BYTES)).expect("reopen");
    assert_eq!(wal.pause(), None, "{what}");
    let report = wal.check();
    assert!(report.ok, "{what}: {report:?}");
    let found: Vec<OpId> = all_ops(&wal).into_iter().map(|r| r.op.op_id).collect();
    assert_eq!(found, acked, "{what}: the log must hold exactly the acknowledged ops, in order");
    let seqs: Vec<u64> = all_ops(&wal).into_iter().map(|r| r.op.seq).collect();
    assert_eq!(seqs, (1..=OPS).collect::<Vec<_>>(), "{what}: seqs contiguous");
}

/// Space-consuming calls (writes + allocations) and syncs of the fault-free workload.
fn dry_run() -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, handle) = open_faulty(dir.path());
    let (writes, syncs) = (handle.writes(), handle.syncs());
    for i in 0..OPS {
        wal.append(draft(i, 100)).expect("append");
    }
    (handle.writes() - writes, handle.syncs() - syncs)
}

#[test]
fn enospc_at_every_nth_write() {
    let (writes, _) = dry_run();
    assert!(writes > OPS, "the workload must roll segments: {writes} writes");
    for n in 1..=writes {
        let dir = tempfile::tempdir().expect("tempdir");
        let (acked, failures) = workload(dir.path(), &|h| h.fill_after(n), &[PauseKind::DiskFull]);
        assert_eq!(failures, 1, "n {n}");
        assert_exactly(dir.path(), &acked, &format!("enospc at write {n}"));
    }
}

#[test]
fn fsync_eio_at_every_nth_sync() {
    let (_, syncs) = dry_run();
    for n in 1..=syncs {
        let dir = tempfile::tempdir().expect("tempdir");
        let (acked, failures) =
            workload(dir.path(), &|h| h.fail_sync(n), &[PauseKind::SyncFailed, PauseKind::IoError]);
        assert_eq!(failures, 1, "n {n}");
        assert_exactly(dir.path(), &acked, &format!("eio at sync {n}"));
    }
}

/// Appends until the armed fault fails one, then stops without a resume (a crash or a stop
/// right after the failure); the reopened log must hold exactly the acknowledged ops.
fn restart_after_failure(arm: &dyn Fn(&FaultHandle), what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, handle) = open_faulty(dir.path());
    arm(&handle);
    let mut acked = Vec::new();
    for i in 0..OPS {
        match wal.append(draft(i, 100)) {
            Ok(done) => acked.push(done.op_id),
            Err(_) => break,
        }
    }
    assert!(acked.len() < OPS as usize, "{what}: the fault fired");
    drop(wal);
    let wal = Wal::open(dir.path(), common::config(SEGMENT_BYTES)).expect("reopen");
    let found: Vec<OpId> = all_ops(&wal).into_iter().map(|r| r.op.op_id).collect();
    assert_eq!(found, acked, "{what}: a restart shows exactly the acknowledged ops");
    let report = wal.check();
    assert!(report.ok, "{what}: {report:?}");
}

#[test]
fn a_restart_after_a_failed_commit_shows_no_unacknowledged_op() {
    let (writes, syncs) = dry_run();
    for n in 1..=syncs {
        restart_after_failure(&|h| h.fail_sync(n), &format!("eio at sync {n}"));
    }
    for n in 1..=writes {
        restart_after_failure(&|h| h.fill_after(n), &format!("enospc at write {n}"));
    }
}

#[test]
fn torn_writes_leave_no_partial_record() {
    let mut rng = common::Rng::from_env("torn_writes");
    let (writes, _) = dry_run();
    for n in (1..=writes).step_by(3) {
        let keep = rng.below(200) as usize;
        let dir = tempfile::tempdir().expect("tempdir");
        let arm = |h: &FaultHandle| h.tear_write(n, keep);
        let (acked, failures) =
            workload(dir.path(), &arm, &[PauseKind::IoError, PauseKind::SyncFailed]);
        assert_eq!(failures, 1, "n {n} keep {keep}");
        assert_exactly(dir.path(), &acked, &format!("torn write {n} keeping {keep}"));
    }
}

#[test]
fn silent_bit_flip_on_write_is_caught_by_check() {
    let mut rng = common::Rng::from_env("write_flips");
    let (writes, _) = dry_run();
    for _ in 0..20 {
        let n = 1 + rng.below(writes);
        let bit = rng.below(1 << 20) as usize;
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, handle) = open_faulty(dir.path());
        handle.flip_bit(n, bit);
        for i in 0..OPS {
            if wal.append(draft(i, 100)).is_err() {
                break;
            }
        }
        if handle.flips_applied() == 0 {
            continue; // the armed call was an allocation: nothing to find
        }
        let report = wal.check();
        drop(wal);
        let reopened = Wal::open(dir.path(), common::config(SEGMENT_BYTES)).expect("reopen");
        let after = reopened.check();
        assert!(!report.ok || !after.ok, "flip at write {n} bit {bit} went unnoticed: {report:?}");
    }
}
