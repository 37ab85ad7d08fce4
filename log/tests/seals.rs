//! With a signer, the log proves who wrote its ops: the origin id is made from the key, seq 1
//! carries the genesis, every commit closes its runs with a seal that verifies (a run is at
//! most SEAL_RUN_OPS_MAX ops), another key cannot open the store, and ops a crash left
//! unsealed are covered by the next commit's seal.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::draft;
use feral_log::{Config, EncodedOp, OpBytes, Origin, Wal};
use feral_types::proof::{self, RunDigest, SEAL_RUN_OPS_MAX, Signer, VerifyingKey};

fn signed(dir: &Path, signer: &Arc<Signer>) -> feral_log::Result<Wal> {
    Wal::open(dir, Config { signer: Some(signer.clone()), ..common::config(64 * 1024) })
}

fn stored(wal: &Wal) -> Vec<OpBytes> {
    wal.payloads_by_origin_within(&wal.origin(), 1, u64::MAX, usize::MAX, usize::MAX)
        .expect("payloads")
}

/// Verifies every run of one origin's ops (from seq 1) with `key`, each linked to the op
/// before it; returns the run lengths.
fn runs(ops: &[OpBytes], origin: Origin, key: &VerifyingKey) -> Vec<usize> {
    let (mut lengths, mut digest, mut first) = (Vec::new(), RunDigest::default(), None);
    for bytes in ops {
        let op = bytes.clone().decode().expect("decodes");
        assert_eq!(op.trailer().genesis.is_some(), op.op().seq == 1, "genesis on seq 1 only");
        first.get_or_insert(op.op().seq);
        digest.add(op.signed_part());
        if let Some(seal) = op.trailer().seal {
            let start = first.take().expect("a run");
            assert_eq!(seal.first_seq, start, "the seal covers its run");
            let next = RunDigest::linked(&proof::link_of(op.signed_part()));
            let message = std::mem::replace(&mut digest, next).message(&origin, start, op.op().seq);
            assert!(key.verify(&message, &seal.signature), "seal of {start}..={}", op.op().seq);
            lengths.push((op.op().seq - start + 1) as usize);
        }
    }
    assert!(first.is_none(), "ops after the last seal");
    lengths
}

#[test]
fn every_commit_seals_its_runs_and_the_origin_belongs_to_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Arc::new(Signer::generate().expect("signer"));
    let wal = signed(dir.path(), &signer).expect("open");
    for i in 0..3 {
        wal.append(draft(i, 50)).expect("append");
    }
    wal.append_batch((10..1210).map(|i| draft(i, 50)).collect()).expect("batch");
    let ops = stored(&wal);
    let genesis =
        ops[0].clone().decode().expect("seq 1").trailer().genesis.clone().expect("genesis");
    assert_eq!(genesis.spki, signer.spki());
    assert_eq!(proof::origin_of(&genesis.spki, &genesis.nonce), wal.origin());
    let key = VerifyingKey::from_spki(signer.spki()).expect("key");
    assert_eq!(
        runs(&ops, wal.origin(), &key),
        vec![1, 1, 1, SEAL_RUN_OPS_MAX, SEAL_RUN_OPS_MAX, 176]
    );
    drop(wal);
    // The store's origin is this key's: another key cannot write under it.
    let other = Arc::new(Signer::generate().expect("other"));
    let refused = signed(dir.path(), &other).map(|_| ()).expect_err("another key");
    assert!(refused.to_string().contains("does not belong"), "{refused}");
    // The same key opens it again and keeps sealing.
    let wal = signed(dir.path(), &signer).expect("reopen");
    wal.append(draft(2000, 50)).expect("append");
    assert_eq!(runs(&stored(&wal), wal.origin(), &key).last(), Some(&1));
}

#[test]
fn ops_a_crash_left_unsealed_are_sealed_by_the_next_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Arc::new(Signer::generate().expect("signer"));
    let wal = signed(dir.path(), &signer).expect("open");
    wal.append_batch((0..3).map(|i| draft(i, 50)).collect()).expect("one commit of 3");
    let last = common::all_ops(&wal).pop().expect("records");
    let segment = dir.path().join("wal").join(feral_log::segment::segment_name(last.segment));
    drop(wal);
    // A crash tore the commit's last record (the one carrying the seal) and the index with it.
    let mut bytes = std::fs::read(&segment).expect("read");
    let at = last.offset as usize;
    let payload = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    bytes[at..at + feral_log::record::FRAME_HEADER_BYTES + payload].fill(0);
    std::fs::write(&segment, &bytes).expect("write");
    std::fs::remove_file(dir.path().join("index.redb")).expect("rm index");

    let wal = signed(dir.path(), &signer).expect("reopen");
    let ops = stored(&wal);
    assert_eq!(ops.len(), 2, "the torn record is gone");
    assert!(ops.iter().all(|o| !o.is_sealed()), "what is left has no seal");
    wal.append(draft(9, 50)).expect("the next commit");
    let key = VerifyingKey::from_spki(signer.spki()).expect("key");
    assert_eq!(runs(&stored(&wal), wal.origin(), &key), vec![3], "one seal covers all three");
}

#[test]
fn without_a_signer_ops_carry_no_proof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = common::open(dir.path());
    wal.append(draft(1, 10)).expect("append");
    let op = EncodedOp::decode(stored(&wal)[0].as_slice().to_vec()).expect("decodes");
    assert_eq!((op.trailer().genesis.as_ref(), op.trailer().seal), (None, None));
}
