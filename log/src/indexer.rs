//! The indexer thread: appends are acknowledged once the log is synced, and durable records
//! reach the redb index here, off the append path. Until a record is indexed it stays in the
//! in-flight set, so duplicate checks and reads still see it.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::Error;
use crate::index::IndexEntry;
use crate::wal::{Core, Lsn, Pause, PauseKind};

/// Records waiting for the indexer, and its progress.
#[derive(Debug, Default)]
pub(crate) struct IndexQueue {
    inner: Mutex<QueueState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    entries: Vec<IndexEntry>,
    /// The last batch's vector, emptied, reused for the next pushes.
    spare: Vec<IndexEntry>,
    busy: bool,
    shutdown: bool,
    indexed_lsn: Lsn,
    failed: Option<String>,
}

impl IndexQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, QueueState>) -> MutexGuard<'a, QueueState> {
        self.cond.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Queues durable records (in LSN order) for indexing.
    pub(crate) fn push(&self, entries: Vec<IndexEntry>) {
        if entries.is_empty() {
            return;
        }
        self.lock().entries.extend(entries);
        self.cond.notify_all();
    }

    /// Asks the thread to finish what is queued and stop.
    pub(crate) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cond.notify_all();
    }

    /// Waits until nothing is queued or being indexed.
    pub(crate) fn drain(&self) {
        let mut queue = self.lock();
        while (!queue.entries.is_empty() || queue.busy) && queue.failed.is_none() {
            queue = self.wait(queue);
        }
    }

    /// After state was reloaded from disk: the index reflects `indexed_lsn`.
    pub(crate) fn reset(&self, indexed_lsn: Lsn, failed: Option<String>) {
        let mut queue = self.lock();
        queue.entries.clear();
        queue.indexed_lsn = indexed_lsn;
        queue.failed = failed;
        self.cond.notify_all();
    }

    /// Waits until every record up to `lsn` is in the index ("read your writes").
    pub(crate) fn wait_indexed(&self, lsn: Lsn) -> Result<(), Error> {
        let mut queue = self.lock();
        loop {
            if queue.indexed_lsn >= lsn {
                return Ok(());
            }
            if let Some(reason) = &queue.failed {
                return Err(Error::Paused { kind: PauseKind::IndexFailed, reason: reason.clone() });
            }
            queue = self.wait(queue);
        }
    }
}

/// The thread body: index queued records in batches until shut down.
pub(crate) fn run(core: &Core) {
    loop {
        let batch = {
            let mut queue = core.indexer.lock();
            while queue.entries.is_empty() && !queue.shutdown {
                queue = core.indexer.wait(queue);
            }
            if queue.entries.is_empty() {
                return;
            }
            queue.busy = true;
            let spare = std::mem::take(&mut queue.spare);
            std::mem::replace(&mut queue.entries, spare)
        };
        let result = {
            let slot = core.index.read().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(index) => index.commit(&batch, false).map_err(|e| core.index_error(e)),
                None => Err(Error::Index("index not open".into())),
            }
        };
        {
            let mut state = core.state.lock().unwrap_or_else(|p| p.into_inner());
            state.inflight.forget_indexed(&batch);
            if let Err(error) = &result {
                let kind = match error {
                    Error::DiskFull { .. } => PauseKind::DiskFull,
                    _ => PauseKind::IndexFailed,
                };
                tracing::error!(%error, "indexing failed; log paused until resume()");
                state.faults.log.get_or_insert(Pause { kind, detail: error.to_string() });
            }
            core.cond.notify_all();
        }
        if matches!(&result, Err(Error::DiskFull { .. })) {
            core.release_reserve();
        }
        let mut queue = core.indexer.lock();
        queue.busy = false;
        let last_lsn = batch.last().map(|e| e.lsn);
        let mut batch = batch;
        batch.clear();
        queue.spare = batch;
        match result {
            Ok(()) => queue.indexed_lsn = last_lsn.unwrap_or(queue.indexed_lsn),
            Err(error) => queue.failed = Some(error.to_string()),
        }
        core.indexer.cond.notify_all();
    }
}
