//! The same 10,000 ops appended twice (and again after reopen) leave 10,000 records; an op_id
//! reused with other content is refused.

mod common;

use common::{draft, open};
use feral_log::{Error, OpDraft, OpId};

const OPS: u64 = 10_000;
const BATCH: usize = 500;

fn drafts() -> Vec<OpDraft> {
    (0..OPS).map(|i| draft(i, 64).with_op_id(OpId::generate(1_700_000_000_000 + i))).collect()
}

#[test]
fn ten_thousand_ops_appended_twice_leave_ten_thousand_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let all = drafts();
    let mut first = Vec::new();
    for chunk in all.chunks(BATCH) {
        first.extend(wal.append_batch(chunk.to_vec()).expect("first pass"));
    }
    assert!(first.iter().all(|a| !a.duplicate));
    for (chunk_no, chunk) in all.chunks(BATCH).enumerate() {
        let again = wal.append_batch(chunk.to_vec()).expect("second pass");
        for (a, b) in again.iter().zip(&first[chunk_no * BATCH..]) {
            assert!(a.duplicate, "{a:?}");
            assert_eq!((a.op_id, a.lsn, a.seq, a.hlc), (b.op_id, b.lsn, b.seq, b.hlc));
        }
    }
    assert_eq!(wal.durable_lsn(), OPS);
    drop(wal);
    let wal = open(dir.path());
    let again = wal.append_batch(all[..BATCH].to_vec()).expect("after reopen");
    assert!(again.iter().all(|a| a.duplicate));
    assert_eq!(wal.durable_lsn(), OPS);
    assert_eq!(common::all_ops(&wal).len() as u64, OPS);
    let report = wal.check();
    assert!(report.ok && report.records == OPS, "{report:?}");
}

#[test]
fn same_op_id_twice_in_one_batch_is_written_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let one = draft(1, 10).with_op_id(OpId::generate(5));
    let out = wal.append_batch(vec![one.clone(), one]).expect("batch");
    assert_eq!((out[0].duplicate, out[1].duplicate), (false, true));
    assert_eq!(out[0].lsn, out[1].lsn);
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn op_id_reused_with_other_content_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let id = OpId::generate(7);
    wal.append(draft(1, 10).with_op_id(id)).expect("first");
    let err =
        wal.append_batch(vec![draft(2, 10), draft(3, 10).with_op_id(id)]).expect_err("conflict");
    assert!(matches!(err, Error::OpIdConflict(found) if found == id), "{err}");
    assert_eq!(wal.durable_lsn(), 1, "a refused batch writes nothing");
}
