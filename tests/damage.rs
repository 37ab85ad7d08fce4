//! Damage is contained: a record damaged in a sealed segment is found (by a sync's read, by
//! the scrub, by `check`), shown in status with the op it held, and the node goes on: writes
//! are taken, and a peer's sync of it completes over real QUIC for everything it can verify:
//! the other origins whole, and the damaged origin up to the run before the damage. The
//! damaged op is never sent. A running `feral-node` finds damage on its own with its scrub.

mod common;

use std::os::unix::fs::FileExt;

use common::quic::{Peer, ok, peer, start_server, stop_all, syncer};
use common::{RunningNode, SMALL_SEGMENT_BYTES, all_ops, doc, feral_node};
use feral_log::damage::{FoundBy, Scrubbed};
use feral_memory::materializer::Episode;
use feral_transport::SyncOptions;
use feral_transport::tls::Ca;

fn episodes(p: &Peer, prefix: &str, batches: usize, per: usize) {
    append(&p.node, prefix, batches, per);
}

/// `batches` appends of `per` episodes each, `prefix-<batch>-<i>`.
fn append(node: &feral_memory::Node, prefix: &str, batches: usize, per: usize) {
    for b in 0..batches {
        let batch = (0..per)
            .map(|i| {
                let d = doc(&format!("{prefix}-{b}-{i}"), "s", (b * per + i) as f64);
                (Episode::from_input(&d, 2e9).expect("valid"), None)
            })
            .collect();
        node.append_episodes(batch).expect("append");
    }
}

/// Flips one payload byte of the record at `record`'s frame.
fn flip(p: &Peer, record: &feral_log::Record) {
    let path =
        p.node.wal().dir().join("wal").join(feral_log::segment::segment_name(record.segment));
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("segment");
    let at = record.offset + 24 + 10;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).expect("read");
    file.write_all_at(&[byte[0] ^ 0x20], at).expect("write");
}

#[test]
fn damage_is_found_shown_and_synced_around() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let ca = Ca::generate().expect("ca");
    let (a, b, x) = (peer(&ca), peer(&ca), peer(&ca));
    // X's ops reach A first: A holds two origins.
    episodes(&x, "x", 5, 10);
    let (x_addr, x_stop, x_task) = start_server(&x);
    ok(&rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(x_addr)));
    episodes(&a, "a", 30, 10);
    assert!(a.node.wal().sealed_segments().len() >= 3, "several sealed segments");
    // Damage one of A's own ops in the middle of a sealed segment.
    let own = a.node.wal().origin();
    let sealed = a.node.wal().sealed_segments();
    let records = all_ops(&a.node);
    let victims: Vec<_> =
        records.iter().filter(|r| r.op.origin == own && sealed[1..].contains(&r.segment)).collect();
    let victim = victims[victims.len() / 2].clone();
    flip(&a, &victim);
    assert!(a.node.status().damage.is_empty(), "not found yet");

    // B syncs from A: the read meets the damage, registers it, and the session goes on.
    let (a_addr, a_stop, a_task) = start_server(&a);
    let result = rt.block_on(syncer(&b, SyncOptions::default()).sync_with_peer(a_addr));
    ok(&result);
    let status = a.node.status();
    assert_eq!(status.damaged_lsns, 1, "{:?}", status.damage);
    let range = &status.damage[0];
    assert_eq!(
        (range.from_lsn, range.to_lsn, range.found_by),
        (victim.lsn, victim.lsn, FoundBy::Read)
    );
    assert_eq!(range.ops.len(), 1);
    let op = &range.ops[0];
    assert_eq!((op.op_id, op.origin, op.seq), (victim.op.op_id, own, victim.op.seq));
    assert!(!status.io_paused, "damage does not stop the node");
    // B took X's ops whole and A's up to the run before the damage, and never the damaged op.
    let heads: std::collections::BTreeMap<_, _> =
        b.node.wal().heads().expect("heads").into_iter().collect();
    assert_eq!(heads.get(&x.node.wal().origin()), Some(&50), "X's origin whole");
    let a_head = heads.get(&own).copied().unwrap_or(0);
    assert!(
        a_head < victim.op.seq && a_head > 0,
        "A's origin up to before seq {}: {a_head}",
        victim.op.seq
    );
    assert!(b.node.wal().get(&victim.op.op_id).expect("get").is_none(), "never sent");

    // Writes go on; the scrub and check find the same damage.
    episodes(&a, "after", 1, 5);
    let scrubbed = a.node.wal().scrub_segment(victim.segment, &mut |_| true).expect("scrub");
    assert_eq!(scrubbed, Scrubbed::Damaged(1));
    assert_eq!(a.node.status().damage[0].found_by, FoundBy::Scrub);
    for base in a.node.wal().sealed_segments().into_iter().filter(|b| *b != victim.segment) {
        let clean = a.node.wal().scrub_segment(base, &mut |_| true).expect("scrub");
        assert_eq!(clean, Scrubbed::Clean, "segment {base}");
    }
    let report = a.node.check();
    assert!(!report.ok);
    let status = a.node.status();
    assert_eq!((status.damaged_lsns, status.damage[0].found_by), (1, FoundBy::Check));
    // A second sync: again a success, nothing new past the damage.
    ok(&rt.block_on(syncer(&b, SyncOptions::default()).sync_with_peer(a_addr)));
    rt.block_on(stop_all(vec![(a_addr, a_stop, a_task), (x_addr, x_stop, x_task)]));
}

/// A running node's scrub finds a flipped byte in a sealed segment on its own and shows it in
/// status and metrics while it keeps taking writes.
#[test]
fn a_running_nodes_scrub_finds_damage_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    let segment = SMALL_SEGMENT_BYTES.to_string();
    let init = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["init", "--segment-bytes", &segment])
        .output()
        .expect("init");
    assert!(init.status.success());
    let mut records = Vec::new();
    {
        let node = feral_memory::Node::open(&data, common::config()).expect("open");
        append(&node, "e", 20, 10);
        records.extend(all_ops(&node));
        let sealed = node.wal().sealed_segments();
        records.retain(|r| r.segment == sealed[0]);
        node.close().expect("close");
    }
    let running = RunningNode::start(&data, &["--scrub-rate", "100000000", "--scrub-every", "1"]);
    let victim = &records[records.len() / 2];
    let path = data.join("wal").join(feral_log::segment::segment_name(victim.segment));
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("segment");
    file.write_all_at(&[0xff, 0xee], victim.offset + 24 + 12).expect("write");
    let api = running.api();
    let mut status = serde_json::Value::Null;
    common::wait_for("the scrub to report the damage", std::time::Duration::from_secs(30), || {
        status = api.call("GET", "/v1/status", None).expect("status").1;
        status["damaged_lsns"] == 1
    });
    let range = &status["damage"][0];
    assert_eq!(range["from_lsn"], victim.lsn, "{status}");
    assert_eq!(range["found_by"], "scrub");
    assert_eq!(range["ops"][0]["op_id"], victim.op.op_id.to_string());
    assert_eq!(status["io_paused"], false);
    let metrics =
        api.send_blocking(feral_memory::client::Call::new("GET", "/metrics")).expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(text.contains("feral_damaged_records 1"), "{text}");
    let add = api
        .call("POST", "/v1/episodes", Some(&doc("after", "s", 1.0)))
        .expect("append after the damage");
    assert!(add.0 == 200 || add.0 == 201, "{add:?}");
    assert!(running.stop(), "stops cleanly");
}

/// Self-heal: B holds all of A's ops; a byte flips in two of A's sealed segments (one of its
/// own ops, one of X's). A's next sync with B asks for them again (its hello's wants), takes
/// B's copies only after their seals verify, rewrites both segments whole, keeps the damaged
/// files under `damaged/`, and `check` is clean, with digests equal. With no peer holding a
/// damaged op (a fresh peer), the damage stays listed, naming the op.
#[test]
fn a_damaged_segment_heals_from_a_peer() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let ca = Ca::generate().expect("ca");
    let (a, b, x, fresh) = (peer(&ca), peer(&ca), peer(&ca), peer(&ca));
    episodes(&x, "x", 10, 10);
    let (x_addr, x_stop, x_task) = start_server(&x);
    ok(&rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(x_addr)));
    episodes(&a, "a", 30, 10);
    let (b_addr, b_stop, b_task) = start_server(&b);
    ok(&rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(b_addr)));
    let sealed = a.node.wal().sealed_segments();
    let records = all_ops(&a.node);
    let own = a.node.wal().origin();
    let pick = |mine: bool, not_in: Option<u64>| {
        let mut candidates: Vec<_> = records
            .iter()
            .filter(|r| (r.op.origin == own) == mine && sealed.contains(&r.segment))
            .filter(|r| not_in != Some(r.segment))
            .collect();
        candidates.retain(|r| r.op.seq > 1);
        candidates[candidates.len() / 2].clone()
    };
    let mine = pick(true, None);
    let theirs = pick(false, Some(mine.segment));
    flip(&a, &mine);
    flip(&a, &theirs);
    let digest_before = b.node.digest().expect("digest");
    for base in [mine.segment, theirs.segment] {
        assert!(matches!(
            a.node.wal().scrub_segment(base, &mut |_| true).expect("scrub"),
            Scrubbed::Damaged(1)
        ));
    }
    assert_eq!(a.node.status().damaged_lsns, 2);

    // A fresh peer holds neither: the session succeeds, the damage stays, naming the ops.
    let (f_addr, f_stop, f_task) = start_server(&fresh);
    ok(&rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(f_addr)));
    let status = a.node.status();
    assert_eq!(status.damaged_lsns, 2, "no peer held them");
    let named: Vec<_> = status.damage.iter().flat_map(|r| &r.ops).map(|o| o.op_id).collect();
    assert!(named.contains(&mine.op.op_id) && named.contains(&theirs.op.op_id), "{named:?}");

    // B holds both: one session heals.
    let result = rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(b_addr));
    ok(&result);
    let status = a.node.status();
    assert_eq!(status.damaged_lsns, 0, "healed: {:?}", status.damage);
    let report = a.node.check();
    assert!(report.ok, "{report:?}");
    assert_eq!(a.node.digest().expect("digest"), digest_before, "A equals B again");
    let kept = std::fs::read_dir(a.node.wal().dir().join("damaged")).expect("damaged/").count();
    assert_eq!(kept, 2, "both damaged files kept for forensics");
    // The healed records read back as they were.
    assert_eq!(a.node.wal().get(&mine.op.op_id).expect("read").expect("held").op, mine.op);
    assert_eq!(a.node.wal().get(&theirs.op.op_id).expect("read").expect("held").op, theirs.op);
    // And a reopen finds nothing wrong.
    rt.block_on(stop_all(vec![
        (x_addr, x_stop, x_task),
        (b_addr, b_stop, b_task),
        (f_addr, f_stop, f_task),
    ]));
}

/// Damage in the segment being written, found by `check`: the node keeps writing into that
/// segment, and the next session with a peer that holds the damaged op seals the segment early
/// and heals it whole. The writes go on in a fresh segment, the check is clean, and the two
/// stores are equal.
#[test]
fn damage_in_the_active_segment_heals_from_a_peer() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let ca = Ca::generate().expect("ca");
    let (a, b) = (peer(&ca), peer(&ca));
    let own = a.node.wal().origin();
    let in_active = |p: &Peer| {
        let sealed = p.node.wal().sealed_segments();
        let records = all_ops(&p.node);
        records.into_iter().filter(|r| !sealed.contains(&r.segment)).collect::<Vec<_>>()
    };
    let mut round = 0;
    while in_active(&a).len() < 6 {
        append(&a.node, &format!("a{round}"), 1, 3);
        round += 1;
    }
    let (b_addr, b_stop, b_task) = start_server(&b);
    ok(&rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(b_addr)));
    let records = in_active(&a);
    let victim = records[records.len() / 2].clone();
    assert_eq!(victim.op.origin, own);
    let active = victim.segment;
    flip(&a, &victim);

    let report = a.node.check();
    assert!(!report.ok, "the check finds it");
    let status = a.node.status();
    assert_eq!(status.damaged_lsns, 1, "{:?}", status.damage);
    assert_eq!((status.damage[0].base, status.damage[0].found_by), (active, FoundBy::Check));
    assert!(!status.io_paused, "damage does not stop the node");
    // Writes go on, into the damaged segment still.
    append(&a.node, "after", 1, 2);
    assert!(!a.node.wal().sealed_segments().contains(&active), "still the active segment");

    // B holds the damaged op: one session seals the segment and heals it.
    ok(&rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(b_addr)));
    let status = a.node.status();
    assert_eq!(status.damaged_lsns, 0, "healed: {:?}", status.damage);
    assert!(a.node.wal().sealed_segments().contains(&active), "sealed early to be healed");
    let report = a.node.check();
    assert!(report.ok, "{report:?}");
    assert_eq!(a.node.wal().get(&victim.op.op_id).expect("read").expect("held").op, victim.op);
    let kept = std::fs::read_dir(a.node.wal().dir().join("damaged")).expect("damaged/").count();
    assert_eq!(kept, 1, "the damaged file kept for forensics");
    assert_eq!(a.node.wal().scrub_segment(active, &mut |_| true).expect("scrub"), Scrubbed::Clean);
    // Writes go on in the fresh segment, and the two stores are equal.
    append(&a.node, "later", 1, 2);
    ok(&rt.block_on(syncer(&a, SyncOptions::default()).sync_with_peer(b_addr)));
    assert_eq!(a.node.digest().expect("digest"), b.node.digest().expect("digest"));
    assert!(a.node.check().ok);
    rt.block_on(stop_all(vec![(b_addr, b_stop, b_task)]));
}

/// The frames of a segment file as (offset, frame length), read from their lengths.
fn frame_spans(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 64usize;
    while at + 24 <= bytes.len() - 40 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        let frame = (24 + len).div_ceil(8) * 8;
        out.push((at as u64, frame as u64));
        at += frame;
    }
    out
}

/// Three running nodes (A pushes to B and C, B to C); seeded damage of several shapes in
/// sealed segments of one of them, while A keeps taking writes. The damaged node's scrub
/// finds it and heals it from its peers within a bounded time (each damaged file kept under
/// `damaged/`), its check is clean, and once the writes stop the three digests are equal.
#[test]
fn one_of_three_running_nodes_heals_seeded_damage_while_writes_go_on() {
    let seed = std::env::var("FERAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 ^ 0x5eed);
    println!("seed {seed} (replay with FERAL_TEST_SEED={seed})");
    let mut state = seed;
    let mut below = |n: u64| {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    };
    let root = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| root.path().join(n)).collect();
    for dir in &dirs {
        let out = feral_node()
            .arg("--data")
            .arg(dir)
            .args(["init", "--segment-bytes", "65536"])
            .output()
            .expect("init");
        assert!(out.status.success());
    }
    let scrub = ["--scrub-rate", "100000000", "--scrub-every", "1"];
    let c = RunningNode::start(&dirs[2], &scrub);
    let c_addr = c.sync_addr.to_string();
    let peers_b = [&["--peers", c_addr.as_str()][..], &scrub].concat();
    let b = RunningNode::start(&dirs[1], &peers_b);
    let both = format!("{},{}", b.sync_addr, c.sync_addr);
    let peers_a = [&["--peers", both.as_str()][..], &scrub].concat();
    let a = RunningNode::start(&dirs[0], &peers_a);
    let nodes = [&a, &b, &c];
    let heads = |n: &RunningNode| {
        n.api().call("GET", "/v1/status", None).expect("status").1["heads"].clone()
    };
    let append = |n: &RunningNode, from: usize, count: usize| {
        let docs: Vec<_> =
            (from..from + count).map(|i| doc(&format!("e{i}"), "s", i as f64)).collect();
        let (status, body) =
            n.api().call("POST", "/v1/episodes", Some(&serde_json::json!(docs))).expect("append");
        assert!(status == 200 || status == 201, "{status} {body}");
    };
    for batch in 0..15 {
        append(&a, batch * 100, 100);
    }
    common::wait_for("B and C to hold A's ops", std::time::Duration::from_secs(60), || {
        heads(&b) == heads(&a) && heads(&c) == heads(&a)
    });

    // Damage one node's sealed segments: one to three segments, a shape each.
    let victim = nodes[below(3) as usize];
    let mut segments: Vec<_> = std::fs::read_dir(victim.data.join("wal"))
        .expect("wal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments.pop(); // the active segment
    assert!(segments.len() >= 3, "{segments:?}");
    let mut hit = Vec::new();
    for _ in 0..1 + below(3) {
        let path = segments[below(segments.len() as u64) as usize].clone();
        if hit.contains(&path) {
            continue;
        }
        let mut bytes = std::fs::read(&path).expect("read");
        let spans = frame_spans(&bytes);
        let (offset, len) = spans[below(spans.len() as u64) as usize];
        let shape = below(5);
        match shape {
            0 => bytes[(offset + 24 + below(len - 24)) as usize] ^= 0x41,
            1 => bytes[(offset + below(4)) as usize] ^= 0x08,
            2 => {
                let end = (offset + 8 + 200).min(bytes.len() as u64 - 40);
                bytes[(offset + 8) as usize..end as usize].fill(0);
            }
            3 => bytes[below(8) as usize] ^= 0x20,
            _ => {
                let n = bytes.len();
                bytes[n - 1 - below(40) as usize] ^= 0x02;
            }
        }
        println!("damaged {} with shape {shape} at frame {offset}", path.display());
        std::fs::write(&path, &bytes).expect("write");
        hit.push(path);
    }
    // Writes go on meanwhile.
    let writing = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 100_000;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                append(&a, i, 10);
                i += 10;
            }
        });
        let kept = || std::fs::read_dir(victim.data.join("damaged")).map_or(0, |d| d.count());
        common::wait_for("the damaged node to heal", std::time::Duration::from_secs(60), || {
            kept() >= hit.len() && {
                let (_, status) = victim.api().call("GET", "/v1/status", None).expect("status");
                status["damaged_lsns"] == 0
            }
        });
        let (code, report) = victim.api().call("GET", "/v1/check", None).expect("check");
        assert_eq!(code, 200, "{report}");
        assert_eq!(report["ok"], true, "{report}");
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    common::wait_for("the three to converge", std::time::Duration::from_secs(60), || {
        heads(&b) == heads(&a) && heads(&c) == heads(&a)
    });
    let data: Vec<_> = nodes.iter().map(|n| n.data.clone()).collect();
    drop((a, b, c));
    let digests: Vec<_> = data
        .iter()
        .map(|d| {
            let node = feral_memory::Node::open(d, common::config()).expect("open");
            assert!(node.check().ok, "{}", d.display());
            node.digest().expect("digest")
        })
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "the three digests are equal");
}

/// The last resort: `feral-node salvage --from DAMAGED` imports every intact record into a
/// fresh store after a mid-segment flip and a zeroed stretch: every op but the damaged ones,
/// byte for byte, with their episodes readable; the new store checks clean, has a new origin
/// and the old node key; the command exits 65 and names what was lost.
#[test]
fn salvage_imports_every_intact_record_into_a_fresh_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let damaged = root.path().join("damaged");
    let (records, stored, origin) = {
        let node = common::open(&damaged);
        append(&node, "e", 20, 10);
        let records = all_ops(&node);
        let stored = common::stored_ops(&node);
        let origin = node.wal().origin();
        node.close().expect("close");
        (records, stored, origin)
    };
    let segments: Vec<u64> = {
        let mut s: Vec<u64> = records.iter().map(|r| r.segment).collect();
        s.dedup();
        s
    };
    assert!(segments.len() >= 4);
    let in_segment =
        |base: u64| records.iter().filter(move |r| r.segment == base).collect::<Vec<_>>();
    // A flipped payload byte in one record of the second segment.
    let flipped = in_segment(segments[1])[3].clone();
    let path = |base: u64| damaged.join("wal").join(feral_log::segment::segment_name(base));
    let file =
        std::fs::OpenOptions::new().read(true).write(true).open(path(segments[1])).expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, flipped.offset + 40).expect("read");
    file.write_all_at(&[byte[0] ^ 0x04], flipped.offset + 40).expect("write");
    // Two records of the third segment zeroed from inside the first to inside the second.
    let third = in_segment(segments[2]);
    let (z1, z2) = (third[2].clone(), third[3].clone());
    let file =
        std::fs::OpenOptions::new().read(true).write(true).open(path(segments[2])).expect("open");
    let len = (z2.offset + 30 - (z1.offset + 8)) as usize;
    file.write_all_at(&vec![0u8; len], z1.offset + 8).expect("zero");
    let lost = [flipped.op.op_id, z1.op.op_id, z2.op.op_id];

    let fresh = root.path().join("fresh");
    let out = feral_node()
        .arg("--data")
        .arg(&fresh)
        .args(["salvage", "--json", "--from"])
        .arg(&damaged)
        .output()
        .expect("salvage");
    assert_eq!(
        out.status.code(),
        Some(65),
        "damage was found: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["imported"], records.len() - lost.len(), "{report}");
    assert_eq!(report["salvage"]["missing_lsns"], 3, "{report}");
    assert_eq!(report["refused"], 0);
    let node = common::open(&fresh);
    assert!(node.check().ok);
    assert_ne!(node.wal().origin(), origin, "a new origin");
    // Each op as the fresh store holds it, read by its origin and seq (the heads stop at the
    // first lost seq; the ops past it are held all the same).
    let held = |op: &feral_log::Op| {
        let read = node.wal().payloads_by_origin_within(&op.origin, op.seq, op.seq, 1, usize::MAX);
        read.expect("read").into_iter().next().map(|b| b.as_slice().to_vec())
    };
    assert_eq!(all_ops(&node).len(), records.len() - lost.len(), "nothing else in the new log");
    for (record, bytes) in records.iter().zip(&stored) {
        assert_eq!(record.op.op_id, bytes.head().expect("head").op_id, "same order");
        if lost.contains(&record.op.op_id) {
            assert_eq!(held(&record.op), None, "a damaged record is not made up");
        } else {
            assert_eq!(held(&record.op), Some(bytes.as_slice().to_vec()), "byte for byte");
            let id = &record.op.row_id;
            assert!(node.episode(id).expect("read").is_some(), "episode {id} readable");
        }
    }
}

/// A store of `batches` × 10 episodes written offline, and the records of its first sealed
/// segment.
fn offline_store(data: &std::path::Path, batches: usize) -> Vec<feral_log::Record> {
    let segment = SMALL_SEGMENT_BYTES.to_string();
    let init = feral_node()
        .arg("--data")
        .arg(data)
        .args(["init", "--segment-bytes", &segment])
        .output()
        .expect("init");
    assert!(init.status.success(), "{init:?}");
    let node = feral_memory::Node::open(data, common::config()).expect("open");
    append(&node, "e", batches, 10);
    let first = node.wal().sealed_segments()[0];
    let mut records = all_ops(&node);
    records.retain(|r| r.segment == first);
    node.close().expect("close");
    records
}

/// Flips payload bytes of `record` in the store at `data` (a running node's sealed segment).
fn flip_at(data: &std::path::Path, record: &feral_log::Record) {
    let path = data.join("wal").join(feral_log::segment::segment_name(record.segment));
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("segment");
    file.write_all_at(&[0xff, 0xee], record.offset + 24 + 12).expect("write");
}

/// `feral-node heal` through a running node: with a peer that holds the damaged op, the
/// check finds it, the sync rounds heal it, and the check after is clean (exit 0); alone, the
/// command exits 65 and names the op no peer gave.
#[test]
fn heal_through_the_running_node_mends_from_a_peer_or_names_what_none_gave() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir, c_dir) =
        (root.path().join("a"), root.path().join("b"), root.path().join("c"));
    let records = offline_store(&a_dir, 20);
    let init = feral_node().arg("--data").arg(&b_dir).arg("init").output().expect("init");
    assert!(init.status.success());
    // No scrub and no scheduled sync after the first: the heal is the command's.
    let quiet = ["--scrub-rate", "0", "--sync-interval", "3600"];
    let b = RunningNode::start(&b_dir, &quiet);
    let b_addr = b.sync_addr.to_string();
    let a = RunningNode::start(&a_dir, &[&["--peers", b_addr.as_str()][..], &quiet].concat());
    let heads = |n: &RunningNode| {
        n.api().call("GET", "/v1/status", None).expect("status").1["heads"].clone()
    };
    common::wait_for("B to hold A's ops", std::time::Duration::from_secs(60), || {
        heads(&b) == heads(&a)
    });
    let victim = &records[records.len() / 2];
    flip_at(&a_dir, victim);
    let heal = |data: &std::path::Path| {
        let out = feral_node()
            .arg("--data")
            .arg(data)
            .args(["heal", "--within", "60", "--json"])
            .output()
            .expect("heal");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let answer: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), answer)
    };
    let (code, healed) = heal(&a_dir);
    assert_eq!(code, Some(0), "{healed}");
    assert_eq!(
        (&healed["damaged_before"], &healed["healed"], &healed["still_damaged"]),
        (&serde_json::json!(1), &serde_json::json!(1), &serde_json::json!(0)),
        "{healed}"
    );
    assert_eq!(healed["check"]["ok"], true, "{healed}");
    let (_, status) = a.api().call("GET", "/v1/status", None).expect("status");
    assert_eq!(status["damaged_lsns"], 0, "{status}");
    assert_eq!(std::fs::read_dir(a_dir.join("damaged")).map_or(0, |d| d.count()), 1);
    let (code, again) = heal(&a_dir);
    assert_eq!(code, Some(0), "nothing left to heal: {again}");

    // Alone: nobody to heal from; the op is named.
    let records = offline_store(&c_dir, 20);
    let c = RunningNode::start(&c_dir, &quiet);
    let victim = &records[records.len() / 3];
    flip_at(&c_dir, victim);
    let (code, left) = heal(&c_dir);
    assert_eq!(code, Some(65), "{left}");
    assert_eq!(left["still_damaged"], 1, "{left}");
    assert_eq!(left["missing"][0]["op_id"], victim.op.op_id.to_string(), "{left}");
    assert_eq!(left["missing"][0]["seq"], victim.op.seq, "{left}");
    drop(c);
}
