//! Helpers shared by the feral-log integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use feral_log::{Config, OpDraft, Storage, Wal};

/// A small segment so tests seal many.
pub const SMALL_SEGMENT_BYTES: u64 = 8 * 1024;

pub fn config(segment_bytes: u64) -> Config {
    Config { segment_bytes, ..Config::default() }
}

pub fn config_with(segment_bytes: u64, storage: Arc<dyn Storage>) -> Config {
    Config { segment_bytes, storage, ..Config::default() }
}

pub fn open(dir: &Path) -> Wal {
    Wal::open(dir, config(SMALL_SEGMENT_BYTES)).expect("open")
}

pub fn draft(i: u64, bytes: usize) -> OpDraft {
    let mut data = format!("{{\"i\":{i}}}").into_bytes();
    data.resize(bytes.max(data.len()), b' ');
    OpDraft::insert("episodes", format!("row-{i}"), data)
}

mod rng;
mod tmpfs;

#[allow(unused_imports)]
pub use rng::Rng;
#[allow(unused_imports)]
pub use tmpfs::Tmpfs;

/// Every op in the log, in LSN order.
pub fn all_ops(wal: &Wal) -> Vec<feral_log::Record> {
    let mut out = Vec::new();
    wal.scan(1, &mut |r| {
        out.push(r);
        Ok(true)
    })
    .expect("scan");
    out
}

/// Copies a data directory (top-level files and `wal/`), as a backup or a crash image would.
pub fn copy_dir(from: &Path, to: &Path) {
    for sub in ["", "wal"] {
        std::fs::create_dir_all(to.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(from.join(sub)).expect("read_dir") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).expect("copy");
            }
        }
    }
}
