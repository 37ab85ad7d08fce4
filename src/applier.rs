//! The projection applier: a thread that applies logged ops to the episodes projection in LSN
//! order, so an appender returns once its ops are durable in the log while the projection
//! work of one batch overlaps the log write of the next. Readers wait until every op
//! acknowledged before their read is applied ("read your writes"); writers wait when too many
//! ops are queued (backpressure).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use feral_log::{Lsn, Op, Wal};
use feral_materializer::{Change, Materializer, SearchIndex};

use crate::limits::{APPLY_BATCH_OPS_MAX, APPLY_QUEUE_BYTES_MAX, APPLY_QUEUE_OPS_MAX};
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

    /// About how many bytes of memory it holds (what the queue's byte bound counts): each
    /// entry's own size and the strings and data it owns.
    fn bytes(&self) -> usize {
        match self {
            Work::Changes(c) => c.iter().map(change_bytes).sum(),
            Work::Ops(o) => o
                .iter()
                .map(|(_, op)| {
                    std::mem::size_of::<(Lsn, Op)>()
                        + op.table.len()
                        + op.row_id.len()
                        + op.data.len()
                })
                .sum(),
        }
    }
}

/// About how many bytes a change holds (its own size and what it owns).
fn change_bytes(c: &Change<'static>) -> usize {
    use feral_materializer::Effect;
    use std::borrow::Cow;
    let owned = |s: &Cow<'_, str>| if let Cow::Owned(s) = s { s.len() } else { 0 };
    let effect = match &c.effect {
        Effect::Other(Some(d)) => d.len(),
        Effect::Put(e) => e.heap_bytes(),
        Effect::Skip(reason) => reason.len(),
        Effect::Other(None) | Effect::Delete => 0,
    };
    std::mem::size_of::<Change<'static>>() + owned(&c.table) + owned(&c.row_id) + effect
}

/// The work of one or more appends in LSN order, and the highest LSN it covers (duplicates
/// included).
struct Job {
    work: Vec<Work>,
    ops: usize,
    bytes: usize,
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
    /// Ops queued or being applied (bounded by `APPLY_QUEUE_OPS_MAX`).
    queued_ops: usize,
    /// Their bytes, by [`Work::bytes`] (bounded by `APPLY_QUEUE_BYTES_MAX`).
    queued_bytes: usize,
    busy: bool,
    stop: bool,
    /// The highest LSN handed to the queue.
    queued_lsn: Lsn,
    /// The highest LSN of a job the thread is done with (applied, or dropped after a fault):
    /// the watermark readers wait on.
    done_lsn: Lsn,
}

impl Queue {
    /// Whether work of `bytes` may go in now: fewer than `APPLY_QUEUE_OPS_MAX` ops are queued
    /// or being applied, and the work fits under `APPLY_QUEUE_BYTES_MAX` beside them (work
    /// larger than that goes in alone, once the queue is empty).
    fn has_room(&self, bytes: usize) -> bool {
        self.queued_ops < APPLY_QUEUE_OPS_MAX
            && (self.queued_bytes == 0 || self.queued_bytes + bytes <= APPLY_QUEUE_BYTES_MAX)
    }
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
        write!(
            f,
            "Applier {{ jobs: {}, ops: {}, bytes: {}, busy: {} }}",
            q.jobs.len(),
            q.queued_ops,
            q.queued_bytes,
            q.busy
        )
    }
}

impl Applier {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.cond.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the work of one append (in LSN order). Waits while the queue is full, in ops
    /// or in bytes (work larger than the byte bound waits for an empty queue, then goes in
    /// alone).
    pub(crate) fn push(&self, work: Work, max_lsn: Lsn) {
        let (ops, bytes) = (work.len(), work.bytes());
        let mut q = self.lock();
        while !q.has_room(bytes) && !q.stop {
            q = self.wait(q);
        }
        q.queued_ops += ops;
        q.queued_bytes += bytes;
        q.queued_lsn = q.queued_lsn.max(max_lsn);
        q.jobs.push_back(Job { work: vec![work], ops, bytes, max_lsn });
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
                    job.bytes += next.bytes;
                    job.max_lsn = job.max_lsn.max(next.max_lsn);
                }
                q.busy = true;
                job
            };
            let (n, bytes, max_lsn) = (job.ops, job.bytes, job.max_lsn);
            apply(wal, slot, job);
            let mut q = self.lock();
            q.busy = false;
            q.queued_ops -= n;
            q.queued_bytes -= bytes;
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
            guard.search_fault = Some(crate::node::SearchFault {
                detail: format!("search index stopped: {e}"),
                disk_full: e.is_disk_full(),
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use feral_log::{Hlc, OpId, OpKind, Origin};

    fn op(data_bytes: usize) -> Op {
        Op {
            op_id: OpId([1; 16]),
            origin: Origin([2; 16]),
            seq: 1,
            hlc: Hlc::default(),
            table: "notes".into(),
            row_id: "r1".into(),
            kind: OpKind::Insert,
            data: vec![7; data_bytes],
        }
    }

    #[test]
    fn work_bytes_count_what_the_ops_hold() {
        let work = Work::Ops(vec![(1, op(1000)), (2, op(3000))]);
        let each = std::mem::size_of::<(Lsn, Op)>() + "notes".len() + "r1".len();
        assert_eq!(work.bytes(), 2 * each + 4000);
        let change = Change::of(3, &op(500)).into_owned();
        assert!(Work::Changes(vec![change]).bytes() >= 500);
    }

    #[test]
    fn the_queue_is_bounded_in_ops_and_in_bytes() {
        let mut q = Queue::default();
        // Empty: anything goes in, even work past the byte bound (alone).
        assert!(q.has_room(APPLY_QUEUE_BYTES_MAX * 2));
        q.queued_ops = 1;
        q.queued_bytes = APPLY_QUEUE_BYTES_MAX - 100;
        assert!(q.has_room(100), "work that fits beside what is queued");
        assert!(!q.has_room(101), "work past the byte bound waits");
        q.queued_bytes = 10;
        q.queued_ops = APPLY_QUEUE_OPS_MAX;
        assert!(!q.has_room(1), "the op bound holds whatever the bytes");
        q.queued_ops = APPLY_QUEUE_OPS_MAX - 1;
        assert!(q.has_room(1));
    }
}
