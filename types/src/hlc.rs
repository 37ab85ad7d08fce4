//! Hybrid logical clock: `(wall_ms, counter, node)` ordered as a tuple, never as text.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::op::Origin;

/// One HLC stamp. The derived order compares `wall_ms`, then `counter`, then `node`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the unix epoch (physical part).
    pub wall_ms: u64,
    /// Logical counter within one `wall_ms`.
    pub counter: u32,
    /// The origin that issued the stamp; breaks ties between writers.
    pub node: Origin,
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:010}.{}", self.wall_ms, self.counter, self.node)
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

/// Physical time as an input, so tests and simulations choose it.
pub trait TimeSource: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTime;

impl TimeSource for SystemTime {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The clock state of one writer. It never moves backwards: it is raised past every stamp it
/// issues, receives, or finds in the log on open.
#[derive(Debug, Clone)]
pub struct Clock {
    node: Origin,
    wall_ms: u64,
    counter: u32,
    drift_ms_max: u64,
    drift_refusals: u64,
}

impl Clock {
    /// A clock for `node` that refuses remote stamps more than `drift_ms_max` ahead.
    pub fn new(node: Origin, drift_ms_max: u64) -> Clock {
        Clock { node, wall_ms: 0, counter: 0, drift_ms_max, drift_refusals: 0 }
    }

    /// The latest stamp this clock has reached (issued, received or observed).
    pub fn last(&self) -> Hlc {
        Hlc { wall_ms: self.wall_ms, counter: self.counter, node: self.node }
    }

    /// How many remote stamps were refused for drift.
    pub fn drift_refusals(&self) -> u64 {
        self.drift_refusals
    }

    /// Advances past `(wall_ms, counter)` pairs seen elsewhere (recovery, received ops).
    fn raise(&mut self, wall_ms: u64, counter: u32) {
        if (wall_ms, counter) > (self.wall_ms, self.counter) {
            self.wall_ms = wall_ms;
            self.counter = counter;
        }
    }

    /// Moves one logical tick forward from at least `physical_ms`.
    fn tick(&mut self, physical_ms: u64) -> Hlc {
        if physical_ms > self.wall_ms {
            self.wall_ms = physical_ms;
            self.counter = 0;
        } else if self.counter == u32::MAX {
            self.wall_ms += 1;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        self.last()
    }

    /// A new local stamp, greater than every stamp this clock has seen.
    pub fn now(&mut self, physical_ms: u64) -> Hlc {
        self.tick(physical_ms)
    }

    /// Merges a remote stamp. Refused (and counted) when it is more than the drift bound ahead
    /// of `physical_ms`; otherwise the clock moves past it.
    pub fn receive(&mut self, remote: &Hlc, physical_ms: u64) -> Result<()> {
        let ahead_ms = remote.wall_ms.saturating_sub(physical_ms);
        if ahead_ms > self.drift_ms_max {
            self.drift_refusals += 1;
            return Err(Error::ClockDrift {
                remote_ms: remote.wall_ms,
                ahead_ms,
                limit_ms: self.drift_ms_max,
            });
        }
        self.raise(remote.wall_ms, remote.counter);
        Ok(())
    }

    /// Raises the clock past a stamp found in the log, without a drift check (recovery).
    pub fn observe(&mut self, stamp: &Hlc) {
        self.raise(stamp.wall_ms, stamp.counter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Origin = Origin([7; 16]);

    #[test]
    fn now_is_strictly_monotone_when_physical_time_stalls_or_goes_back() {
        let mut clock = Clock::new(NODE, 1000);
        let a = clock.now(100);
        let b = clock.now(100);
        let c = clock.now(50);
        assert!(a < b && b < c);
        assert_eq!(c.wall_ms, 100);
    }

    #[test]
    fn receive_moves_past_remote_and_refuses_drift() {
        let mut clock = Clock::new(NODE, 1000);
        let remote = Hlc { wall_ms: 600, counter: 9, node: Origin([1; 16]) };
        clock.receive(&remote, 500).expect("within drift");
        let next = clock.now(500);
        assert!(next > remote);
        let far = Hlc { wall_ms: 5000, ..remote };
        assert!(matches!(clock.receive(&far, 500), Err(Error::ClockDrift { .. })));
        assert_eq!(clock.drift_refusals(), 1);
        assert!(clock.now(500) < far, "refused stamp must not move the clock");
    }

    #[test]
    fn by_default_a_remote_clock_a_minute_ahead_is_refused() {
        let mut clock = Clock::new(NODE, 60_000);
        let now = 1_800_000_000_000;
        let at = |ahead_ms: u64| Hlc { wall_ms: now + ahead_ms, counter: 0, node: Origin([1; 16]) };
        assert!(clock.receive(&at(59_000), now).is_ok(), "59 s ahead is skew");
        assert!(clock.receive(&at(61_000), now).is_err(), "61 s ahead is refused");
        assert!(clock.receive(&at(5 * 60_000 - 1), now).is_err(), "the old 5-minute bound is gone");
    }

    #[test]
    fn counter_overflow_carries_into_wall() {
        let mut clock = Clock::new(NODE, 1000);
        clock.observe(&Hlc { wall_ms: 10, counter: u32::MAX, node: NODE });
        let next = clock.now(10);
        assert_eq!((next.wall_ms, next.counter), (11, 0));
    }

    #[test]
    fn order_is_numeric_not_textual() {
        let small = Hlc { wall_ms: 9, counter: 0, node: NODE };
        let big = Hlc { wall_ms: 10, counter: 0, node: NODE };
        assert!(small < big);
    }
}
