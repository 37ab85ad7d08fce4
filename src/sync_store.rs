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

    fn op_id_at(&self, origin: &Origin, seq: u64) -> Result<Option<OpId>, SyncError> {
        let held = self.node.wal.payloads_by_origin_within(origin, seq, seq, 1, usize::MAX);
        match held.map_err(|e| sync_error(e.into()))?.first() {
            Some(op) => Ok(Some(op.head().map_err(SyncError::Malformed)?.op_id)),
            None => Ok(None),
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

impl Node {
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
        Ok(SessionStart { identity, hlc: self.wal.clock(), heads })
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
