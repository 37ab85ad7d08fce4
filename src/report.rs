//! The node's status snapshot and its integrity report (SPEC 7 shape, with the episodes part).

use feral_log::check::IndexDetail;
use feral_log::{Code, IntegrityReport, Location, PartStatus, Pause};
use feral_materializer::ProjectionStats;
use serde::Serialize;

use crate::node::Node;

/// `{"ok":true,"wal":"ok","index":"ok","episodes":"ok"}`; on failure the failing part's code,
/// a `<part>_detail` object and `error` (log before index before episodes). Never raises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct CheckReport {
    /// True when every part verified.
    pub ok: bool,
    /// The log.
    pub wal: PartStatus,
    /// The op_id index.
    pub index: PartStatus,
    /// The episodes projection.
    pub episodes: PartStatus,
    /// The search index (derived from the projection).
    pub search: PartStatus,
    /// Where the log failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_detail: Option<Location>,
    /// Why the index failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_detail: Option<IndexDetail>,
    /// Why the projection failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episodes_detail: Option<IndexDetail>,
    /// Why the search index failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_detail: Option<IndexDetail>,
    /// `wal_corruption`, `wal_open_failed`, `index_corruption`, `index_open_failed`,
    /// `episodes_corruption`, `episodes_open_failed`, `search_corruption`, `search_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Code>,
    /// Records verified.
    pub records: u64,
    /// Segments verified.
    pub segments: u64,
}

/// What a running node did about damage its check found in the parts derived from the log
/// (index, episodes projection, search index) while the log itself checked out: each damaged
/// part rebuilt from the log, then the check again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Repair {
    /// The parts rebuilt: `index`, `episodes` (with the search index), `search`.
    pub rebuilt: Vec<&'static str>,
    /// Each rebuild that failed, with its error (the check after says what is still wrong).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// The check after the rebuilds.
    pub check: CheckReport,
}

impl CheckReport {
    /// Combines the log's report with the projection's and the search index's checks.
    pub fn from_parts(
        log: IntegrityReport,
        episodes: Result<(), feral_materializer::Error>,
        search: Result<(), feral_materializer::Error>,
    ) -> CheckReport {
        let part = |checked: Result<(), feral_materializer::Error>| match checked {
            Ok(()) => (PartStatus::Ok, None),
            Err(
                feral_materializer::Error::Corruption(reason)
                | feral_materializer::Error::SearchCorruption(reason),
            ) => (PartStatus::Corruption, Some(IndexDetail { reason })),
            Err(other) => (PartStatus::OpenFailed, Some(IndexDetail { reason: other.to_string() })),
        };
        let (status, detail) = part(episodes);
        let (search, search_detail) = part(search);
        let error = log
            .error
            .or(match status {
                PartStatus::Ok => None,
                PartStatus::Corruption => Some(Code::EpisodesCorruption),
                PartStatus::OpenFailed => Some(Code::EpisodesOpenFailed),
            })
            .or(match search {
                PartStatus::Ok => None,
                PartStatus::Corruption => Some(Code::SearchCorruption),
                PartStatus::OpenFailed => Some(Code::SearchError),
            });
        CheckReport {
            ok: error.is_none(),
            wal: log.wal,
            index: log.index,
            episodes: status,
            search,
            wal_detail: log.wal_detail,
            index_detail: log.index_detail,
            episodes_detail: detail,
            search_detail,
            error,
            records: log.records,
            segments: log.segments,
        }
    }
}

/// A status snapshot of a node.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct NodeStatus {
    /// The node id (hash of the node key).
    pub node_id: String,
    /// This directory's writer incarnation.
    pub origin: String,
    /// The data directory.
    pub data_dir: String,
    /// True when writes are refused until `resume()`.
    pub io_paused: bool,
    /// Why: the log's pause, else the projection's (one register, `Wal::pause`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    /// Why the projection stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection_fault: Option<String>,
    /// Why the search index stopped while the projection kept going (resume reopens it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_fault: Option<String>,
    /// Highest durable LSN.
    pub durable_lsn: u64,
    /// Segment files.
    pub segments: usize,
    /// Records found damaged in the log (by the scrub of sealed segments, `check`, or a
    /// read), with the ops they held: the node serves and syncs everything else and never
    /// sends these. Empty when none.
    pub damage: Vec<feral_log::damage::DamagedRange>,
    /// LSNs of damaged records, over every range in `damage`.
    pub damaged_lsns: u64,
    /// Parts derived from the log (the index, the episodes projection, the search index) the
    /// node rebuilt by itself after damage since it opened: found by a check, or met while
    /// running (the part stopped, writes were refused until the rebuild checked out).
    pub repairs: u64,
    /// Bytes of the disk-full reserve held (`<data>/reserve`): deleted when the disk fills so
    /// derived state can commit and a resume can reopen it; 0 while released or without room.
    pub reserve_bytes: u64,
    /// Bytes of segment files on disk.
    pub log_bytes: u64,
    /// Highest contiguous seq per origin.
    pub heads: std::collections::BTreeMap<String, u64>,
    /// The latest HLC reached.
    pub clock: String,
    /// Remote stamps refused for drift.
    pub drift_refusals: u64,
    /// Received ops refused because no good seal of their origin covered them
    /// (`bad_signature`: forged, altered or unsigned).
    pub bad_signature_refusals: u64,
    /// Received ops refused because they would start an origin past the store's cap
    /// (`ORIGINS_MAX`) or their key's (`ORIGINS_PER_NODE_MAX`): `too_many_origins`.
    pub origin_refusals: u64,
    /// Quarantined conflicts: an origin whose key signed two different ops at one seq stops
    /// advancing here from that seq; every other origin keeps syncing.
    pub conflicts: Vec<crate::quarantine::Conflict>,
    /// Received ops refused because their origin is quarantined at or before their seq.
    pub conflict_refusals: u64,
    /// Received ops refused because no certificate of the cluster CA vouched for the key of
    /// the new origin they start.
    pub certificate_refusals: u64,
    /// Nodes the cluster CA revoked, as learned here (their handshakes and new ops refused).
    pub revoked: Vec<crate::revocation::Revoked>,
    /// Received ops refused because their node is revoked.
    pub revoked_refusals: u64,
    /// Revocation statements received that did not verify here (not taken).
    pub invalid_revocations: u64,
    /// Projection counters.
    pub projection: ProjectionStats,
    /// This node's sync certificate, when one is installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
}

/// The installed node certificate's validity.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct CertificateStatus {
    /// Valid from (unix seconds).
    pub not_before_unix_s: i64,
    /// Valid until (unix seconds).
    pub not_after_unix_s: i64,
    /// Whole days left (negative once expired).
    pub expires_in_days: i64,
    /// False when the certificate is for another key than this node's.
    pub matches_node_key: bool,
}

fn certificate_status(node: &Node) -> Option<CertificateStatus> {
    let pem = std::fs::read_to_string(node.dir.join(feral_transport::tls::NODE_CERT_FILE)).ok()?;
    let cert = feral_transport::tls::pem_certs(&pem).ok()?.into_iter().next()?;
    let (from, to) = feral_transport::tls::validity_of(&cert)?;
    let proven = feral_transport::tls::spki_of(&cert).map(feral_transport::tls::node_id_of);
    let now = node.time.now_ms() as i64 / 1000;
    Some(CertificateStatus {
        not_before_unix_s: from,
        not_after_unix_s: to,
        expires_in_days: (to - now).div_euclid(86_400),
        matches_node_key: proven == Some(node.node_id.0),
    })
}

impl NodeStatus {
    pub(crate) fn collect(node: &Node) -> NodeStatus {
        let log = node.wal.status();
        let heads = node
            .wal
            .heads()
            .map(|h| h.into_iter().map(|(o, s)| (o.to_string(), s)).collect())
            .unwrap_or_default();
        let (projection, search_fault) = {
            let slot = node.settled();
            let stats = slot.mat.as_ref().and_then(|m| m.stats().ok()).unwrap_or_default();
            (stats, slot.search_fault.as_ref().map(|f| f.detail.clone()))
        };
        let fault = node.wal.derived_fault().map(|f| f.detail);
        let wal_dir = node.dir.join(feral_log::wal::WAL_DIR);
        let log_bytes = std::fs::read_dir(&wal_dir)
            .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        NodeStatus {
            node_id: node.node_id.to_string(),
            origin: log.origin,
            data_dir: node.dir.display().to_string(),
            io_paused: log.pause.is_some(),
            damage: node.wal.damage(),
            damaged_lsns: node.wal.damaged_lsns(),
            reserve_bytes: node.wal.reserve_bytes(),
            repairs: node.repairs(),
            pause: log.pause,
            projection_fault: fault,
            search_fault,
            durable_lsn: log.durable_lsn,
            segments: log.segments,
            log_bytes,
            heads,
            clock: log.clock,
            drift_refusals: log.drift_refusals,
            bad_signature_refusals: node.verifier.refused_ops(),
            origin_refusals: node.verifier.refused_origin_ops(),
            conflicts: node.quarantine.list(),
            conflict_refusals: node.quarantine.refused_ops(),
            certificate_refusals: node.verifier.refused_certificate_ops(),
            revoked: node.revocations.list(),
            revoked_refusals: node.revocations.refused_ops(),
            invalid_revocations: node.revocations.invalid_statements(),
            projection,
            certificate: certificate_status(node),
        }
    }
}
