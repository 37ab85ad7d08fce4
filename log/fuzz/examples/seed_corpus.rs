//! Writes the seed corpus from real segments: `cargo run --example seed_corpus` (in log/fuzz).
//! Each seed is a real store's segment (as a whole file for segment_recovery, with the mode byte
//! in front) and its frames with the salt in front (for record_decoder).

use feral_log::{Config, OpDraft, Wal};

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config { segment_bytes: 16 * 1024, ..Config::default() };
    let wal = Wal::open(dir.path(), config).expect("open");
    for i in 0..120u32 {
        let draft = OpDraft::insert("episodes", format!("e{i}"), format!("{{\"summary\":\"s{i}\"}}").into_bytes());
        wal.append(draft).expect("append");
    }
    wal.close().expect("close");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    std::fs::create_dir_all(out.join("segment_recovery")).expect("mkdir");
    std::fs::create_dir_all(out.join("record_decoder")).expect("mkdir");
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    segs.sort();
    for (i, seg) in segs.iter().take(3).enumerate() {
        let bytes = std::fs::read(seg).expect("read");
        let mut whole = vec![0u8];
        whole.extend_from_slice(&bytes);
        std::fs::write(out.join("segment_recovery").join(format!("segment-{i}")), whole).expect("write");
        let mut body = vec![1u8];
        body.extend_from_slice(&bytes[64..4096.min(bytes.len())]);
        std::fs::write(out.join("segment_recovery").join(format!("body-{i}")), body).expect("write");
        let mut frames = bytes[32..40].to_vec();
        frames.extend_from_slice(&bytes[64..2048.min(bytes.len())]);
        std::fs::write(out.join("record_decoder").join(format!("frames-{i}")), frames).expect("write");
    }
    println!("seed corpus written under {}", out.display());
}
