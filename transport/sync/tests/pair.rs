//! Two sessions exchanging messages in memory over two in-memory stores: convergence both ways,
//! resume after a cut, the distinct refusals, and frames that stay bounded.

use std::collections::BTreeMap;

use feral_log::{Hlc, Op, OpId, OpKind, Origin};
use feral_sync::{
    FrameDecoder, Identity, SyncError, SyncMessage, SyncSession, SyncStore, encode_frame,
};

#[derive(Debug, Default, Clone, PartialEq)]
struct MemStore {
    ops: BTreeMap<(Origin, u64), Op>,
}

impl SyncStore for MemStore {
    fn heads(&self) -> Result<Vec<(Origin, u64)>, SyncError> {
        let mut heads: BTreeMap<Origin, u64> = BTreeMap::new();
        for (origin, seq) in self.ops.keys() {
            let head = heads.entry(*origin).or_insert(0);
            if *seq == *head + 1 {
                *head = *seq;
            }
        }
        Ok(heads.into_iter().filter(|(_, h)| *h > 0).collect())
    }

    fn read(
        &self,
        origin: &Origin,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Op>, SyncError> {
        Ok(self
            .ops
            .range((*origin, from)..=(*origin, to))
            .take(limit)
            .map(|(_, op)| op.clone())
            .collect())
    }

    fn apply(&mut self, ops: Vec<Op>) -> Result<usize, SyncError> {
        for op in &ops {
            if let Some(held) = self.ops.get(&(op.origin, op.seq))
                && held.op_id != op.op_id
            {
                return Err(SyncError::SplitBrain(format!("{} seq {}", op.origin, op.seq)));
            }
        }
        let mut new = 0;
        for op in ops {
            if self.ops.insert((op.origin, op.seq), op).is_none() {
                new += 1;
            }
        }
        Ok(new)
    }
}

fn op(origin: u8, seq: u64, bytes: usize) -> Op {
    let o = Origin([origin; 16]);
    let mut id = [origin; 16];
    id[8..].copy_from_slice(&seq.to_be_bytes());
    Op {
        op_id: OpId(id),
        origin: o,
        seq,
        hlc: Hlc { wall_ms: seq, counter: 0, node: o },
        table: "t".into(),
        row_id: format!("r{seq}"),
        kind: OpKind::Insert,
        data: vec![origin; bytes],
    }
}

fn store(origins: &[(u8, u64)], bytes: usize) -> MemStore {
    let mut s = MemStore::default();
    for (o, n) in origins {
        for seq in 1..=*n {
            s.ops.insert((Origin([*o; 16]), seq), op(*o, seq, bytes));
        }
    }
    s
}

fn identity(node: u8) -> Identity {
    Identity { cluster_id: [7; 32], node_id: [node; 16], origin: Origin([node; 16]) }
}

fn session(node: u8, s: &MemStore) -> SyncSession {
    SyncSession::new(identity(node), Hlc::default(), s).expect("session")
}

/// Sends one message from `from` to `to` through real framing. Returns the frame's size, or
/// None when `from` had nothing to send.
fn step(
    from: &mut SyncSession,
    fs: &MemStore,
    to: &mut SyncSession,
    ts: &mut MemStore,
) -> Option<Result<usize, SyncError>> {
    let message = from.poll_transmit(fs).expect("transmit")?;
    let mut bytes = Vec::new();
    encode_frame(&message, &mut bytes);
    let mut decoder = FrameDecoder::default();
    decoder.push(&bytes);
    let message = decoder.next_message().expect("decode").expect("whole");
    Some(to.handle(message, ts).map(|()| bytes.len()))
}

/// Moves messages both ways until both sides finish, an error ends one, or `cut_after`
/// messages have been delivered. Returns the largest frame seen and the first error.
fn pump(
    a: &mut SyncSession,
    sa: &mut MemStore,
    b: &mut SyncSession,
    sb: &mut MemStore,
    cut_after: Option<usize>,
) -> (usize, Option<SyncError>) {
    let mut delivered = 0;
    let mut largest = 0;
    loop {
        let mut moved = false;
        for turn in 0..2 {
            let sent = if turn == 0 { step(a, sa, b, sb) } else { step(b, sb, a, sa) };
            match sent {
                None => continue,
                Some(Err(e)) => return (largest, Some(e)),
                Some(Ok(len)) => largest = largest.max(len),
            }
            moved = true;
            delivered += 1;
            if cut_after.is_some_and(|n| delivered >= n) {
                return (largest, None);
            }
        }
        if !moved {
            return (largest, None);
        }
    }
}

#[test]
fn two_stores_converge_both_ways_in_bounded_frames() {
    let mut sa = store(&[(1, 3000), (3, 10)], 900);
    let mut sb = store(&[(2, 500), (3, 25)], 900);
    let (mut a, mut b) = (session(1, &sa), session(2, &sb));
    let (largest, error) = pump(&mut a, &mut sa, &mut b, &mut sb, None);
    assert_eq!(error, None);
    assert!(a.is_finished() && b.is_finished());
    assert_eq!(sa, sb);
    assert_eq!(sa.ops.len(), 3000 + 500 + 25);
    assert_eq!((a.stats().sent, b.stats().sent), (3000, 500 + 15));
    assert_eq!(a.stats().received, b.stats().sent);
    assert!(largest <= 1024 * 1024 + 4096, "frames stay near their byte target: {largest}");
}

#[test]
fn a_cut_session_resumes_without_resending_what_was_applied() {
    let mut sa = store(&[(1, 5000)], 200);
    let mut sb = MemStore::default();
    let (mut a, mut b) = (session(1, &sa), session(2, &sb));
    pump(&mut a, &mut sa, &mut b, &mut sb, Some(4));
    let applied_first = b.stats().applied;
    assert!(applied_first > 0 && applied_first < 5000);
    let (mut a, mut b) = (session(1, &sa), session(2, &sb));
    let (_, error) = pump(&mut a, &mut sa, &mut b, &mut sb, None);
    assert_eq!(error, None);
    assert_eq!(a.stats().sent, 5000 - applied_first, "only what was missing is sent again");
    assert_eq!(sa, sb);
    // Nothing differs: a handshake and two Done messages.
    let (mut a, mut b) = (session(1, &sa), session(2, &sb));
    pump(&mut a, &mut sa, &mut b, &mut sb, None);
    assert_eq!((a.stats().sent, b.stats().sent), (0, 0));
    assert!(a.is_finished() && b.is_finished());
}

#[test]
fn refusals_are_distinct_and_reach_the_peer() {
    let mut sa = store(&[(1, 3)], 10);
    let mut sb = store(&[(2, 3)], 10);
    let mut wrong_cluster = identity(2);
    wrong_cluster.cluster_id = [8; 32];
    let mut same_node = identity(2);
    same_node.node_id = [1; 16];
    for (code, other) in [("wrong_cluster", wrong_cluster), ("duplicate_node_id", same_node)] {
        let mut a = session(1, &sa);
        let mut b = SyncSession::new(other, Hlc::default(), &sb).expect("session");
        let (_, error) = pump(&mut a, &mut sa, &mut b, &mut sb, None);
        let error = error.expect("refused");
        assert_eq!(error.code(), code, "{error}");
        // The refusing side tells the other why.
        let told = b.poll_transmit(&sb).expect("transmit");
        assert!(matches!(told, Some(SyncMessage::Refuse { code: c, .. }) if c == code));
    }
    // Split brain: the same (origin, seq) holding another op.
    let mut sc = store(&[(1, 3)], 10);
    sc.ops.get_mut(&(Origin([1; 16]), 2)).expect("op").op_id = OpId([9; 16]);
    let mut sd = MemStore::default();
    sd.ops.insert((Origin([1; 16]), 1), op(1, 1, 10));
    let mut forged = op(1, 2, 10);
    forged.op_id = OpId([0xaa; 16]);
    sd.ops.insert((Origin([1; 16]), 3), forged);
    let (mut c, mut d) = (session(3, &sc), session(4, &sd));
    let (_, error) = pump(&mut c, &mut sc, &mut d, &mut sd, None);
    assert_eq!(error.map(|e| e.code().to_string()), Some("split_brain".into()));
}

#[test]
fn messages_out_of_order_are_malformed() {
    let mut s = MemStore::default();
    let mut a = session(1, &s);
    let err = a.handle(SyncMessage::Ops(vec![op(2, 1, 1)]), &mut s).expect_err("ops first");
    assert_eq!(err.code(), "malformed_frame");
    let mut a = session(1, &s);
    let hello = match session(2, &s).poll_transmit(&s).expect("hello") {
        Some(m) => m,
        None => panic!("hello expected"),
    };
    a.handle(hello.clone(), &mut s).expect("hello");
    assert_eq!(a.handle(hello, &mut s).expect_err("twice").code(), "malformed_frame");
}

#[test]
fn equal_heads_holding_different_ops_are_split_brain() {
    let mut sa = store(&[(5, 4)], 10);
    let mut sb = store(&[(5, 4)], 10);
    sb.ops.get_mut(&(Origin([5; 16]), 4)).expect("op").op_id = OpId([0xee; 16]);
    let (mut a, mut b) = (session(1, &sa), session(2, &sb));
    let (_, error) = pump(&mut a, &mut sa, &mut b, &mut sb, None);
    assert_eq!(error.map(|e| e.code().to_string()), Some("split_brain".into()));
    // And where one side is ahead, the side that holds the other's head seq sees it.
    let mut sc = store(&[(5, 9)], 10);
    let mut sd = store(&[(5, 4)], 10);
    sd.ops.get_mut(&(Origin([5; 16]), 4)).expect("op").op_id = OpId([0xee; 16]);
    let (mut c, mut d) = (session(3, &sc), session(4, &sd));
    let (_, error) = pump(&mut c, &mut sc, &mut d, &mut sd, None);
    assert_eq!(error.map(|e| e.code().to_string()), Some("split_brain".into()));
}

#[test]
fn another_protocol_version_is_refused() {
    let mut s = MemStore::default();
    let mut a = session(1, &s);
    let hello = match session(2, &s).poll_transmit(&s).expect("hello") {
        Some(SyncMessage::Hello(mut h)) => {
            h.version += 1;
            SyncMessage::Hello(h)
        }
        other => panic!("hello expected, got {other:?}"),
    };
    let err = a.handle(hello, &mut s).expect_err("refused");
    assert_eq!(err.code(), "protocol_version", "{err}");
    assert!(matches!(
        a.poll_transmit(&s).expect("refusal"),
        Some(SyncMessage::Refuse { code, .. }) if code == "protocol_version"
    ));
}
