//! Revocation: the cluster CA's signed statement that a node is no longer trusted (a stolen
//! laptop). The statement travels as an op of the reserved table `_revocations` (row id: the
//! node id), so every node learns it from any peer, however it got there; a node verifies the
//! CA's signature against its own trusted CA certificates before it takes it. From then on it
//! refuses the node's handshakes (`revoked`) and every op of that node's origins past what it
//! held when it learned (`revoked`, counted), and a new origin of that node at all. Learned
//! revocations are kept in `revoked.json` (0600) with the seq held per origin.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use feral_log::{EncodedOp, Origin, Wal};
use feral_transport::tls::{CA_CERT_FILE, Ca, cluster_id_of, spki_of};
use feral_types::proof::{SIGNATURE_BYTES, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::limits::{
    ORIGINS_PER_NODE_MAX, REVOCATION_REASON_BYTES_MAX, REVOCATIONS_MAX, REVOKED_FILE_BYTES_MAX,
};

/// The reserved table whose ops carry revocation statements.
pub const REVOCATIONS_TABLE: &str = "_revocations";
/// The file of learned revocations.
pub const REVOKED_FILE: &str = "revoked.json";
const DOMAIN: &[u8] = b"feral-revoke/1";

/// A revocation as the CA signs it: `"feral-revoke/1" | cluster id (32) | node id (16) |
/// revoked_at_ms (u64 LE) | reason length (u16 LE) | reason`, an ECDSA P-256 SHA-256 signature
/// (fixed form) by the key of the CA whose certificate makes the cluster id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Statement {
    /// The revoked node id (32 hex).
    pub node_id: String,
    /// The cluster id of the CA that signs (64 hex).
    pub cluster_id: String,
    /// When the operator revoked it (unix ms).
    pub revoked_at_ms: u64,
    /// Why, in the operator's words (at most `REVOCATION_REASON_BYTES_MAX` bytes).
    #[serde(default)]
    pub reason: String,
    /// The CA's signature (128 hex).
    pub signature: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str, what: &str) -> std::result::Result<[u8; N], String> {
    let bad = || format!("{what} must be {} hex characters", 2 * N);
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn message(cluster: &[u8; 32], node: &NodeId, at_ms: u64, reason: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN.len() + 32 + 16 + 8 + 2 + reason.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(cluster);
    msg.extend_from_slice(&node.0);
    msg.extend_from_slice(&at_ms.to_le_bytes());
    msg.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    msg.extend_from_slice(reason.as_bytes());
    msg
}

fn check_reason(reason: &str) -> std::result::Result<(), String> {
    if reason.len() > REVOCATION_REASON_BYTES_MAX {
        return Err(format!(
            "a reason of {} bytes (at most {REVOCATION_REASON_BYTES_MAX})",
            reason.len()
        ));
    }
    Ok(())
}

impl Statement {
    /// The CA's statement that `node` is revoked, made now.
    pub fn sign(ca: &Ca, node: NodeId, reason: &str, now_ms: u64) -> Result<Statement> {
        check_reason(reason).map_err(Error::Revocation)?;
        let cluster = ca.cluster_id().map_err(|e| Error::Revocation(e.to_string()))?;
        let key = ca.key_pair().map_err(|e| Error::Revocation(e.to_string()))?;
        let signer = crate::identity::signer(&key)
            .map_err(|e| Error::Revocation(format!("the CA key cannot sign: {e}")))?;
        let signature = signer
            .sign(&message(&cluster, &node, now_ms, reason))
            .map_err(|e| Error::Revocation(format!("signing the revocation: {e}")))?;
        Ok(Statement {
            node_id: node.to_string(),
            cluster_id: hex(&cluster),
            revoked_at_ms: now_ms,
            reason: reason.to_string(),
            signature: hex(&signature),
        })
    }

    /// The statement an op of `_revocations` carries (its data, JSON).
    pub fn from_data(data: &[u8]) -> std::result::Result<Statement, String> {
        serde_json::from_slice(data).map_err(|e| format!("not a revocation statement: {e}"))
    }

    /// The revoked node, when the statement is signed by one of the trusted CAs (`roots`,
    /// DER) and names its cluster.
    pub fn verify(&self, roots: &[Vec<u8>]) -> std::result::Result<NodeId, String> {
        let node = NodeId(unhex::<16>(&self.node_id, "node_id")?);
        let cluster = unhex::<32>(&self.cluster_id, "cluster_id")?;
        let signature = unhex::<SIGNATURE_BYTES>(&self.signature, "signature")?;
        check_reason(&self.reason)?;
        let ca = roots
            .iter()
            .find(|der| cluster_id_of(der) == cluster)
            .ok_or("signed for a cluster whose CA is not trusted here")?;
        let spki = spki_of(ca).ok_or("the trusted CA certificate has no readable key")?;
        let key = VerifyingKey::from_spki(spki).map_err(|e| format!("the CA key: {e}"))?;
        if !key.verify(&message(&cluster, &node, self.revoked_at_ms, &self.reason), &signature) {
            return Err("its signature is not the cluster CA's".into());
        }
        Ok(node)
    }
}

/// A revocation this node has learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Revoked {
    /// The revoked node id (32 hex).
    pub node_id: String,
    /// The operator's reason.
    pub reason: String,
    /// When the operator revoked it (unix ms, from the statement).
    pub revoked_at_ms: u64,
    /// When this node learned it (unix ms).
    pub learned_at_ms: u64,
    /// The node's origins and the last seq of each held here when this node learned it:
    /// ops past these, and other origins of the node, are refused.
    pub held: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Learned {
    by_node: BTreeMap<NodeId, Revoked>,
    /// Origins of revoked nodes and the last seq taken of each (SipHash: from peers).
    origins: HashMap<Origin, u64>,
}

/// The revocations of one data directory.
#[derive(Debug)]
pub(crate) struct Revocations {
    dir: PathBuf,
    learned: Mutex<Learned>,
    refused_ops: AtomicU64,
    invalid_statements: AtomicU64,
}

impl Revocations {
    /// Loads the revocations learned in `dir` (none when the file is absent).
    pub(crate) fn load(dir: &Path) -> Result<Revocations> {
        let path = dir.join(REVOKED_FILE);
        let mut learned = Learned::default();
        let bad = |what: String| Error::Revocation(format!("{}: {what}", path.display()));
        let list: Vec<Revoked> =
            crate::list_file::load(&path, REVOKED_FILE_BYTES_MAX, Error::Revocation)?;
        for r in list {
            let node = NodeId(unhex::<16>(&r.node_id, "node_id").map_err(bad)?);
            for (origin, seq) in &r.held {
                let origin =
                    Origin::parse(origin).map_err(|_| bad(format!("bad origin {origin:?}")))?;
                learned.origins.insert(origin, *seq);
            }
            learned.by_node.insert(node, r);
        }
        Ok(Revocations {
            dir: dir.to_path_buf(),
            learned: Mutex::new(learned),
            refused_ops: AtomicU64::new(0),
            invalid_statements: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when `node` is revoked here.
    pub(crate) fn is_revoked(&self, node: &NodeId) -> bool {
        self.lock().by_node.contains_key(node)
    }

    /// Every learned revocation, by node id.
    pub(crate) fn list(&self) -> Vec<Revoked> {
        self.lock().by_node.values().cloned().collect()
    }

    /// Received ops refused because their node is revoked.
    pub(crate) fn refused_ops(&self) -> u64 {
        self.refused_ops.load(Ordering::Relaxed)
    }

    /// `_revocations` ops whose statement did not verify here (kept in the log as any op of
    /// their origin, and not taken).
    pub(crate) fn invalid_statements(&self) -> u64 {
        self.invalid_statements.load(Ordering::Relaxed)
    }

    /// The CA certificates this node trusts (DER), from its data directory.
    fn roots(&self) -> std::result::Result<Vec<Vec<u8>>, String> {
        crate::verify::trusted_roots(&self.dir)?
            .ok_or_else(|| format!("no trusted CA here to check it against (no {CA_CERT_FILE})"))
    }

    /// Verifies `statement` against the trusted CAs: the revoked node, or why not.
    pub(crate) fn check(&self, statement: &Statement) -> std::result::Result<NodeId, String> {
        statement.verify(&self.roots()?)
    }

    /// Takes the statements among `ops` (ops of `_revocations`) that verify, before the batch
    /// is appended: what `wal` holds now of each revoked node's origins is what stays.
    pub(crate) fn learn_from(&self, wal: &Wal, ops: &[EncodedOp], now_ms: u64) -> Result<()> {
        for op in ops.iter().filter(|o| o.op().table == REVOCATIONS_TABLE) {
            let statement = Statement::from_data(&op.op().data);
            match statement.and_then(|s| self.check(&s).map(|node| (s, node))) {
                Ok((statement, node)) => {
                    self.learn(wal, &statement, node, now_ms)?;
                }
                Err(reason) => {
                    self.invalid_statements.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(op_id = %op.op().op_id, row = %op.op().row_id, %reason,
                        "a revocation statement was not taken");
                }
            }
        }
        Ok(())
    }

    /// Records that `node` is revoked (a no-op when it is already): the seqs held now of its
    /// origins are kept, nothing past them is taken. True when it is new here.
    pub(crate) fn learn(
        &self,
        wal: &Wal,
        statement: &Statement,
        node: NodeId,
        now_ms: u64,
    ) -> Result<bool> {
        if self.is_revoked(&node) {
            return Ok(false);
        }
        let mut held = BTreeMap::new();
        for (origin, seq) in wal.heads()? {
            if crate::verify::genesis_node(wal, &origin)? == Some(node) {
                held.insert(origin, seq);
            }
        }
        let mut learned = self.lock();
        if learned.by_node.contains_key(&node) {
            return Ok(false);
        }
        if learned.by_node.len() >= REVOCATIONS_MAX {
            return Err(Error::Revocation(format!(
                "{REVOCATIONS_MAX} nodes are revoked here already (REVOCATIONS_MAX); node {node} \
                 is not: make a new cluster CA"
            )));
        }
        for (origin, seq) in &held {
            learned.origins.insert(*origin, *seq);
        }
        let revoked = Revoked {
            node_id: node.to_string(),
            reason: statement.reason.clone(),
            revoked_at_ms: statement.revoked_at_ms,
            learned_at_ms: now_ms,
            held: held.into_iter().map(|(o, s)| (o.to_string(), s)).collect(),
        };
        tracing::warn!(%node, reason = %revoked.reason, origins = revoked.held.len(),
            "node revoked by the cluster CA: its handshakes and new ops are refused");
        learned.by_node.insert(node, revoked);
        self.save(&learned)?;
        Ok(true)
    }

    /// `ops` without those of revoked nodes past what was held when the revocation was
    /// learned, and without new origins of revoked nodes (counted).
    pub(crate) fn filter(&self, ops: Vec<EncodedOp>) -> Result<Vec<EncodedOp>> {
        let mut learned = self.lock();
        if learned.by_node.is_empty() {
            return Ok(ops);
        }
        let before = ops.len();
        let mut grew = false;
        let mut kept = Vec::with_capacity(ops.len());
        for op in ops {
            let (origin, seq) = (op.op().origin, op.op().seq);
            let refuse = match learned.origins.get(&origin) {
                Some(&held) => seq > held,
                None => {
                    // A new origin: refused whole when its genesis is a revoked node's key
                    // (only a seq 1 carries one; the flag byte says so without a parse).
                    let genesis = if op.has_genesis() { op.trailer().genesis } else { None };
                    let node = genesis.map(|g| NodeId::from_spki(&g.spki));
                    match node.filter(|n| learned.by_node.contains_key(n)) {
                        Some(node) => {
                            grew |= remember_origin(&mut learned, node, origin);
                            true
                        }
                        None => false,
                    }
                }
            };
            if !refuse {
                kept.push(op);
            }
        }
        let refused = before - kept.len();
        if refused > 0 {
            self.refused_ops.fetch_add(refused as u64, Ordering::Relaxed);
            tracing::warn!(
                ops = refused,
                code = "revoked",
                "received ops of revoked nodes refused"
            );
        }
        if grew {
            self.save(&learned)?;
        }
        Ok(kept)
    }

    fn save(&self, learned: &Learned) -> Result<()> {
        let list: Vec<&Revoked> = learned.by_node.values().collect();
        crate::list_file::save(&self.dir.join(REVOKED_FILE), &list)
    }
}

/// Keeps a new origin of a revoked node at seq 0 (nothing of it taken), up to
/// `ORIGINS_PER_NODE_MAX` per node; past that its ops are refused all the same by their
/// genesis, without a record. True when the record grew.
fn remember_origin(learned: &mut Learned, node: NodeId, origin: Origin) -> bool {
    let Some(revoked) = learned.by_node.get_mut(&node) else { return false };
    if revoked.held.len() >= ORIGINS_PER_NODE_MAX {
        return false;
    }
    revoked.held.insert(origin.to_string(), 0);
    learned.origins.insert(origin, 0);
    true
}
