//! Ops from another origin keep their origin, seq and HLC; heads track the highest contiguous
//! seq; split brain, clock drift and malformed remote ops are refused before anything is written.

mod common;

use common::open;
use feral_log::{EncodedOp, Error, Hlc, Op, OpError, OpId, OpKind, Origin};

const REMOTE: Origin = Origin([9; 16]);

fn remote(seq: u64, wall_ms: u64) -> Op {
    Op {
        op_id: OpId::generate(wall_ms),
        origin: REMOTE,
        seq,
        hlc: Hlc { wall_ms, counter: 0, node: REMOTE },
        table: "other".into(),
        row_id: format!("r{seq}"),
        kind: OpKind::Insert,
        data: b"x".to_vec(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn remote_ops_are_kept_whole_and_heads_follow_contiguity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let t = now_ms();
    let ops: Vec<Op> = (1..=5).map(|s| remote(s, t + s)).collect();
    wal.ingest(vec![ops[0].clone(), ops[1].clone(), ops[3].clone()]).expect("ingest with a gap");
    assert_eq!(wal.heads().expect("heads"), vec![(REMOTE, 2)]);
    wal.ingest(vec![ops[2].clone(), ops[4].clone()]).expect("fill the gap");
    assert_eq!(wal.heads().expect("heads"), vec![(REMOTE, 5)]);
    let again = wal.ingest(ops.clone()).expect("re-ingest");
    assert!(again.iter().all(|a| a.duplicate));
    let stored = wal.range_by_origin(&REMOTE, 1, 5, 10).expect("range");
    assert_eq!(stored.into_iter().map(|r| r.op).collect::<Vec<_>>(), ops);
    let local = wal.append(common::draft(1, 10)).expect("local");
    assert!(local.hlc > ops[4].hlc, "the clock moves past received stamps");
}

#[test]
fn split_brain_drift_and_malformed_ops_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let t = now_ms();
    wal.ingest(vec![remote(1, t)]).expect("first");
    let twin = remote(1, t + 1); // same (origin, seq), another op_id: a copied data directory
    let err = wal.ingest(vec![remote(2, t), twin]).expect_err("split brain");
    assert!(matches!(err, Error::SplitBrain { seq: 1, .. }), "{err}");
    let far = remote(2, t + 60 * 60 * 1000);
    let err = wal.ingest(vec![far]).expect_err("drift");
    assert!(matches!(err, Error::Op(OpError::ClockDrift { .. })), "{err}");
    assert_eq!(wal.status().drift_refusals, 1);
    let mut forged = remote(2, t);
    forged.hlc.node = Origin([1; 16]);
    assert!(matches!(wal.ingest(vec![forged]), Err(Error::Op(OpError::InvalidOp(_)))));
    assert_eq!(wal.durable_lsn(), 1, "refused batches write nothing");
}

#[test]
fn a_received_op_claiming_this_nodes_own_origin_is_split_brain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let mine = wal.append(common::draft(1, 10)).expect("local");
    wal.heads().expect("wait until the local op is indexed, so the error can name it");
    let own = wal.origin();
    let t = now_ms();
    let mut impostor = remote(1, t);
    impostor.origin = own;
    impostor.hlc.node = own;
    let err = wal.ingest(vec![impostor.clone()]).expect_err("same seq, other op");
    assert!(
        matches!(err, Error::SplitBrain { existing: Some(id), .. } if id == mine.op_id),
        "{err}"
    );
    impostor.seq = 2; // nothing held at seq 2 yet: still another writer of this origin
    let err = wal.ingest(vec![impostor]).expect_err("unseen seq of the own origin");
    assert!(matches!(err, Error::SplitBrain { existing: None, .. }), "{err}");
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn received_bytes_are_stored_and_read_back_as_they_came() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let t = now_ms();
    let ops: Vec<Op> = (1..=20).map(|s| remote(s, t + s)).collect();
    let encoded: Vec<EncodedOp> = ops.iter().cloned().map(EncodedOp::encode).collect();
    let sent: Vec<Vec<u8>> = encoded.iter().map(|e| e.bytes().to_vec()).collect();
    let (appended, back) = wal.ingest_encoded(encoded).expect("ingest");
    assert_eq!(back, ops, "the ops come back in order, for the caller to project");
    assert!(appended.iter().all(|a| !a.duplicate));
    // A second delivery: duplicates, and the ops still come back.
    let again = ops.iter().cloned().map(EncodedOp::encode).collect();
    let (appended, back) = wal.ingest_encoded(again).expect("again");
    assert!(appended.iter().all(|a| a.duplicate));
    assert_eq!(back.len(), ops.len());
    // The payloads a sender reads are the bytes received, checked but not decoded, within
    // the byte budget (always at least one).
    let read = wal.payloads_by_origin_within(&REMOTE, 1, 20, 100, usize::MAX).expect("read");
    let read: Vec<Vec<u8>> = read.iter().map(|b| b.as_slice().to_vec()).collect();
    assert_eq!(read, sent);
    let budget = sent[0].len() * 3;
    let some = wal.payloads_by_origin_within(&REMOTE, 5, 20, 100, budget).expect("budget");
    assert_eq!(some.len(), 3);
    assert_eq!(some[0].head().expect("head").seq, 5);
    let one = wal.payloads_by_origin_within(&REMOTE, 7, 7, 100, 1).expect("one");
    assert_eq!(one.len(), 1, "one op even past the budget");
    drop(wal);
    // After a restart the same bytes are there.
    let wal = open(dir.path());
    let read = wal.payloads_by_origin_within(&REMOTE, 1, 20, 100, usize::MAX).expect("read");
    assert_eq!(read.iter().map(|b| b.as_slice().to_vec()).collect::<Vec<_>>(), sent);
}

#[test]
fn a_payload_read_checks_the_frame_against_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let t = now_ms();
    wal.ingest((1..=3).map(|s| remote(s, t + s)).collect()).expect("ingest");
    let record = wal.range_by_origin(&REMOTE, 2, 2, 1).expect("read").remove(0);
    drop(wal);
    // One byte of the second op's payload flipped: its read is corruption, never bytes sent on.
    let path = std::fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&path).expect("read segment");
    bytes[record.offset as usize + 24 + 20] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write segment");
    let wal = open(dir.path());
    let err = wal.payloads_by_origin_within(&REMOTE, 1, 3, 10, usize::MAX).expect_err("corrupt");
    assert!(matches!(err, Error::Corruption(_)), "{err:?}");
}
