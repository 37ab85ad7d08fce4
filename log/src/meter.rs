//! How far a long operation has got: a stage (what is being done, in which unit, out of how
//! much) and a count, written by the operation and read by whoever shows it (the CLI draws it
//! on a terminal). Carried in [`crate::wal::Config`] so an operation deep in the store (the
//! index rebuilt at open, the projection caught up) reports without a parameter on every call.
//!
//! A meter nobody watches ([`Meter::off`], the default) costs one branch per report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a stage counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes copied, verified or read.
    Bytes,
    /// Records (ops) indexed, projected, imported or received.
    Records,
}

/// One reading of a meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Bumped at every new stage, so a reader sees a stage change even with equal names.
    pub stage: u64,
    /// What the stage does ("indexing the log").
    pub name: String,
    /// What `done` and `total` count.
    pub unit: Unit,
    /// How much of the stage is done.
    pub done: u64,
    /// How much the stage has in all; 0 when unknown.
    pub total: u64,
}

#[derive(Debug)]
struct Inner {
    stage: Mutex<(u64, String, Unit)>,
    done: AtomicU64,
    total: AtomicU64,
}

/// A progress meter (cheap to clone: clones share one count).
#[derive(Debug, Clone, Default)]
pub struct Meter(Option<Arc<Inner>>);

impl Meter {
    /// A meter nobody watches: every report is dropped.
    pub fn off() -> Meter {
        Meter(None)
    }

    /// A meter to watch with [`Meter::read`].
    pub fn new() -> Meter {
        Meter(Some(Arc::new(Inner {
            stage: Mutex::new((0, String::new(), Unit::Records)),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        })))
    }

    /// Starts a stage of `total` (0 when unknown) `unit`s; its count starts at 0.
    pub fn stage(&self, name: &str, unit: Unit, total: u64) {
        if let Some(inner) = &self.0 {
            let mut stage = inner.stage.lock().unwrap_or_else(|p| p.into_inner());
            inner.done.store(0, Ordering::Relaxed);
            inner.total.store(total, Ordering::Relaxed);
            *stage = (stage.0 + 1, name.to_string(), unit);
        }
    }

    /// Counts `n` more units done in the current stage.
    pub fn add(&self, n: u64) {
        if let Some(inner) = &self.0 {
            inner.done.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The current stage and count; `None` before the first stage or for [`Meter::off`].
    pub fn read(&self) -> Option<Reading> {
        let inner = self.0.as_ref()?;
        let stage = inner.stage.lock().unwrap_or_else(|p| p.into_inner());
        (stage.0 > 0).then(|| Reading {
            stage: stage.0,
            name: stage.1.clone(),
            unit: stage.2,
            done: inner.done.load(Ordering::Relaxed),
            total: inner.total.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_counts_from_zero_and_off_keeps_nothing() {
        let meter = Meter::new();
        assert_eq!(meter.read(), None);
        meter.stage("copying", Unit::Bytes, 100);
        meter.add(40);
        let shared = meter.clone();
        shared.add(2);
        let r = meter.read().expect("a stage");
        assert_eq!(
            (r.stage, r.name.as_str(), r.unit, r.done, r.total),
            (1, "copying", Unit::Bytes, 42, 100)
        );
        meter.stage("indexing", Unit::Records, 0);
        let r = meter.read().expect("a stage");
        assert_eq!((r.stage, r.done, r.total), (2, 0, 0));
        let off = Meter::off();
        off.stage("x", Unit::Records, 1);
        off.add(1);
        assert_eq!(off.read(), None);
    }
}
