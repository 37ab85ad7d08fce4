//! `Node`: the log, its index and the episodes projection of one data directory, behind one
//! facade. Appends go to the log first (durable), then to the projection; the projection never
//! runs ahead of the log and catches up from it after any fault.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use feral_log::{
    Appended, Config, EncodedOp, Lsn, Op, OpBytes, OpDraft, OpId, OpKind, PartStatus, Pause,
    PauseKind, TimeSource, Wal,
};
use feral_materializer::{
    Change, Episode, ListPosition, ListQuery, Materializer, PROJECTION_FILE, Row, SEARCH_DIR,
    ScoreParts, SearchIndex, SearchQuery, TABLE,
};
use serde::Serialize;
use serde_json::Value;

use crate::applier::{self, Applier, Work};
use crate::error::{Code, Error, Result};
use crate::identity::{self, NodeId};
use crate::report::{CheckReport, NodeStatus};

/// The projection's handle. What stopped it, if anything, is not kept here: it is the log's
/// fault register's derived-part entry ([`Wal::stop_derived`]), the one place every writer and
/// every status reads the store's pause from.
#[derive(Debug)]
pub(crate) struct ProjectionSlot {
    pub(crate) mat: Option<Materializer>,
    /// The search index, mirroring `mat`'s live rows (none while the projection is stopped).
    pub(crate) search: Option<SearchIndex>,
    /// Why the search index stopped while the projection kept going (its writer failed, a
    /// full disk most often): searches answer `episodes_unavailable` with it, and `resume`
    /// reopens the index and catches it up from the log.
    pub(crate) search_fault: Option<SearchFault>,
}

/// Why the search index stopped alone.
#[derive(Debug, Clone)]
pub(crate) struct SearchFault {
    /// The error, as status and searches show it.
    pub(crate) detail: String,
    /// It was a full disk: rebuilding before space is freed would only delete the index.
    pub(crate) disk_full: bool,
}

impl ProjectionSlot {
    /// Why searches cannot be served: the search index's own fault, else the projection's.
    fn search_unavailable(&self, wal: &Wal) -> String {
        self.search_fault
            .as_ref()
            .map(|f| f.detail.clone())
            .or_else(|| wal.derived_fault().map(|f| f.detail))
            .unwrap_or_else(|| "not open".to_string())
    }
}

/// One search hit: the episode as read back, and its score with its parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct SearchHitView {
    /// The episode.
    #[serde(flatten)]
    pub episode: EpisodeView,
    /// How it ranked: `total = bm25 × importance × recency`.
    pub score: ScoreParts,
}

/// An episode as read back: the document, and the op that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct EpisodeView {
    /// The document.
    #[serde(flatten)]
    pub episode: Episode,
    /// HLC of the op that wrote it.
    pub hlc: String,
    /// That op's id.
    pub op_id: String,
}

impl EpisodeView {
    fn from_row(row: Row) -> Option<EpisodeView> {
        let episode = row.episode?;
        Some(EpisodeView { episode, hlc: row.hlc.to_string(), op_id: row.op_id.to_string() })
    }
}

/// A part derived from the log that the node rebuilds by itself.
#[derive(Debug, Clone, Copy)]
enum Part {
    Index,
    Episodes,
    Search,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Index => "index",
            Part::Episodes => "episodes",
            Part::Search => "search",
        }
    }
}

/// One data directory, open.
#[derive(Debug)]
pub struct Node {
    pub(crate) dir: PathBuf,
    pub(crate) wal: Wal,
    pub(crate) projection: Arc<Mutex<ProjectionSlot>>,
    applier: Arc<Applier>,
    applier_thread: Option<std::thread::JoinHandle<()>>,
    pub(crate) node_id: NodeId,
    pub(crate) key: rcgen::KeyPair,
    pub(crate) time: Arc<dyn TimeSource>,
    /// Checks the seals of received ops.
    pub(crate) verifier: crate::verify::Verifier,
    /// Origins quarantined for a conflict.
    pub(crate) quarantine: crate::quarantine::Quarantine,
    /// Nodes the cluster CA revoked.
    pub(crate) revocations: crate::revocation::Revocations,
    /// The LSN of the newest op this node wrote or received, published once it is durable
    /// (push-on-write and the change feed wait on it).
    written: tokio::sync::watch::Sender<Lsn>,
    /// Parts rebuilt by the node itself after damage ([`Node::repairs`]).
    repairs: std::sync::atomic::AtomicU64,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.applier.stop();
        if let Some(thread) = self.applier_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Node {
    /// Opens (creating if needed) the store in `dir`: takes the directory lock, recovers the
    /// log, loads or creates the node key, and catches the projection up. Damage does not fail
    /// the open: the node opens paused and [`Node::check`] says where.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Node> {
        let dir = dir.as_ref().to_path_buf();
        feral_log::private::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let time = config.time.clone();
        let (key, node_id) = identity::load_or_create(&dir)?;
        let signer = identity::signer(&key)?;
        let quarantine = crate::quarantine::Quarantine::load(&dir)?;
        let revocations = crate::revocation::Revocations::load(&dir)?;
        let verifier = crate::verify::Verifier::new(&dir);
        let wal = Wal::open(&dir, Config { signer: Some(Arc::new(signer)), ..config })?;
        let projection = Arc::new(Mutex::new(attach_or_rebuild(&wal, &dir.join(PROJECTION_FILE))));
        let (written, _) = tokio::sync::watch::channel(wal.durable_lsn());
        let applier = Arc::new(Applier::default());
        let thread = applier::spawn(applier.clone(), wal.clone(), projection.clone())
            .map_err(|e| Error::io(Path::new("feral-applier thread"), e))?;
        Ok(Node {
            dir,
            wal,
            projection,
            applier,
            applier_thread: Some(thread),
            node_id,
            key,
            time,
            verifier,
            quarantine,
            revocations,
            written,
            repairs: Default::default(),
        })
    }

    /// Follows new ops: the receiver sees the LSN of the newest op written here or received,
    /// once it is durable. Values are coalesced: a slow receiver sees the latest, never a queue.
    pub fn subscribe_writes(&self) -> tokio::sync::watch::Receiver<Lsn> {
        self.written.subscribe()
    }

    /// Hands durable new ops to the applier and tells the write followers.
    fn publish(&self, work: Work, max_lsn: Lsn) {
        let fresh = work.len() > 0;
        self.applier.push(work, max_lsn);
        if fresh {
            self.written.send_if_modified(|newest| {
                let newer = max_lsn > *newest;
                *newest = (*newest).max(max_lsn);
                newer
            });
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node id (hash of the node key's public key).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The node key (the transport's certificates are issued for it).
    pub fn key(&self) -> &rcgen::KeyPair {
        &self.key
    }

    /// The log, for readers that need it directly (sync, tools).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub(crate) fn slot(&self) -> MutexGuard<'_, ProjectionSlot> {
        self.projection.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every op acknowledged so far is applied to the projection (reads do this
    /// by themselves).
    pub fn settle(&self) {
        self.applier.drain();
    }

    /// The projection once every op acknowledged so far is applied to it.
    pub(crate) fn settled(&self) -> MutexGuard<'_, ProjectionSlot> {
        self.applier.drain();
        self.slot()
    }

    /// Now, by the node's clock (unix milliseconds).
    pub fn now_ms(&self) -> u64 {
        self.time.now_ms()
    }

    fn now_s(&self) -> f64 {
        self.time.now_ms() as f64 / 1000.0
    }

    /// Validates an episode document. A missing `created_at` is now, except on a retry: when
    /// `op_id` is already in the log, its episode's `created_at` is reused, so the retry has
    /// the same content and is reported as a duplicate rather than a conflict.
    pub fn prepare_episode(&self, doc: &Value, op_id: Option<OpId>) -> Result<Episode> {
        let ahead_s = self.wal.drift_ms_max() as f64 / 1000.0;
        let mut episode = Episode::from_input_within(doc, self.now_s(), ahead_s)?;
        let defaulted = doc.get("created_at").is_none_or(Value::is_null);
        if let (true, Some(op_id)) = (defaulted, op_id)
            && let Ok(Some(record)) = self.wal.get(&op_id)
            && let Ok(stored) = Episode::from_data(&record.op.data)
        {
            episode.created_at = stored.created_at;
        }
        Ok(episode)
    }

    /// Validates an episode document (see [`Node::prepare_episode`]) and appends it.
    pub fn append_episode(&self, doc: &Value, op_id: Option<OpId>) -> Result<Appended> {
        let episode = self.prepare_episode(doc, op_id)?;
        let mut out = self.append_episodes(vec![(episode, op_id)])?;
        out.pop().ok_or(Error::Internal("an append of one episode returned no result"))
    }

    /// Appends validated episodes in one group commit (all or nothing).
    pub fn append_episodes(&self, episodes: Vec<(Episode, Option<OpId>)>) -> Result<Vec<Appended>> {
        let drafts = episodes
            .iter()
            .map(|(e, op_id)| OpDraft {
                op_id: *op_id,
                table: TABLE.to_string(),
                row_id: e.id.clone(),
                kind: OpKind::Insert,
                data: e.to_data(),
            })
            .collect();
        let appended = self.wal.append_batch(drafts)?;
        let changes = appended
            .iter()
            .zip(episodes)
            .filter(|(a, _)| !a.duplicate)
            .map(|(a, (e, _))| Change::put_owned(a.lsn, a.op_id, a.hlc, e))
            .collect();
        self.publish(Work::Changes(changes), max_lsn(&appended));
        Ok(appended)
    }

    /// Merges `patch` (an object of episode fields) into the live episode `id` and appends
    /// the result as one whole-row op. `id` may not change. None when no live episode has
    /// the id. A retry with the same `op_id` merges into the row the first attempt wrote,
    /// which gives the same content: a duplicate, not a second op.
    pub fn patch_episode(
        &self,
        id: &str,
        patch: &Value,
        op_id: Option<OpId>,
    ) -> Result<Option<Appended>> {
        let invalid = |field: &str, reason: &str| {
            Error::Invalid(feral_materializer::FieldError {
                field: field.into(),
                reason: reason.into(),
            })
        };
        let Some(fields) = patch.as_object() else {
            return Err(invalid("(document)", "a patch is a JSON object of episode fields"));
        };
        if fields.get("id").is_some_and(|v| v.as_str() != Some(id)) {
            return Err(invalid("id", "cannot be changed by a patch"));
        }
        let Some(current) = self.episode(id)? else { return Ok(None) };
        let mut merged = serde_json::to_value(&current.episode)
            .map_err(|_| Error::Internal("an episode serialises as JSON"))?;
        if let Some(target) = merged.as_object_mut() {
            for (k, v) in fields {
                target.insert(k.clone(), v.clone());
            }
        }
        let episode = self.prepare_episode(&merged, op_id)?;
        let mut out = self.append_episodes(vec![(episode, op_id)])?;
        out.pop().map(Some).ok_or(Error::Internal("a patch returned no result"))
    }

    /// Deletes an episode: a tombstone that also blocks older inserts arriving later.
    pub fn delete_episode(&self, id: &str, op_id: Option<OpId>) -> Result<Appended> {
        let draft = OpDraft {
            op_id,
            table: TABLE.into(),
            row_id: id.into(),
            kind: OpKind::Delete,
            data: vec![],
        };
        let mut out = self.append_ops(vec![draft])?;
        out.pop().ok_or(Error::Internal("a delete returned no result"))
    }

    /// Appends generic ops (any table; `episodes` inserts must hold a valid episode), durably,
    /// in one group commit, then projects them.
    /// Tables whose names start with `_` are the node's own (`_revocations`) and refused here.
    pub fn append_ops(&self, drafts: Vec<OpDraft>) -> Result<Vec<Appended>> {
        for (i, d) in drafts.iter().enumerate() {
            if d.table.starts_with('_') {
                return Err(Error::Log(feral_log::Error::Op(feral_log::OpError::InvalidOp(
                    format!(
                        "op {i}: table {:?}: names starting with '_' are reserved for the node",
                        d.table
                    ),
                ))));
            }
        }
        self.append_unchecked(drafts)
    }

    /// [`Node::append_ops`] without the reserved-table check (the node's own tables).
    fn append_unchecked(&self, drafts: Vec<OpDraft>) -> Result<Vec<Appended>> {
        for d in &drafts {
            if d.table == TABLE && d.kind == OpKind::Insert {
                let episode = Episode::from_data(&d.data)?;
                if episode.id != d.row_id {
                    return Err(Error::Invalid(feral_materializer::FieldError {
                        field: "id".into(),
                        reason: format!("differs from the row id {:?}", d.row_id),
                    }));
                }
            }
        }
        let kept: Vec<(String, String, OpKind, Vec<u8>)> = drafts
            .iter()
            .map(|d| (d.table.clone(), d.row_id.clone(), d.kind, d.data.clone()))
            .collect();
        let appended = self.wal.append_batch(drafts)?;
        let ops: Vec<(Lsn, Op)> = appended
            .iter()
            .zip(kept)
            .filter(|(a, _)| !a.duplicate)
            .map(|(a, (table, row_id, kind, data))| {
                let op = Op {
                    op_id: a.op_id,
                    origin: a.origin,
                    seq: a.seq,
                    hlc: a.hlc,
                    table,
                    row_id,
                    kind,
                    data,
                };
                (a.lsn, op)
            })
            .collect();
        self.publish(Work::Ops(ops), max_lsn(&appended));
        Ok(appended)
    }

    /// Takes ops received from elsewhere, as the bytes they are stored as (their origin, seq,
    /// HLC and seal kept). Bytes that are not an op are refused (`invalid_op`). Ops no good
    /// seal of their origin covers are refused and counted (`bad_signature`, see
    /// [`crate::verify`]) and the rest go on. Returns how many were new; ops already held
    /// are not written again.
    pub fn ingest(&self, ops: Vec<OpBytes>) -> Result<usize> {
        let mut decoded = Vec::with_capacity(ops.len());
        for (i, bytes) in ops.into_iter().enumerate() {
            let op = bytes.decode().map_err(|reason| {
                Error::Log(feral_log::Error::Op(feral_log::OpError::InvalidOp(format!(
                    "op {i} of the batch: {reason}"
                ))))
            })?;
            decoded.push(op);
        }
        self.ingest_encoded(decoded)
    }

    /// [`Node::ingest`] for ops already decoded once by the caller: their seals are checked,
    /// the log writes their bytes, and the ops come back from it to be projected, not copied.
    pub fn ingest_encoded(&self, ops: Vec<EncodedOp>) -> Result<usize> {
        let (ops, _refused) = self.verifier.verify(&self.wal, ops)?;
        // Verified copies of records found damaged here heal them (the log rewrites a
        // damaged segment once it holds a copy of each of its damaged records).
        if let Err(e) = self.wal.heal_from(&ops) {
            tracing::warn!(error = %e, "received copies of damaged records could not be taken");
        }
        // Revocations in the batch are learned before it is appended: the revoked node's ops
        // past what this node holds now are refused, in this batch too.
        self.revocations.learn_from(&self.wal, &ops, self.time.now_ms())?;
        let ops = self.revocations.filter(ops)?;
        let mut ops = self.quarantine.filter(ops);
        // The link of each origin's last op, for the next batch's first run (kept once the
        // log holds that op).
        let links = crate::verify::last_links(&ops);
        // A split brain between two signed branches is a conflict: quarantined (the origin
        // stops advancing here from the contested seq), and the rest of the batch goes on.
        // Each turn takes at least the refused op out, so this ends.
        let (appended, ops) = loop {
            match self.wal.try_ingest_encoded(ops) {
                Ok(done) => break done,
                Err((feral_log::Error::SplitBrain { origin, seq, existing, refused }, back))
                    if !back.is_empty() =>
                {
                    let now = self.time.now_ms();
                    ops = self.quarantine.split_brain(origin, seq, existing, refused, back, now)?;
                }
                Err((e, _)) => return Err(e.into()),
            }
        };
        let fresh: std::collections::HashSet<OpId> =
            appended.iter().filter(|a| !a.duplicate).map(|a| a.op_id).collect();
        self.verifier
            .remember_links(links.into_iter().filter(|(_, (_, id, _))| fresh.contains(id)));
        let max = max_lsn(&appended);
        let new_ops: Vec<(Lsn, Op)> = appended
            .iter()
            .zip(ops)
            .filter(|(a, _)| !a.duplicate)
            .map(|(a, op)| (a.lsn, op))
            .collect();
        let count = new_ops.len();
        self.publish(Work::Ops(new_ops), max);
        Ok(count)
    }

    /// Takes a revocation statement of the cluster CA (checked against the CA certificates in
    /// the data directory) and writes it to the log as an op of `_revocations`, so it travels
    /// to every peer with the next syncs. From now on this node refuses the revoked node's
    /// handshakes and its ops past what it holds. Returns the op written (a duplicate when
    /// the same statement was taken before) and whether the node was newly revoked here.
    pub fn revoke(&self, statement: &crate::revocation::Statement) -> Result<(Appended, bool)> {
        let node = self.revocations.check(statement).map_err(Error::Revocation)?;
        let newly = self.revocations.learn(&self.wal, statement, node, self.time.now_ms())?;
        let data = serde_json::to_vec(statement)
            .map_err(|_| Error::Internal("a statement serialises as JSON"))?;
        // One op id per statement: taking it again (a retry) is a duplicate, not a second op.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&data);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        let draft = OpDraft::insert(crate::revocation::REVOCATIONS_TABLE, node.to_string(), data)
            .with_op_id(OpId(id));
        let mut appended = self.append_unchecked(vec![draft])?;
        let appended = appended.pop().ok_or(Error::Internal("an append returned no result"))?;
        Ok((appended, newly))
    }

    /// The nodes the cluster CA revoked, as learned here.
    pub fn revoked(&self) -> Vec<crate::revocation::Revoked> {
        self.revocations.list()
    }

    /// Attaches this node's certificate (`node.pem`) to its own genesis op on its way out.
    /// Without a certificate (a store that never joined a cluster) the op goes as it is, and a
    /// receiver with a cluster CA refuses it (`bad_certificate`).
    pub(crate) fn attach_own_certificate(&self, genesis: &mut OpBytes) {
        let path = self.dir.join(feral_transport::tls::NODE_CERT_FILE);
        let der = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| feral_transport::tls::pem_certs(&pem).map_err(|e| e.to_string()))
            .map(|certs| certs.into_iter().next().map(|c| c.to_vec()));
        match der {
            Ok(Some(der)) => {
                genesis.attach_certificate(&der);
            }
            Ok(None) => tracing::warn!(path = %path.display(), "no certificate in node.pem"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "this node's genesis goes out without its certificate")
            }
        }
    }

    /// Resolves the conflict quarantined for `origin` by keeping this node's branch: the
    /// origin advances again here with the ops that continue what this node holds, and the
    /// other branch's ops stay refused (counted). None when no conflict is held for it.
    pub fn resolve_conflict(
        &self,
        origin: &feral_log::Origin,
    ) -> Result<Option<crate::quarantine::Conflict>> {
        self.quarantine.resolve(origin, self.time.now_ms())
    }

    /// The live episode with this id.
    pub fn episode(&self, id: &str) -> Result<Option<EpisodeView>> {
        let slot = self.settled();
        let mat = readable(&self.wal, &slot)?;
        let row = mat.get(id)?;
        // A stopped projection (kept readable, a full disk most often) lacks the ops logged
        // after it stopped: an id it does not know may be one of them, so "not found" would
        // be a guess.
        if row.is_none()
            && let Some(fault) = self.wal.derived_fault()
            && mat.applied_lsn()? < self.wal.durable_lsn()
        {
            return Err(Error::Paused { code: Code::EpisodesUnavailable, reason: fault.detail });
        }
        Ok(row.and_then(EpisodeView::from_row))
    }

    /// Live episodes, newest first, at most `limit`, optionally of one session.
    pub fn episodes(&self, limit: usize, session: Option<&str>) -> Result<Vec<EpisodeView>> {
        let slot = self.settled();
        let mat = readable(&self.wal, &slot)?;
        Ok(mat.list(limit, session)?.into_iter().filter_map(EpisodeView::from_row).collect())
    }

    /// One page of live episodes, newest first, with the query's filters, and where the next
    /// page starts (none at the end).
    pub fn episodes_page(
        &self,
        query: &ListQuery,
    ) -> Result<(Vec<EpisodeView>, Option<ListPosition>)> {
        let slot = self.settled();
        let mat = readable(&self.wal, &slot)?;
        let page = mat.page(query)?;
        Ok((page.rows.into_iter().filter_map(EpisodeView::from_row).collect(), page.next))
    }

    /// Live episodes, overall or of one session.
    pub fn episode_count(&self, session: Option<&str>) -> Result<u64> {
        let slot = self.settled();
        Ok(readable(&self.wal, &slot)?.count(session)?)
    }

    /// The canonical digest of the store's ops and episodes.
    pub fn digest(&self) -> Result<feral_materializer::Digest> {
        let snapshot = self.rows_snapshot()?;
        Ok(feral_materializer::digest(&self.wal, &snapshot)?)
    }

    /// Writes the canonical dump (ops by (origin, seq), then rows by id), as of one applied
    /// LSN, as [`Node::digest`].
    pub fn dump(&self, out: &mut dyn std::io::Write) -> Result<()> {
        let snapshot = self.rows_snapshot()?;
        Ok(feral_materializer::dump(&self.wal, &snapshot, out)?)
    }

    /// The projection caught up with everything acknowledged so far, as a read snapshot: the
    /// projection's lock is held only to take it, so digest and dump read the log and the
    /// rows beside appends, the applier and other reads.
    pub(crate) fn rows_snapshot(&self) -> Result<feral_materializer::RowsSnapshot> {
        let slot = self.settled();
        let mat = readable(&self.wal, &slot)?;
        mat.catch_up(&self.wal)?;
        Ok(mat.rows_snapshot()?)
    }

    /// True when writes are refused (log paused or projection stopped).
    pub fn io_paused(&self) -> bool {
        self.wal.io_paused()
    }

    /// A status snapshot.
    pub fn status(&self) -> NodeStatus {
        NodeStatus::collect(self)
    }

    /// The integrity check (SPEC 7 shape): log, index and projection. Never fails.
    pub fn check(&self) -> CheckReport {
        let log = self.wal.check();
        let episodes = self.check_projection();
        let search = self.check_search();
        CheckReport::from_parts(log, episodes, search)
    }

    /// The integrity check, and the repair of what it found damaged among the parts derived
    /// from the log while the log itself checks out: a damaged index, projection or search
    /// index is rebuilt from the log (what `resume` would do for it, without holding writes
    /// for a whole check of the log), and checked again. Damage of the log itself, and parts
    /// that could not be opened (a full disk), are left to the operator: the report says so.
    /// Returns the check's report and, when a repair ran, what it did.
    pub fn check_and_repair(&self) -> (CheckReport, Option<crate::report::Repair>) {
        let found = self.check();
        let damaged = |part: PartStatus| part == PartStatus::Corruption;
        if found.wal != PartStatus::Ok
            || !(damaged(found.index) || damaged(found.episodes) || damaged(found.search))
        {
            return (found, None);
        }
        let mut parts = Vec::new();
        if damaged(found.index) {
            parts.push(Part::Index);
        }
        if damaged(found.episodes) {
            parts.push(Part::Episodes);
        } else if damaged(found.search) {
            parts.push(Part::Search);
        }
        let repair = self.rebuild_parts(&parts, "damage found by check");
        (found, Some(repair))
    }

    /// Mends by itself a part derived from the log that stopped on damage while the node ran
    /// (the service calls this; no operator action): an index that failed (`IndexFailed`:
    /// rebuilt from the log), a projection that met a damaged row (`Corruption`: rebuilt from
    /// the log), a search index that stopped (rebuilt from the projection). Writes refused meanwhile are taken again once
    /// the rebuild checks out. None when nothing of the kind is stopped; a stopped log of any
    /// other kind (disk full, a failed sync, log damage), a projection ahead of the log and a
    /// search index stopped by a full disk stay the operator's.
    pub fn repair_stopped(&self) -> Option<crate::report::Repair> {
        let part = match (self.wal.log_pause(), self.wal.derived_fault()) {
            (Some(p), _) if p.kind == PauseKind::IndexFailed => Part::Index,
            (Some(_), _) => return None,
            (None, Some(f)) if f.kind == PauseKind::Corruption => {
                // A projection ahead of the log is evidence that the log lost acknowledged
                // records (operations.md): it is the operator's, never rebuilt over.
                let durable = self.wal.durable_lsn();
                let slot = self.slot();
                let applied = slot.mat.as_ref().map(|m| m.applied_lsn());
                if !matches!(applied, Some(Ok(a)) if a <= durable) {
                    return None;
                }
                Part::Episodes
            }
            (None, Some(_)) => return None,
            (None, None) if self.slot().search_fault.as_ref().is_some_and(|f| !f.disk_full) => {
                Part::Search
            }
            (None, None) => return None,
        };
        Some(self.rebuild_parts(&[part], "stopped on damage while running"))
    }

    /// Parts rebuilt by the node itself since it opened ([`Node::check_and_repair`] and
    /// [`Node::repair_stopped`]).
    pub fn repairs(&self) -> u64 {
        self.repairs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rebuilds each part from the log, then checks the whole store again.
    fn rebuild_parts(&self, parts: &[Part], why: &str) -> crate::report::Repair {
        let (mut rebuilt, mut failed) = (Vec::new(), Vec::new());
        for part in parts {
            let outcome = match part {
                // The log's rebuild reloads it and indexes every record again; it takes writes
                // again (clears an `IndexFailed` pause) only when all of it loads.
                Part::Index => self.wal.rebuild().map(|_| ()).map_err(|e| e.to_string()),
                Part::Episodes => self.rebuild_projection().map(|_| ()).map_err(|e| e.to_string()),
                Part::Search => self.rebuild_search().map(|_| ()).map_err(|e| e.to_string()),
            };
            let name = part.name();
            match outcome {
                Ok(()) => {
                    tracing::warn!(part = name, why, "rebuilt from the log");
                    self.repairs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    rebuilt.push(name);
                }
                Err(e) => {
                    tracing::error!(part = name, why, error = %e, "the rebuild failed");
                    failed.push(format!("{name}: {e}"));
                }
            }
        }
        let check = self.check();
        crate::report::Repair { rebuilt, failed, check }
    }

    /// The search index's check: its files' checksums, and one document per live episode
    /// (after a commit, so both sides are as of one applied LSN).
    fn check_search(&self) -> Result<(), feral_materializer::Error> {
        let mut slot = self.settled();
        let reason = slot.search_unavailable(&self.wal);
        let ProjectionSlot { mat, search, .. } = &mut *slot;
        let (Some(mat), Some(search)) = (mat.as_ref(), search.as_mut()) else {
            return Err(feral_materializer::Error::Search(reason));
        };
        search.catch_up(&self.wal, mat)?;
        search.commit()?;
        search.check(mat.stats()?.episodes)
    }

    /// The projection's check: redb's structure check holds the projection for a moment;
    /// the rows are then read from a snapshot while ops go on being applied.
    fn check_projection(&self) -> Result<(), feral_materializer::Error> {
        let snapshot = {
            let mut slot = self.settled();
            match slot.mat.as_mut() {
                Some(mat) => mat.check_structure().and_then(|()| mat.check_snapshot()),
                None => Err(feral_materializer::Error::Projection(
                    self.wal.derived_fault().map_or("not open".into(), |f| f.detail),
                )),
            }
        }?;
        // Read after the snapshot: what it has applied is durable by then. At the lowest CPU
        // priority, as the log's check: writes beside it keep their pace.
        let durable = self.wal.durable_lsn();
        feral_log::background::at_lowest_priority("feral-check", &|| snapshot.verify(durable))
    }

    /// Re-verifies the log (rebuilding an untrusted index), reopens the projection (rebuilding
    /// it from the log when it is damaged), catches it up, and clears the pause if all of it
    /// checks out. Returns the check report.
    pub fn resume(&self) -> CheckReport {
        let log = self.wal.resume();
        {
            let mut slot = self.settled();
            // A handle that saw an I/O error stays failed until reopened.
            slot.search = None;
            slot.mat = None;
            self.wal.clear_derived();
            *slot = attach_or_rebuild(&self.wal, &self.dir.join(PROJECTION_FILE));
            let damaged = self.wal.derived_fault().is_some_and(|f| f.kind == PauseKind::Corruption);
            if damaged || {
                let durable = self.wal.durable_lsn();
                slot.mat.as_mut().is_some_and(|m| m.check(durable).is_err())
            } {
                tracing::warn!("episodes projection not trusted; rebuilding it from the log");
                slot.search = None;
                slot.mat = None;
                self.wal.clear_derived();
                *slot = attach(&self.wal, &self.dir.join(PROJECTION_FILE), true);
            }
        }
        // A part that could not be reopened (a full disk) keeps its fault: it is the pause
        // the report and the status show, and nothing is checked or rebuilt over it.
        let fault = self.wal.derived_fault();
        let (episodes, search) = match &fault {
            Some(f) => (
                Err(feral_materializer::Error::Projection(f.detail.clone())),
                Err(feral_materializer::Error::Search(
                    "not checked while the projection is paused".into(),
                )),
            ),
            None => {
                let episodes = self.check_projection();
                let mut search = self.check_search();
                if search.is_err() && episodes.is_ok() {
                    tracing::warn!("search index not trusted; rebuilding it from the projection");
                    search = self.rebuild_search().map(|_| ()).and_then(|()| self.check_search());
                }
                (episodes, search)
            }
        };
        let report = CheckReport::from_parts(log, episodes, search);
        if fault.is_none()
            && !report.ok
            && (report.episodes != PartStatus::Ok || report.search != PartStatus::Ok)
        {
            self.wal.stop_derived(Pause {
                kind: PauseKind::Corruption,
                detail: "episodes: integrity check failed".into(),
            });
        }
        report
    }

    /// Recreates the index and the projection from the log alone. Returns (ops indexed, ops
    /// projected).
    pub fn rebuild(&self) -> Result<(u64, usize)> {
        let indexed = self.wal.rebuild()?;
        Ok((indexed, self.rebuild_projection()?))
    }

    /// Recreates the projection from the log alone. Returns the ops projected.
    pub fn rebuild_projection(&self) -> Result<usize> {
        let mut slot = self.settled();
        slot.search = None;
        slot.mat = None;
        let mat = Materializer::recreate(&self.dir.join(PROJECTION_FILE))?;
        let applied = mat.catch_up(&self.wal)?;
        mat.flush()?;
        let mut search = SearchIndex::recreate(&self.dir.join(SEARCH_DIR))?;
        search.catch_up(&self.wal, &mat)?;
        *slot = ProjectionSlot { mat: Some(mat), search: Some(search), search_fault: None };
        self.wal.clear_derived();
        Ok(applied)
    }

    /// Recreates the search index from the projection's live rows. Returns the rows indexed.
    pub fn rebuild_search(&self) -> Result<usize, feral_materializer::Error> {
        let mut slot = self.settled();
        slot.search = None;
        let mut search = SearchIndex::recreate(&self.dir.join(SEARCH_DIR))?;
        let indexed = match slot.mat.as_ref() {
            Some(mat) => search.catch_up(&self.wal, mat)?,
            None => 0,
        };
        slot.search = Some(search);
        slot.search_fault = None;
        Ok(indexed)
    }

    /// Searches the live episodes (BM25 over summary and detail, with the query's filters and
    /// boosts). Sees every write acknowledged before the call: what the projection applied is
    /// committed to the search index first. Returns the page and whether more follow.
    pub fn search(&self, query: &SearchQuery) -> Result<(Vec<SearchHitView>, bool)> {
        let mut slot = self.settled();
        let reason = slot.search_unavailable(&self.wal);
        let ProjectionSlot { mat, search, .. } = &mut *slot;
        let unavailable =
            || Error::Paused { code: Code::EpisodesUnavailable, reason: reason.clone() };
        let (mat, search) = (mat.as_ref().ok_or_else(unavailable)?, search.as_mut());
        let search = search.ok_or_else(unavailable)?;
        if search.indexed_lsn() < mat.applied_lsn()? {
            search.catch_up(&self.wal, mat)?;
        }
        search.commit()?;
        let page = search.search(query)?;
        let mut hits = Vec::with_capacity(page.hits.len());
        for mut hit in page.hits {
            // A row changed since the commit is shown as it is now; a deleted one is left out.
            let Some(row) = mat.get(&hit.id)? else { continue };
            let Some(episode) = row.episode else { continue };
            SearchIndex::explain(query, &mut hit, &episode);
            let view =
                EpisodeView { episode, hlc: row.hlc.to_string(), op_id: row.op_id.to_string() };
            hits.push(SearchHitView { episode: view, score: hit.score });
        }
        Ok((hits, page.more))
    }

    /// Applies what is queued, makes the index and projection durable, and releases the
    /// directory.
    pub fn close(mut self) -> Result<()> {
        self.applier.stop();
        if let Some(thread) = self.applier_thread.take() {
            let _ = thread.join();
        }
        let mut slot = self.slot();
        if let Some(mat) = slot.mat.as_ref() {
            mat.flush()?;
        }
        if let Some(search) = slot.search.as_mut() {
            search.commit()?;
        }
        drop(slot);
        self.wal.clone().close()?;
        Ok(())
    }
}

fn max_lsn(appended: &[Appended]) -> Lsn {
    appended.iter().map(|a| a.lsn).max().unwrap_or(0)
}

/// Opens the projection (recreating it when `fresh`) and catches it up; a failure is kept as
/// the slot's fault instead of failing the open.
fn attach(wal: &Wal, path: &Path, fresh: bool) -> ProjectionSlot {
    let opened = if fresh { Materializer::recreate(path) } else { Materializer::open(path) };
    let mut slot = ProjectionSlot { mat: None, search: None, search_fault: None };
    match opened {
        Ok(mat) => {
            let caught_up = mat.catch_up(wal);
            slot.mat = Some(mat);
            if let Err(e) = caught_up {
                // Log damage is the log's pause to report; the projection just waits for it.
                if !matches!(e, feral_materializer::Error::Log(_)) {
                    stop_projection(wal, &mut slot, path, e);
                }
                return slot;
            }
        }
        Err(e) => {
            stop_projection(wal, &mut slot, path, e);
            return slot;
        }
    }
    let search_dir = path.with_file_name(SEARCH_DIR);
    match attach_search(wal, &slot, &search_dir, fresh) {
        Ok(search) => slot.search = Some(search),
        Err(e) => stop_projection(wal, &mut slot, &search_dir, e),
    }
    slot
}

/// Opens the search index and catches it up with the projection; one that cannot be read
/// (damaged, or of another format) is derived state, recreated from the projection.
fn attach_search(
    wal: &Wal,
    slot: &ProjectionSlot,
    dir: &Path,
    fresh: bool,
) -> Result<SearchIndex, feral_materializer::Error> {
    let Some(mat) = slot.mat.as_ref() else {
        return Err(feral_materializer::Error::Search("the projection is not open".into()));
    };
    let opened = if fresh { SearchIndex::recreate(dir) } else { SearchIndex::open(dir) };
    let mut search = match opened {
        Err(e) if !e.is_disk_full() => {
            tracing::warn!(error = %e, "the search index cannot be opened; rebuilding it");
            SearchIndex::recreate(dir)?
        }
        other => other?,
    };
    search.catch_up(wal, mat)?;
    Ok(search)
}

/// Opens the projection; one that cannot be opened for any reason but a full disk (a file
/// left half-written by a failed open on a full disk, "not a redb database", a handle of
/// ours still holding it) is derived state: it is recreated from the log. A full disk stays
/// the fault (`disk_full`) until space is freed and resume runs.
fn attach_or_rebuild(wal: &Wal, path: &Path) -> ProjectionSlot {
    let slot = attach(wal, path, false);
    match wal.derived_fault() {
        Some(fault) if fault.kind != PauseKind::DiskFull && slot.mat.is_none() => {
            tracing::warn!(reason = %fault.detail, "the episodes projection cannot be opened; rebuilding it from the log");
            drop(slot);
            wal.clear_derived();
            attach(wal, path, true)
        }
        _ => slot,
    }
}

/// Records a projection failure in the store's fault register (writes stop until resume).
/// After an I/O error a redb handle fails every call until reopened, so the handle is reopened
/// at once for reads.
pub(crate) fn stop_projection(
    wal: &Wal,
    slot: &mut ProjectionSlot,
    at: &Path,
    e: feral_materializer::Error,
) {
    tracing::error!(error = %e, path = %at.display(), "episodes projection stopped; resume() catches it up");
    let kind = if e.is_disk_full() {
        PauseKind::DiskFull
    } else if matches!(e, feral_materializer::Error::Corruption(_)) {
        PauseKind::Corruption
    } else {
        PauseKind::IoError
    };
    wal.stop_derived(Pause { kind, detail: format!("episodes: {e}") });
    // A search writer that failed is dead (tantivy stops its indexing thread); resume opens a
    // new one and catches it up. Searches answer `episodes_unavailable` until then.
    slot.search = None;
    if kind == PauseKind::DiskFull
        && let Some(mat) = slot.mat.take()
    {
        let path = mat.path().to_path_buf();
        drop(mat);
        slot.mat = Materializer::open(&path).ok();
    }
}

pub(crate) fn readable<'a>(wal: &Wal, slot: &'a ProjectionSlot) -> Result<&'a Materializer> {
    slot.mat.as_ref().ok_or_else(|| {
        let reason = wal.derived_fault().map_or("not open".to_string(), |f| f.detail);
        Error::Paused { code: Code::EpisodesUnavailable, reason }
    })
}
