//! One sync session as a pure state machine, in the manner of quinn-proto: messages come in
//! through [`SyncSession::handle`] and go out through [`SyncSession::poll_transmit`]; the
//! store work it needs (history checks, reads of the ops to send, durable applies of the ops
//! received) comes out of [`SyncSession::poll_request`] and its results go back in through
//! [`SyncSession::complete`]; time comes in as `now` on every call, and its handshake,
//! progress and whole-session deadlines are asked for with [`SyncSession::poll_timeout`] and
//! enforced by [`SyncSession::handle_timeout`]. No sockets, no store, no clock: the driver owns
//! all three and only moves bytes and runs requests.
//!
//! Each side sends `Hello` (version, cluster, node id, origin, HLC sample, heads), then the ops
//! the other side lacks by its heads (from the contested seq where the two hold different ops
//! at a head: the store that receives both quarantines the conflict), in (origin, seq) order, in bounded `Ops` frames read from
//! the store one frame at a time (memory stays bounded whatever the backlog), then `Done`. Each
//! received frame is applied durably in order; while one waits for its apply the session takes
//! no more input ([`SyncSession::wants_input`]), so the peer is held back by flow control. A
//! cut session resumes from the heads the next `Hello` carries: nothing applied is sent again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use feral_types::{Hlc, OpBytes, OpId, Origin};

use crate::error::{Stage, SyncError};
use crate::limits::{
    FRAME_OPS_BYTES_TARGET, FRAME_OPS_MAX, HANDSHAKE_TIMEOUT, HELLO_ORIGINS_MAX, HELLO_WANTS_MAX,
    INBOX_FRAMES_MAX, PROGRESS_TIMEOUT, PROTOCOL_VERSION, SESSION_TIMEOUT,
};
use crate::message::{Head, Hello, SyncMessage, Want};

/// What a driver needs from the local store to run a session's requests.
pub trait SyncStore {
    /// Highest contiguous seq held per origin.
    fn heads(&self) -> Result<Vec<(Origin, u64)>, SyncError>;
    /// Ops of `origin` with `from <= seq <= to`, in seq order, as the bytes they are stored
    /// as: at most `ops_max`, and no more once their bytes reach `bytes_max` (always at least
    /// one when any is held).
    fn read(
        &self,
        origin: &Origin,
        from: u64,
        to: u64,
        ops_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<OpBytes>, SyncError>;
    /// Decodes and checks received ops and applies them durably (all or none); returns how
    /// many were new. Bytes that are not an op's canonical encoding are `Malformed`.
    fn apply(&mut self, ops: Vec<OpBytes>) -> Result<usize, SyncError>;
    /// The op_id held at (origin, seq), if any: a history check, not a read to send (a store
    /// whose reads send only whole signed runs answers this from the op itself).
    fn op_id_at(&self, origin: &Origin, seq: u64) -> Result<Option<OpId>, SyncError> {
        match self.read(origin, seq, seq, 1, usize::MAX)?.first() {
            Some(op) => Ok(Some(op.head().map_err(SyncError::Malformed)?.op_id)),
            None => Ok(None),
        }
    }
}

/// Store work a session asks its driver to run (off the network path: these block).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The op_id held at (origin, seq), to check the peer's head against this history.
    OpIdAt {
        /// The origin.
        origin: Origin,
        /// The seq.
        seq: u64,
    },
    /// The next ops to send: see [`SyncStore::read`].
    Read {
        /// The origin.
        origin: Origin,
        /// First seq wanted.
        from: u64,
        /// Last seq wanted.
        to: u64,
        /// Most ops.
        ops_max: usize,
        /// Payload byte budget.
        bytes_max: usize,
    },
    /// Apply one received frame's ops durably.
    Apply(Vec<OpBytes>),
}

/// The result of a [`Request`], in the same shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// For [`Request::OpIdAt`].
    OpIdAt(Option<OpId>),
    /// For [`Request::Read`].
    Read(Vec<OpBytes>),
    /// For [`Request::Apply`]: ops that were new here.
    Applied(usize),
}

/// Runs one request against a store (what a driver does on its blocking pool).
pub fn execute(store: &mut dyn SyncStore, request: Request) -> Result<Response, SyncError> {
    Ok(match request {
        Request::OpIdAt { origin, seq } => Response::OpIdAt(op_id_at(store, &origin, seq)?),
        Request::Read { origin, from, to, ops_max, bytes_max } => {
            Response::Read(store.read(&origin, from, to, ops_max, bytes_max)?)
        }
        Request::Apply(ops) => Response::Applied(store.apply(ops)?),
    })
}

/// The heads a session starts from: per origin, the highest contiguous seq and its op_id.
pub fn local_heads(store: &dyn SyncStore) -> Result<Vec<Head>, SyncError> {
    let mut heads = Vec::new();
    for (origin, seq) in store.heads()? {
        if let Some(op_id) = op_id_at(store, &origin, seq)? {
            heads.push(Head { origin, seq, op_id });
        }
    }
    heads.sort_unstable();
    Ok(heads)
}

/// What a store gives a new session: who it is, a clock sample, and its heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStart {
    /// This side.
    pub identity: Identity,
    /// A sample of the local clock for the hello.
    pub hlc: Hlc,
    /// From [`local_heads`].
    pub heads: Vec<Head>,
    /// Ranges this side wants again (damaged records to heal), at most `HELLO_WANTS_MAX`.
    pub wants: Vec<Want>,
}

impl SessionStart {
    /// The session, starting at `now`.
    pub fn session(self, timeouts: Timeouts, now: Instant) -> SyncSession {
        let mut session = SyncSession::new(self.identity, self.hlc, self.heads, timeouts, now);
        session.want(self.wants);
        session
    }
}

/// The deadlines of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the start to the peer's hello.
    pub handshake: Duration,
    /// After the hello, the longest time without a whole frame moving either way or a store
    /// request finishing (bytes trickling inside a frame and keep-alives do not count).
    pub progress: Duration,
    /// The whole session, however busy (the next session resumes where it ended).
    pub session: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: HANDSHAKE_TIMEOUT,
            progress: PROGRESS_TIMEOUT,
            session: SESSION_TIMEOUT,
        }
    }
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
    /// At the handshake: ops this side held that the peer lacked, by the two sides' heads.
    pub peer_lacked: u64,
    /// At the handshake: ops the peer held that this side lacked, by the two sides' heads.
    pub lacked: u64,
    /// At the handshake: ops this side planned to send again because the peer wanted them
    /// (its copies were damaged) and this side held them.
    pub wanted: u64,
}

/// A stretch of one origin's ops the peer lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    origin: Origin,
    next: u64,
    last: u64,
}

/// Which request is running (at most one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    Check,
    Read,
    Apply,
}

/// One side of a session.
#[derive(Debug)]
pub struct SyncSession {
    identity: Identity,
    hlc: Hlc,
    local_heads: Vec<Head>,
    /// What this side's hello asks for again.
    wants: Vec<Want>,
    hello_sent: bool,
    peer: Option<Hello>,
    /// Per origin where the two differed at the hello: (origin, ops the peer lacked, ops this
    /// side lacked). At most `HELLO_ORIGINS_MAX` × 2 entries.
    apart: Vec<(Origin, u64, u64)>,
    /// The peer's heads below ours, whose op_id must be the one held here.
    checks: VecDeque<Head>,
    plan: VecDeque<Range>,
    /// A frame read and not yet handed out.
    outgoing: Option<SyncMessage>,
    /// Ops read for the next frame: reads of several ranges (origins) fill one frame, so a
    /// store of many small origins costs one frame (and one durable apply) per 1,024 ops, not
    /// one per origin.
    building: Vec<OpBytes>,
    /// Their payload bytes.
    building_bytes: usize,
    /// True once `building` is a whole frame (full, or its range stopped at the budget).
    building_ready: bool,
    /// Received frames waiting for their apply, in order.
    inbox: VecDeque<Vec<OpBytes>>,
    running: Option<Running>,
    done_sent: bool,
    done_received: bool,
    refusal: Option<SyncMessage>,
    failed: bool,
    stats: SyncStats,
    expected_peer: Option<[u8; 16]>,
    /// Origins whose history differed from the peer's.
    forks: u64,
    timeouts: Timeouts,
    started: Instant,
    progress: Instant,
}

impl SyncSession {
    /// A session starting from `local_heads` (see [`local_heads`]) at `now`.
    pub fn new(
        identity: Identity,
        hlc: Hlc,
        mut local_heads: Vec<Head>,
        timeouts: Timeouts,
        now: Instant,
    ) -> SyncSession {
        local_heads.sort_unstable();
        SyncSession {
            identity,
            hlc,
            local_heads,
            wants: Vec::new(),
            hello_sent: false,
            peer: None,
            checks: VecDeque::new(),
            plan: VecDeque::new(),
            outgoing: None,
            building: Vec::new(),
            building_bytes: 0,
            building_ready: false,
            inbox: VecDeque::new(),
            running: None,
            done_sent: false,
            done_received: false,
            refusal: None,
            failed: false,
            stats: SyncStats::default(),
            apart: Vec::new(),
            expected_peer: None,
            forks: 0,
            timeouts,
            started: now,
            progress: now,
        }
    }

    /// Ranges this side's hello asks the peer to send again (its damaged records); past
    /// `HELLO_WANTS_MAX` the rest wait for a later session.
    pub fn want(&mut self, mut wants: Vec<Want>) {
        wants.truncate(HELLO_WANTS_MAX);
        self.wants = wants;
    }

    /// The node id the peer's certificate proves: a hello naming another is refused.
    pub fn expect_peer_node_id(&mut self, node_id: [u8; 16]) {
        self.expected_peer = Some(node_id);
    }

    /// Where the two sides differed at the hello, per origin: (origin, ops the peer lacked,
    /// ops this side lacked), an origin at most once in each role.
    pub fn apart(&self) -> &[(Origin, u64, u64)] {
        &self.apart
    }

    /// The peer's handshake, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// True once both sides sent `Done` and every received op is applied.
    pub fn is_finished(&self) -> bool {
        self.done_sent
            && self.done_received
            && !self.failed
            && self.inbox.is_empty()
            && self.running.is_none()
    }

    /// True once the session ended with an error.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// True while the session takes another received message: false while a frame waits for
    /// its apply (the driver stops reading, so flow control holds the peer back).
    pub fn wants_input(&self) -> bool {
        !self.failed && self.inbox.len() < INBOX_FRAMES_MAX
    }

    /// Counters so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Ends the session with `error`: the refusal that tells the peer why is the next message
    /// [`SyncSession::poll_transmit`] returns (none for the peer's own refusal).
    fn fail(&mut self, error: SyncError) -> SyncError {
        self.failed = true;
        self.inbox.clear();
        self.outgoing = None;
        self.building.clear();
        if !matches!(error, SyncError::PeerRefused { .. }) {
            self.refusal = Some(SyncMessage::Refuse {
                code: error.code().to_string(),
                reason: error.to_string(),
            });
        }
        error
    }

    /// Ends the session with an error found outside it (a frame that does not decode); the
    /// refusal that tells the peer why is the next message out. Returns the error.
    pub fn refuse(&mut self, error: SyncError) -> SyncError {
        if self.failed { error } else { self.fail(error) }
    }

    /// The next store request to run, if one is due and none is running.
    pub fn poll_request(&mut self) -> Option<Request> {
        if self.failed || self.running.is_some() {
            return None;
        }
        if let Some(theirs) = self.checks.front() {
            self.running = Some(Running::Check);
            return Some(Request::OpIdAt { origin: theirs.origin, seq: theirs.seq });
        }
        if let Some(mut ops) = self.inbox.pop_front() {
            // The frames that came while the last apply ran go in one apply: one durable
            // commit for all of them (a frame holds whole runs, so any cut between frames is
            // a run boundary).
            while let Some(more) = self.inbox.pop_front() {
                ops.extend(more);
            }
            self.running = Some(Running::Apply);
            return Some(Request::Apply(ops));
        }
        if self.peer.is_some()
            && self.outgoing.is_none()
            && !self.building_ready
            && let Some(range) = self.plan.front()
        {
            // What is left of the frame being built (a store returns at least one whole run
            // even past it; `take_read` starts a new frame when that would overflow).
            self.running = Some(Running::Read);
            return Some(Request::Read {
                origin: range.origin,
                from: range.next,
                to: range.last,
                ops_max: FRAME_OPS_MAX.saturating_sub(self.building.len()).max(1),
                bytes_max: FRAME_OPS_BYTES_TARGET.saturating_sub(self.building_bytes).max(1),
            });
        }
        None
    }

    /// Takes the result of the request [`SyncSession::poll_request`] gave out. A failed
    /// request, or a result that breaks the protocol, ends the session.
    pub fn complete(
        &mut self,
        response: Result<Response, SyncError>,
        now: Instant,
    ) -> Result<(), SyncError> {
        let Some(running) = self.running.take() else {
            return Err(self.fail(SyncError::Malformed("a result with no request running".into())));
        };
        if self.failed {
            return Ok(()); // a late result of a session that already ended
        }
        self.progress = now;
        let outcome = match (running, response) {
            (_, Err(e)) => Err(e),
            (Running::Check, Ok(Response::OpIdAt(held))) => match self.checks.pop_front() {
                Some(theirs) => {
                    if same_history(&theirs, held).is_err() {
                        self.send_from_fork(&theirs);
                    }
                    Ok(())
                }
                None => Ok(()),
            },
            (Running::Apply, Ok(Response::Applied(new))) => {
                self.stats.applied += new as u64;
                Ok(())
            }
            (Running::Read, Ok(Response::Read(ops))) => self.take_read(ops),
            (running, Ok(other)) => {
                Err(SyncError::Malformed(format!("{other:?} answers a {running:?} request")))
            }
        };
        outcome.map_err(|e| self.fail(e))
    }

    /// A read for the front range came back: more ops for the frame being built, or the range
    /// has nothing more to send.
    fn take_read(&mut self, ops: Vec<OpBytes>) -> Result<(), SyncError> {
        let Some(range) = self.plan.front_mut() else { return Ok(()) };
        if ops.len() > FRAME_OPS_MAX {
            return Err(SyncError::Malformed(format!("the store read {} ops", ops.len())));
        }
        let (Some(first), Some(last)) = (ops.first(), ops.last()) else {
            // Nothing more of this range can be sent (a writer's ops not yet sealed; an
            // append-only log never loses the rest): skip it rather than loop.
            self.plan.pop_front();
            self.building_ready |= self.plan.is_empty() && !self.building.is_empty();
            return Ok(());
        };
        // Only the heads of the first and last ops are read: the store returns a range in
        // seq order, and the bytes go out as they are.
        let head = |o: &OpBytes| o.head().map_err(SyncError::Malformed);
        let (first, last) = (head(first)?, head(last)?);
        let in_range = first.origin == range.origin
            && first.seq >= range.next
            && last.origin == range.origin
            && last.seq <= range.last
            && first.seq <= last.seq;
        if !in_range {
            return Err(SyncError::Malformed("the store read ops outside the range asked".into()));
        }
        range.next = last.seq + 1;
        // The store stopped before the range's end: its budget (the frame) is spent.
        let stopped_short = range.next <= range.last;
        if !stopped_short {
            self.plan.pop_front();
        }
        self.stats.sent += ops.len() as u64;
        let bytes: usize = ops.iter().map(OpBytes::len).sum();
        if !self.building.is_empty() && self.building.len() + ops.len() > FRAME_OPS_MAX {
            // One whole run past the frame's room: the frame goes as it is, the run starts the
            // next one.
            self.outgoing = Some(SyncMessage::Ops(std::mem::take(&mut self.building)));
            self.building_bytes = 0;
        }
        self.building.extend(ops);
        self.building_bytes += bytes;
        self.building_ready = stopped_short
            || self.plan.is_empty()
            || self.building.len() >= FRAME_OPS_MAX
            || self.building_bytes >= FRAME_OPS_BYTES_TARGET;
        Ok(())
    }

    /// The next message to send, if any. A refusal is sent once, then nothing more.
    pub fn poll_transmit(&mut self) -> Option<SyncMessage> {
        if let Some(refusal) = self.refusal.take() {
            return Some(refusal);
        }
        if self.failed {
            return None;
        }
        if !self.hello_sent {
            self.hello_sent = true;
            return Some(SyncMessage::Hello(Hello {
                version: PROTOCOL_VERSION,
                cluster_id: self.identity.cluster_id,
                node_id: self.identity.node_id,
                origin: self.identity.origin,
                hlc: self.hlc,
                heads: self.local_heads.clone(),
                wants: self.wants.clone(),
            }));
        }
        self.peer.as_ref()?;
        if let Some(frame) = self.outgoing.take() {
            return Some(frame);
        }
        if self.building_ready {
            self.building_ready = false;
            self.building_bytes = 0;
            return Some(SyncMessage::Ops(std::mem::take(&mut self.building)));
        }
        let reading = self.running == Some(Running::Read);
        let building = !self.building.is_empty();
        if !self.done_sent
            && self.plan.is_empty()
            && self.checks.is_empty()
            && !reading
            && !building
        {
            self.done_sent = true;
            return Some(SyncMessage::Done { sent: self.stats.sent });
        }
        None
    }

    /// Tells the session that a whole frame it gave out was written to the peer.
    pub fn on_transmitted(&mut self, now: Instant) {
        self.progress = now;
    }

    /// Takes one message from the peer. An error ends the session; the refusal that tells the
    /// peer why is the next message [`SyncSession::poll_transmit`] returns.
    pub fn handle(&mut self, message: SyncMessage, now: Instant) -> Result<(), SyncError> {
        if self.failed {
            return Err(SyncError::Malformed("message after the session ended".into()));
        }
        if !self.wants_input() {
            return Err(self.fail(SyncError::Malformed("input while a frame waits".into())));
        }
        self.progress = now;
        let outcome = match message {
            SyncMessage::Hello(hello) => self.handle_hello(hello),
            SyncMessage::Ops(ops) => self.handle_ops(ops),
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
            SyncMessage::Refuse { code, reason } => Err(SyncError::peer_refused(&code, &reason)),
        };
        outcome.map_err(|e| self.fail(e))
    }

    /// When the session must next be woken to enforce a deadline (none once it ended).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline().map(|(at, _)| at)
    }

    fn deadline(&self) -> Option<(Instant, Stage)> {
        if self.failed || self.is_finished() {
            return None;
        }
        let whole = (self.started + self.timeouts.session, Stage::Session);
        let stage = if self.peer.is_none() {
            Some((self.started + self.timeouts.handshake, Stage::Handshake))
        } else if self.running.is_some() {
            None // local store work is not the peer stalling; the whole-session bound holds
        } else {
            Some((self.progress + self.timeouts.progress, Stage::Progress))
        };
        Some(match stage {
            Some(stage) if stage.0 < whole.0 => stage,
            _ => whole,
        })
    }

    /// Ends the session if a deadline has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SyncError> {
        match self.deadline() {
            Some((at, stage)) if now >= at => Err(self.fail(SyncError::Timeout(stage))),
            _ => Ok(()),
        }
    }

    fn handle_hello(&mut self, hello: Hello) -> Result<(), SyncError> {
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
                    let peer_head = theirs[i];
                    if peer_head.seq > 0 && peer_head.seq == head.seq {
                        if same_history(&peer_head, Some(head.op_id)).is_err() {
                            self.forks += 1;
                            self.plan.push_back(Range {
                                origin: head.origin,
                                next: head.seq,
                                last: head.seq,
                            });
                        }
                    } else if peer_head.seq > 0 && peer_head.seq < head.seq {
                        self.checks.push_back(peer_head);
                    }
                    peer_head.seq
                }
                Err(_) => 0,
            };
            if head.seq > known {
                self.stats.peer_lacked += head.seq - known;
                self.apart.push((head.origin, head.seq - known, 0));
                self.plan.push_back(Range { origin: head.origin, next: known + 1, last: head.seq });
            }
        }
        for peer_head in &theirs {
            let mine = match self.local_heads.binary_search_by(|h| h.origin.cmp(&peer_head.origin))
            {
                Ok(i) => self.local_heads[i].seq,
                Err(_) => 0,
            };
            let lacked = peer_head.seq.saturating_sub(mine);
            if lacked > 0 {
                self.stats.lacked += lacked;
                self.apart.push((peer_head.origin, 0, lacked));
            }
        }
        if hello.wants.len() > HELLO_WANTS_MAX {
            return Err(SyncError::Malformed(format!("{} wants in a hello", hello.wants.len())));
        }
        for want in &hello.wants {
            let Ok(i) = self.local_heads.binary_search_by(|h| h.origin.cmp(&want.origin)) else {
                continue;
            };
            let last = want.to.min(self.local_heads[i].seq);
            if want.from == 0 || want.from > last {
                continue; // nothing of it held here (or a range that is empty)
            }
            self.stats.wanted += last - want.from + 1;
            self.plan.push_back(Range { origin: want.origin, next: want.from, last });
        }
        self.peer = Some(hello);
        Ok(())
    }

    /// The peer holds another op than this side at its head seq of an origin: two writers
    /// used one origin (a copied data directory with its key, or a lying node). The session
    /// does not end (that would stop every origin's sync for good): this side sends its own
    /// ops of that origin from the contested seq, so the peer sees both and quarantines the
    /// conflict with its evidence, and every other origin goes on.
    fn send_from_fork(&mut self, theirs: &Head) {
        self.forks += 1;
        if let Some(range) = self.plan.iter_mut().find(|r| r.origin == theirs.origin) {
            range.next = range.next.min(theirs.seq);
        }
    }

    /// Origins whose history differed from the peer's in this session (see
    /// [`SyncSession::send_from_fork`]).
    pub fn forks(&self) -> u64 {
        self.forks
    }

    fn handle_ops(&mut self, ops: Vec<OpBytes>) -> Result<(), SyncError> {
        if self.peer.is_none() {
            return Err(SyncError::Malformed("ops before hello".into()));
        }
        if ops.len() > FRAME_OPS_MAX {
            return Err(SyncError::Malformed(format!("{} ops in one frame", ops.len())));
        }
        self.stats.received += ops.len() as u64;
        if !ops.is_empty() {
            self.inbox.push_back(ops);
        }
        Ok(())
    }
}

/// The op_id the store holds at (origin, seq).
fn op_id_at(store: &dyn SyncStore, origin: &Origin, seq: u64) -> Result<Option<OpId>, SyncError> {
    store.op_id_at(origin, seq)
}

/// Where this side holds the peer's head seq of an origin, it must hold the same op there;
/// otherwise two writers used one origin (the side with the higher head sees it).
fn same_history(theirs: &Head, held: Option<OpId>) -> Result<(), SyncError> {
    match held {
        Some(id) if id != theirs.op_id => Err(SyncError::SplitBrain(format!(
            "origin {} seq {}: op {} here, op {} on the peer",
            theirs.origin, theirs.seq, id, theirs.op_id
        ))),
        _ => Ok(()),
    }
}
