//! Writes the seed corpus: one stream per message kind, framed as a peer sends them
//! (`cargo run --example seed_corpus` in transport/fuzz).

use feral_log::{EncodedOp, Hlc, Op, OpBytes, OpId, OpKind, Origin};
use feral_sync::message::{Head, Hello, Want, SyncMessage, encode_frame};

fn main() {
    let origin = Origin([7; 16]);
    let hlc = Hlc { wall_ms: 1_795_000_000_000, counter: 3, node: origin };
    let op = |seq: u64| Op {
        op_id: OpId([seq as u8; 16]),
        origin,
        seq,
        hlc,
        table: "episodes".into(),
        row_id: format!("e{seq}"),
        kind: OpKind::Insert,
        data: br#"{"id":"e","session_id":"s","event_type":"chat","summary":"x"}"#.to_vec(),
    };
    let messages = vec![
        SyncMessage::Hello(Hello {
            version: 1,
            cluster_id: [1; 32],
            node_id: [2; 16],
            origin,
            hlc,
            heads: vec![Head { origin, seq: 2, op_id: OpId([2; 16]) }],
            wants: vec![Want { origin, from: 1, to: 2 }],
        }),
        SyncMessage::Ops(vec![OpBytes::new(EncodedOp::encode(op(1)).into_parts().1), OpBytes::new(EncodedOp::encode(op(2)).into_parts().1)]),
        SyncMessage::Done { sent: 2 },
        SyncMessage::Refuse { code: "split_brain".into(), reason: "r".into() },
    ];
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sync_frames");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut all = vec![7u8];
    for (i, m) in messages.iter().enumerate() {
        let mut stream = vec![255u8];
        encode_frame(m, &mut stream);
        all.extend_from_slice(&stream[1..]);
        std::fs::write(out.join(format!("message-{i}")), stream).expect("write");
    }
    std::fs::write(out.join("session"), all).expect("write");
    println!("seed corpus written under {}", out.display());
}
