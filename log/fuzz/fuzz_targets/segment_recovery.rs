//! Recovery of a log directory holding arbitrary segment files. The first byte picks the shape:
//! the input as a whole file, or a valid header followed by the input as the data region, in one
//! segment or split across two. Recovery must return a result (a torn tail trimmed, or
//! corruption with its location), never panic.
#![no_main]

use std::sync::Arc;

use feral_log::segment::{HEADER_BYTES, Header, segment_name};
use feral_log::storage::{FsStorage, Storage};
use libfuzzer_sys::fuzz_target;

const SALT: u64 = 0x5eed_f00d_cafe_d00d;

fn with_header(base_lsn: u64, body: &[u8]) -> Vec<u8> {
    let capacity = (HEADER_BYTES as usize + body.len() + 64).next_multiple_of(4096).max(8192) as u64;
    let mut file = Header { base_lsn, capacity, salt: SALT }.encode().to_vec();
    file.extend_from_slice(body);
    file.resize(capacity as usize, 0);
    file
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    let files: Vec<(u64, Vec<u8>)> = match mode % 3 {
        0 => vec![(1, rest.to_vec())],
        1 => vec![(1, with_header(1, rest))],
        _ => {
            let cut = rest.len() / 2;
            let second_base = 2 + u64::from(mode / 3);
            vec![(1, with_header(1, &rest[..cut])), (second_base, with_header(second_base, &rest[cut..]))]
        }
    };
    for (base, bytes) in &files {
        if std::fs::write(dir.path().join(segment_name(*base)), bytes).is_err() {
            return;
        }
    }
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let _ = feral_log::recovery::recover(&storage, dir.path(), 0, None);
});
