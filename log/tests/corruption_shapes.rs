//! One test per shape of damage a log directory can take on disk, each with what the open,
//! the check, reads, writes and resume do about it. A lost acknowledged op is never accepted
//! quietly: the log opens paused for corruption, reads of what is intact go on, and resume
//! does not clear the pause. A torn seal of the last segment loses nothing and is mended.
//! (The projection-ahead shape is in the root crate's tests/corruption_shapes.rs.)

mod common;

use std::path::{Path, PathBuf};

use common::{all_ops, copy_dir, draft, open};
use feral_log::{Appended, PartStatus, PauseKind};

/// 150 ops over several sealed segments of the small size.
fn fill(dir: &Path, count: u64) -> Vec<Appended> {
    let wal = open(dir);
    (0..count).map(|i| wal.append(draft(i, 90)).expect("append")).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    out.sort();
    out
}

/// Opens a damaged directory and asserts the shape every lost-op case shares: paused for
/// corruption, check names the log, writes refused, resume keeps the pause, and the ops
/// before the damage still read back. Returns the check's reason.
fn assert_paused_for_corruption(dir: &Path, appended: &[Appended], intact: usize) -> String {
    let wal = open(dir);
    let pause = wal.pause().expect("a damaged log opens paused");
    assert_eq!(pause.kind, PauseKind::Corruption, "{pause:?}");
    let report = wal.check();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.wal, PartStatus::Corruption, "{report:?}");
    assert_eq!(report.error.map(|c| c.as_str()), Some("wal_corruption"), "{report:?}");
    let reason = report.wal_detail.clone().expect("detail").reason;
    assert!(wal.append(draft(9_999, 10)).is_err(), "writes are refused");
    for a in &appended[..intact] {
        let got = wal.get(&a.op_id).expect("get").expect("an intact op reads back");
        assert_eq!(got.lsn, a.lsn);
    }
    let again = wal.resume();
    assert!(!again.ok, "resume cannot clear lost ops: {again:?}");
    assert_eq!(wal.pause().map(|p| p.kind), Some(PauseKind::Corruption));
    reason
}

#[test]
fn missing_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path(), 150);
    let files = segments(dir.path());
    assert!(files.len() >= 4, "want several segments, got {}", files.len());
    std::fs::remove_file(&files[1]).expect("remove a middle segment");
    let first_of_missing = segment_base(&files[1]) as usize;
    let reason = assert_paused_for_corruption(dir.path(), &appended, first_of_missing - 1);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn short_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path(), 150);
    let files = segments(dir.path());
    let len = std::fs::metadata(&files[1]).expect("stat").len();
    let file = std::fs::OpenOptions::new().write(true).open(&files[1]).expect("open");
    file.set_len(len / 2).expect("truncate a sealed segment");
    drop(file);
    let intact = segment_base(&files[1]) as usize - 1;
    let reason = assert_paused_for_corruption(dir.path(), &appended, intact);
    assert!(reason.contains("size"), "{reason}");
}

#[test]
fn unsealed_segment_before_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = fill(dir.path(), 150);
    let files = segments(dir.path());
    let len = std::fs::metadata(&files[1]).expect("stat").len();
    let footer = 64u64; // the footer occupies the last bytes of a sealed segment
    zero(&files[1], len - footer, footer);
    let intact = segment_base(&files[1]) as usize - 1;
    let reason = assert_paused_for_corruption(dir.path(), &appended, intact);
    assert!(reason.contains("not sealed") || reason.contains("footer"), "{reason}");
}

#[test]
fn torn_footer_of_the_last_segment_loses_nothing() {
    // A crash between sealing the last segment and creating the next: the last segment is
    // sealed, nothing follows it, and its footer is torn. Built from a full log by keeping
    // its first two segments (the second sealed) and dropping the index, which is rebuilt.
    let full = tempfile::tempdir().expect("tempdir");
    let appended = fill(full.path(), 150);
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(full.path(), dir.path());
    let files = segments(dir.path());
    for later in &files[2..] {
        std::fs::remove_file(dir.path().join("wal").join(later.file_name().expect("name")))
            .expect("remove");
    }
    std::fs::remove_file(dir.path().join("index.redb")).expect("remove index");
    let last = dir.path().join("wal").join(files[1].file_name().expect("name"));
    let kept = segment_base(&files[2]) - 1;
    let len = std::fs::metadata(&last).expect("stat").len();
    flip(&last, len - 20); // inside the footer: its checksum no longer matches

    let wal = open(dir.path());
    assert_eq!(wal.pause(), None, "a torn seal of the last segment is no damage");
    assert_eq!(wal.durable_lsn(), kept);
    let ops = all_ops(&wal);
    assert_eq!(ops.len() as u64, kept);
    for (a, r) in appended.iter().zip(&ops) {
        assert_eq!((a.op_id, a.lsn), (r.op.op_id, r.lsn));
    }
    let report = wal.check();
    assert!(report.ok, "{report:?}");
    let next = wal.append(draft(7_000, 90)).expect("append after the mended seal");
    assert_eq!((next.lsn, next.seq), (kept + 1, kept + 1));
    drop(wal);
    let wal = open(dir.path());
    assert!(wal.check().ok);
    assert_eq!(wal.durable_lsn(), kept + 1);
}

#[test]
fn index_ahead_of_the_log() {
    // The log lost its newest acknowledged ops (an old copy of the log beside a newer
    // index): the index proves they were acknowledged, so this is corruption, not a tail.
    let early = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    let mut appended: Vec<Appended> =
        (0..60).map(|i| wal.append(draft(i, 90)).expect("append")).collect();
    wal.close().expect("close");
    copy_dir(dir.path(), early.path());
    let wal = open(dir.path());
    appended.extend((60..150).map(|i| wal.append(draft(i, 90)).expect("append")));
    wal.close().expect("close");
    std::fs::remove_dir_all(dir.path().join("wal")).expect("rm wal");
    copy_tree(&early.path().join("wal"), &dir.path().join("wal"));

    let reason = assert_paused_for_corruption(dir.path(), &appended, 60);
    assert!(reason.contains("150"), "names the acknowledged LSN: {reason}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn segment_base(path: &Path) -> u64 {
    let name = path.file_stem().expect("stem").to_string_lossy().to_string();
    name.parse().expect("segment names are their base LSN")
}

fn zero(path: &Path, at: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("open");
    file.write_all_at(&vec![0u8; len as usize], at).expect("zero");
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).expect("read");
    byte[0] ^= 0x10;
    file.write_all_at(&byte, at).expect("flip");
}
