//! Input from disk never panics: segments and index files full of seeded garbage, cut short,
//! or with forged lengths open (paused) or fail with a clear error, and check and scan report
//! instead of panicking.

mod common;

use common::{Rng, SMALL_SEGMENT_BYTES, draft};
use feral_log::Wal;
use feral_log::segment::{HEADER_BYTES, Header, segment_name};

const CASES: usize = 60;

/// Writes one segment file: a valid header for `base` and then `body` (garbage), padded or cut
/// to `len` bytes.
fn segment_file(dir: &std::path::Path, base: u64, body: &[u8], len: usize) {
    let header = Header { base_lsn: base, capacity: SMALL_SEGMENT_BYTES, salt: 7 };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(body);
    bytes.resize(len, 0);
    std::fs::write(dir.join("wal").join(segment_name(base)), bytes).expect("write");
}

fn exercise(dir: &std::path::Path, what: &str) {
    match Wal::open(dir, common::config(SMALL_SEGMENT_BYTES)) {
        Err(error) => assert!(!error.to_string().is_empty(), "{what}"),
        Ok(wal) => {
            let report = wal.check();
            let scanned = wal.scan(1, &mut |_| Ok(true));
            if report.ok {
                assert!(scanned.is_ok(), "{what}: check ok but scan failed: {scanned:?}");
            }
            let _ = wal.heads();
            let _ = wal.append(draft(1, 10));
        }
    }
}

#[test]
fn garbage_segments_never_panic() {
    let mut rng = Rng::from_env("garbage_segments");
    for case in 0..CASES {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("wal")).expect("mkdir");
        let len = match rng.below(4) {
            0 => SMALL_SEGMENT_BYTES as usize,
            1 => rng.below(SMALL_SEGMENT_BYTES) as usize,
            2 => HEADER_BYTES as usize + rng.below(64) as usize,
            _ => SMALL_SEGMENT_BYTES as usize + rng.below(100) as usize,
        };
        let mut body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if rng.below(2) == 0 {
            // A plausible frame header with a forged length and LSN.
            let forged = [u32::MAX, 0, 1 << 31, 24][rng.below(4) as usize];
            body[..4].copy_from_slice(&forged.to_le_bytes());
            body[8..16].copy_from_slice(&1u64.to_le_bytes());
        }
        segment_file(dir.path(), 1, &body, len);
        if rng.below(3) == 0 {
            segment_file(dir.path(), 1 + rng.below(5), &body, len); // a second, maybe overlapping
        }
        exercise(dir.path(), &format!("case {case} len {len}"));
    }
}

#[test]
fn garbage_index_files_never_panic() {
    let mut rng = Rng::from_env("garbage_index");
    let base = tempfile::tempdir().expect("tempdir");
    {
        let wal = common::open(base.path());
        for i in 0..50 {
            wal.append(draft(i, 50)).expect("append");
        }
    }
    let original = std::fs::read(base.path().join("index.redb")).expect("index");
    for case in 0..CASES {
        let dir = tempfile::tempdir().expect("tempdir");
        common::copy_dir(base.path(), dir.path());
        let mut bytes = original.clone();
        match rng.below(3) {
            0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            1 => {
                for _ in 0..1 + rng.below(64) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.next_u64() as u8;
                }
            }
            _ => bytes = (0..rng.below(20_000)).map(|_| rng.next_u64() as u8).collect(),
        }
        std::fs::write(dir.path().join("index.redb"), &bytes).expect("write");
        exercise(dir.path(), &format!("index case {case}"));
        // Whatever happened to the index, resume() rebuilds it from the intact log.
        let wal = common::open(dir.path());
        let report = wal.resume();
        assert!(report.ok, "index case {case}: {report:?}");
        assert_eq!(common::all_ops(&wal).len(), 50 + usize::from(wal.durable_lsn() == 51));
    }
}
