//! One sync session as a pure state machine: messages come in through [`SyncSession::handle`],
//! messages go out through [`SyncSession::poll_transmit`], and the local store is reached only
//! through the [`SyncStore`] trait. No sockets, no clocks: the driver owns both.
//!
//! Each side sends `Hello` (version, cluster, node id, origin, HLC sample, heads), then the ops
//! the other side lacks by its heads, in (origin, seq) order, in bounded `Ops` frames read from
//! the store one frame at a time (memory stays bounded whatever the backlog), then `Done`. Each
//! received frame is applied durably before the next is read. A cut session resumes from the
//! heads the next `Hello` carries: nothing applied is sent again.

use std::collections::VecDeque;

use feral_log::{Hlc, Op, OpId, Origin};

use crate::error::SyncError;
use crate::limits::{FRAME_OPS_BYTES_TARGET, FRAME_OPS_MAX, HELLO_ORIGINS_MAX, PROTOCOL_VERSION};
use crate::message::{Head, Hello, SyncMessage};

/// What a session needs from the local store.
pub trait SyncStore {
    /// Highest contiguous seq held per origin.
    fn heads(&self) -> Result<Vec<(Origin, u64)>, SyncError>;
    /// Ops of `origin` with `from <= seq <= to`, in seq order, at most `limit`.
    fn read(&self, origin: &Origin, from: u64, to: u64, limit: usize)
    -> Result<Vec<Op>, SyncError>;
    /// Applies received ops durably (all or none); returns how many were new.
    fn apply(&mut self, ops: Vec<Op>) -> Result<usize, SyncError>;
}

/// Who this side is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Hash of the cluster CA certificate.
    pub cluster_id: [u8; 32],
    /// This node's id.
    pub node_id: [u8; 16],
    /// This store's writer origin.
    pub origin: Origin,
}

/// Counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Ops sent.
    pub sent: u64,
    /// Ops received.
    pub received: u64,
    /// Received ops that were new here.
    pub applied: u64,
}

/// A stretch of one origin's ops the peer lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    origin: Origin,
    next: u64,
    last: u64,
}

/// One side of a session.
#[derive(Debug)]
pub struct SyncSession {
    identity: Identity,
    hlc: Hlc,
    local_heads: Vec<Head>,
    hello_sent: bool,
    peer: Option<Hello>,
    plan: VecDeque<Range>,
    done_sent: bool,
    done_received: bool,
    refusal: Option<SyncMessage>,
    failed: bool,
    stats: SyncStats,
    expected_peer: Option<[u8; 16]>,
}

impl SyncSession {
    /// A session starting from the store's current heads.
    pub fn new(
        identity: Identity,
        hlc: Hlc,
        store: &dyn SyncStore,
    ) -> Result<SyncSession, SyncError> {
        let mut local_heads = Vec::new();
        for (origin, seq) in store.heads()? {
            if let Some(op_id) = op_id_at(store, &origin, seq)? {
                local_heads.push(Head { origin, seq, op_id });
            }
        }
        local_heads.sort_unstable();
        Ok(SyncSession {
            identity,
            hlc,
            local_heads,
            hello_sent: false,
            peer: None,
            plan: VecDeque::new(),
            done_sent: false,
            done_received: false,
            refusal: None,
            failed: false,
            stats: SyncStats::default(),
            expected_peer: None,
        })
    }

    /// The node id the peer's certificate proves: a hello naming another is refused.
    pub fn expect_peer_node_id(&mut self, node_id: [u8; 16]) {
        self.expected_peer = Some(node_id);
    }

    /// The peer's handshake, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// True once both sides sent `Done`.
    pub fn is_finished(&self) -> bool {
        self.done_sent && self.done_received && !self.failed
    }

    /// Counters so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// The next message to send, if any. A refusal is sent once, then nothing more.
    pub fn poll_transmit(
        &mut self,
        store: &dyn SyncStore,
    ) -> Result<Option<SyncMessage>, SyncError> {
        if let Some(refusal) = self.refusal.take() {
            return Ok(Some(refusal));
        }
        if self.failed {
            return Ok(None);
        }
        if !self.hello_sent {
            self.hello_sent = true;
            return Ok(Some(SyncMessage::Hello(Hello {
                version: PROTOCOL_VERSION,
                cluster_id: self.identity.cluster_id,
                node_id: self.identity.node_id,
                origin: self.identity.origin,
                hlc: self.hlc,
                heads: self.local_heads.clone(),
            })));
        }
        if self.peer.is_none() {
            return Ok(None);
        }
        while let Some(range) = self.plan.front_mut() {
            let ops = store.read(&range.origin, range.next, range.last, FRAME_OPS_MAX)?;
            let frame = trim_to_target(ops);
            match frame.last() {
                Some(last) => {
                    range.next = last.seq + 1;
                    if range.next > range.last {
                        self.plan.pop_front();
                    }
                    self.stats.sent += frame.len() as u64;
                    return Ok(Some(SyncMessage::Ops(frame)));
                }
                // The store no longer holds the rest of this range (cannot happen with an
                // append-only log; skip it rather than loop).
                None => {
                    self.plan.pop_front();
                }
            }
        }
        if !self.done_sent {
            self.done_sent = true;
            return Ok(Some(SyncMessage::Done { sent: self.stats.sent }));
        }
        Ok(None)
    }

    /// Takes one message from the peer. An error ends the session; the refusal that tells the
    /// peer why is the next message [`SyncSession::poll_transmit`] returns.
    pub fn handle(
        &mut self,
        message: SyncMessage,
        store: &mut dyn SyncStore,
    ) -> Result<(), SyncError> {
        if self.failed {
            return Err(SyncError::Malformed("message after the session ended".into()));
        }
        let outcome = match message {
            SyncMessage::Hello(hello) => self.handle_hello(hello, store),
            SyncMessage::Ops(ops) => self.handle_ops(ops, store),
            SyncMessage::Done { sent } => {
                if self.peer.is_none() {
                    Err(SyncError::Malformed("done before hello".into()))
                } else if sent != self.stats.received {
                    Err(SyncError::Malformed(format!(
                        "peer says it sent {sent} ops, {} arrived",
                        self.stats.received
                    )))
                } else {
                    self.done_received = true;
                    Ok(())
                }
            }
            SyncMessage::Refuse { code, reason } => {
                self.failed = true;
                return Err(SyncError::peer_refused(&code, &reason));
            }
        };
        if let Err(e) = &outcome {
            self.failed = true;
            self.refusal =
                Some(SyncMessage::Refuse { code: e.code().to_string(), reason: e.to_string() });
        }
        outcome
    }

    fn handle_hello(&mut self, hello: Hello, store: &dyn SyncStore) -> Result<(), SyncError> {
        if self.peer.is_some() {
            return Err(SyncError::Malformed("a second hello".into()));
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(SyncError::ProtocolVersion {
                peer: hello.version,
                local: PROTOCOL_VERSION,
            });
        }
        if hello.cluster_id != self.identity.cluster_id {
            return Err(SyncError::WrongCluster);
        }
        if hello.node_id == self.identity.node_id {
            return Err(SyncError::DuplicateNodeId);
        }
        if let Some(proven) = self.expected_peer.filter(|id| *id != hello.node_id) {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            return Err(SyncError::NodeIdMismatch {
                claimed: hex(&hello.node_id),
                proven: hex(&proven),
            });
        }
        if hello.heads.len() > HELLO_ORIGINS_MAX {
            return Err(SyncError::Malformed(format!("{} origins in a hello", hello.heads.len())));
        }
        let mut theirs = hello.heads.clone();
        theirs.sort_unstable();
        for head in &self.local_heads {
            let known = match theirs.binary_search_by(|h| h.origin.cmp(&head.origin)) {
                Ok(i) => {
                    check_same_history(&theirs[i], head, store)?;
                    theirs[i].seq
                }
                Err(_) => 0,
            };
            if head.seq > known {
                self.plan.push_back(Range { origin: head.origin, next: known + 1, last: head.seq });
            }
        }
        self.peer = Some(hello);
        Ok(())
    }

    fn handle_ops(&mut self, ops: Vec<Op>, store: &mut dyn SyncStore) -> Result<(), SyncError> {
        if self.peer.is_none() {
            return Err(SyncError::Malformed("ops before hello".into()));
        }
        if ops.len() > FRAME_OPS_MAX {
            return Err(SyncError::Malformed(format!("{} ops in one frame", ops.len())));
        }
        self.stats.received += ops.len() as u64;
        self.stats.applied += store.apply(ops)? as u64;
        Ok(())
    }
}

/// The op_id the store holds at (origin, seq).
fn op_id_at(store: &dyn SyncStore, origin: &Origin, seq: u64) -> Result<Option<OpId>, SyncError> {
    Ok(store.read(origin, seq, seq, 1)?.first().map(|op| op.op_id))
}

/// Keeps ops until the frame reaches its byte target (always at least one op).
fn trim_to_target(mut ops: Vec<Op>) -> Vec<Op> {
    let mut bytes = 0;
    let keep = ops
        .iter()
        .position(|op| {
            bytes += op.data.len() + op.row_id.len() + op.table.len() + 64;
            bytes > FRAME_OPS_BYTES_TARGET
        })
        .map_or(ops.len(), |i| i.max(1));
    ops.truncate(keep);
    ops
}

/// Where this side holds the peer's head seq of an origin, it must hold the same op there;
/// otherwise two writers used one origin (the side with the higher head sees it).
fn check_same_history(theirs: &Head, ours: &Head, store: &dyn SyncStore) -> Result<(), SyncError> {
    if theirs.seq == 0 || theirs.seq > ours.seq {
        return Ok(());
    }
    let held = if theirs.seq == ours.seq {
        Some(ours.op_id)
    } else {
        op_id_at(store, &theirs.origin, theirs.seq)?
    };
    match held {
        Some(id) if id != theirs.op_id => Err(SyncError::SplitBrain(format!(
            "origin {} seq {}: op {} here, op {} on the peer",
            theirs.origin, theirs.seq, id, theirs.op_id
        ))),
        _ => Ok(()),
    }
}
