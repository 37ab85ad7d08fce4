//! A seeded model-based test of the log over [`FaultStorage`]: random appends (single and
//! batched), checks, resumes, clean restarts, power losses (every write not yet synced is
//! undone), a full disk from a random write and fsync EIO at a random sync, against a
//! reference model of the acknowledged ops. After every restart and power loss the log holds
//! exactly the acknowledged ops, in order, and checks clean. At most one fault is armed at a
//! time: a failed commit zeroes the records it wrote, and a device that fails a sync and then
//! refuses even that zeroing (two faults at once) leaves records a restart cannot tell from
//! acknowledged ones (docs/format.md). The seed is printed; `FERAL_TEST_SEED` replays a run,
//! `FERAL_MODEL_STEPS` sets its length (10,000 by default).

mod common;

use std::sync::Arc;

use common::{Rng, all_ops, draft};
use feral_log::fault::{FaultHandle, FaultStorage};
use feral_log::{OpId, Wal};

const SEGMENT_BYTES: u64 = 8 * 1024;
const STEPS_DEFAULT: u64 = 10_000;

struct Store {
    dir: tempfile::TempDir,
    wal: Option<Wal>,
    handle: FaultHandle,
}

impl Store {
    fn open(dir: tempfile::TempDir) -> Store {
        let (storage, handle) = FaultStorage::new();
        handle.track_unsynced();
        let config = common::config_with(SEGMENT_BYTES, Arc::new(storage));
        let wal = Wal::open(dir.path(), config).expect("open");
        Store { dir, wal: Some(wal), handle }
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("open")
    }
}

/// The log holds exactly `acked`, in order, and checks clean.
fn assert_holds(wal: &Wal, acked: &[OpId], what: &str) {
    let records = all_ops(wal);
    let found: Vec<OpId> = records.iter().map(|r| r.op.op_id).collect();
    if found != acked {
        let first = found
            .iter()
            .zip(acked)
            .position(|(f, a)| f != a)
            .unwrap_or(found.len().min(acked.len()));
        let near = |v: &[OpId]| {
            v.iter().skip(first.saturating_sub(2)).take(5).copied().collect::<Vec<_>>()
        };
        eprintln!(
            "{what}: first difference at {first}: log {:?} model {:?}; lsn there {:?}",
            near(&found),
            near(acked),
            records.get(first).map(|r| (r.lsn, r.op.seq))
        );
    }
    assert_eq!(found.len(), acked.len(), "{what}: op count");
    assert!(found == acked, "{what}: the log must hold exactly the acknowledged ops, in order");
    let report = wal.check();
    assert!(report.ok, "{what}: {report:?}");
}

#[test]
fn random_operations_against_a_model_of_the_acknowledged_ops() {
    let mut rng = Rng::from_env("log model");
    let steps = std::env::var("FERAL_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS_DEFAULT);
    let mut store = Store::open(tempfile::tempdir().expect("tempdir"));
    let mut acked: Vec<OpId> = Vec::new();
    let mut next = 0u64;
    let (mut restarts, mut power_losses, mut faults, mut failed) = (0, 0, 0, 0);
    let mut armed = false;
    for step in 0..steps {
        let what = format!("step {step}");
        match rng.below(100) {
            0..=59 => {
                let bytes = 50 + rng.below(400) as usize;
                match store.wal().append(draft(next, bytes)) {
                    Ok(done) => acked.push(done.op_id),
                    Err(e) => {
                        if std::env::var_os("FERAL_MODEL_TRACE").is_some() {
                            eprintln!("step {step}: append failed: {e}");
                        }
                        failed += 1
                    }
                }
                next += 1;
            }
            60..=69 => {
                let n = 1 + rng.below(40);
                let batch = (0..n).map(|i| draft(next + i, 80)).collect();
                match store.wal().append_batch(batch) {
                    Ok(done) => acked.extend(done.iter().filter(|d| !d.duplicate).map(|d| d.op_id)),
                    Err(e) => {
                        if std::env::var_os("FERAL_MODEL_TRACE").is_some() {
                            eprintln!("step {step}: batch of {n} failed: {e}");
                        }
                        failed += 1
                    }
                }
                next += n;
            }
            70..=74 => {
                let report = store.wal().check();
                if !store.wal().io_paused() {
                    assert!(report.ok, "{what}: check of a healthy log: {report:?}");
                }
            }
            75..=79 => {
                store.handle.heal();
                if std::env::var_os("FERAL_MODEL_TRACE").is_some() {
                    eprintln!("step {step}: resume");
                }
                armed = false;
                let report = store.wal().resume();
                assert!(report.ok, "{what}: resume after the fault is gone: {report:?}");
                assert!(!store.wal().io_paused(), "{what}");
            }
            80..=84 if !armed => {
                store.handle.fill_after(1 + rng.below(20));
                if std::env::var_os("FERAL_MODEL_TRACE").is_some() {
                    eprintln!("step {step}: fill armed");
                }
                (armed, faults) = (true, faults + 1);
            }
            85..=88 if !armed => {
                store.handle.fail_sync(1 + rng.below(10));
                if std::env::var_os("FERAL_MODEL_TRACE").is_some() {
                    eprintln!("step {step}: eio armed");
                }
                (armed, faults) = (true, faults + 1);
            }
            80..=88 => {}
            89..=93 => {
                if std::env::var_os("FERAL_MODEL_TRACE").is_some() {
                    eprintln!("step {step}: restart");
                }
                // A clean restart: close, reopen over fresh storage.
                let wal = store.wal.take().expect("open");
                let _ = wal.close();
                store = Store::open(store.dir);
                armed = false;
                assert_holds(store.wal(), &acked, &format!("{what}: after a restart"));
                restarts += 1;
            }
            _ => {
                if std::env::var_os("FERAL_MODEL_TRACE").is_some() {
                    eprintln!("step {step}: power loss");
                }
                // A power loss: unsynced writes are undone and the device stops; the process
                // then goes away without closing anything.
                store.handle.power_loss().expect("undo unsynced writes");
                drop(store.wal.take());
                store = Store::open(store.dir);
                armed = false;
                assert_holds(store.wal(), &acked, &format!("{what}: after a power loss"));
                power_losses += 1;
            }
        }
    }
    let wal = store.wal.take().expect("open");
    let _ = wal.close();
    let store = Store::open(store.dir);
    assert_holds(store.wal(), &acked, "at the end");
    println!(
        "{steps} steps: {} ops acknowledged, {failed} appends failed, {faults} faults armed, \
         {restarts} restarts, {power_losses} power losses",
        acked.len()
    );
    assert!(restarts > 0 && power_losses > 0 && failed > 0, "every kind of step ran");
}
