//! Concurrent appenders share fdatasyncs: 8 threads x 200 appends need far fewer syncs than
//! appends, and every acknowledged op is durable and in the log once.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use feral_log::Wal;
use feral_log::fault::FaultStorage;

#[test]
fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, handle) = FaultStorage::new();
    let wal = Wal::open(dir.path(), common::config_with(1 << 20, Arc::new(storage))).expect("open");
    let before = handle.syncs();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| wal.append(common::draft(t * 1000 + i, 256)).expect("append").op_id)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acked: Vec<_> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
    let syncs = handle.syncs() - before;
    assert_eq!(acked.len(), 1600);
    assert!(syncs < 1600, "group commit must share syncs: {syncs} syncs for 1600 appends");
    println!("1600 appends, {syncs} syncs");
    drop(wal);
    let wal = common::open(dir.path());
    let ids: HashSet<_> = common::all_ops(&wal).into_iter().map(|r| r.op.op_id).collect();
    assert_eq!(ids.len(), 1600);
    assert!(acked.iter().all(|id| ids.contains(id)));
}

#[test]
fn a_call_over_the_intake_bound_is_refused_whole_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), common::config(64 * 1024 * 1024)).expect("open");
    let max = feral_log::limits::SUBMIT_OPS_MAX;
    let drafts = |n: usize| (0..n as u64).map(|i| common::draft(i, 8)).collect::<Vec<_>>();
    let refused = wal.append_batch(drafts(max + 1)).expect_err("over the bound");
    assert_eq!(refused.code(), feral_log::Code::BatchTooLarge);
    assert!(refused.to_string().contains(&max.to_string()), "{refused}");
    assert_eq!(wal.durable_lsn(), 0, "nothing written");
    assert_eq!(wal.pause(), None, "a refused call is no fault");
    let accepted = wal.append_batch(drafts(max)).expect("at the bound");
    assert_eq!(accepted.len(), max);
    assert_eq!(wal.durable_lsn(), max as u64);
}
