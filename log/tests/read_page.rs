//! `Wal::read_page`, the change feed's reader: pages of any size, with the position each page
//! hands back, read every record once in LSN order across sealed and active segments; a
//! position that no longer names its record (a stale or forged hint) is ignored, not trusted.

mod common;

use common::{SMALL_SEGMENT_BYTES, config, draft};
use feral_log::{ScanPosition, Wal};

#[test]
fn pages_with_positions_read_every_record_once_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), config(SMALL_SEGMENT_BYTES)).expect("open");
    for i in 0..30 {
        wal.append_batch((i * 10..i * 10 + 10).map(|j| draft(j, 100)).collect()).expect("append");
    }
    assert!(wal.status().segments > 3, "small segments: the pages cross seals");
    let all: Vec<u64> = (1..=300).collect();
    for max in [1, 7, 64, 1000] {
        let (mut from, mut hint, mut seen) = (1, None, Vec::new());
        loop {
            let (page, pos) = wal.read_page(from, hint, max).expect("page");
            assert!(page.len() <= max);
            if page.is_empty() {
                assert_eq!(pos.next_lsn, 301);
                break;
            }
            seen.extend(page.iter().map(|r| r.lsn));
            from = pos.next_lsn;
            hint = Some(pos);
        }
        assert_eq!(seen, all, "pages of {max}");
    }
    // New records after the end: the same position reads on.
    let (_, end) = wal.read_page(1, None, 1000).expect("page");
    wal.append_batch(vec![draft(300, 100)]).expect("append");
    let (page, _) = wal.read_page(end.next_lsn, Some(end), 10).expect("page");
    assert_eq!(page.iter().map(|r| r.lsn).collect::<Vec<_>>(), [301]);
}

#[test]
fn a_position_that_does_not_name_its_record_is_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), config(SMALL_SEGMENT_BYTES)).expect("open");
    wal.append_batch((0..20).map(|j| draft(j, 100)).collect()).expect("append");
    let (_, at5) = wal.read_page(1, None, 4).expect("page");
    assert_eq!(at5.next_lsn, 5);
    for wrong in [
        ScanPosition { offset: at5.offset + 8, ..at5 },
        ScanPosition { offset: 1 << 40, ..at5 },
        ScanPosition { offset: 0, ..at5 },
        ScanPosition { segment: 9999, ..at5 },
    ] {
        let (page, _) = wal.read_page(5, Some(wrong), 3).expect("a bad hint is ignored");
        assert_eq!(page.iter().map(|r| r.lsn).collect::<Vec<_>>(), [5, 6, 7], "{wrong:?}");
    }
}
