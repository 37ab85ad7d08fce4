//! `check` runs beside appends: it holds no lock while it reads the log, and what is appended
//! (and sealed, and rolled) while it runs never makes it report damage that is not there.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{SMALL_SEGMENT_BYTES, config_with, draft};
use feral_log::{FsStorage, Storage, StorageFile, Wal};

/// Real files; while armed, every read through a read-only handle (a checker's or a
/// reader's, never the writer's) waits until the gate opens.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    armed: bool,
    waiting: usize,
}

impl Gate {
    fn set(&self, armed: bool) {
        self.state.lock().expect("gate").armed = armed;
        self.cond.notify_all();
    }

    fn pass(&self) {
        let mut state = self.state.lock().expect("gate");
        if !state.armed {
            return;
        }
        state.waiting += 1;
        self.cond.notify_all();
        while state.armed {
            state = self.cond.wait(state).expect("gate");
        }
        state.waiting -= 1;
    }

    /// Waits (with a deadline) until some reader is held at the gate.
    fn wait_for_reader(&self, deadline: Duration) {
        let start = Instant::now();
        let mut state = self.state.lock().expect("gate");
        while state.waiting == 0 {
            let left = deadline.checked_sub(start.elapsed()).expect("no reader reached the gate");
            state = self.cond.wait_timeout(state, left).expect("gate").0;
        }
    }
}

#[derive(Debug)]
struct GatedStorage {
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn StorageFile>,
    gate: Option<Arc<Gate>>,
}

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if let Some(gate) = &self.gate {
            gate.pass();
        }
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Storage for GatedStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(GatedFile { inner: FsStorage.create(path)?, gate: None }))
    }
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>> {
        let gate = (!writable).then(|| self.gate.clone());
        Ok(Box::new(GatedFile { inner: FsStorage.open(path, writable)?, gate }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        FsStorage.sync_dir(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        FsStorage.list(dir)
    }
}

#[test]
fn appends_complete_while_a_check_is_stopped_inside_a_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new(Gate::default());
    let storage = Arc::new(GatedStorage { gate: gate.clone() });
    let wal = Wal::open(dir.path(), config_with(SMALL_SEGMENT_BYTES, storage)).expect("open");
    for i in 0..200 {
        wal.append(draft(i, 100)).expect("append");
    }
    gate.set(true);
    let checker = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.check())
    };
    gate.wait_for_reader(Duration::from_secs(20));
    // The check is stopped inside a segment read: appends (sealing and rolling segments),
    // status and the durable LSN still answer.
    let (done, finished) = std::sync::mpsc::channel();
    let appender = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            for i in 200..400 {
                wal.append(draft(i, 100)).expect("append while a check runs");
            }
            let _ = done.send((wal.durable_lsn(), wal.status().pause));
        })
    };
    let outcome = finished.recv_timeout(Duration::from_secs(20));
    gate.set(false); // whatever happened, let the check finish
    let (durable, pause) = outcome.expect("appends and status stalled behind a running check");
    appender.join().expect("appender");
    assert_eq!(durable, 400);
    assert!(pause.is_none());
    let report = checker.join().expect("check thread");
    assert!(report.ok, "check beside appends: {report:?}");
    assert!(report.records >= 200, "the check covered what was durable when it began: {report:?}");
    let after = wal.check();
    assert!(after.ok && after.records == 400, "{after:?}");
}

#[test]
fn checks_beside_appends_that_roll_segments_never_report_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = common::open(dir.path());
    let writer = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            for i in 0..3000u64 {
                if i % 10 == 0 {
                    let batch = (0..10).map(|k| draft(100_000 + i * 10 + k, 60)).collect();
                    wal.append_batch(batch).expect("append batch");
                } else {
                    wal.append(draft(i, 40 + (i as usize % 90))).expect("append");
                }
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() {
        let report = wal.check();
        assert!(report.ok, "check {checks} beside appends: {report:?}");
        checks += 1;
    }
    writer.join().expect("writer");
    assert!(checks >= 2, "only {checks} checks ran beside the appends");
    let report = wal.check();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, wal.durable_lsn());
}
