//! Nodes syncing through the protocol state machine with real framing but no network: three
//! stores with writes on every side converge to one digest; a copied data directory writing
//! under the same origin is refused as split brain; a paused node refuses at once.

mod common;

use common::{doc, open};
use feral_memory::Node;
use std::time::Instant;

use feral_sync::{FrameDecoder, SyncError, SyncSession, SyncStore, encode_frame, execute};

const CLUSTER: [u8; 32] = [42; 32];

/// Runs one session between two nodes to its end; returns (sent by a, sent by b) or the error.
fn sync(a: &Node, b: &Node) -> Result<(u64, u64), SyncError> {
    let mut sa = a.sync_session(CLUSTER)?;
    let mut sb = b.sync_session(CLUSTER)?;
    let (mut store_a, mut store_b) = (a.sync_store(), b.sync_store());
    loop {
        let mut moved = false;
        for turn in 0..2 {
            let (from, fs, to, ts): (&mut SyncSession, _, &mut SyncSession, _) = if turn == 0 {
                (&mut sa, &mut store_a, &mut sb, &mut store_b)
            } else {
                (&mut sb, &mut store_b, &mut sa, &mut store_a)
            };
            moved |= run_requests(from, fs)?;
            let Some(message) = from.poll_transmit() else { continue };
            let mut bytes = Vec::new();
            encode_frame(&message, &mut bytes);
            let mut decoder = FrameDecoder::default();
            decoder.push(&bytes);
            let message = decoder.next_message()?.expect("a whole frame");
            to.handle(message, Instant::now())?;
            run_requests(to, ts)?;
            moved = true;
        }
        if !moved {
            assert!(sa.is_finished() && sb.is_finished());
            return Ok((sa.stats().sent, sb.stats().sent));
        }
    }
}

/// Runs the session's store requests, as a driver does on its blocking pool.
fn run_requests(session: &mut SyncSession, store: &mut dyn SyncStore) -> Result<bool, SyncError> {
    let mut ran = false;
    while let Some(request) = session.poll_request() {
        let response = execute(store, request);
        session.complete(response, Instant::now())?;
        ran = true;
    }
    Ok(ran)
}

#[test]
fn three_nodes_with_writes_everywhere_converge() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let nodes: Vec<Node> = dirs.iter().map(|d| open(d.path())).collect();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..200 {
            node.append_episode(&doc(&format!("n{n}-{i}"), "s", i as f64), None).expect("append");
        }
        node.delete_episode(&format!("n{n}-7"), None).expect("delete");
    }
    // A ring, then once more around: every op reaches every node.
    for _ in 0..2 {
        for (x, y) in [(0, 1), (1, 2), (2, 0)] {
            sync(&nodes[x], &nodes[y]).expect("sync");
        }
    }
    let digests: Vec<_> = nodes.iter().map(|n| n.digest().expect("digest")).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert_eq!(digests[0].ops, 3 * 201);
    assert_eq!(nodes[1].episodes(1000, None).expect("list").len(), 3 * 199);
    // In sync: a session sends nothing.
    assert_eq!(sync(&nodes[0], &nodes[2]).expect("sync"), (0, 0));
    // One new op: exactly one op crosses.
    nodes[2].append_episode(&doc("late", "s", 1.0), None).expect("append");
    assert_eq!(sync(&nodes[0], &nodes[2]).expect("sync"), (0, 1));
}

#[test]
fn a_copied_data_directory_writing_under_the_same_origin_is_split_brain() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    let a = open(&a_dir);
    a.append_episode(&doc("shared", "s", 1.0), None).expect("append");
    a.close().expect("close");
    // Copy the directory (as a careless restore would).
    let copy = |with_key: bool| {
        let _ = std::fs::remove_dir_all(&b_dir);
        std::fs::create_dir_all(b_dir.join("wal")).expect("mkdir");
        for sub in ["", "wal"] {
            for entry in std::fs::read_dir(a_dir.join(sub)).expect("read_dir") {
                let entry = entry.expect("entry");
                let is_key = entry.file_name() == "node.key";
                if entry.file_type().expect("type").is_file() && (with_key || !is_key) {
                    std::fs::copy(entry.path(), b_dir.join(sub).join(entry.file_name()))
                        .expect("copy");
                }
            }
        }
    };
    // Without the key, the copy cannot write under the origin: another key does not own it.
    copy(false);
    let refused = feral_memory::Node::open(&b_dir, common::config()).expect_err("another key");
    assert!(refused.to_string().contains("does not belong to this node's key"), "{refused}");
    // With the key, both write under one origin: their seq 2 differ, both signed by the one
    // key. That is a conflict, quarantined (not an error that would stop every later sync).
    copy(true);
    let (a, b) = (open(&a_dir), open(&b_dir));
    assert_eq!(a.wal().origin(), b.wal().origin(), "the copy shares the origin");
    a.append_episode(&doc("from-a", "s", 2.0), None).expect("append a");
    b.append_episode(&doc("from-b", "s", 2.0), None).expect("append b");
    assert_eq!(b.ingest(common::stored_ops(&a)).expect("quarantined"), 0);
    let conflicts = b.status().conflicts;
    assert_eq!((conflicts.len(), conflicts[0].seq), (1, 2), "{conflicts:?}");
}

#[test]
fn a_node_syncing_with_itself_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    let err = sync(&node, &node).expect_err("same node id");
    assert_eq!(err.code(), "duplicate_node_id");
}
