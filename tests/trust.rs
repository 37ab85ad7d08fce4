//! Every op is signed by its writer and checked by its receiver (SPEC 2 and 5): over real
//! QUIC with real certificates, a node holding a valid certificate that forges an op under
//! another node's origin gets it refused with `bad_signature` and counted, the session goes on
//! with the valid rest, and the real origin keeps syncing afterwards; an op altered by a relay
//! is refused by the next hop. Through `Node::ingest`, each way a run can be bad is refused:
//! unsealed, re-cut, a genesis that does not make its origin, a seq 1 without genesis, an
//! origin whose genesis is not held.

mod common;

use common::quic::{Peer, ok, peer, start_server, syncer};
use common::{doc, open, stored_ops};
use feral_log::{EncodedOp, Hlc, Op, OpBytes, OpId, OpKind, Origin, codec};
use feral_transport::SyncOptions;
use feral_transport::tls::Ca;
use feral_types::proof::{self, RunDigest, Seal, Signer};

/// An op under `origin` at `seq`, sealed alone by `signer` (not necessarily the origin's key).
fn sealed_by(signer: &Signer, origin: Origin, seq: u64, id: &str) -> EncodedOp {
    let data = serde_json::to_vec(&doc(id, "forged", 1.0)).expect("json");
    let op = Op {
        op_id: OpId::generate(1_700_000_000_000),
        origin,
        seq,
        hlc: Hlc { wall_ms: 1_700_000_000_000, counter: 0, node: origin },
        table: "episodes".into(),
        row_id: id.into(),
        kind: OpKind::Insert,
        data,
    };
    let mut bytes = codec::encode_op(&op);
    let mut digest = RunDigest::default();
    digest.add(&bytes);
    let signature = signer.sign(&digest.message(&origin, seq, seq)).expect("sign");
    proof::finish_trailer(&mut bytes, false, Some(&Seal { first_seq: seq, signature }));
    EncodedOp::decode(bytes).expect("a well-formed op")
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
    for (_, stop, task) in servers {
        drop(stop);
        task.await.expect("server task");
    }
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
    let mut ops: Vec<Vec<u8>> =
        stored_ops(&a.node).into_iter().map(|o| o.as_slice().to_vec()).collect();
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
    for (_, stop, task) in servers {
        drop(stop);
        task.await.expect("server task");
    }
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
    let claim = sealed_by(&other, a.wal().origin(), 1, "claim");
    let mut bytes = claim.bytes()[..claim.trailer().op_len].to_vec();
    let genesis = proof::Genesis { spki: other.spki().to_vec(), nonce: [3; 16] };
    proof::write_genesis(&mut bytes, Some(&genesis));
    let mut digest = RunDigest::default();
    digest.add(&bytes);
    let signature = other.sign(&digest.message(&a.wal().origin(), 1, 1)).expect("sign");
    proof::finish_trailer(&mut bytes, true, Some(&Seal { first_seq: 1, signature }));
    assert_eq!(refused(vec![OpBytes::new(bytes)]), (0, 1));
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
