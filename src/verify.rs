//! The receiver's check of ops from elsewhere, before the log takes them: every op must be
//! covered by a seal of its origin's key (see `feral_types::proof`). A run whose seal does not
//! verify (forged, altered, re-cut or unsealed) is refused whole and counted (`bad_signature`);
//! the rest of the batch goes on. An origin's key comes from its genesis: in the same batch
//! (seq 1), or held in the local log. A new origin is taken only while the store holds fewer
//! than `ORIGINS_MAX` origins and its key owns fewer than `ORIGINS_PER_NODE_MAX` of them
//! (`too_many_origins` otherwise), so no flood of origins can grow a store (and every
//! handshake's heads) without bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use feral_log::{EncodedOp, OpId, Origin, Wal};
use feral_transport::tls::{CA_CERT_FILE, pem_certs, verify_issued};
use feral_types::proof::{self, RunDigest, SEAL_RUN_BYTES_MAX, SEAL_RUN_OPS_MAX, VerifyingKey};

use crate::error::Result;
use crate::identity::NodeId;
use crate::limits::{ORIGIN_KEYS_CACHED_MAX, ORIGINS_MAX, ORIGINS_PER_NODE_MAX};

/// Why a run was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No good seal of its origin covers it.
    BadSignature,
    /// It starts an origin whose genesis key no certificate of the cluster CA vouches for.
    BadCertificate,
    /// It starts an origin past the store's or its key's cap.
    TooManyOrigins,
}

impl Why {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Why::BadSignature => "bad_signature",
            Why::BadCertificate => "bad_certificate",
            Why::TooManyOrigins => "too_many_origins",
        }
    }
}

type Verdict = std::result::Result<(), (Why, String)>;

/// The origins a store holds, counted once from the log and kept up to date.
#[derive(Debug, Default)]
struct Census {
    total: usize,
    per_node: HashMap<[u8; 16], usize>,
}

/// Ops refused because no good seal covered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub why: Why,
    /// Their origin.
    pub origin: Origin,
    /// The first refused seq.
    pub first_seq: u64,
    /// The last refused seq.
    pub last_seq: u64,
    /// How many ops.
    pub ops: usize,
    /// Why, in words.
    pub reason: String,
}

/// Origin keys seen (bounded), and the count of refused ops.
#[derive(Debug)]
pub(crate) struct Verifier {
    /// The data directory (its `ca.pem` vouches for the keys of new origins).
    dir: PathBuf,
    keys: Mutex<HashMap<Origin, VerifyingKey>>,
    /// The link of the last op appended of each origin (a cache in front of the log: the next
    /// frame's first run links there, and a log read would wait for the indexer).
    appended_links: Mutex<HashMap<Origin, (u64, [u8; 32])>>,
    census: Mutex<Option<Census>>,
    refused_ops: AtomicU64,
    refused_origin_ops: AtomicU64,
    refused_certificate_ops: AtomicU64,
}

/// The CA certificates a data directory trusts (`ca.pem`), or None when it has none (a store
/// that never joined a cluster).
pub(crate) fn trusted_roots(dir: &Path) -> std::result::Result<Option<Vec<Vec<u8>>>, String> {
    let path = dir.join(CA_CERT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(pem) => pem_certs(&pem)
            .map(|certs| Some(certs.into_iter().map(|c| c.to_vec()).collect()))
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl Verifier {
    /// The verifier of the store in `dir`.
    pub(crate) fn new(dir: &Path) -> Verifier {
        Verifier {
            dir: dir.to_path_buf(),
            keys: Mutex::default(),
            appended_links: Mutex::default(),
            census: Mutex::default(),
            refused_ops: AtomicU64::new(0),
            refused_origin_ops: AtomicU64::new(0),
            refused_certificate_ops: AtomicU64::new(0),
        }
    }

    /// Records links from [`last_links`] whose ops the log now holds.
    pub(crate) fn remember_links(
        &self,
        held: impl IntoIterator<Item = (Origin, (u64, OpId, [u8; 32]))>,
    ) {
        let mut links = self.appended_links.lock().unwrap_or_else(|p| p.into_inner());
        for (origin, (seq, _, link)) in held {
            if links.len() >= ORIGIN_KEYS_CACHED_MAX && !links.contains_key(&origin) {
                links.clear(); // a cache: every link can be read again from the log
            }
            links.insert(origin, (seq, link));
        }
    }

    /// The link of the op of `origin` at `seq` that the log holds: from the cache, else read.
    fn held_link(&self, wal: &Wal, origin: &Origin, seq: u64) -> Result<Option<[u8; 32]>> {
        let cached =
            self.appended_links.lock().unwrap_or_else(|p| p.into_inner()).get(origin).copied();
        if let Some((at, link)) = cached
            && at == seq
        {
            return Ok(Some(link));
        }
        let held = wal.payloads_by_origin_within(origin, seq, seq, 1, usize::MAX)?;
        let Some(op) = held.first() else { return Ok(None) };
        Ok(proof::parse_trailer(op.as_slice())
            .ok()
            .map(|t| proof::link_of(&op.as_slice()[..t.signed_len])))
    }

    /// Ops refused so far because no certificate of the cluster CA vouched for their new
    /// origin's key (`bad_certificate`).
    pub(crate) fn refused_certificate_ops(&self) -> u64 {
        self.refused_certificate_ops.load(Ordering::Relaxed)
    }

    /// Whether a new origin's genesis key is one the cluster CA issued a certificate for: the
    /// certificate attached to its seq 1 chains to a CA of `ca.pem` and is for that key. A
    /// store with no `ca.pem` has no cluster to check against and takes the genesis alone.
    fn certified(&self, op: &EncodedOp, spki: &[u8]) -> std::result::Result<(), String> {
        let Some(roots) = trusted_roots(&self.dir)? else { return Ok(()) };
        let certificate = op
            .trailer()
            .certificate
            .ok_or("no certificate of the cluster CA comes with the genesis of this new origin")?;
        let node = verify_issued(&certificate, &roots).map_err(|e| e.to_string())?;
        if node != NodeId::from_spki(spki).0 {
            return Err("the certificate with its genesis is for another key".into());
        }
        Ok(())
    }
    /// Ops refused so far for their seal (`bad_signature`).
    pub(crate) fn refused_ops(&self) -> u64 {
        self.refused_ops.load(Ordering::Relaxed)
    }

    /// Ops refused so far because their origin was past a cap (`too_many_origins`).
    pub(crate) fn refused_origin_ops(&self) -> u64 {
        self.refused_origin_ops.load(Ordering::Relaxed)
    }

    /// Splits `ops` into the ones covered by a good seal (in their order) and the refused
    /// runs. Fails only when the local log cannot be read for a genesis.
    pub(crate) fn verify(
        &self,
        wal: &Wal,
        ops: Vec<EncodedOp>,
    ) -> Result<(Vec<EncodedOp>, Vec<Refusal>)> {
        let mut accepted = vec![false; ops.len()];
        let mut refusals = Vec::new();
        // The open run of each origin: indexes into `ops`, consecutive seqs (SipHash: origins
        // come from peers). A frame holds each origin's runs together, so the current origin's
        // run is kept out of the map and the map is touched only where the origin changes.
        let mut open: HashMap<Origin, Vec<usize>> = HashMap::new();
        let mut current: Option<Origin> = None;
        let mut run: Vec<usize> = Vec::new();
        // The link of each origin's last accepted op in this batch: the next run starts there.
        let mut links: HashMap<Origin, (u64, [u8; 32])> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let origin = op.op().origin;
            if current != Some(origin) {
                if let Some(previous) = current.replace(origin)
                    && !run.is_empty()
                {
                    open.insert(previous, std::mem::take(&mut run));
                }
                run = open.remove(&origin).unwrap_or_default();
            }
            if let Some(&prev) = run.last()
                && ops[prev].op().seq.checked_add(1) != Some(op.op().seq)
            {
                refusals.push(refusal(&ops, &run, bad("its ops are not consecutive seqs")));
                run.clear();
            }
            run.push(i);
            if op.seal().is_some() {
                match self.check_run(wal, &ops, &run, &links)? {
                    Ok(()) => {
                        run.iter().for_each(|&j| accepted[j] = true);
                        links.insert(origin, (op.op().seq, proof::link_of(op.signed_part())));
                    }
                    Err(why) => refusals.push(refusal(&ops, &run, why)),
                }
                run.clear();
            }
        }
        if let Some(origin) = current
            && !run.is_empty()
        {
            open.insert(origin, run);
        }
        for run in open.values().filter(|r| !r.is_empty()) {
            refusals.push(refusal(&ops, run, bad("no seal covers them")));
        }
        if refusals.is_empty() {
            return Ok((ops, refusals)); // the usual case: nothing to take out
        }
        for r in &refusals {
            let counter = match r.why {
                Why::BadSignature => &self.refused_ops,
                Why::BadCertificate => &self.refused_certificate_ops,
                Why::TooManyOrigins => &self.refused_origin_ops,
            };
            counter.fetch_add(r.ops as u64, Ordering::Relaxed);
            tracing::warn!(code = r.why.code(), origin = %r.origin, first = r.first_seq,
                last = r.last_seq, ops = r.ops, reason = %r.reason, "received ops refused");
        }
        let kept = ops.into_iter().zip(accepted).filter_map(|(op, ok)| ok.then_some(op)).collect();
        Ok((kept, refusals))
    }

    /// Checks one run ending with a sealed op: `Ok(Err(reason))` refuses it.
    fn check_run(
        &self,
        wal: &Wal,
        ops: &[EncodedOp],
        run: &[usize],
        links: &HashMap<Origin, (u64, [u8; 32])>,
    ) -> Result<Verdict> {
        let (Some(&first), Some(&last)) = (run.first(), run.last()) else { return Ok(Ok(())) };
        let (first, last) = (&ops[first], &ops[last]);
        let origin = first.op().origin;
        let Some(seal) = last.seal() else { return Ok(Err(bad("no seal"))) };
        let start = first.op().seq;
        if seal.first_seq > start {
            return Ok(Err(bad(format!(
                "its seal covers seqs from {} but the ops start at {start}",
                seal.first_seq
            ))));
        }
        let length = last.op().seq - seal.first_seq + 1;
        if length > SEAL_RUN_OPS_MAX as u64 {
            return Ok(Err(bad(format!("a run of {length} ops (at most {SEAL_RUN_OPS_MAX})"))));
        }
        // The run links to the op before it: of this batch's previous run, or held here. So a
        // run verifies only on top of the branch this node holds.
        let Some(before) = seal.first_seq.checked_sub(1) else {
            return Ok(Err(bad("a seal that covers seqs from 0")));
        };
        let link = match before {
            0 => proof::LINK_NONE,
            before => match links.get(&origin) {
                Some(&(seq, link)) if seq == before => link,
                _ => match self.held_link(wal, &origin, before)? {
                    Some(link) => link,
                    None => {
                        return Ok(Err(bad(format!(
                            "its run follows seq {before}, which is not held here (or is unreadable)"
                        ))));
                    }
                },
            },
        };
        // The run's first ops may be held here already: a crash tore the commit that was
        // writing a received run, and kept its front (never acknowledged, but valid records).
        // They are checked with the rest, read back from the log.
        let mut digest = RunDigest::linked(&link);
        if seal.first_seq < start {
            let held = wal.payloads_by_origin_within(
                &origin,
                seal.first_seq,
                start - 1,
                SEAL_RUN_OPS_MAX,
                usize::MAX,
            )?;
            if held.len() as u64 != start - seal.first_seq {
                return Ok(Err(bad(format!(
                    "its seal covers seqs from {} but the ops start at {start} and the ones \
                     before are not held here",
                    seal.first_seq
                ))));
            }
            for op in &held {
                match proof::parse_trailer(op.as_slice()) {
                    Ok(t) => digest.add(&op.as_slice()[..t.signed_len]),
                    Err(reason) => return Ok(Err(bad(format!("a held op of the run: {reason}")))),
                }
            }
        }
        let mut genesis_key = None;
        let mut new_origin = None;
        for &i in run {
            let op = &ops[i];
            let seq = op.op().seq;
            // Only seq 1 (or an op that claims one) has a genesis to read.
            let genesis = if seq == 1 || op.has_genesis() { op.trailer().genesis } else { None };
            match (&genesis, seq) {
                (Some(g), 1) => {
                    if proof::origin_of(&g.spki, &g.nonce) != origin {
                        return Ok(Err(bad("its genesis key does not make its origin id")));
                    }
                    match VerifyingKey::from_spki(&g.spki) {
                        Ok(key) => genesis_key = Some(key),
                        Err(reason) => return Ok(Err(bad(format!("its genesis: {reason}")))),
                    }
                    if self.key_of(wal, &origin)?.is_none() {
                        // A new origin: its key must be one the cluster CA issued, and the
                        // store must have room for it.
                        if let Err(reason) = self.certified(op, &g.spki) {
                            return Ok(Err((Why::BadCertificate, reason)));
                        }
                        let node = NodeId::from_spki(&g.spki);
                        if let Err(reason) = self.room_for(wal, &node)? {
                            return Ok(Err((Why::TooManyOrigins, reason)));
                        }
                        new_origin = Some(node);
                    }
                }
                (None, 1) => return Ok(Err(bad("seq 1 carries no genesis"))),
                (Some(_), _) => return Ok(Err(bad(format!("a genesis at seq {seq}")))),
                (None, _) => {}
            }
            if digest.bytes() >= SEAL_RUN_BYTES_MAX {
                return Ok(Err(bad(format!("a run of more than {SEAL_RUN_BYTES_MAX} bytes"))));
            }
            digest.add(op.signed_part());
        }
        let key = match genesis_key {
            Some(key) => key,
            None => match self.key_of(wal, &origin)? {
                Some(key) => key,
                None => return Ok(Err(bad("no genesis of its origin is held here"))),
            },
        };
        let message = digest.message(&origin, seal.first_seq, last.op().seq);
        if !key.verify(&message, &seal.signature) {
            return Ok(Err(bad("its seal does not verify with its origin's key")));
        }
        if first.op().seq == 1 {
            self.remember(origin, key);
        }
        if let Some(node) = new_origin
            && let Some(census) = self.census_lock().as_mut()
        {
            census.total += 1;
            *census.per_node.entry(node.0).or_default() += 1;
        }
        Ok(Ok(()))
    }

    /// Whether the store takes one more origin of `node`: `Ok(Err(reason))` when a cap is
    /// reached. The census is counted from the log the first time.
    fn room_for(&self, wal: &Wal, node: &NodeId) -> Result<std::result::Result<(), String>> {
        let mut guard = self.census_lock();
        if guard.is_none() {
            let mut census = Census::default();
            let heads = wal.heads()?;
            if !heads.iter().any(|(o, _)| *o == wal.origin()) {
                census.total += 1; // this store's own origin, before its first op
            }
            for (origin, _) in heads {
                census.total += 1;
                if let Some(spki) = self.genesis_spki(wal, &origin)? {
                    *census.per_node.entry(NodeId::from_spki(&spki).0).or_default() += 1;
                }
            }
            *guard = Some(census);
        }
        let Some(census) = guard.as_ref() else { return Ok(Ok(())) };
        if census.total >= ORIGINS_MAX {
            return Ok(Err(format!(
                "the store holds {} origins, the most it takes (ORIGINS_MAX)",
                census.total
            )));
        }
        let owned = census.per_node.get(&node.0).copied().unwrap_or(0);
        if owned >= ORIGINS_PER_NODE_MAX {
            return Ok(Err(format!(
                "node {node} owns {owned} origins here, the most one node may (ORIGINS_PER_NODE_MAX)"
            )));
        }
        Ok(Ok(()))
    }

    fn census_lock(&self) -> std::sync::MutexGuard<'_, Option<Census>> {
        self.census.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key (SPKI) in the genesis of `origin` held in the local log.
    fn genesis_spki(&self, wal: &Wal, origin: &Origin) -> Result<Option<Vec<u8>>> {
        genesis_spki(wal, origin)
    }

    /// The key of `origin`, from the cache or from its genesis in the local log.
    fn key_of(&self, wal: &Wal, origin: &Origin) -> Result<Option<VerifyingKey>> {
        if let Some(key) = self.lock().get(origin) {
            return Ok(Some(key.clone()));
        }
        let key =
            self.genesis_spki(wal, origin)?.and_then(|spki| VerifyingKey::from_spki(&spki).ok());
        if let Some(key) = &key {
            self.remember(*origin, key.clone());
        }
        Ok(key)
    }

    fn remember(&self, origin: Origin, key: VerifyingKey) {
        let mut keys = self.lock();
        if keys.len() >= ORIGIN_KEYS_CACHED_MAX && !keys.contains_key(&origin) {
            keys.clear(); // a cache: every key can be read again from its genesis
        }
        keys.insert(origin, key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, VerifyingKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The last op of each origin among `ops` (in order): its seq, op id and link.
pub(crate) fn last_links(ops: &[EncodedOp]) -> HashMap<Origin, (u64, OpId, [u8; 32])> {
    // A batch holds each origin's ops together: the map is touched where the origin changes.
    let mut last: HashMap<Origin, &EncodedOp> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if ops.get(i + 1).is_none_or(|next| next.op().origin != op.op().origin) {
            last.insert(op.op().origin, op);
        }
    }
    last.into_iter()
        .map(|(origin, op)| {
            (origin, (op.op().seq, op.op().op_id, proof::link_of(op.signed_part())))
        })
        .collect()
}

/// The key (SPKI) in the genesis of `origin` held in the local log.
fn genesis_spki(wal: &Wal, origin: &Origin) -> Result<Option<Vec<u8>>> {
    let held = wal.payloads_by_origin_within(origin, 1, 1, 1, usize::MAX)?;
    let Some(first) = held.first() else { return Ok(None) };
    let genesis = proof::parse_trailer(first.as_slice()).ok().and_then(|t| t.genesis);
    Ok(genesis.filter(|g| proof::origin_of(&g.spki, &g.nonce) == *origin).map(|g| g.spki))
}

/// The node whose key owns `origin`, from its genesis in the local log.
pub(crate) fn genesis_node(wal: &Wal, origin: &Origin) -> Result<Option<NodeId>> {
    Ok(genesis_spki(wal, origin)?.map(|spki| NodeId::from_spki(&spki)))
}

fn bad(reason: impl Into<String>) -> (Why, String) {
    (Why::BadSignature, reason.into())
}

fn refusal(ops: &[EncodedOp], run: &[usize], (why, reason): (Why, String)) -> Refusal {
    let first = run.first().map(|&i| ops[i].op());
    let last = run.last().map(|&i| ops[i].op());
    Refusal {
        why,
        origin: first.map(|o| o.origin).unwrap_or(Origin([0; 16])),
        first_seq: first.map_or(0, |o| o.seq),
        last_seq: last.map_or(0, |o| o.seq),
        ops: run.len(),
        reason,
    }
}
