//! The projection applier: a thread that applies logged ops to the episodes projection in LSN
//! order, so an appender returns once its ops are durable in the log while the projection
//! work of one batch overlaps the log write of the next. Readers wait until every op
//! acknowledged before their read is applied ("read your writes"); writers wait when too many
//! ops are queued (backpressure).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use feral_log::{Lsn, Op, Wal};
use feral_materializer::{Change, Materializer, SearchIndex};

use crate::limits::{APPLY_BATCH_OPS_MAX, APPLY_QUEUE_OPS_MAX};
use crate::node::{ProjectionSlot, stop_projection};

/// What one append hands the applier: changes built already (local episodes, validated when
/// they were written), or the logged ops themselves, whose changes the applier thread works
/// out (parsing a received episode is projection work: it stays off the appender's path).
pub(crate) enum Work {
    /// Changes of the append's new ops, in LSN order.
    Changes(Vec<Change<'static>>),
    /// The append's new ops with their LSNs, in LSN order.
    Ops(Vec<(Lsn, Op)>),
}

impl Work {
    /// The ops it covers.
    pub(crate) fn len(&self) -> usize {
        match self {
            Work::Changes(c) => c.len(),
            Work::Ops(o) => o.len(),
        }
    }
}

/// The work of one or more appends in LSN order, and the highest LSN it covers (duplicates
/// included).
struct Job {
    work: Vec<Work>,
    ops: usize,
    max_lsn: Lsn,
}

impl Job {
    /// The job's changes, borrowing the ops it holds.
    fn changes(&mut self) -> Vec<Change<'_>> {
        let mut changes = Vec::with_capacity(self.ops);
        for work in &mut self.work {
            match work {
                Work::Changes(c) => changes.extend(std::mem::take(c)),
                Work::Ops(ops) => changes.extend(ops.iter().map(|(lsn, op)| Change::of(*lsn, op))),
            }
        }
        changes
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    queued_ops: usize,
    busy: bool,
    stop: bool,
    /// The highest LSN handed to the queue.
    queued_lsn: Lsn,
    /// The highest LSN of a job the thread is done with (applied, or dropped after a fault):
    /// the watermark readers wait on.
    done_lsn: Lsn,
}

/// The queue between appenders and the applier thread.
#[derive(Default)]
pub(crate) struct Applier {
    queue: Mutex<Queue>,
    cond: Condvar,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        write!(f, "Applier {{ jobs: {}, ops: {}, busy: {} }}", q.jobs.len(), q.queued_ops, q.busy)
    }
}

impl Applier {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.cond.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the work of one append (in LSN order). Waits while the queue is full.
    pub(crate) fn push(&self, work: Work, max_lsn: Lsn) {
        let mut q = self.lock();
        while q.queued_ops >= APPLY_QUEUE_OPS_MAX && !q.stop {
            q = self.wait(q);
        }
        let ops = work.len();
        q.queued_ops += ops;
        q.queued_lsn = q.queued_lsn.max(max_lsn);
        q.jobs.push_back(Job { work: vec![work], ops, max_lsn });
        self.cond.notify_all();
    }

    /// Waits until everything queued so far is applied (or dropped after a fault): the
    /// applied watermark reaches the highest LSN queued when it was called. Every op
    /// acknowledged before this call was queued before it returned to its writer; ops queued
    /// after it are not waited for, so a reader is never starved by writes that keep coming.
    pub(crate) fn drain(&self) {
        let mut q = self.lock();
        let target = q.queued_lsn;
        while q.done_lsn < target && !q.stop {
            q = self.wait(q);
        }
    }

    /// Asks the thread to finish what is queued and exit.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.cond.notify_all();
    }

    /// The thread body: apply jobs until stopped and drained.
    pub(crate) fn run(&self, wal: &Wal, slot: &Mutex<ProjectionSlot>) {
        loop {
            let job = {
                let mut q = self.lock();
                while q.jobs.is_empty() && !q.stop {
                    q = self.wait(q);
                }
                let Some(mut job) = q.jobs.pop_front() else { break };
                // Behind? Take the queued appends that follow into the same transaction.
                while job.ops < APPLY_BATCH_OPS_MAX
                    && let Some(next) = q.jobs.pop_front()
                {
                    job.work.extend(next.work);
                    job.ops += next.ops;
                    job.max_lsn = job.max_lsn.max(next.max_lsn);
                }
                q.busy = true;
                job
            };
            let (n, max_lsn) = (job.ops, job.max_lsn);
            apply(wal, slot, job);
            let mut q = self.lock();
            q.busy = false;
            q.queued_ops -= n;
            q.done_lsn = q.done_lsn.max(max_lsn);
            self.cond.notify_all();
        }
    }
}

/// Applies one job, or catches the projection up from the log when another append's ops
/// come first (a gap) or some were not handed over. A failure stops the projection; the ops
/// stay in the log and `resume()` catches up.
/// A stopped projection (its fault is in the log's fault register) takes nothing until resume.
fn apply(wal: &Wal, slot: &Mutex<ProjectionSlot>, job: Job) {
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if wal.derived_fault().is_some() {
        return;
    }
    let ProjectionSlot { mat: Some(mat), search, .. } = &mut *guard else { return };
    match apply_both(wal, mat, search.as_mut(), job) {
        Ok(None) => {}
        // The projection took the job; only the search index failed. It stops alone: reads
        // keep seeing every acknowledged op, searches say why they cannot be served.
        Ok(Some(e)) => {
            tracing::error!(error = %e, "search index stopped; resume() reopens it and catches it up");
            guard.search = None;
            guard.search_fault = Some(format!("search index stopped: {e}"));
        }
        Err(e) => {
            if let Some(search) = search.as_mut()
                && let Err(undo) = search.rollback()
            {
                tracing::warn!(error = %undo, "search index rollback failed; resume rebuilds it");
            }
            let path = mat.path().to_path_buf();
            stop_projection(wal, &mut guard, &path, e);
        }
    }
}

/// The projection takes the job (or catches up from the log), and the search index mirrors
/// the rows it decided: while the two are in step, row by row as they are decided;
/// otherwise by its own catch-up from the log. A projection failure is the error; a search
/// failure never fails the projection's transaction: it comes back as `Ok(Some(_))`.
fn apply_both(
    wal: &Wal,
    mat: &Materializer,
    mut search: Option<&mut SearchIndex>,
    mut job: Job,
) -> feral_materializer::Result<Option<feral_materializer::Error>> {
    let from = mat.applied_lsn()?;
    let in_step = search.as_ref().is_none_or(|s| s.indexed_lsn() >= from);
    // Ahead of the projection (it lost commits that were not durable yet, the search index
    // did not): a new row may be in the index already.
    let ahead = search.as_ref().is_some_and(|s| s.indexed_lsn() > from);
    let mut failed = None;
    let mut mirror = |id: &str, episode: Option<&feral_materializer::Episode>, had: bool| {
        if let (Some(s), true, None) = (&mut search, in_step, &failed)
            && let Err(e) = s.mirror(id, episode, had || ahead)
        {
            failed = Some(e);
        }
        Ok(())
    };
    // Ops the projection takes by its own catch-up are not told row by row.
    let max_lsn = job.max_lsn;
    let caught_up = match mat.apply_with(job.changes(), &mut mirror) {
        Err(feral_materializer::Error::Gap { .. }) => mat.catch_up(wal).map(|_| true)?,
        Err(e) => return Err(e),
        Ok(_) if mat.applied_lsn()? < max_lsn => mat.catch_up(wal).map(|_| true)?,
        Ok(_) => false,
    };
    let Some(search) = search else { return Ok(None) };
    if let Some(e) = failed {
        return Ok(Some(e));
    }
    let applied = mat.applied_lsn()?;
    let outcome = if in_step && !caught_up {
        search.advance(applied)
    } else {
        search.catch_up(wal, mat).map(|_| ())
    };
    Ok(outcome.and_then(|()| search.commit_due()).err())
}

/// Starts the applier thread.
pub(crate) fn spawn(
    applier: Arc<Applier>,
    wal: Wal,
    slot: Arc<Mutex<ProjectionSlot>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("feral-applier".into()).spawn(move || applier.run(&wal, &slot))
}
