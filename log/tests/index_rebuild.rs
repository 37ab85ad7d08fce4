//! The index is derived state: deleted, it is rebuilt from the log on open; garbage, the log
//! opens paused, check reports the index, and resume() rebuilds it; rebuild() gives the same
//! answers as the index it replaced.

mod common;

use common::{draft, open};
use feral_log::{PartStatus, PauseKind};

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

#[test]
fn garbage_index_pauses_then_resume_rebuilds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path());
    std::fs::write(dir.path().join("index.redb"), vec![0x5a; 8192]).expect("garbage");
    let wal = open(dir.path());
    assert_eq!(wal.pause().map(|p| p.kind), Some(PauseKind::IndexFailed));
    let report = wal.check();
    assert!(!report.ok);
    assert_eq!(report.wal, PartStatus::Ok, "{report:?}");
    assert!(
        report.error.map(|c| c.as_str()).is_some_and(|e| e.starts_with("index_")),
        "{report:?}"
    );
    assert!(wal.append(draft(1, 10)).is_err(), "paused");
    let report = wal.resume();
    assert!(report.ok, "{report:?}");
    assert_eq!(wal.pause(), None);
    let got = wal.get(&appended[3].op_id).expect("get").expect("present");
    assert_eq!(got.op.row_id, "row-3");
    wal.append(draft(121, 10)).expect("append after resume");
}

#[test]
fn rebuild_gives_the_same_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path());
    let wal = open(dir.path());
    let heads = wal.heads().expect("heads");
    assert_eq!(wal.rebuild().expect("rebuild"), 120);
    assert_eq!(wal.heads().expect("heads"), heads);
    for a in appended.iter().step_by(7) {
        let got = wal.get(&a.op_id).expect("get").expect("present");
        assert_eq!((got.lsn, got.op.seq, got.op.hlc), (a.lsn, a.seq, a.hlc));
    }
    assert!(wal.check().ok);
}
