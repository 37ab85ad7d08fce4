//! A torn tail cut at every byte offset of the last record is truncated, and nothing else is:
//! the log reopens with every earlier record, unpaused, and takes the next append.

mod common;

use std::path::Path;

use common::{SMALL_SEGMENT_BYTES, all_ops, draft, open};
use feral_log::Wal;

const RECORDS: u64 = 5;

/// Builds a log of RECORDS ops in one active segment; returns (segment path, last frame
/// offset, last frame length).
fn build(dir: &Path) -> (std::path::PathBuf, u64, u64) {
    let wal = open(dir);
    for i in 0..RECORDS {
        wal.append(draft(i, 100)).expect("append");
    }
    let ops = all_ops(&wal);
    let last = ops.last().expect("records");
    let previous = &ops[ops.len() - 2];
    let frame_len = last.offset - previous.offset; // equal sizes: same frame length
    let path = dir.join("wal").join(feral_log::segment::segment_name(last.segment));
    (path, last.offset, frame_len)
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record_is_truncated() {
    let base = tempfile::tempdir().expect("tempdir");
    let (segment, offset, frame_len) = build(base.path());
    let rel = segment.strip_prefix(base.path()).expect("relative").to_path_buf();
    // Cut inside the written bytes (header and payload); the zero padding after them is
    // already zero, so "cutting" there changes nothing.
    let bytes = std::fs::read(base.path().join(&rel)).expect("read");
    let at = offset as usize;
    let payload_len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as u64;
    let written = (feral_log::record::FRAME_HEADER_BYTES as u64 + payload_len).min(frame_len);
    // A record whose last bytes are zero (an op without a proof ends with its zero flags
    // byte) is whole when cut there: cut only before its last non-zero byte.
    let frame = &bytes[at..at + written as usize];
    let written = frame.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1);
    for cut in 0..written {
        let dir = tempfile::tempdir().expect("tempdir");
        common::copy_dir(base.path(), dir.path());
        // A crash: the index lags the log (its non-durable commits vanished) ...
        std::fs::remove_file(dir.path().join("index.redb")).expect("rm index");
        // ... and the last frame reached the disk only up to `cut` bytes.
        let mut bytes = std::fs::read(dir.path().join(&rel)).expect("read");
        for b in &mut bytes[(offset + cut) as usize..(offset + frame_len) as usize] {
            *b = 0;
        }
        std::fs::write(dir.path().join(&rel), &bytes).expect("write");

        let wal = Wal::open(dir.path(), common::config(SMALL_SEGMENT_BYTES)).expect("open");
        assert_eq!(wal.pause(), None, "cut {cut}: torn tail must not pause");
        assert_eq!(wal.durable_lsn(), RECORDS - 1, "cut {cut}");
        assert_eq!(wal.status().torn_tail.is_some(), cut > 0, "cut {cut}");
        let report = wal.check();
        assert!(report.ok, "cut {cut}: {report:?}");
        let next = wal.append(draft(99, 100)).expect("append after truncation");
        assert_eq!(next.lsn, RECORDS, "cut {cut}");
        drop(wal);
        let wal = common::open(dir.path());
        assert_eq!(all_ops(&wal).len() as u64, RECORDS, "cut {cut}");
        assert!(wal.status().torn_tail.is_none(), "cut {cut}: tail was zeroed, nothing torn now");
    }
}

#[test]
fn damaged_last_record_that_the_index_holds_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, offset, _) = build(dir.path());
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[offset as usize + 30] ^= 0x10;
    std::fs::write(&segment, &bytes).expect("write");
    let wal = common::open(dir.path());
    let pause = wal.pause().expect("must pause");
    assert_eq!(pause.kind, feral_log::PauseKind::Corruption, "{pause:?}");
    let report = wal.check();
    assert!(!report.ok);
    let detail = report.wal_detail.expect("detail");
    assert_eq!(detail.offset, offset, "{detail:?}");
    assert!(wal.append(draft(1, 10)).is_err(), "paused log must refuse appends");
}

#[test]
fn bad_record_followed_by_valid_synced_records_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, last_offset, frame_len) = build(dir.path());
    std::fs::remove_file(dir.path().join("index.redb")).expect("rm index");
    let victim = last_offset - 2 * frame_len; // record 3 of 5, synced before 4 and 5 were written
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[victim as usize] ^= 0xff; // a flipped length field
    std::fs::write(&segment, &bytes).expect("write");
    let wal = common::open(dir.path());
    assert_eq!(wal.pause().map(|p| p.kind), Some(feral_log::PauseKind::Corruption));
    let report = wal.check();
    assert_eq!(report.wal_detail.map(|d| d.offset), Some(victim));
    assert_eq!(report.error.map(|c| c.as_str()), Some("wal_corruption"));
}
