//! Every op is signed by its writer and checked by its receiver (SPEC 2 and 5): over real
//! QUIC with real certificates, a node holding a valid certificate that forges an op under
//! another node's origin gets it refused with `bad_signature` and counted, the session goes on
//! with the valid rest, and the real origin keeps syncing afterwards; an op altered by a relay
//! is refused by the next hop. Through `Node::ingest`, each way a run can be bad is refused:
//! unsealed, re-cut, a genesis that does not make its origin, a seq 1 without genesis, an
//! origin whose genesis is not held. A new origin needs the cluster CA's certificate for its
//! key; a revocation of the cluster CA spreads through any path and cuts the node off.

mod common;

use common::quic::{
    Peer, ok, peer, peer_without_ca_file, sent_ops, start_server, stop_all, syncer,
};
use common::{doc, open, stored_ops};
use feral_log::{EncodedOp, Hlc, Op, OpBytes, OpId, OpKind, Origin, codec};
use feral_transport::SyncOptions;
use feral_transport::tls::Ca;
use feral_types::proof::{self, RunDigest, Seal, Signer};

/// An op of `table`/`row_id` under `origin` at `seq`, with `genesis` if given, sealed alone by
/// `signer` (not necessarily the origin's key).
fn signed_op(
    signer: &Signer,
    (origin, seq): (Origin, u64),
    (table, row_id, data): (&str, &str, Vec<u8>),
    genesis: Option<&proof::Genesis>,
) -> EncodedOp {
    let op = Op {
        op_id: OpId::generate(1_700_000_000_000),
        origin,
        seq,
        hlc: Hlc { wall_ms: 1_700_000_000_000, counter: 0, node: origin },
        table: table.into(),
        row_id: row_id.into(),
        kind: OpKind::Insert,
        data,
    };
    let mut bytes = codec::encode_op(&op);
    proof::write_genesis(&mut bytes, genesis);
    let mut digest = RunDigest::default();
    digest.add(&bytes);
    let signature = signer.sign(&digest.message(&origin, seq, seq)).expect("sign");
    proof::finish_trailer(&mut bytes, genesis.is_some(), Some(&Seal { first_seq: seq, signature }));
    EncodedOp::decode(bytes).expect("a well-formed op")
}

/// An episode `id` under `origin` at `seq`, sealed alone by `signer`.
fn sealed_by(signer: &Signer, origin: Origin, seq: u64, id: &str) -> EncodedOp {
    let data = serde_json::to_vec(&doc(id, "forged", 1.0)).expect("json");
    signed_op(signer, (origin, seq), ("episodes", id, data), None)
}

fn signer_of(p: &Peer) -> Signer {
    feral_memory::identity::signer(p.node.key()).expect("signer")
}

fn has(p: &Peer, id: &str) -> bool {
    p.node.episode(id).expect("read").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_under_another_nodes_origin_is_refused_and_that_origin_keeps_syncing() {
    let ca = Ca::generate().expect("ca");
    let (a, hostile, r, c) = (peer(&ca), peer(&ca), peer(&ca), peer(&ca));
    for i in 0..3 {
        a.node.append_episode(&doc(&format!("a{i}"), "s", i as f64), None).expect("append");
    }
    hostile.node.append_episode(&doc("h0", "s", 1.0), None).expect("append");
    let servers: Vec<_> = [&a, &hostile, &r].into_iter().map(start_server).collect();
    // The hostile node holds a's ops, then stores an op it made under a's origin with a's next
    // seq, sealed with its own key (it cannot have a's), as a stolen laptop would.
    ok(&syncer(&hostile, SyncOptions::default()).sync_with_peer(servers[0].0).await);
    let forged = sealed_by(&signer_of(&hostile), a.node.wal().origin(), 4, "forged");
    hostile.node.wal().ingest_encoded(vec![forged]).expect("the hostile node stores it");

    let result = syncer(&r, SyncOptions::default()).sync_with_peer(servers[1].0).await;
    ok(&result);
    assert_eq!(r.node.status().bad_signature_refusals, 1, "the forgery is refused and counted");
    assert!(!has(&r, "forged"));
    assert!(has(&r, "a2") && has(&r, "h0"), "the session went on with the valid rest");
    // The real a writes its seq 4; it reaches r, and through r a node that never met a.
    a.node.append_episode(&doc("a3", "s", 3.0), None).expect("append");
    ok(&syncer(&r, SyncOptions::default()).sync_with_peer(servers[0].0).await);
    ok(&syncer(&c, SyncOptions::default()).sync_with_peer(servers[2].0).await);
    for node in [&r, &c] {
        assert!(has(node, "a3") && !has(node, "forged"));
        assert_eq!(node.node.status().heads.get(&a.node.wal().origin().to_string()), Some(&4));
    }
    assert_eq!(c.node.status().bad_signature_refusals, 0);
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_altered_by_a_relay_is_refused_by_the_next_hop() {
    let ca = Ca::generate().expect("ca");
    let (a, relay, c) = (peer(&ca), peer(&ca), peer(&ca));
    let batch = (0..3).map(|i| (episode(&format!("a{i}")), None)).collect();
    a.node.append_episodes(batch).expect("one commit: one run of three");
    relay.node.append_episode(&doc("b0", "s", 1.0), None).expect("append");
    // The relay keeps a's ops with one byte of the second op's summary changed: same length,
    // still a well-formed op, no longer the one a signed.
    let mut ops: Vec<Vec<u8>> = sent_ops(&a).into_iter().map(|o| o.as_slice().to_vec()).collect();
    let at = find(&ops[1], b"summary of a1").expect("the summary's bytes") + b"summary of ".len();
    ops[1][at] = b'X';
    let altered: Vec<EncodedOp> =
        ops.into_iter().map(|b| EncodedOp::decode(b).expect("decodes")).collect();
    relay.node.wal().ingest_encoded(altered).expect("the relay stores them");
    let servers: Vec<_> = [&a, &relay].into_iter().map(start_server).collect();

    ok(&syncer(&c, SyncOptions::default()).sync_with_peer(servers[1].0).await);
    assert_eq!(c.node.status().bad_signature_refusals, 3, "the run holding the altered op");
    assert!(!has(&c, "a0") && !has(&c, "a1") && has(&c, "b0"));
    ok(&syncer(&c, SyncOptions::default()).sync_with_peer(servers[0].0).await);
    let a1 = c.node.episode("a1").expect("read").expect("from a itself");
    assert_eq!(a1.episode.summary, "summary of a1");
    stop_all(servers).await;
}

fn episode(id: &str) -> feral_memory::materializer::Episode {
    let mut d = doc(id, "s", 1.0);
    d["summary"] = format!("summary of {id}").into();
    feral_memory::materializer::Episode::from_input(&d, 2e9).expect("valid")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The stored bytes of a node's ops of its own origin.
fn own(node: &feral_memory::Node) -> Vec<OpBytes> {
    let origin = node.wal().origin();
    stored_ops(node).into_iter().filter(|o| o.head().expect("head").origin == origin).collect()
}

#[test]
fn every_way_a_run_can_be_bad_is_refused_and_the_good_rest_goes_on() {
    let (a_dir, r_dir) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("r"));
    let (a, r) = (open(a_dir.path()), open(r_dir.path()));
    let batch = (0..3).map(|i| (episode(&format!("a{i}")), None)).collect();
    a.append_episodes(batch).expect("one run of three");
    a.append_episode(&doc("a3", "s", 1.0), None).expect("a run of one");
    let ops = own(&a);
    assert!(!ops[1].is_sealed() && ops[2].is_sealed() && ops[3].is_sealed());
    let refused = |batch: Vec<OpBytes>| {
        let before = r.status().bad_signature_refusals;
        let new = r.ingest(batch).expect("ingest");
        (new, r.status().bad_signature_refusals - before)
    };
    // An origin whose genesis is not held here: its seq 4 alone.
    assert_eq!(refused(vec![ops[3].clone()]), (0, 1));
    // Unsealed: the run cut before its seal.
    assert_eq!(refused(ops[..2].to_vec()), (0, 2));
    // Re-cut: the run without its first op (the seal says it starts at 1).
    assert_eq!(refused(ops[1..3].to_vec()), (0, 2));
    // Seq 1 without its genesis: the genesis block stripped, flags kept consistent.
    let first = ops[0].clone().decode().expect("decodes");
    let mut stripped = first.bytes()[..first.trailer().op_len].to_vec();
    proof::finish_trailer(&mut stripped, false, None);
    let mut no_genesis = vec![OpBytes::new(stripped)];
    no_genesis.extend_from_slice(&ops[1..3]);
    assert_eq!(refused(no_genesis), (0, 3));
    // A genesis whose key does not make the origin: another key claims a's origin at seq 1.
    let other = Signer::generate().expect("key");
    let genesis = proof::Genesis { spki: other.spki().to_vec(), nonce: [3; 16] };
    let data = serde_json::to_vec(&doc("claim", "s", 1.0)).expect("json");
    let claim =
        signed_op(&other, (a.wal().origin(), 1), ("episodes", "claim", data), Some(&genesis));
    assert_eq!(refused(vec![OpBytes::new(claim.bytes().to_vec())]), (0, 1));
    // A seal that claims a run from seq 0 (no such seq): refused, not a wrapped subtraction.
    let mut from_zero = ops[3].as_slice().to_vec();
    let at = from_zero.len() - 1 - proof::SEAL_BYTES;
    from_zero[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(refused(vec![OpBytes::new(from_zero)]), (0, 1));
    // The good runs, beside a bad one, are taken.
    let mut mixed = ops.clone();
    mixed.push(OpBytes::new(sealed_by(&other, a.wal().origin(), 5, "x").bytes().to_vec()));
    assert_eq!(refused(mixed), (4, 1));
    assert!(r.episode("a3").expect("read").is_some() && r.episode("x").expect("read").is_none());
    // Once the genesis is held, a later run verifies against it.
    a.append_episode(&doc("a4", "s", 1.0), None).expect("append");
    let last = own(&a).pop().expect("seq 5");
    assert_eq!(refused(vec![last]), (1, 0));
}

/// `n` fresh origins, `per_key` of them under each new node key, each with one op: its seq 1,
/// carrying the genesis and sealed by that key (what a node making up origins would send).
fn fresh_origins(n: usize, per_key: usize) -> Vec<EncodedOp> {
    let mut out = Vec::with_capacity(n);
    let mut signer = Signer::generate().expect("key");
    for i in 0..n {
        if i > 0 && i % per_key == 0 {
            signer = Signer::generate().expect("key");
        }
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let origin = proof::origin_of(signer.spki(), &nonce);
        let genesis = proof::Genesis { spki: signer.spki().to_vec(), nonce };
        let row = format!("flood-{i}");
        out.push(signed_op(&signer, (origin, 1), ("notes", &row, b"x".to_vec()), Some(&genesis)));
    }
    out
}

/// A node of the cluster (its key certified by `ca`) that makes up `n` origins of its own
/// key, each with one op and its certificate attached to the genesis.
fn certified_origins(ca: &Ca, n: usize) -> Vec<EncodedOp> {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = ca.issue_default(&key).expect("issue");
    let der = feral_transport::tls::pem_certs(&cert).expect("pem")[0].to_vec();
    let signer = feral_memory::identity::signer(&key).expect("signer");
    (0..n)
        .map(|i| {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let origin = proof::origin_of(signer.spki(), &nonce);
            let genesis = proof::Genesis { spki: signer.spki().to_vec(), nonce };
            let row = format!("own-{i}");
            let mut op =
                signed_op(&signer, (origin, 1), ("notes", &row, b"x".to_vec()), Some(&genesis));
            assert!(op.attach_certificate(&der));
            op
        })
        .collect()
}

/// With the cluster CA in its data directory, a node takes a new origin only with a
/// certificate of that CA for its genesis key: 70,000 origins under made-up keys are all
/// refused (`bad_certificate`), and one certified node may own ORIGINS_PER_NODE_MAX of them.
#[test]
fn origins_under_keys_the_cluster_ca_never_issued_are_refused() {
    use feral_memory::limits::ORIGINS_PER_NODE_MAX;
    let ca = Ca::generate().expect("ca");
    let r = peer(&ca);
    r.node.append_episode(&doc("r0", "s", 1.0), None).expect("append");
    for chunk in fresh_origins(70_000, ORIGINS_PER_NODE_MAX).chunks(10_000) {
        assert_eq!(r.node.ingest_encoded(chunk.to_vec()).expect("ingest"), 0);
    }
    let status = r.node.status();
    assert_eq!((status.certificate_refusals, status.heads.len()), (70_000, 1));
    let other_ca = Ca::generate().expect("another CA");
    assert_eq!(r.node.ingest_encoded(certified_origins(&other_ca, 1)).expect("ingest"), 0);
    assert_eq!(r.node.status().certificate_refusals, 70_001, "another cluster's node");
    assert_eq!(r.node.ingest_encoded(certified_origins(&ca, 100)).expect("ingest"), 64);
    let status = r.node.status();
    assert_eq!(status.origin_refusals, (100 - ORIGINS_PER_NODE_MAX) as u64);
    assert_eq!((status.heads.len(), status.bad_signature_refusals), (1 + ORIGINS_PER_NODE_MAX, 0));
}

/// The store's cap, on stores that check no certificate (no `ca.pem`): a flood of made-up
/// origins is taken up to `ORIGINS_MAX` and refused past it, and sessions still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fresh_origins_is_refused_beyond_the_caps_and_sessions_still_succeed() {
    use feral_memory::limits::{ORIGINS_MAX, ORIGINS_PER_NODE_MAX};
    let ca = Ca::generate().expect("ca");
    let (r, a) = (peer_without_ca_file(&ca), peer_without_ca_file(&ca));
    r.node.append_episode(&doc("r0", "s", 1.0), None).expect("append");
    a.node.append_episode(&doc("a0", "s", 1.0), None).expect("append");
    // One key may own ORIGINS_PER_NODE_MAX origins in a store, no more.
    let one_key = fresh_origins(100, 100);
    assert_eq!(r.node.ingest_encoded(one_key).expect("ingest"), ORIGINS_PER_NODE_MAX);
    let per_key_refused = (100 - ORIGINS_PER_NODE_MAX) as u64;
    assert_eq!(r.node.status().origin_refusals, per_key_refused);
    // 70,000 fresh origins under many keys (what once stopped every later session with
    // "65538 origins in a hello"): taken up to the store's cap, refused and counted past it.
    let flood = fresh_origins(70_000, ORIGINS_PER_NODE_MAX);
    for chunk in flood.chunks(10_000) {
        r.node.ingest_encoded(chunk.to_vec()).expect("ingest");
    }
    let status = r.node.status();
    assert_eq!(status.heads.len(), ORIGINS_MAX, "the store holds its cap of origins");
    let taken = ORIGINS_MAX - 1 - ORIGINS_PER_NODE_MAX; // r's own, the one key's, the flood's
    assert_eq!(status.origin_refusals, per_key_refused + (70_000 - taken) as u64);
    assert_eq!(status.bad_signature_refusals, 0);
    // Sessions between healthy nodes still succeed both ways: r's handshake lists its whole
    // cap of heads, a takes what its own cap leaves room for (all but one), and r, full,
    // refuses a's origin with a clear count instead of failing the session.
    let servers: Vec<_> = [&r, &a].into_iter().map(start_server).collect();
    let result = syncer(&a, SyncOptions::default()).sync_with_peer(servers[0].0).await;
    ok(&result);
    assert_eq!(result.received, ORIGINS_MAX as u64);
    assert_eq!(a.node.status().heads.len(), ORIGINS_MAX);
    assert_eq!(a.node.status().origin_refusals, 1);
    ok(&syncer(&r, SyncOptions::default()).sync_with_peer(servers[1].0).await);
    assert!(r.node.status().origin_refusals > status.origin_refusals, "a's origin, refused");
    ok(&syncer(&a, SyncOptions::default()).sync_with_peer(servers[0].0).await);
    stop_all(servers).await;
}

#[test]
fn a_sync_read_sends_whole_runs_only() {
    use feral_sync::{Request, Response, execute};
    let dir = tempfile::tempdir().expect("dir");
    let a = open(dir.path());
    let batch = (0..3).map(|i| (episode(&format!("a{i}")), None)).collect();
    a.append_episodes(batch).expect("one run of three");
    a.append_episode(&doc("a3", "s", 1.0), None).expect("a run of one");
    let origin = a.wal().origin();
    let read = |ops_max, bytes_max| {
        let request = Request::Read { origin, from: 1, to: 4, ops_max, bytes_max };
        match execute(&mut a.sync_store(), request) {
            Ok(Response::Read(ops)) => ops.len(),
            other => panic!("{other:?}"),
        }
    };
    // A budget that ends inside the first run still sends it whole; one that ends inside the
    // second stops after the first.
    assert_eq!(read(1, 1), 3);
    assert_eq!(read(2, usize::MAX), 3);
    assert_eq!(read(3, usize::MAX), 3);
    assert_eq!(read(4, usize::MAX), 4);
}

#[test]
fn a_received_run_whose_front_a_crash_kept_is_completed_by_its_rest() {
    let (a_dir, r_dir) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("r"));
    let a = open(a_dir.path());
    let batch = (0..3).map(|i| (episode(&format!("a{i}")), None)).collect();
    a.append_episodes(batch).expect("one run of three");
    let r = open(r_dir.path());
    assert_eq!(r.ingest(stored_ops(&a)).expect("ingest"), 3);
    let last = common::all_ops(&r).pop().expect("records");
    let segment = r_dir.path().join("wal").join(feral_log::segment::segment_name(last.segment));
    r.close().expect("close");
    // A crash tore the commit writing the run: its last record (the sealed op) is gone, the
    // front is kept, and the derived files lost what they had not made durable.
    let mut bytes = std::fs::read(&segment).expect("read");
    let at = last.offset as usize;
    let payload = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    bytes[at..at + feral_log::record::FRAME_HEADER_BYTES + payload].fill(0);
    std::fs::write(&segment, &bytes).expect("write");
    for derived in ["index.redb", "episodes.redb"] {
        std::fs::remove_file(r_dir.path().join(derived)).expect("rm");
    }
    let r = open(r_dir.path());
    let origin = a.wal().origin().to_string();
    assert_eq!(r.status().heads.get(&origin), Some(&2), "the run's front is held, unsealed");
    // The next session sends from seq 3: the run is checked with its front read back.
    assert_eq!(r.ingest(stored_ops(&a)[2..].to_vec()).expect("ingest"), 1);
    assert_eq!(r.status().bad_signature_refusals, 0);
    assert_eq!(r.status().heads.get(&origin), Some(&3));
    assert_eq!(common::stored_ops(&r), stored_ops(&a));
}

/// A copy of `from`'s data directory while it runs, key included (its log, origin and key; the
/// derived index and projection are rebuilt at open), as a careless copy would make it, with a
/// certificate of its own for the same key.
fn copy_of(from: &Peer, ca: &Ca) -> Peer {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("wal")).expect("mkdir");
    for sub in ["", "wal"] {
        for entry in std::fs::read_dir(from._dir.path().join(sub)).expect("read_dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name();
            let kept = sub == "wal" || name == "ORIGIN" || name == "node.key";
            if entry.file_type().expect("type").is_file() && kept {
                std::fs::copy(entry.path(), dir.path().join(sub).join(name)).expect("copy");
            }
        }
    }
    let node = std::sync::Arc::new(open(dir.path()));
    let cert = ca.issue_default(node.key()).expect("issue");
    let creds = feral_transport::tls::Credentials::from_pem(&cert, node.key(), &ca.cert_pem)
        .expect("creds");
    Peer { node, creds, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_copied_directory_are_a_quarantined_conflict_and_the_rest_converges() {
    let ca = Ca::generate().expect("ca");
    let (a, c) = (peer(&ca), peer(&ca));
    a.node.append_episode(&doc("shared", "s", 1.0), None).expect("append");
    let copy = copy_of(&a, &ca);
    assert_eq!(copy.node.wal().origin(), a.node.wal().origin(), "one origin, one key, two writers");
    a.node.append_episode(&doc("from-a", "s", 2.0), None).expect("a's seq 2");
    copy.node.append_episode(&doc("from-copy", "s", 2.0), None).expect("the copy's seq 2");
    c.node.append_episode(&doc("c0", "s", 1.0), None).expect("append");
    let servers: Vec<_> = [&a, &copy, &c].into_iter().map(start_server).collect();
    let sync = |from: &Peer, to: usize| {
        let s = syncer(from, SyncOptions::default());
        let addr = servers[to].0;
        async move { s.sync_with_peer(addr).await }
    };
    ok(&sync(&c, 0).await); // c takes a's branch
    ok(&sync(&c, 1).await); // and meets the copy's: a conflict, not a failed session
    let origin = a.node.wal().origin().to_string();
    for node in [&c, &copy] {
        let conflicts = node.node.status().conflicts;
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!((conflicts[0].origin.as_str(), conflicts[0].seq), (origin.as_str(), 2));
        let evidence = conflicts[0].evidence.as_ref().expect("evidence kept");
        assert!(node._dir.path().join("conflicts").join(evidence).is_file());
    }
    assert!(has(&c, "from-a") && !has(&c, "from-copy"));
    // The quarantined origin stops advancing on c; every other origin keeps converging.
    a.node.append_episode(&doc("from-a-later", "s", 3.0), None).expect("a's seq 3");
    c.node.append_episode(&doc("c1", "s", 2.0), None).expect("append");
    for (from, to) in [(&c, 0), (&c, 1), (&a, 2), (&copy, 2)] {
        ok(&sync(from, to).await);
    }
    assert!(!has(&c, "from-a-later"), "past the fork, nothing of that origin lands on c");
    assert!(c.node.status().conflict_refusals >= 1);
    for node in [&a, &copy] {
        assert!(has(node, "c0") && has(node, "c1"), "c's origin reached both writers");
    }
    stop_all(servers).await;
}

#[test]
fn a_quarantined_conflict_survives_a_restart_and_keeps_its_origin_from_advancing() {
    let root = tempfile::tempdir().expect("root");
    let (a_dir, b_dir, r_dir) =
        (root.path().join("a"), root.path().join("b"), root.path().join("r"));
    let a = open(&a_dir);
    a.append_episode(&doc("shared", "s", 1.0), None).expect("append");
    std::fs::create_dir_all(b_dir.join("wal")).expect("mkdir");
    for name in ["ORIGIN", "node.key"] {
        std::fs::copy(a_dir.join(name), b_dir.join(name)).expect("copy");
    }
    for entry in std::fs::read_dir(a_dir.join("wal")).expect("wal") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), b_dir.join("wal").join(entry.file_name())).expect("copy");
    }
    let b = open(&b_dir);
    a.append_episode(&doc("x", "s", 2.0), None).expect("a's seq 2");
    b.append_episode(&doc("y", "s", 2.0), None).expect("b's seq 2");
    let r = open(&r_dir);
    assert_eq!(r.ingest(stored_ops(&a)).expect("a's branch"), 2);
    assert_eq!(r.ingest(stored_ops(&b)).expect("b's branch: quarantined, not an error"), 0);
    let conflicts = r.status().conflicts;
    assert_eq!((conflicts.len(), conflicts[0].seq), (1, 2));
    assert_eq!(conflicts[0].other_op_id, own(&b)[1].head().expect("head").op_id.to_string());
    r.close().expect("close");
    let r = open(&r_dir);
    assert_eq!(r.status().conflicts, conflicts, "kept across a restart");
    a.append_episode(&doc("x2", "s", 3.0), None).expect("a's seq 3");
    assert_eq!(r.ingest(stored_ops(&a)).expect("ingest"), 0, "the origin does not advance");
    assert!(r.status().conflict_refusals >= 1);
    assert!(r.episode("x").expect("read").is_some() && r.episode("x2").expect("read").is_none());
    r.close().expect("close");
    // `feral-node conflicts` shows it; a store without one says so.
    let listed = |dir: &std::path::Path| {
        let out =
            common::feral_node().arg("--data").arg(dir).arg("conflicts").output().expect("run");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let text = listed(&r_dir);
    let origin = a.wal().origin().to_string();
    assert!(text.contains(&format!("origin {origin} quarantined from seq 2")), "{text}");
    // The operator keeps r's branch (the other writer stopped for good): the origin advances
    // again with what continues it; the other branch stays refused.
    let resolve = |what: &str| {
        common::feral_node().arg("--data").arg(&r_dir).args(["conflicts", "resolve", what]).output()
    };
    assert_eq!(resolve(&"0".repeat(32)).expect("run").status.code(), Some(1), "none held");
    // While a node runs on the store, the command goes through its API.
    let running = common::RunningNode::start(&r_dir, &[]);
    let out = resolve(&origin).expect("run");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("resolved: origin {origin} advances again from seq 2")),
        "{text}"
    );
    let out = resolve(&"0".repeat(32)).expect("run");
    assert_eq!(out.status.code(), Some(1), "none held: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"), "{out:?}");
    assert!(running.stop(), "the node stops cleanly");
    let r = open(&r_dir);
    assert!(r.status().conflicts[0].resolved_at_ms.is_some());
    assert_eq!(r.ingest(stored_ops(&a)).expect("ingest"), 1, "a's seq 3 lands");
    assert_eq!(r.ingest(stored_ops(&b)).expect("ingest"), 0, "b's seq 2 stays refused");
    // The other writer goes on past what r holds: its seq 4 alone, at a seq r has not got yet,
    // is still told apart, because its run links to b's seq 3, not to the a's seq 3 r holds.
    b.append_episode(&doc("y3", "s", 3.0), None).expect("b's seq 3");
    b.append_episode(&doc("y4", "s", 4.0), None).expect("b's seq 4");
    let before = r.status().bad_signature_refusals;
    let b4 = own(&b).pop().expect("b's seq 4");
    assert_eq!(r.ingest(vec![b4]).expect("ingest"), 0, "another branch's run");
    assert_eq!(r.status().bad_signature_refusals, before + 1);
    assert!(r.episode("y4").expect("read").is_none());
    assert!(r.episode("x2").expect("read").is_some() && r.episode("y").expect("read").is_none());
    drop((a, r));
    assert_eq!(listed(&a_dir).trim(), "no conflicts");
}

/// Revocation (issue 14, deliverable 5): a statement of the cluster CA made on a reaches c
/// only through b (a and c never meet); c then refuses the revoked node's handshakes, both
/// ways, and its new ops relayed by a node that has not learned it, while what c held of it
/// stays. A statement signed by another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_on_a_reaches_c_only_through_b_and_c_refuses_the_revoked_node() {
    use feral_memory::revocation::{REVOCATIONS_TABLE, Statement};
    let ca = Ca::generate().expect("ca");
    let (a, b, c, x, e) = (peer(&ca), peer(&ca), peer(&ca), peer(&ca), peer(&ca));
    x.node.append_episode(&doc("x1", "s", 1.0), None).expect("append");
    let servers: Vec<_> = [&b, &c, &x, &e].into_iter().map(start_server).collect();
    let (b_addr, c_addr, x_addr, e_addr) = (servers[0].0, servers[1].0, servers[2].0, servers[3].0);
    ok(&syncer(&x, SyncOptions::default()).sync_with_peer(e_addr).await);
    ok(&syncer(&c, SyncOptions::default()).sync_with_peer(e_addr).await);
    assert!(has(&c, "x1"));

    let now_ms = x.node.wal().clock().wall_ms;
    let revoked = x.node.node_id();
    let statement = Statement::sign(&ca, revoked, "stolen laptop", now_ms).expect("sign");
    let (op, newly) = a.node.revoke(&statement).expect("a takes the statement");
    assert!(newly && !op.duplicate);
    let (again, newly) = a.node.revoke(&statement).expect("a retry");
    assert!(!newly && again.duplicate, "the same statement is one op");
    let other_ca = Ca::generate().expect("another CA");
    let forged = Statement::sign(&other_ca, b.node.node_id(), "forged", now_ms).expect("sign");
    let refused = a.node.revoke(&forged).expect_err("another CA's statement");
    assert_eq!(refused.code().as_str(), "invalid_revocation", "{refused}");

    ok(&syncer(&a, SyncOptions::default()).sync_with_peer(b_addr).await);
    assert!(b.node.status().revoked.iter().any(|r| r.node_id == revoked.to_string()));
    assert!(c.node.status().revoked.is_empty(), "c has not met anyone who knows");
    ok(&syncer(&b, SyncOptions::default()).sync_with_peer(c_addr).await);
    let status = c.node.status();
    let learned = status.revoked.iter().find(|r| r.node_id == revoked.to_string());
    let learned = learned.expect("c learned it through b");
    assert_eq!(learned.reason, "stolen laptop");
    assert_eq!(learned.held.get(&x.node.wal().origin().to_string()), Some(&1));
    let statements =
        common::all_ops(&c.node).into_iter().filter(|r| r.op.table == REVOCATIONS_TABLE).count();
    assert_eq!(statements, 1, "the statement is an op of c's log, to pass on");

    // x writes on; e, which has not learned, takes it and offers it to c: refused and counted.
    x.node.append_episode(&doc("x2", "s", 2.0), None).expect("append");
    ok(&syncer(&x, SyncOptions::default()).sync_with_peer(e_addr).await);
    assert!(has(&e, "x2"));
    ok(&syncer(&c, SyncOptions::default()).sync_with_peer(e_addr).await);
    assert!(!has(&c, "x2") && has(&c, "x1"), "new ops refused, what c held stays");
    assert!(c.node.status().revoked_refusals >= 1);
    assert!(e.node.status().revoked.iter().any(|r| r.node_id == revoked.to_string()));

    // c refuses x's handshakes, as server and as client, with their own code.
    let result = syncer(&x, SyncOptions::default()).sync_with_peer(c_addr).await;
    assert!(!result.success && result.error.as_deref() == Some("revoked"), "{result:?}");
    let result = syncer(&c, SyncOptions::default()).sync_with_peer(x_addr).await;
    assert!(!result.success && result.error.as_deref() == Some("revoked"), "{result:?}");
    assert!(!has(&c, "x2"));
    stop_all(servers).await;
}

/// `feral-node certs revoke` through a running node's API (the node keeps running and takes
/// it at once) and on a stopped store; `status` lists what is revoked; another CA's key is
/// refused with `invalid_revocation` and nothing is written.
#[test]
fn certs_revoke_works_through_a_running_node_and_on_a_stopped_store() {
    let home = tempfile::tempdir().expect("tempdir");
    let (ca, other_ca, data) =
        (home.path().join("ca"), home.path().join("other-ca"), home.path().join("data"));
    let cli = |args: &[&str]| {
        let out = common::feral_node().arg("--data").arg(&data).args(args).output().expect("run");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout) + &text(&out.stderr), text(&out.stdout))
    };
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    for (dir, args) in
        [(&ca, ["certs", "new-ca", "--out"]), (&other_ca, ["certs", "new-ca", "--out"])]
    {
        let (code, text, _) = cli(&[args[0], args[1], args[2], &path(dir)]);
        assert_eq!(code, Some(0), "{text}");
    }
    assert_eq!(cli(&["init"]).0, Some(0));
    assert_eq!(cli(&["certs", "issue", "--ca", &path(&ca)]).0, Some(0));
    let stolen = "0123456789abcdef0123456789abcdef";
    let running = common::RunningNode::start(&data, &["--peers", "127.0.0.1:9"]);
    let (code, text, _) =
        cli(&["certs", "revoke", stolen, "--ca", &path(&ca), "--reason", "stolen"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("revoked node {stolen}")), "{text}");
    let (code, text, _) = cli(&["certs", "revoke", stolen, "--ca", &path(&other_ca)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("invalid_revocation"), "{text}");
    let (code, _, text) = cli(&["status", "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(status["revoked"][0]["node_id"], stolen);
    assert_eq!(status["revoked"][0]["reason"], "stolen");
    let peers = running.api().call("GET", "/v1/peers", None).expect("peers");
    assert_eq!(peers.0, 200);
    assert_eq!(peers.1[0]["revoked"], false, "a static peer of unknown node id: {}", peers.1);
    // Killed, not stopped: a stop waits for the session with the unreachable static peer.
    drop(running);

    let second = "fedcba9876543210fedcba9876543210";
    let (code, _, text) = cli(&["certs", "revoke", second, "--ca", &path(&ca), "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["newly_revoked"], true);
    let (_, _, text) = cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text).expect("json");
    let ids: Vec<&str> = status["revoked"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["node_id"].as_str())
        .collect();
    assert_eq!(ids, [stolen, second], "by node id");
    let (code, text, _) = cli(&["certs", "revoke", "not-hex", "--ca", &path(&ca)]);
    assert_eq!(code, Some(2), "{text}");
}

/// The conflict of a copied data directory with real processes: three `feral-node run`s, two
/// of them on copies of one data directory (its key and origin), synced through their APIs. The
/// third node quarantines the conflict instead of failing its sessions; its own origin keeps
/// reaching both writers, and the quarantined origin stops advancing on it.
#[test]
fn two_processes_on_one_copied_directory_are_a_quarantined_conflict_and_the_rest_converges() {
    let root = tempfile::tempdir().expect("tempdir");
    let (ca, a_dir, copy_dir, c_dir) = (
        root.path().join("ca"),
        root.path().join("a"),
        root.path().join("copy"),
        root.path().join("c"),
    );
    let cli = |data: &std::path::Path, args: &[&str]| {
        let out = common::feral_node().arg("--data").arg(data).args(args).output().expect("run");
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let ca_text = ca.to_str().expect("utf-8");
    cli(&a_dir, &["certs", "new-ca", "--out", ca_text]);
    for dir in [&a_dir, &c_dir] {
        cli(dir, &["init"]);
        cli(dir, &["certs", "issue", "--ca", ca_text]);
    }
    let post = |node: &common::RunningNode, path: &str, body: serde_json::Value| {
        let (status, answer) = node.api().call("POST", path, Some(&body)).expect("call");
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    };
    let get =
        |node: &common::RunningNode, path: &str| node.api().call("GET", path, None).expect("call");
    let a = common::RunningNode::start(&a_dir, &[]);
    post(&a, "/v1/episodes", doc("shared", "s", 1.0));
    assert!(a.stop(), "a stops cleanly");
    // The copy: the whole directory as a backup tool without this project's care would take it.
    feral_log::private::create_dir_all(&copy_dir.join("wal")).expect("mkdir");
    for sub in ["", "wal"] {
        for entry in std::fs::read_dir(a_dir.join(sub)).expect("read_dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name();
            let skip = ["LOCK", "api.sock", "api.addr"].iter().any(|n| name == *n);
            if entry.file_type().expect("type").is_file() && !skip {
                std::fs::copy(entry.path(), copy_dir.join(sub).join(&name)).expect("copy");
            }
        }
    }
    let (a, copy, c) = (
        common::RunningNode::start(&a_dir, &[]),
        common::RunningNode::start(&copy_dir, &[]),
        common::RunningNode::start(&c_dir, &[]),
    );
    post(&a, "/v1/episodes", doc("from-a", "s", 2.0));
    post(&copy, "/v1/episodes", doc("from-copy", "s", 2.0));
    post(&c, "/v1/episodes", doc("c0", "s", 1.0));
    let sync = |from: &common::RunningNode, to: &common::RunningNode| {
        let body = serde_json::json!({"peer": to.sync_addr.to_string()});
        let results = post(from, "/v1/sync", body);
        assert_eq!(results[0]["success"], true, "{results}");
    };
    sync(&c, &a); // c takes a's branch
    sync(&c, &copy); // and meets the copy's: a conflict, not a failed session
    let status = get(&c, "/v1/status").1;
    let origin = get(&a, "/v1/status").1["origin"].clone();
    assert_eq!(status["conflicts"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(
        (&status["conflicts"][0]["origin"], &status["conflicts"][0]["seq"]),
        (&origin, &2.into())
    );
    post(&a, "/v1/episodes", doc("from-a-later", "s", 3.0));
    post(&c, "/v1/episodes", doc("c1", "s", 2.0));
    for (from, to) in [(&c, &a), (&c, &copy), (&a, &c), (&copy, &c)] {
        sync(from, to);
    }
    let has =
        |node: &common::RunningNode, id: &str| get(node, &format!("/v1/episodes/{id}")).0 == 200;
    for writer in [&a, &copy] {
        assert!(has(writer, "c0") && has(writer, "c1"), "c's origin reaches both writers");
    }
    assert!(has(&c, "from-a") && !has(&c, "from-copy"), "c keeps the branch it took first");
    assert!(!has(&c, "from-a-later"), "the quarantined origin does not advance on c");
    assert!(get(&c, "/v1/status").1["conflict_refusals"].as_u64() >= Some(1));
}
