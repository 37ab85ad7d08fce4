//! Conflicts: one origin's key signed two different ops at one seq (a copied data directory
//! with its key, or a lying node). A conflict is quarantined, never a wedge: the first one found
//! for an origin is kept with its evidence, that origin stops advancing past the fork here
//! (received ops of it at or after the contested seq are refused and counted), and every other
//! origin keeps syncing. Kept in `conflicts.json` (0600) with the evidence (the received ops
//! of the other branch, their seals included, as stored) in `conflicts/` (0700).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use feral_log::{EncodedOp, OpId, Origin};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::{CONFLICT_EVIDENCE_MAX, CONFLICTS_FILE_BYTES_MAX};

/// The file that lists the conflicts.
pub const CONFLICTS_FILE: &str = "conflicts.json";
/// The directory of their evidence.
pub const EVIDENCE_DIR: &str = "conflicts";

/// One quarantined conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Conflict {
    /// The origin (32 hex).
    pub origin: String,
    /// The contested seq: the origin does not advance past it here.
    pub seq: u64,
    /// The op this node holds there (none when a peer claims this node's own origin at a seq
    /// it has not written yet).
    pub held_op_id: Option<String>,
    /// The op the other branch has there.
    pub other_op_id: String,
    /// When it was found (unix ms).
    pub found_at_ms: u64,
    /// When an operator resolved it (unix ms): the origin advances again with the ops that
    /// continue this node's branch; the other branch's stay refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<u64>,
    /// The evidence file under `conflicts/`: the other branch's received ops as stored (each a
    /// u32 LE length and the bytes), which its seal proves the origin's key signed. None past
    /// `CONFLICT_EVIDENCE_MAX` files.
    pub evidence: Option<String>,
}

/// The conflicts of one data directory.
#[derive(Debug)]
pub(crate) struct Quarantine {
    dir: PathBuf,
    held: Mutex<BTreeMap<Origin, Conflict>>,
    refused_ops: AtomicU64,
}

impl Quarantine {
    /// Loads the conflicts kept in `dir` (none when the file is absent).
    pub(crate) fn load(dir: &Path) -> Result<Quarantine> {
        let path = dir.join(CONFLICTS_FILE);
        let mut held = BTreeMap::new();
        let list: Vec<Conflict> =
            crate::list_file::load(&path, CONFLICTS_FILE_BYTES_MAX, Error::Conflicts)?;
        for c in list {
            let origin = Origin::parse(&c.origin).map_err(|_| {
                Error::Conflicts(format!("{}: bad origin {:?}", path.display(), c.origin))
            })?;
            held.insert(origin, c);
        }
        Ok(Quarantine {
            dir: dir.to_path_buf(),
            held: Mutex::new(held),
            refused_ops: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Origin, Conflict>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every conflict, by origin.
    pub(crate) fn list(&self) -> Vec<Conflict> {
        self.lock().values().cloned().collect()
    }

    /// Received ops refused because their origin is quarantined at or before their seq.
    pub(crate) fn refused_ops(&self) -> u64 {
        self.refused_ops.load(Ordering::Relaxed)
    }

    /// `ops` without those of quarantined origins at or past the fork (counted).
    pub(crate) fn filter(&self, ops: Vec<EncodedOp>) -> Vec<EncodedOp> {
        let held = self.lock();
        if held.is_empty() {
            return ops;
        }
        let before = ops.len();
        let stopped = |o: &EncodedOp| {
            held.get(&o.op().origin)
                .is_some_and(|c| c.resolved_at_ms.is_none() && o.op().seq >= c.seq)
        };
        let kept: Vec<EncodedOp> = ops.into_iter().filter(|o| !stopped(o)).collect();
        let refused = before - kept.len();
        if refused > 0 {
            self.refused_ops.fetch_add(refused as u64, Ordering::Relaxed);
            tracing::warn!(ops = refused, "received ops of quarantined origins refused (conflict)");
        }
        kept
    }

    /// After a split brain at (`origin`, `seq`) refused a batch (`ops`, given back): records
    /// the conflict (or, for a resolved one, counts the other branch's ops refused again) and
    /// returns the batch without that origin's ops from `seq` on.
    pub(crate) fn split_brain(
        &self,
        origin: Origin,
        seq: u64,
        held: Option<OpId>,
        other: OpId,
        ops: Vec<EncodedOp>,
        now_ms: u64,
    ) -> Result<Vec<EncodedOp>> {
        let resolved = self.lock().get(&origin).is_some_and(|c| c.resolved_at_ms.is_some());
        if !resolved {
            let branch: Vec<&EncodedOp> = ops.iter().filter(|o| o.op().origin == origin).collect();
            self.record(origin, seq, held, other, &branch, now_ms)?;
        }
        let before = ops.len();
        let kept: Vec<EncodedOp> =
            ops.into_iter().filter(|o| o.op().origin != origin || o.op().seq < seq).collect();
        self.refused_ops.fetch_add((before - kept.len()) as u64, Ordering::Relaxed);
        Ok(kept)
    }

    /// Marks the conflict of `origin` resolved (this node's branch kept); None when there is
    /// none.
    pub(crate) fn resolve(&self, origin: &Origin, now_ms: u64) -> Result<Option<Conflict>> {
        let mut conflicts = self.lock();
        let Some(c) = conflicts.get_mut(origin) else { return Ok(None) };
        c.resolved_at_ms.get_or_insert(now_ms);
        let resolved = c.clone();
        self.save(&conflicts)?;
        tracing::warn!(%origin, seq = resolved.seq, "conflict resolved: this node's branch is kept");
        Ok(Some(resolved))
    }

    fn save(&self, conflicts: &BTreeMap<Origin, Conflict>) -> Result<()> {
        let list: Vec<&Conflict> = conflicts.values().collect();
        crate::list_file::save(&self.dir.join(CONFLICTS_FILE), &list)
    }

    /// Quarantines `origin` from `seq`: `held` is the op this node holds there, `other` the
    /// one refused; `branch` the received ops of that origin (the evidence).
    fn record(
        &self,
        origin: Origin,
        seq: u64,
        held: Option<OpId>,
        other: OpId,
        branch: &[&EncodedOp],
        now_ms: u64,
    ) -> Result<()> {
        let mut conflicts = self.lock();
        if conflicts.get(&origin).is_some_and(|c| c.seq <= seq) {
            return Ok(()); // an earlier fork of this origin is held already
        }
        let evidence_dir = self.dir.join(EVIDENCE_DIR);
        let files = std::fs::read_dir(&evidence_dir).map(|d| d.count()).unwrap_or(0);
        let evidence = if files < CONFLICT_EVIDENCE_MAX {
            let name = format!("{origin}-{seq}.ops");
            let mut bytes = Vec::new();
            for op in branch {
                bytes.extend_from_slice(&(op.bytes().len() as u32).to_le_bytes());
                bytes.extend_from_slice(op.bytes());
            }
            feral_log::private::create_dir_all(&evidence_dir)
                .map_err(|e| Error::io(&evidence_dir, e))?;
            let path = evidence_dir.join(&name);
            feral_log::private::write_atomic(&path, &bytes).map_err(|e| Error::io(&path, e))?;
            Some(name)
        } else {
            tracing::error!(%origin, seq, "conflict evidence not kept: {CONFLICT_EVIDENCE_MAX} files already");
            None
        };
        let conflict = Conflict {
            origin: origin.to_string(),
            seq,
            held_op_id: held.map(|id| id.to_string()),
            other_op_id: other.to_string(),
            found_at_ms: now_ms,
            resolved_at_ms: None,
            evidence,
        };
        tracing::error!(%origin, seq, held = ?conflict.held_op_id, other = %conflict.other_op_id,
            "conflict: two ops signed for one (origin, seq); the origin is quarantined here");
        conflicts.insert(origin, conflict);
        self.save(&conflicts)
    }
}
