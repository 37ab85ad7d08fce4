//! The index is derived state: deleted or garbage, it is rebuilt from the log on open (garbage
//! kept under damaged/); damaged while open, check reports it and rebuild() or resume() mends it; rebuild() gives the same
//! answers as the index it replaced.

mod common;

use common::{draft, open};
use feral_log::PartStatus;

fn fill(dir: &std::path::Path) -> Vec<feral_log::Appended> {
    let wal = open(dir);
    (0..120).map(|i| wal.append(draft(i, 80)).expect("append")).collect()
}

#[test]
fn deleted_index_is_rebuilt_from_the_log_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path());
    std::fs::remove_file(dir.path().join("index.redb")).expect("rm");
    let wal = open(dir.path());
    assert_eq!(wal.pause(), None);
    let origin = wal.origin();
    assert_eq!(wal.heads().expect("heads"), vec![(origin, 120)]);
    let got = wal.get(&appended[77].op_id).expect("get").expect("present");
    assert_eq!(got.lsn, 78);
    assert!(wal.check().ok);
    let next = wal.append(draft(500, 10)).expect("append");
    assert_eq!((next.lsn, next.seq), (121, 121), "seq continues after a rebuilt index");
}

/// The index files set aside under `damaged/`.
fn set_aside(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("damaged"))
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_garbage_index_is_set_aside_and_rebuilt_from_the_log_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path());
    std::fs::write(dir.path().join("index.redb"), vec![0x5a; 8192]).expect("garbage");
    let wal = open(dir.path());
    assert_eq!(wal.pause(), None, "rebuilt, not paused");
    let kept = set_aside(dir.path());
    assert!(kept.len() == 1 && kept[0].starts_with("index.redb."), "kept for forensics: {kept:?}");
    assert_eq!(
        std::fs::read(dir.path().join("damaged").join(&kept[0])).expect("read"),
        vec![0x5a; 8192]
    );
    assert!(wal.check().ok);
    let got = wal.get(&appended[3].op_id).expect("get").expect("present");
    assert_eq!(got.op.row_id, "row-3");
    let next = wal.append(draft(121, 10)).expect("append after the rebuild");
    assert_eq!((next.lsn, next.seq), (121, 121));
}

#[test]
fn rebuild_gives_the_same_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path());
    let wal = open(dir.path());
    let heads = wal.heads().expect("heads");
    assert_eq!(wal.rebuild().expect("rebuild"), 120);
    assert_eq!(wal.status().torn_tail, None, "a whole log has no tail to cut");
    assert_eq!(wal.heads().expect("heads"), heads);
    for a in appended.iter().step_by(7) {
        let got = wal.get(&a.op_id).expect("get").expect("present");
        assert_eq!((got.lsn, got.op.seq, got.op.hlc), (a.lsn, a.seq, a.hlc));
    }
    assert!(wal.check().ok);
}

/// Fills a log with local ops (indexed as runs) and received ops with falling ids (indexed as
/// singles), then closes it.
fn fill_mixed(dir: &std::path::Path) -> feral_log::Origin {
    use feral_log::{Hlc, Op, OpId, OpKind, Origin};
    let remote = Origin([7; 16]);
    let wal = open(dir);
    for i in 0..50 {
        wal.append(draft(i, 40)).expect("append");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ops = (1..=20u64)
        .map(|seq| Op {
            op_id: OpId((u128::MAX - u128::from(seq)).to_be_bytes()),
            origin: remote,
            seq,
            hlc: Hlc { wall_ms: now, counter: seq as u32, node: remote },
            table: "t".into(),
            row_id: format!("r{seq}"),
            kind: OpKind::Insert,
            data: b"x".to_vec(),
        })
        .collect();
    wal.ingest(ops).expect("ingest");
    assert!(wal.check().ok);
    remote
}

/// Changes the closed index's tables with redb directly, as damage would.
fn tamper(dir: &std::path::Path, change: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(dir.join("index.redb")).expect("open index");
    let txn = db.begin_write().expect("write");
    change(&txn);
    txn.commit().expect("commit");
}

#[test]
fn an_online_check_finds_an_index_that_lost_an_op_by_origin_or_holds_a_wrong_head() {
    const BY_ORIGIN: redb::TableDefinition<'_, (u128, u64), u128> =
        redb::TableDefinition::new("ops_by_origin");
    const HEADS: redb::TableDefinition<'_, u128, u64> = redb::TableDefinition::new("heads");
    for damage in ["by_origin", "head_short", "head_long"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = fill_mixed(dir.path());
        let key = u128::from_be_bytes(remote.0);
        tamper(dir.path(), |txn| match damage {
            "by_origin" => {
                let mut t = txn.open_table(BY_ORIGIN).expect("table");
                assert!(t.remove((key, 5)).expect("remove").is_some(), "a single at seq 5");
            }
            "head_short" => {
                txn.open_table(HEADS).expect("table").insert(key, 19).expect("insert");
            }
            _ => {
                txn.open_table(HEADS).expect("table").insert(key, 21).expect("insert");
            }
        });
        let wal = open(dir.path());
        let report = wal.check();
        assert!(!report.ok, "{damage}: {report:?}");
        assert_eq!(report.index, PartStatus::Corruption, "{damage}: {report:?}");
        assert_eq!(report.wal, PartStatus::Ok, "{damage}");
        let detail = serde_json::to_string(&report).expect("json");
        assert!(detail.contains(&remote.to_string()), "{damage}: names the origin: {detail}");
        // Rebuilt from the log, the index is whole again.
        wal.rebuild().expect("rebuild");
        assert!(wal.check().ok, "{damage}: after the rebuild");
    }
}

#[test]
fn an_index_whose_markers_disagree_is_rebuilt_not_taken_as_lost_ops() {
    const META: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("log_meta");
    let dir = tempfile::tempdir().expect("tempdir");
    fill_mixed(dir.path());
    // Garbage in the index claims records far past the log's end; its op count disagrees.
    tamper(dir.path(), |txn| {
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert("indexed_lsn", 1_945_555_039_024_054_322).expect("insert");
    });
    let wal = open(dir.path());
    assert_eq!(wal.pause(), None, "rebuilt from the log at open, not log corruption");
    assert_eq!(set_aside(dir.path()).len(), 1, "the damaged index is kept");
    assert!(wal.check().ok);
    assert_eq!(wal.durable_lsn(), 70);
    assert!(wal.append(draft(99, 10)).is_ok());
}

#[test]
fn an_index_with_a_wrong_head_of_its_own_is_rebuilt_and_no_seq_is_taken_twice() {
    const HEADS: redb::TableDefinition<'_, u128, u64> = redb::TableDefinition::new("heads");
    for damage in ["missing", "short", "long"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = fill_mixed(dir.path());
        let own = open(dir.path()).origin();
        let key = u128::from_be_bytes(own.0);
        // The markers stay consistent: only the head that the next local seq comes from lies.
        tamper(dir.path(), |txn| {
            let mut heads = txn.open_table(HEADS).expect("table");
            match damage {
                "missing" => assert!(heads.remove(key).expect("remove").is_some()),
                "short" => assert!(heads.insert(key, 10).expect("insert").is_some()),
                _ => assert!(heads.insert(key, 60).expect("insert").is_some()),
            }
        });
        let wal = open(dir.path());
        assert_eq!(wal.pause(), None, "{damage}: rebuilt from the log at open");
        assert_eq!(set_aside(dir.path()).len(), 1, "{damage}: the damaged index is kept");
        let mut heads = wal.heads().expect("heads");
        heads.sort();
        let mut want = vec![(own, 50), (remote, 20)];
        want.sort();
        assert_eq!(heads, want, "{damage}");
        let next = wal.append(draft(900, 10)).expect("append");
        assert_eq!((next.lsn, next.seq), (71, 51), "{damage}: the next seq is a new one");
        assert!(wal.check().ok, "{damage}: {:?}", wal.check());
    }
}
