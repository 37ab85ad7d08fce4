//! Salvage, the last resort: after seeded damage inside sealed and active segments (a flipped
//! payload byte, a flipped length, a zeroed stretch over several frames, a wrecked segment
//! header), `salvage` hands over every record whose frame was not touched, byte for byte, and
//! names each damaged stretch and the LSNs missing between intact records. `feral-wal dump
//! --salvage` lists the same records and exits 65.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use common::{Rng, all_ops, draft};
use feral_log::salvage::{SalvageReport, salvage};
use feral_log::{FsStorage, Storage, Wal};

/// (segment base, frame offset) → (LSN, frame end) of every record.
type Frames = BTreeMap<(u64, u64), (u64, u64)>;

fn frames(wal: &Wal) -> Frames {
    let records = all_ops(wal);
    let mut out = Frames::new();
    for (i, r) in records.iter().enumerate() {
        let end = match records.get(i + 1) {
            Some(next) if next.segment == r.segment => next.offset,
            // The last frame of a segment: its length from its own header.
            _ => {
                let path = segment_path(wal.dir(), r.segment);
                let file = std::fs::File::open(path).expect("segment");
                let mut len = [0u8; 4];
                file.read_exact_at(&mut len, r.offset).expect("len");
                r.offset + (24 + u32::from_le_bytes(len) as u64).div_ceil(8) * 8
            }
        };
        out.insert((r.segment, r.offset), (r.lsn, end));
    }
    out
}

fn segment_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join("wal").join(feral_log::segment::segment_name(base))
}

fn run_salvage(dir: &Path) -> (SalvageReport, BTreeMap<u64, Vec<u8>>) {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let mut found = BTreeMap::new();
    let report = salvage(&storage, &dir.join("wal"), &mut |s| {
        assert!(found.insert(s.lsn, s.bytes.as_slice().to_vec()).is_none(), "LSN {} twice", s.lsn);
        Ok(())
    })
    .expect("salvage never fails on damage");
    (report, found)
}

#[test]
fn salvage_recovers_every_intact_record_past_seeded_damage() {
    let mut rng = Rng::from_env("salvage");
    for round in 0..12 {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = common::open(dir.path());
        for i in 0..120 {
            wal.append(draft(i, 80 + rng.below(200) as usize)).expect("append");
        }
        let frames = frames(&wal);
        let payloads = payloads(&wal);
        let segments: Vec<u64> = frames
            .keys()
            .map(|(s, _)| *s)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert!(segments.len() >= 4, "several segments");
        drop(wal);
        // Up to three damages in different segments (sealed, and sometimes the active one).
        let mut lost = std::collections::BTreeSet::new();
        let mut hit = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let segment = segments[rng.below(segments.len() as u64) as usize];
            if hit.contains(&segment) {
                continue;
            }
            hit.push(segment);
            let in_segment: Vec<_> = frames.range((segment, 0)..(segment + 1, 0)).collect();
            let (&(_, offset), &(lsn, end)) =
                in_segment[rng.below(in_segment.len() as u64) as usize];
            let path = segment_path(dir.path(), segment);
            let file =
                std::fs::OpenOptions::new().write(true).read(true).open(&path).expect("open");
            let shape = rng.below(4);
            let (from, to) = match shape {
                // A flipped byte in the payload.
                0 => (offset + 24 + rng.below(end - offset - 24), 1),
                // A flipped byte in the frame's length.
                1 => (offset + rng.below(4), 1),
                // A zeroed stretch from inside this frame over the next ones.
                2 => (offset + 8, 600.min(common::SMALL_SEGMENT_BYTES - 40 - offset - 8)),
                // The segment header's magic and CRC wrecked (the salt survives).
                _ => (0, 16),
            };
            let mut bytes = vec![0u8; to as usize];
            file.read_exact_at(&mut bytes, from).expect("read");
            for b in bytes.iter_mut() {
                *b = if shape == 2 { 0 } else { *b ^ (1 + rng.below(255) as u8) };
            }
            file.write_all_at(&bytes, from).expect("write");
            if shape == 3 {
                continue; // no frame touched
            }
            let _ = lsn;
            for (&(s, o), &(l, e)) in &frames {
                if s == segment && o < from + to && from < e {
                    lost.insert(l);
                }
            }
        }
        let (report, found) = run_salvage(dir.path());
        println!("round {round}: lost {lost:?}, report {report:?}");
        for (lsn, payload) in &payloads {
            if lost.contains(lsn) {
                assert!(!found.contains_key(lsn), "round {round}: LSN {lsn} was damaged");
            } else {
                assert_eq!(found.get(lsn), Some(payload), "round {round}: intact LSN {lsn}");
            }
        }
        assert_eq!(found.len(), payloads.len() - lost.len(), "round {round}");
        assert_eq!(report.records as usize, found.len());
        if !lost.is_empty() {
            assert!(!report.clean() && !report.damaged.is_empty(), "round {round}: {report:?}");
            // LSNs missing between intact records: every lost one but a lost tail.
            let tail = payloads.keys().rev().take_while(|l| lost.contains(l)).count() as u64;
            assert_eq!(report.missing_lsns, lost.len() as u64 - tail, "round {round}");
        }
    }
}

/// LSN → stored payload of every record (all of the log's own origin).
fn payloads(wal: &Wal) -> BTreeMap<u64, Vec<u8>> {
    let records = all_ops(wal);
    let origin = wal.origin();
    let bytes =
        wal.payloads_by_origin_within(&origin, 1, u64::MAX, 10_000, usize::MAX).expect("read");
    assert_eq!(bytes.len(), records.len());
    records.iter().zip(bytes).map(|(r, b)| (r.lsn, b.as_slice().to_vec())).collect()
}

/// Damage outside every record (a segment header's magic, a byte in the zero gap, a footer
/// byte) loses nothing: the scrub rewrites the segment from its intact records, keeps the
/// damaged file under `damaged/`, and `check` is clean; the records read back as they were.
#[test]
fn damage_outside_the_records_is_rewritten_from_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = common::open(dir.path());
    for i in 0..120 {
        wal.append(draft(i, 150)).expect("append");
    }
    let before = payloads(&wal);
    let sealed = wal.sealed_segments();
    assert!(sealed.len() >= 3);
    let capacity = common::SMALL_SEGMENT_BYTES;
    let frames = frames(&wal);
    let data_end = |base: u64| frames.range((base, 0)..(base + 1, 0)).map(|(_, (_, e))| *e).max();
    let spots = [
        (sealed[0], 3),                                        // header magic
        (sealed[1], data_end(sealed[1]).expect("frames") + 5), // zero gap
        (sealed[2], capacity - 30),                            // footer
    ];
    for (base, at) in spots {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(dir.path(), base))
            .expect("open");
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).expect("read");
        file.write_all_at(&[b[0] ^ 0x10], at).expect("write");
    }
    assert!(!wal.check().ok, "the damage is seen");
    for (base, _) in spots {
        let scrubbed = wal.scrub_segment(base, &mut |_| true).expect("scrub");
        assert_eq!(scrubbed, feral_log::damage::Scrubbed::Rewritten, "segment {base}");
    }
    let report = wal.check();
    assert!(report.ok, "{report:?}");
    assert!(wal.damage().is_empty());
    assert_eq!(payloads(&wal), before, "every record as it was");
    assert_eq!(std::fs::read_dir(dir.path().join("damaged")).expect("kept").count(), 3);
    drop(wal);
    let wal = common::open(dir.path());
    assert!(wal.check().ok, "and after a reopen");
}
