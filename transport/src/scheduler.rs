//! When to sync with whom (SPEC 6): every peer every interval (30 s by default), a newly known
//! peer at once, on demand, and on a push (new ops here: every healthy peer at once, and once
//! more, `PUSH_REPEAT_GAP` after a session that was running when they came); after a failure, per-peer backoff
//! from 5 s doubling to 300 s, reset by a success. Never two sessions with one peer at once.
//! Pure: time comes in as an argument, so tests drive it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::limits::{
    PUSH_REPEAT_GAP, SCHEDULE_BACKOFF_BASE, SCHEDULE_BACKOFF_MAX, SYNC_INTERVAL_DEFAULT,
};
use crate::peer::{OriginApart, SyncResult};

#[derive(Debug, Clone)]
struct PeerState {
    next: Instant,
    failures: u32,
    backoff: Duration,
    last_success: Option<Instant>,
    last_error: Option<String>,
    running: bool,
    /// New ops came while a session ran: sync again as soon as it ends well.
    again: bool,
    /// A push starts no session before this: `PUSH_REPEAT_GAP` after the last session ended,
    /// when ops came during it (a stream of writes); else when it ended.
    push_after: Instant,
    /// At the last successful session's handshake: (ops the peer lacked, ops this node lacked).
    behind: Option<(u64, u64)>,
    /// The same per origin.
    by_origin: BTreeMap<String, OriginApart>,
}

/// One peer's schedule, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerSchedule {
    /// The peer.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub addr: SocketAddr,
    /// Seconds since the last successful sync, if any.
    pub last_sync_secs_ago: Option<u64>,
    /// Failures in a row.
    pub failures: u32,
    /// The current backoff (0 after a success).
    pub backoff_secs: u64,
    /// Seconds until the next sync.
    pub next_in_secs: u64,
    /// The last failure's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A session with it is running now (never more than one).
    pub in_flight: bool,
    /// Ops this node held that the peer lacked, as of the last successful session's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_lacked: Option<u64>,
    /// Ops the peer held that this node lacked, as of the same moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lacked: Option<u64>,
    /// The same two counts per origin where the two differed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_origin: BTreeMap<String, OriginApart>,
}

/// The schedule of every known peer.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    peers: BTreeMap<SocketAddr, PeerState>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new(SYNC_INTERVAL_DEFAULT)
    }
}

impl Schedule {
    /// A schedule syncing every `interval`.
    pub fn new(interval: Duration) -> Schedule {
        Schedule { interval, peers: BTreeMap::new() }
    }

    /// Brings the known peers in: a new one is due at once; one no longer known is dropped.
    pub fn set_peers(&mut self, known: &[SocketAddr], now: Instant) {
        self.peers.retain(|addr, state| state.running || known.contains(addr));
        for addr in known {
            self.peers.entry(*addr).or_insert(PeerState {
                next: now,
                failures: 0,
                backoff: Duration::ZERO,
                last_success: None,
                last_error: None,
                running: false,
                again: false,
                push_after: now,
                behind: None,
                by_origin: BTreeMap::new(),
            });
        }
    }

    /// Makes every peer (or one) due at once: a sync on demand. Backoff is kept.
    pub fn request(&mut self, peer: Option<SocketAddr>, now: Instant) {
        for (addr, state) in &mut self.peers {
            if peer.is_none_or(|p| p == *addr) && state.backoff.is_zero() {
                state.next = now;
            }
        }
    }

    /// New ops to pass on: every peer not backing off is due at once (or `PUSH_REPEAT_GAP`
    /// after its last session ended, if ops came during that one: a stream of writes shares
    /// sessions), or, if a session with it is running (it may have passed the new ops by),
    /// once more after it ends.
    /// A peer backing off stays on its backoff: a push never makes a failing peer a storm.
    pub fn push(&mut self, now: Instant) {
        for state in self.peers.values_mut() {
            if !state.backoff.is_zero() {
                continue;
            }
            if state.running {
                state.again = true;
            } else {
                state.next = state.next.min(now.max(state.push_after));
            }
        }
    }

    /// Peers due now, marked running (never two sessions with one peer at once).
    pub fn take_due(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut due = Vec::new();
        for (addr, state) in &mut self.peers {
            if !state.running && state.next <= now {
                state.running = true;
                due.push(*addr);
            }
        }
        due
    }

    /// Records a finished sync: a success resets the backoff and waits one interval; a failure
    /// waits 5 s, then 10 s, 20 s… up to 300 s.
    /// Returns the failures in a row.
    pub fn record(&mut self, peer: SocketAddr, now: Instant, error: Option<String>) -> u32 {
        let interval = self.interval;
        let Some(state) = self.peers.get_mut(&peer) else { return 0 };
        state.running = false;
        let again = std::mem::take(&mut state.again);
        match error {
            None => {
                state.failures = 0;
                state.backoff = Duration::ZERO;
                state.last_success = Some(now);
                state.last_error = None;
                // Ops came during the session: a stream of writes, whose next session waits
                // the gap so it carries many. After a quiet session a push goes at once.
                state.push_after = if again { now + PUSH_REPEAT_GAP } else { now };
                state.next = if again { state.push_after } else { now + interval };
            }
            Some(code) => {
                state.failures += 1;
                state.backoff = if state.backoff.is_zero() {
                    SCHEDULE_BACKOFF_BASE
                } else {
                    (state.backoff * 2).min(SCHEDULE_BACKOFF_MAX)
                };
                state.last_error = Some(code);
                state.next = now + state.backoff;
            }
        }
        state.failures
    }

    /// What the last successful session found at its handshake: (ops the peer lacked, ops
    /// this node lacked).
    pub fn note_behind(&mut self, peer: SocketAddr, result: &SyncResult) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.behind = Some((result.peer_lacked, result.lacked));
            state.by_origin = result.by_origin.clone();
        }
    }

    /// The earliest time a peer is due (for sleeping until then).
    pub fn next_due(&self) -> Option<Instant> {
        self.peers.values().filter(|s| !s.running).map(|s| s.next).min()
    }

    /// Every peer's schedule.
    pub fn status(&self, now: Instant) -> Vec<PeerSchedule> {
        self.peers
            .iter()
            .map(|(addr, s)| PeerSchedule {
                addr: *addr,
                last_sync_secs_ago: s
                    .last_success
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                failures: s.failures,
                backoff_secs: s.backoff.as_secs(),
                next_in_secs: s.next.saturating_duration_since(now).as_secs(),
                last_error: s.last_error.clone(),
                in_flight: s.running,
                peer_lacked: s.behind.map(|b| b.0),
                lacked: s.behind.map(|b| b.1),
                by_origin: s.by_origin.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_new_peer_is_due_at_once_and_a_success_waits_one_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(30));
        s.set_peers(&[addr(1)], t0);
        assert_eq!(s.take_due(t0), [addr(1)]);
        assert!(s.take_due(t0).is_empty(), "never two sessions with one peer");
        s.record(addr(1), t0, None);
        assert!(s.take_due(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(s.take_due(t0 + Duration::from_secs(30)), [addr(1)]);
    }

    #[test]
    fn failures_back_off_from_5_s_doubling_to_300_s_and_a_success_resets() {
        let mut now = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(30));
        s.set_peers(&[addr(2)], now);
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert_eq!(s.take_due(now), [addr(2)]);
            s.record(addr(2), now, Some("connect_failed".into()));
            let next = s.next_due().expect("scheduled");
            waits.push(next.duration_since(now).as_secs());
            now = next;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        s.request(Some(addr(2)), now);
        assert_eq!(s.status(now)[0].backoff_secs, 300, "a request does not skip the backoff");
        assert_eq!(s.take_due(now), [addr(2)]);
        s.record(addr(2), now, None);
        let status = &s.status(now)[0];
        assert_eq!((status.failures, status.backoff_secs, status.next_in_secs), (0, 0, 30));
    }

    #[test]
    fn a_push_makes_healthy_peers_due_once_more_after_a_running_session_and_skips_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(30));
        s.set_peers(&[addr(1), addr(2), addr(3)], t0);
        assert_eq!(s.take_due(t0).len(), 3);
        s.record(addr(1), t0, None);
        s.record(addr(3), t0, Some("connect_failed".into()));
        // addr(2) is still running.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..100 {
            s.push(t1);
        }
        assert_eq!(s.take_due(t1), [addr(1)], "healthy and idle: at once; failing: backoff");
        s.record(addr(2), t1, None);
        assert!(s.take_due(t1).is_empty(), "pushed while running: once more, after the gap");
        let t2 = t1 + PUSH_REPEAT_GAP;
        assert_eq!(s.take_due(t2), [addr(2)]);
        s.record(addr(2), t2, None);
        s.record(addr(1), t2, None);
        assert!(s.take_due(t2).is_empty(), "a burst of pushes costs one more session each");
        // After quiet sessions, a push goes at once.
        let t3 = t2 + Duration::from_millis(1);
        s.push(t3);
        assert_eq!(s.take_due(t3), [addr(1), addr(2)], "both, once");
        // A push during a session: the next one waits the gap after it.
        s.push(t3);
        s.record(addr(1), t3, None);
        s.record(addr(2), t3, None);
        s.push(t3 + Duration::from_millis(1));
        assert!(s.take_due(t3 + Duration::from_millis(1)).is_empty(), "a stream waits the gap");
        assert_eq!(s.take_due(t3 + PUSH_REPEAT_GAP), [addr(1), addr(2)]);
        assert_eq!(
            s.next_due(),
            Some(t1 + Duration::from_secs(4)),
            "addr(3) keeps its 5 s backoff"
        );
    }

    #[test]
    fn a_request_makes_healthy_peers_due_and_unknown_peers_are_dropped() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(30));
        s.set_peers(&[addr(1), addr(2)], t0);
        for p in s.take_due(t0) {
            s.record(p, t0, None);
        }
        s.request(None, t0 + Duration::from_secs(1));
        assert_eq!(s.take_due(t0 + Duration::from_secs(1)), [addr(1), addr(2)]);
        s.record(addr(2), t0, None);
        s.set_peers(&[addr(2)], t0);
        assert_eq!(s.status(t0).len(), 2, "a running peer is kept until it finishes");
        s.record(addr(1), t0, None);
        s.set_peers(&[addr(2)], t0);
        assert_eq!(s.status(t0).len(), 1, "a finished peer no longer known is dropped");
        s.set_peers(&[], t0);
        assert!(s.status(t0).is_empty());
    }
}
