//! The node as a sync store: the protocol state machine (feral-sync) reads heads and ops from
//! the log and applies received ops through [`Node::ingest`] (durable, deduplicated, split
//! brain and drift refused).

use feral_log::{OpBytes, OpId, Origin};
use feral_sync::{
    Identity, Request, Response, SessionStart, SyncError, SyncSession, SyncStore, Timeouts,
};
use feral_types::proof::SEAL_RUN_OPS_MAX;

use crate::error::Error;
use crate::node::Node;

/// A borrowed node, seen by a sync session.
#[derive(Debug)]
pub struct NodeStore<'a> {
    node: &'a Node,
}

fn sync_error(e: Error) -> SyncError {
    SyncError::from_store(e.code().as_str(), e.to_string())
}

impl SyncStore for NodeStore<'_> {
    fn heads(&self) -> Result<Vec<(Origin, u64)>, SyncError> {
        self.node.wal.heads().map_err(|e| sync_error(e.into()))
    }

    fn read(
        &self,
        origin: &Origin,
        from: u64,
        to: u64,
        ops_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<OpBytes>, SyncError> {
        // A damaged record is never sent, and neither is anything of its origin after it: a
        // receiver could verify none of it (each run's seal chains to the op before it). The
        // origin's range ends before it, the session goes on with the other ranges.
        let wal = &self.node.wal;
        let to = match wal.first_damaged_seq(origin, from, to) {
            Some(first) if first <= from => return Ok(Vec::new()),
            Some(first) => first - 1,
            None => to,
        };
        match self.read_runs(origin, from, to, ops_max, bytes_max) {
            // The read met damage nobody knew of: it is registered now; read around it.
            Err(_) if wal.first_damaged_seq(origin, from, to).is_some() => {
                self.read(origin, from, to, ops_max, bytes_max)
            }
            read => read,
        }
    }

    fn op_id_at(&self, origin: &Origin, seq: u64) -> Result<Option<OpId>, SyncError> {
        let held = self.node.wal.payloads_by_origin_within(origin, seq, seq, 1, usize::MAX);
        match held {
            Ok(held) => match held.first() {
                Some(op) => Ok(Some(op.head().map_err(SyncError::Malformed)?.op_id)),
                None => Ok(None),
            },
            // A damaged record's op_id is known from the index: the histories still compare.
            Err(e) => match self.node.wal.damaged_op_id(origin, seq) {
                Some(op_id) => Ok(Some(op_id)),
                None => Err(sync_error(e.into())),
            },
        }
    }

    fn apply(&mut self, ops: Vec<OpBytes>) -> Result<usize, SyncError> {
        // Each op is decoded once, here; the log writes the bytes that came.
        let mut decoded = Vec::with_capacity(ops.len());
        for (i, bytes) in ops.into_iter().enumerate() {
            let op = bytes
                .decode()
                .map_err(|reason| SyncError::Malformed(format!("op {i} of a frame: {reason}")))?;
            decoded.push(op);
        }
        self.node.ingest_encoded(decoded).map_err(sync_error)
    }
}

impl NodeStore<'_> {
    /// Whole runs of `origin` from `from` to `to` within the budget.
    fn read_runs(
        &self,
        origin: &Origin,
        from: u64,
        to: u64,
        ops_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<OpBytes>, SyncError> {
        // The stored bytes, not decoded: they go out as they are, ending with a sealed op (a
        // receiver takes only whole runs; a run is at most half a frame, see
        // `feral_types::proof`). The own origin's ops a cut commit left unsealed wait for the
        // next commit's seal.
        let wal = &self.node.wal;
        let read = |ops_max, bytes_max| {
            wal.payloads_by_origin_within(origin, from, to, ops_max, bytes_max)
                .map_err(|e| sync_error(e.into()))
        };
        let mut ops = read(ops_max, bytes_max)?;
        if !ops.is_empty() && !ops.iter().any(OpBytes::is_sealed) {
            // The budget ended inside the first run: read that run whole (a stored run is at
            // most SEAL_RUN_OPS_MAX ops: the writer closes it there, a receiver refuses longer).
            ops = read(SEAL_RUN_OPS_MAX, usize::MAX)?;
            let first_run = ops.iter().position(OpBytes::is_sealed).map_or(0, |i| i + 1);
            ops.truncate(first_run);
        }
        let whole = ops.iter().rposition(OpBytes::is_sealed).map_or(0, |i| i + 1);
        ops.truncate(whole);
        if from == 1
            && *origin == wal.origin()
            && let Some(first) = ops.first_mut()
        {
            // This node's genesis goes out with its certificate, which binds the origin to a
            // node of the cluster (it may have had none when it wrote seq 1). Relays store it.
            self.node.attach_own_certificate(first);
        }
        Ok(ops)
    }
}

impl Node {
    /// What this node's hellos ask its peers to send again: each origin's damaged ops (the
    /// log's damage register), from the first seq of the run that holds the first of them
    /// (a receiver takes only whole runs) to a run's length past the last. At most
    /// `HELLO_WANTS_MAX`; the rest are asked for once these are healed.
    pub(crate) fn heal_wants(&self) -> Vec<feral_sync::Want> {
        let mut by_origin: std::collections::BTreeMap<Origin, Vec<u64>> = Default::default();
        for range in self.wal.damage() {
            for op in range.ops {
                by_origin.entry(op.origin).or_default().push(op.seq);
            }
        }
        let run = SEAL_RUN_OPS_MAX as u64;
        let mut wants = Vec::new();
        for (origin, mut seqs) in by_origin {
            seqs.sort_unstable();
            let mut i = 0;
            while i < seqs.len() && wants.len() < feral_sync::limits::HELLO_WANTS_MAX {
                let first = seqs[i];
                let mut last = first;
                while i + 1 < seqs.len() && seqs[i + 1] <= last + run {
                    i += 1;
                    last = seqs[i];
                }
                i += 1;
                let from = self.run_start(&origin, first);
                wants.push(feral_sync::Want { origin, from, to: last.saturating_add(run) });
            }
        }
        wants
    }

    /// The first seq of the run that holds `origin`'s op at `seq`: one past the last sealed
    /// op before it (read from the intact ops before it; a run is at most
    /// `SEAL_RUN_OPS_MAX` ops).
    fn run_start(&self, origin: &Origin, seq: u64) -> u64 {
        let lo = seq.saturating_sub(SEAL_RUN_OPS_MAX as u64).max(1);
        if seq <= 1 {
            return 1;
        }
        match self.wal.payloads_by_origin_within(origin, lo, seq - 1, usize::MAX, usize::MAX) {
            Ok(ops) => ops
                .iter()
                .rev()
                .find(|op| op.is_sealed())
                .and_then(|op| op.head().ok())
                .map_or(lo, |head| head.seq + 1),
            Err(_) => lo,
        }
    }

    /// This node as a sync store.
    pub fn sync_store(&self) -> NodeStore<'_> {
        NodeStore { node: self }
    }

    /// The start of a sync session of this node in the cluster `cluster_id`: its identity, a
    /// clock sample and its current heads. A paused node refuses at once with `disk_full`
    /// (or `io_paused`).
    pub fn sync_start(&self, cluster_id: [u8; 32]) -> Result<SessionStart, SyncError> {
        if let Some(pause) = self.wal.pause() {
            let code = if pause.kind == feral_log::PauseKind::DiskFull {
                "disk_full"
            } else {
                "io_paused"
            };
            return Err(SyncError::from_store(code, pause.detail));
        }
        let identity = Identity { cluster_id, node_id: self.node_id.0, origin: self.wal.origin() };
        let heads = feral_sync::local_heads(&self.sync_store())?;
        Ok(SessionStart { identity, hlc: self.wal.clock(), heads, wants: self.heal_wants() })
    }

    /// A sync session of this node starting now, with the default deadlines.
    pub fn sync_session(&self, cluster_id: [u8; 32]) -> Result<SyncSession, SyncError> {
        let start = self.sync_start(cluster_id)?;
        Ok(start.session(Timeouts::default(), std::time::Instant::now()))
    }
}

impl feral_transport::SyncHost for Node {
    fn begin(&self, cluster_id: [u8; 32]) -> Result<SessionStart, SyncError> {
        self.sync_start(cluster_id)
    }

    fn execute(&self, request: Request) -> Result<Response, SyncError> {
        feral_sync::execute(&mut self.sync_store(), request)
    }

    fn io_paused(&self) -> bool {
        Node::io_paused(self)
    }

    fn is_revoked(&self, node_id: &[u8; 16]) -> bool {
        self.revocations.is_revoked(&crate::identity::NodeId(*node_id))
    }
}
