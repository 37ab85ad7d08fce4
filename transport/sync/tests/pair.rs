//! Two sessions exchanging messages in memory over two in-memory stores, the driver's part
//! (running store requests, the clock) played by the test: convergence both ways, resume after
//! a cut, the distinct refusals, frames that stay bounded, and the handshake, progress and
//! whole-session deadlines in simulated time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use feral_sync::limits::HELLO_WANTS_MAX;
use feral_sync::{
    FrameDecoder, Hello, Identity, Request, Response, SyncError, SyncMessage, SyncSession,
    SyncStore, Timeouts, Want, encode_frame, execute, local_heads,
};
use feral_types::{EncodedOp, Hlc, Op, OpBytes, OpId, OpKind, Origin};

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
        ops_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<OpBytes>, SyncError> {
        let mut bytes = 0;
        let mut out = Vec::new();
        for (_, op) in self.ops.range((*origin, from)..=(*origin, to)).take(ops_max) {
            let encoded = bytes_of(op);
            bytes += encoded.len();
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            out.push(encoded);
        }
        Ok(out)
    }

    fn apply(&mut self, ops: Vec<OpBytes>) -> Result<usize, SyncError> {
        let mut decoded = Vec::with_capacity(ops.len());
        for bytes in ops {
            decoded.push(bytes.decode().map_err(SyncError::Malformed)?.into_parts().0);
        }
        let ops = decoded;
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

/// An op as a store holds it: its encoding and an empty proof trailer (this store checks no
/// seals; the node does).
fn bytes_of(op: &Op) -> OpBytes {
    OpBytes::new(EncodedOp::encode(op.clone()).into_parts().1)
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
    session_at(identity(node), s, Instant::now())
}

fn session_at(identity: Identity, s: &MemStore, now: Instant) -> SyncSession {
    let heads = local_heads(s).expect("heads");
    SyncSession::new(identity, Hlc::default(), heads, Timeouts::default(), now)
}

/// Runs every store request the session has, as a driver does on its blocking pool.
fn run_requests(session: &mut SyncSession, store: &mut MemStore) -> Result<(), SyncError> {
    while let Some(request) = session.poll_request() {
        let response = execute(store, request);
        session.complete(response, Instant::now())?;
    }
    Ok(())
}

/// Sends one message from `from` to `to` through real framing. Returns the frame's size, or
/// None when `from` had nothing to send.
fn step(
    from: &mut SyncSession,
    fs: &mut MemStore,
    to: &mut SyncSession,
    ts: &mut MemStore,
) -> Option<Result<usize, SyncError>> {
    if let Err(e) = run_requests(from, fs) {
        return Some(Err(e));
    }
    let message = from.poll_transmit()?;
    let mut bytes = Vec::new();
    encode_frame(&message, &mut bytes);
    let mut decoder = FrameDecoder::default();
    decoder.push(&bytes);
    let message = decoder.next_message().expect("decode").expect("whole");
    Some(
        to.handle(message, Instant::now())
            .and_then(|()| run_requests(to, ts))
            .map(|()| bytes.len()),
    )
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
        let mut b = session_at(other, &sb, Instant::now());
        let (_, error) = pump(&mut a, &mut sa, &mut b, &mut sb, None);
        let error = error.expect("refused");
        assert_eq!(error.code(), code, "{error}");
        // The refusing side tells the other why.
        let told = b.poll_transmit();
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
    let s = MemStore::default();
    let now = Instant::now();
    let mut a = session(1, &s);
    let err = a.handle(SyncMessage::Ops(vec![bytes_of(&op(2, 1, 1))]), now).expect_err("ops first");
    assert_eq!(err.code(), "malformed_frame");
    let mut a = session(1, &s);
    let Some(hello) = session(2, &s).poll_transmit() else { panic!("hello expected") };
    a.handle(hello.clone(), now).expect("hello");
    assert_eq!(a.handle(hello, now).expect_err("twice").code(), "malformed_frame");
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
    let s = MemStore::default();
    let mut a = session(1, &s);
    let hello = match session(2, &s).poll_transmit() {
        Some(SyncMessage::Hello(mut h)) => {
            h.version += 1;
            SyncMessage::Hello(h)
        }
        other => panic!("hello expected, got {other:?}"),
    };
    let err = a.handle(hello, Instant::now()).expect_err("refused");
    assert_eq!(err.code(), "protocol_version", "{err}");
    assert!(matches!(
        a.poll_transmit(),
        Some(SyncMessage::Refuse { code, .. }) if code == "protocol_version"
    ));
}

/// Hands every request out and back until none is due (store work at one instant).
fn settle(session: &mut SyncSession, store: &mut MemStore, now: Instant) {
    while let Some(request) = session.poll_request() {
        let response = execute(store, request);
        session.complete(response, now).expect("request");
    }
}

#[test]
fn no_hello_within_the_handshake_deadline_ends_the_session() {
    let s = MemStore::default();
    let t0 = Instant::now();
    let mut a = session_at(identity(1), &s, t0);
    let timeouts = Timeouts::default();
    assert!(a.poll_transmit().is_some(), "our hello goes out");
    assert_eq!(a.poll_timeout(), Some(t0 + timeouts.handshake));
    a.handle_timeout(t0 + timeouts.handshake - Duration::from_millis(1)).expect("not yet");
    let err = a.handle_timeout(t0 + timeouts.handshake).expect_err("deadline");
    assert_eq!(err.code(), "handshake_timeout");
    assert!(a.is_failed());
    assert!(
        matches!(a.poll_transmit(), Some(SyncMessage::Refuse { code, .. }) if code == "handshake_timeout")
    );
    assert_eq!(a.poll_timeout(), None, "an ended session has no deadline");
}

#[test]
fn no_frame_progress_for_the_progress_deadline_ends_the_session_whatever_else_happens() {
    // b holds 5,000 ops for a; a stops reading after the hello. Bytes trickling and
    // keep-alives never reach the session, so nothing but whole frames moves its deadline.
    let mut sa = MemStore::default();
    let mut sb = store(&[(2, 5000)], 200);
    let t0 = Instant::now();
    let timeouts = Timeouts::default();
    let mut a = session_at(identity(1), &sa, t0);
    let mut b = session_at(identity(2), &sb, t0);
    let hello_a = a.poll_transmit().expect("hello");
    let hello_b = b.poll_transmit().expect("hello");
    a.handle(hello_b, t0).expect("hello");
    b.handle(hello_a, t0).expect("hello");
    settle(&mut b, &mut sb, t0);
    settle(&mut a, &mut sa, t0);
    // b sends one frame at t0 + 10 s: its progress moves.
    let frame = b.poll_transmit().expect("a frame of ops");
    assert!(matches!(frame, SyncMessage::Ops(_)));
    let t1 = t0 + Duration::from_secs(10);
    b.on_transmitted(t1);
    assert_eq!(b.poll_timeout(), Some(t1 + timeouts.progress));
    // Nothing more moves: at t1 + progress the session ends, with the peer told why.
    b.handle_timeout(t1 + timeouts.progress - Duration::from_millis(1)).expect("not yet");
    let err = b.handle_timeout(t1 + timeouts.progress).expect_err("stalled");
    assert_eq!(err.code(), "progress_timeout");
    assert!(
        matches!(b.poll_transmit(), Some(SyncMessage::Refuse { code, .. }) if code == "progress_timeout")
    );
    // The side that received the frame: its deadline counts from that frame.
    a.handle(frame, t1).expect("ops");
    let Some(Request::Apply(ops)) = a.poll_request() else { panic!("an apply") };
    assert_eq!(a.poll_timeout(), Some(t0 + timeouts.session), "local store work is not a stall");
    assert!(!a.wants_input() || ops.len() <= 1024);
    a.complete(Ok(Response::Applied(ops.len())), t1 + Duration::from_secs(3)).expect("applied");
    assert_eq!(a.poll_timeout(), Some(t1 + Duration::from_secs(3) + timeouts.progress));
}

#[test]
fn a_session_that_keeps_moving_still_ends_at_the_whole_session_deadline() {
    let mut sa = MemStore::default();
    let mut sb = store(&[(2, 50_000)], 10);
    let t0 = Instant::now();
    let timeouts = Timeouts { session: Duration::from_secs(60), ..Timeouts::default() };
    let heads_a = local_heads(&sa).expect("heads");
    let heads_b = local_heads(&sb).expect("heads");
    let mut a = SyncSession::new(identity(1), Hlc::default(), heads_a, timeouts, t0);
    let mut b = SyncSession::new(identity(2), Hlc::default(), heads_b, timeouts, t0);
    let hello_a = a.poll_transmit().expect("hello");
    let hello_b = b.poll_transmit().expect("hello");
    a.handle(hello_b, t0).expect("hello");
    b.handle(hello_a, t0).expect("hello");
    // One frame every 5 s: never a progress timeout, but the whole session is bounded.
    let mut now = t0;
    let ended = loop {
        now += Duration::from_secs(5);
        if let Err(e) = b.handle_timeout(now) {
            break e;
        }
        settle(&mut b, &mut sb, now);
        let Some(frame) = b.poll_transmit() else { panic!("b ran out of ops before the deadline") };
        b.on_transmitted(now);
        a.handle(frame, now).expect("frame");
        settle(&mut a, &mut sa, now);
    };
    assert_eq!(ended.code(), "session_timeout");
    assert_eq!(now, t0 + Duration::from_secs(60));
    assert!(a.stats().applied > 0, "what arrived before the deadline is applied");
}

#[test]
fn a_frame_waiting_for_its_apply_holds_back_further_input() {
    use feral_sync::limits::{FRAME_OPS_MAX, INBOX_FRAMES_MAX};
    let mut sa = MemStore::default();
    let frames_needed = 2 * INBOX_FRAMES_MAX + 1;
    let mut sb = store(&[(2, (frames_needed * FRAME_OPS_MAX) as u64)], 256);
    let now = Instant::now();
    let (mut a, mut b) = (session_at(identity(1), &sa, now), session_at(identity(2), &sb, now));
    let hello_a = a.poll_transmit().expect("hello");
    let hello_b = b.poll_transmit().expect("hello");
    a.handle(hello_b, now).expect("hello");
    b.handle(hello_a, now).expect("hello");
    settle(&mut a, &mut sa, now);
    let mut frames = Vec::new();
    for _ in 0..frames_needed {
        settle(&mut b, &mut sb, now);
        frames.push(b.poll_transmit().expect("frame"));
    }
    let ops_of = |m: &SyncMessage| match m {
        SyncMessage::Ops(ops) => ops.len(),
        other => panic!("ops expected, got {other:?}"),
    };
    let mut frames = frames.into_iter();
    let mut waiting = 0;
    for i in 0..INBOX_FRAMES_MAX {
        assert!(a.wants_input(), "frame {i} of the bound may wait");
        let frame = frames.next().expect("frame");
        waiting += ops_of(&frame);
        a.handle(frame, now).expect("a frame within the bound");
    }
    assert!(!a.wants_input(), "the inbox is full: no more input");
    // The frames that waited go in one apply, in the order they came.
    let Some(Request::Apply(ops)) = a.poll_request() else { panic!("apply expected") };
    assert_eq!(ops.len(), waiting, "every waiting frame's ops in the one apply");
    let seqs: Vec<u64> = ops.iter().map(|o| o.head().expect("head").seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in seq order");
    for _ in 0..INBOX_FRAMES_MAX {
        assert!(a.wants_input(), "the waiting frames are being applied: more may wait");
        a.handle(frames.next().expect("frame"), now).expect("a frame within the bound");
    }
    assert!(!a.wants_input());
    let err = a.handle(frames.next().expect("past"), now).expect_err("input past the bound");
    assert_eq!(err.code(), "malformed_frame");
    let _ = &mut sa;
}

#[test]
fn the_ops_of_many_small_origins_share_frames() {
    // 200 origins of 3 ops each: one frame of 600 ops, not 200 frames (each received frame is
    // one durable apply on the peer).
    let origins: Vec<(u8, u64)> = (10..210).map(|o| (o as u8, 3)).collect();
    let mut sa = store(&origins, 50);
    let mut sb = MemStore::default();
    let (mut a, mut b) = (session(1, &sa), session(2, &sb));
    let mut frames_from_a = 0;
    loop {
        let from_a = step(&mut a, &mut sa, &mut b, &mut sb);
        let from_b = step(&mut b, &mut sb, &mut a, &mut sa);
        match (&from_a, &from_b) {
            (None, None) => break,
            (Some(Err(e)), _) | (_, Some(Err(e))) => panic!("{e:?}"),
            _ => {}
        }
        frames_from_a += usize::from(from_a.is_some());
    }
    assert!(a.is_finished() && b.is_finished());
    assert_eq!(sb.ops.len(), 600);
    assert_eq!(frames_from_a, 3, "hello, one Ops frame, done");
}

/// A hello's wants (records the sender found damaged, below its heads) are sent again by a
/// peer that holds them: only within what it holds, never for an origin it lacks, and a
/// hello with more than `HELLO_WANTS_MAX` wants is malformed.
#[test]
fn wanted_ranges_below_the_heads_are_sent_again() {
    let mut sa = store(&[(1, 100)], 100);
    let mut sb = store(&[(1, 100)], 100);
    let (mut a, mut b) = (session(1, &sa), session(2, &sb));
    b.want(vec![
        Want { origin: Origin([1; 16]), from: 40, to: 45 },
        Want { origin: Origin([1; 16]), from: 98, to: 120 },
        Want { origin: Origin([9; 16]), from: 1, to: 5 },
    ]);
    let (_, error) = pump(&mut a, &mut sa, &mut b, &mut sb, None);
    assert_eq!(error, None);
    assert!(a.is_finished() && b.is_finished());
    assert_eq!(a.stats().wanted, 6 + 3, "40..=45 and 98..=100: what A holds");
    assert_eq!((a.stats().sent, b.stats().received, b.stats().applied), (9, 9, 0));
    assert_eq!(sa, sb);

    let mut a = session(1, &sa);
    let mut b = session(2, &sb);
    let too_many = vec![Want { origin: Origin([1; 16]), from: 1, to: 1 }; HELLO_WANTS_MAX];
    b.want(too_many.iter().copied().chain([too_many[0]]).collect());
    // `want` keeps at most the limit; a peer that sends more is refused.
    let (_, error) = pump(&mut a, &mut sa, &mut b, &mut sb, None);
    assert_eq!(error, None, "{HELLO_WANTS_MAX} wants are taken");
    let hello = Hello {
        version: feral_sync::limits::PROTOCOL_VERSION,
        cluster_id: [7; 32],
        node_id: [2; 16],
        origin: Origin([2; 16]),
        hlc: Hlc::default(),
        heads: vec![],
        wants: vec![too_many[0]; HELLO_WANTS_MAX + 1],
    };
    let mut a = session(1, &sa);
    let refused = a.handle(SyncMessage::Hello(hello), Instant::now());
    assert!(matches!(refused, Err(SyncError::Malformed(_))), "{refused:?}");
}
