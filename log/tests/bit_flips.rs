//! Seeded bit flips in sealed segments (frames, gap, footer), segment headers and the active
//! tail: every flip in checksummed bytes is reported by check, never a panic, never wrong data.

mod common;

use std::path::{Path, PathBuf};

use common::{Rng, SMALL_SEGMENT_BYTES, all_ops, draft};
use feral_log::segment::{FOOTER_BYTES, HEADER_BYTES};
use feral_log::{Op, Wal};

const FLIPS: usize = 240;

#[derive(Debug, Clone, Copy)]
enum Region {
    SealedFrames,
    SealedGap,
    SealedFooter,
    Header,
    ActiveFrames,
}

struct Layout {
    sealed: Vec<(PathBuf, u64)>, // path, data_end
    active: (PathBuf, u64),      // path, write offset
}

fn layout(dir: &Path, wal: &Wal) -> Layout {
    let ops = all_ops(wal);
    let mut ends: std::collections::BTreeMap<u64, u64> = Default::default();
    for pair in ops.windows(2) {
        let frame = pair[1].offset.saturating_sub(pair[0].offset);
        if pair[0].segment == pair[1].segment {
            ends.insert(pair[0].segment, pair[1].offset + frame);
        }
    }
    let path = |base: u64| dir.join("wal").join(feral_log::segment::segment_name(base));
    let last = ops.last().expect("ops").segment;
    let sealed = ends.iter().filter(|(b, _)| **b != last).map(|(b, e)| (path(*b), *e)).collect();
    Layout { sealed, active: (path(last), ends[&last]) }
}

fn pick(rng: &mut Rng, region: Region, layout: &Layout) -> (PathBuf, u64) {
    let sealed = &layout.sealed[rng.below(layout.sealed.len() as u64) as usize];
    let (path, range) = match region {
        Region::SealedFrames => (sealed.0.clone(), HEADER_BYTES..sealed.1),
        Region::SealedGap => (sealed.0.clone(), sealed.1..SMALL_SEGMENT_BYTES - FOOTER_BYTES),
        Region::SealedFooter => {
            (sealed.0.clone(), SMALL_SEGMENT_BYTES - FOOTER_BYTES..SMALL_SEGMENT_BYTES)
        }
        Region::Header => {
            let path = if rng.below(2) == 0 { sealed.0.clone() } else { layout.active.0.clone() };
            (path, 0..HEADER_BYTES)
        }
        Region::ActiveFrames => (layout.active.0.clone(), HEADER_BYTES..layout.active.1),
    };
    (path, range.start + rng.below(range.end - range.start))
}

#[test]
fn every_flip_in_checksummed_bytes_is_reported() {
    let mut rng = Rng::from_env("bit_flips");
    let base = tempfile::tempdir().expect("tempdir");
    let wal = common::open(base.path());
    for i in 0..150 {
        wal.append(draft(i, 90 + (i as usize % 7))).expect("append");
    }
    let original: Vec<Op> = all_ops(&wal).into_iter().map(|r| r.op).collect();
    let layout = layout(base.path(), &wal);
    assert!(layout.sealed.len() >= 3, "want several sealed segments");
    drop(wal);
    let regions = [
        Region::SealedFrames,
        Region::SealedGap,
        Region::SealedFooter,
        Region::Header,
        Region::ActiveFrames,
    ];
    for n in 0..FLIPS {
        let region = regions[n % regions.len()];
        let (path, offset) = pick(&mut rng, region, &layout);
        let bit = rng.below(8);
        let dir = tempfile::tempdir().expect("tempdir");
        common::copy_dir(base.path(), dir.path());
        let target = dir.path().join(path.strip_prefix(base.path()).expect("inside"));
        let mut bytes = std::fs::read(&target).expect("read");
        bytes[offset as usize] ^= 1 << bit;
        std::fs::write(&target, &bytes).expect("write");
        let what = format!("flip {n}: {region:?} {} offset {offset} bit {bit}", target.display());

        let wal = Wal::open(dir.path(), common::config(SMALL_SEGMENT_BYTES)).expect(&what);
        let report = wal.check();
        assert!(!report.ok, "{what}: not reported: {report:?}");
        assert_eq!(report.error.map(|c| c.as_str()), Some("wal_corruption"), "{what}: {report:?}");
        let mut read = Vec::new();
        let scanned = wal.scan(1, &mut |r| {
            read.push(r.op);
            Ok(true)
        });
        assert_eq!(read[..], original[..read.len()], "{what}: wrong data returned");
        if scanned.is_ok() {
            assert_eq!(read.len(), original.len(), "{what}: scan ended early without an error");
        }
    }
}
