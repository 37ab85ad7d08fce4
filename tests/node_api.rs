//! The `Node` facade on real files: append, read back, delete, idempotent retries, content
//! conflicts, ingest from another node, reopen, rebuild, status and check.

mod common;

use common::{all_ops, doc, open};
use feral_log::{OpId, PartStatus};
use serde_json::json;

#[test]
fn episodes_round_trip_newest_first_and_by_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    for (i, session) in ["a", "b", "a", "a", "b"].iter().enumerate() {
        node.append_episode(&doc(&format!("e{i}"), session, 100.0 + i as f64), None)
            .expect("append");
    }
    let all: Vec<String> =
        node.episodes(10, None).expect("list").into_iter().map(|v| v.episode.id).collect();
    assert_eq!(all, ["e4", "e3", "e2", "e1", "e0"]);
    let a: Vec<String> =
        node.episodes(2, Some("a")).expect("list").into_iter().map(|v| v.episode.id).collect();
    assert_eq!(a, ["e3", "e2"]);
    let got = node.episode("e1").expect("get").expect("present");
    assert_eq!((got.episode.session_id.as_str(), got.episode.importance), ("b", 0.7));
    assert_eq!(got.episode.emotions, ["calm"]);
    node.delete_episode("e3", None).expect("delete");
    assert!(node.episode("e3").expect("get").is_none());
    let a: Vec<String> =
        node.episodes(10, Some("a")).expect("list").into_iter().map(|v| v.episode.id).collect();
    assert_eq!(a, ["e2", "e0"]);
    // A newer insert of a deleted id brings it back.
    node.append_episode(&doc("e3", "a", 50.0), None).expect("re-insert");
    assert!(node.episode("e3").expect("get").is_some());
    let stats = node.status().projection;
    assert_eq!((stats.episodes, stats.tombstones, stats.applied_lsn), (5, 0, 7));
    // Reopened: the same rows.
    let before = node.digest().expect("digest");
    node.close().expect("close");
    let node = open(dir.path());
    assert_eq!(node.digest().expect("digest"), before);
    assert_eq!(node.episodes(10, None).expect("list").len(), 5);
}

#[test]
fn a_bad_episode_is_refused_naming_the_field_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    let mut bad = doc("e1", "s", 1.0);
    bad["importance"] = json!(2.0);
    let err = node.append_episode(&bad, None).expect_err("refused");
    assert_eq!(err.code(), "invalid_episode");
    assert!(err.to_string().contains("`importance`"), "{err}");
    let mut missing = doc("e1", "s", 1.0);
    missing.as_object_mut().expect("object").remove("summary");
    assert!(
        node.append_episode(&missing, None).expect_err("refused").to_string().contains("`summary`")
    );
    assert_eq!(node.wal().durable_lsn(), 0, "nothing reached the log");
    // A generic op on the episodes table is validated too.
    let draft = feral_log::OpDraft::insert("episodes", "x", b"{\"id\":\"x\"}".to_vec());
    assert_eq!(node.append_ops(vec![draft]).expect_err("refused").code(), "invalid_episode");
    // Other tables travel untouched.
    node.append_ops(vec![feral_log::OpDraft::insert("notes", "n1", b"anything".to_vec())])
        .expect("generic");
    assert_eq!(node.status().projection.applied_lsn, 1);
}

#[test]
fn a_retry_with_the_same_op_id_is_a_no_op_and_other_content_is_a_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    let op_id = OpId::parse("00112233445566778899aabbccddeeff").expect("hex");
    let first = node.append_episode(&doc("e1", "s", 1.0), Some(op_id)).expect("append");
    let again = node.append_episode(&doc("e1", "s", 1.0), Some(op_id)).expect("retry");
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.lsn, again.hlc), (first.lsn, first.hlc));
    let err = node.append_episode(&doc("e2", "s", 1.0), Some(op_id)).expect_err("conflict");
    assert_eq!(err.code(), "op_id_conflict");
    // Without created_at the first append stamps "now"; a retry reuses that stamp.
    let later = OpId::parse("00112233445566778899aabbccddee00").expect("hex");
    let mut undated = doc("e9", "s", 0.0);
    undated.as_object_mut().expect("object").remove("created_at");
    let first = node.append_episode(&undated, Some(later)).expect("append");
    let retry = node.append_episode(&undated, Some(later)).expect("retry, not a conflict");
    assert!(retry.duplicate && retry.lsn == first.lsn);
    assert_eq!(node.digest().expect("digest").ops, 2);
}

#[test]
fn ops_ingested_by_another_node_give_the_same_digest_and_rows() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    for i in 0..30 {
        a.append_episode(&doc(&format!("a{i}"), "s", i as f64), None).expect("append a");
        b.append_episode(&doc(&format!("b{i}"), "s", i as f64), None).expect("append b");
    }
    a.delete_episode("a3", None).expect("delete");
    b.append_episode(&doc("a5", "s", 99.0), None).expect("b writes a row a also has");
    let (from_a, from_b) = (common::stored_ops(&a), common::stored_ops(&b));
    assert_eq!(b.ingest(from_a.clone()).expect("b ingests a"), from_a.len());
    assert_eq!(a.ingest(from_b.clone()).expect("a ingests b"), from_b.len());
    assert_eq!(a.ingest(from_b).expect("again"), 0, "re-ingesting adds nothing");
    let (da, db) = (a.digest().expect("a"), b.digest().expect("b"));
    assert_eq!(da, db);
    assert_eq!(da.ops, 62);
    assert!(a.episode("a3").expect("get").is_none() && b.episode("a3").expect("get").is_none());
    assert_eq!(a.episode("a5").expect("get").map(|v| v.episode.created_at), Some(99.0));
}

#[test]
fn check_reports_every_part_and_rebuild_gives_the_same_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    for i in 0..200 {
        node.append_episode(&doc(&format!("e{i}"), "s", i as f64), None).expect("append");
    }
    let report = node.check();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.wal, report.index, report.episodes),
        (PartStatus::Ok, PartStatus::Ok, PartStatus::Ok)
    );
    assert!(report.segments > 1, "small segments sealed: {report:?}");
    let shape = serde_json::to_value(&report).expect("json");
    assert_eq!(shape["episodes"], "ok");
    let before = node.digest().expect("digest");
    let (_, projected) = node.rebuild().expect("rebuild");
    assert_eq!(projected, 200);
    assert_eq!(node.digest().expect("digest"), before);
    let status = node.status();
    assert_eq!(status.node_id.len(), 32);
    assert!(!status.io_paused);
    assert_eq!(status.heads.get(&status.origin), Some(&200));
}

#[test]
fn a_sync_store_sends_the_stored_bytes_and_appends_the_bytes_it_receives() {
    use feral_log::{OpBytes, codec};
    use feral_sync::{Request, Response, execute};
    let (a_dir, b_dir) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    for i in 0..10 {
        a.append_episode(&doc(&format!("a{i}"), "s", i as f64), None).expect("append a");
    }
    let origin = a.wal().origin();
    let read = Request::Read { origin, from: 1, to: 10, ops_max: 100, bytes_max: usize::MAX };
    let Ok(Response::Read(sent)) = execute(&mut a.sync_store(), read) else { panic!("a read") };
    // What goes out is what the log holds, byte for byte: each op's encoding and its proof.
    let held = all_ops(&a);
    assert_eq!(sent.len(), held.len());
    for (bytes, record) in sent.iter().zip(&held) {
        assert!(bytes.as_slice().starts_with(&codec::encode_op(&record.op)));
        assert!(bytes.is_sealed(), "every op of a single append ends its run");
        assert_eq!(bytes.clone().decode().expect("decodes").op(), &record.op);
    }
    // Bytes that are not an op, or an op written longer than its canonical form (seq 1 as a
    // three-byte varint), are malformed, and nothing of the frame is written.
    let mut long = sent[0].as_slice()[..34].to_vec();
    long.extend_from_slice(&[251, 1, 0]);
    long.extend_from_slice(&sent[0].as_slice()[35..]);
    for bad in [OpBytes::new(b"not an op".to_vec()), OpBytes::new(long)] {
        let frame = vec![sent[1].clone(), bad];
        let err = execute(&mut b.sync_store(), Request::Apply(frame)).expect_err("malformed");
        assert_eq!(err.code(), "malformed_frame", "{err}");
        assert_eq!(b.digest().expect("digest").ops, 0);
    }
    let applied = execute(&mut b.sync_store(), Request::Apply(sent)).expect("apply");
    assert_eq!(applied, Response::Applied(10));
    assert_eq!(a.digest().expect("a"), b.digest().expect("b"));
    // b stores the bytes that came, seals included: byte-identical to a's.
    assert_eq!(common::stored_ops(&b), common::stored_ops(&a));
    assert!(b.episode("a7").expect("get").is_some(), "projected from the ops given back");
}

#[test]
fn digest_and_dump_beside_appends_are_of_one_consistent_moment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    for i in 0..200 {
        node.append_episode(&doc(&format!("e{i}"), "s", i as f64), None).expect("append");
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut i = 200;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                node.append_episode(&doc(&format!("e{i}"), "s", i as f64), None).expect("append");
                i += 1;
            }
            i
        });
        // Every op inserts a new row: a digest of one moment has as many rows as ops, however
        // many appends land while it reads (a digest that took the log's end after the
        // projection's counted ops its rows do not hold).
        for _ in 0..20 {
            let d = node.digest().expect("digest");
            assert_eq!(d.ops, d.rows, "{d:?}");
            let mut out = Vec::new();
            node.dump(&mut out).expect("dump");
            let text = String::from_utf8(out).expect("utf8");
            let ops = text.lines().filter(|l| l.contains("\"seq\"")).count();
            let rows = text.lines().count() - ops;
            assert_eq!(ops, rows, "dump of one moment");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.join().expect("writer");
        assert!(written > 200);
    });
    node.settle();
    let d = node.digest().expect("digest");
    assert_eq!((d.ops, d.rows), (d.ops, d.ops));
}
