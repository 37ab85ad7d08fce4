//! The API's answer and request shapes as types, and the OpenAPI 3.1 description made from
//! them and from the handlers' `#[utoipa::path]` operations (`document`). The handlers answer
//! with these types, and the router registers each handler with its operation in one
//! `routes!` call (mod.rs), so the description cannot drift from the code; a test compares it
//! with the copy checked in at docs/openapi.json, and the Python tests validate the node's
//! real answers against it.

use feral_transport::discovery::PeerInfo;
use feral_transport::scheduler::PeerSchedule;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, RefOr, Response, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};

use crate::changes::ChangeView;
use crate::node::{EpisodeView, SearchHitView};
use crate::report::{CertificateStatus, CheckReport, NodeStatus, Repair};
use crate::rows::{HistoryEntry, RowView, TableInfo};

/// Every error, the framework's own included: a stable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorBody {
    /// The stable code (`invalid_episode`, `disk_full`, `unauthorized`…; see api.md).
    pub(crate) error: String,
    /// What went wrong, in words.
    pub(crate) message: String,
}

/// One op of an append: its id, its HLC, and whether it was already held (a retry).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendedView {
    /// The op's id (32 hex).
    pub(crate) op_id: String,
    /// Its HLC.
    pub(crate) hlc: String,
    /// True when this op_id was already in the log with the same content (nothing written).
    pub(crate) duplicate: bool,
}

/// The ops an append wrote, in input order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendedList {
    /// One per input item.
    pub(crate) appended: Vec<AppendedView>,
}

/// An episode as a caller writes it. Unknown fields are refused (`invalid_episode` naming the
/// field).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes the input Episode::from_input parses by hand")]
pub(crate) struct EpisodeInput {
    /// Row id (non-empty, at most 256 bytes).
    id: String,
    /// Conversation session (non-empty).
    session_id: String,
    /// What kind of event this is (non-empty).
    event_type: String,
    /// One-line summary (non-empty).
    summary: String,
    /// Free text ("" when absent).
    detail: Option<String>,
    /// 0.0..=1.0 (0.5 when absent).
    importance: Option<f64>,
    /// Unix seconds (now when absent; at most the drift bound ahead of the node's clock).
    created_at: Option<f64>,
    /// Emotions named (at most 64).
    emotions: Option<Vec<String>>,
    /// Who took part (at most 64).
    participants: Option<Vec<String>>,
    /// Where it happened.
    location: Option<String>,
    /// The op's id (32 hex), made by the caller so a retry is the same op.
    op_id: Option<String>,
}

/// `POST /v1/episodes`: one episode or an array of them (one group commit, all or nothing).
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes a body parsed or written by hand (mod.rs, changes.rs)")]
pub(crate) enum EpisodesBody {
    /// One episode.
    One(Box<EpisodeInput>),
    /// Several, appended together.
    Many(Vec<EpisodeInput>),
}

/// `PATCH /v1/episodes/{id}`: the fields to change (merged into the live episode; `id` may
/// only repeat the path's).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes the input Node::patch_episode merges by hand")]
pub(crate) struct EpisodePatch {
    id: Option<String>,
    session_id: Option<String>,
    event_type: Option<String>,
    summary: Option<String>,
    detail: Option<String>,
    importance: Option<f64>,
    created_at: Option<f64>,
    emotions: Option<Vec<String>>,
    participants: Option<Vec<String>>,
    location: Option<String>,
    /// The op's id (32 hex): a retried patch is the same op.
    op_id: Option<String>,
}

/// What an op does to its row.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, reason = "describes the `kind` text OpInput takes (mod.rs)")]
pub(crate) enum OpKindInput {
    /// Writes the row (last writer wins).
    Insert,
    /// Tombstones the row.
    Delete,
}

/// `POST /v1/ops`: one op or an array of them.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes a body parsed or written by hand (mod.rs, changes.rs)")]
pub(crate) enum OpsBody {
    /// One op.
    One(super::OpInput),
    /// Several, appended together.
    Many(Vec<super::OpInput>),
}

/// `POST /v1/backup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupRequest {
    /// An absolute path to an absent or empty directory outside the data directory.
    pub(crate) to: String,
}

/// `POST /v1/sync`: one peer, or no body for every known peer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncRequest {
    /// `host:port` of the peer's QUIC endpoint.
    pub(crate) peer: String,
}

/// A page of live episodes, newest `created_at` first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EpisodesPage {
    /// The episodes of this page.
    pub(crate) episodes: Vec<EpisodeView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub(crate) next_cursor: Option<String>,
}

/// A page of search hits, best first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchPage {
    /// The hits of this page.
    pub(crate) hits: Vec<SearchHitView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub(crate) next_cursor: Option<String>,
}

/// Live episodes counted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Count {
    /// Live episodes (of the session, when one is named).
    pub(crate) episodes: u64,
    /// The session counted, or null for all.
    pub(crate) session: Option<String>,
}

/// Every table with its live rows.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tables {
    /// The tables, by name.
    pub(crate) tables: Vec<TableInfo>,
}

/// A page of a table's live rows, in row id order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RowsPage {
    /// The rows of this page.
    pub(crate) rows: Vec<RowView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub(crate) next_cursor: Option<String>,
}

/// A page of the ops that touched one row, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryPage {
    /// The ops of this page.
    pub(crate) ops: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next page; null on the last.
    pub(crate) next_cursor: Option<String>,
}

/// The last line of a newline-delimited change page.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedEnd {
    /// Pass as `since` for the changes after this page.
    pub(crate) next_cursor: String,
    /// More changes follow now (the page stopped at its limit).
    pub(crate) more: bool,
}

/// One line of a newline-delimited change page: a change, or the page's end (last).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes a body parsed or written by hand (mod.rs, changes.rs)")]
pub(crate) enum FeedLine {
    /// One change.
    Change(ChangeView),
    /// The page's end.
    End(FeedEnd),
}

/// One op as `GET /v1/export?ops=true` writes it.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes the lines export.rs writes with json!")]
pub(crate) struct ExportedOp {
    /// Its position in this node's log.
    lsn: u64,
    /// Its id.
    op_id: String,
    /// The writer incarnation it came from.
    origin: String,
    /// Its seq there.
    seq: u64,
    /// Its HLC.
    hlc: String,
    /// Its table.
    table: String,
    /// Its row.
    row_id: String,
    /// `Insert` or `Delete`.
    kind: String,
    /// Its data as in a row (null for a delete).
    data: serde_json::Value,
}

/// One line of an export: a live row (`GET /v1/export`), or an op (`?ops=true`).
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes the lines export.rs writes")]
pub(crate) enum ExportLine {
    /// A live row (an episode's `data` is its document).
    Row(RowView),
    /// An op of the log.
    Op(ExportedOp),
}

/// A revocation taken.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevocationTaken {
    /// The op that carries it to every peer.
    pub(crate) appended: Option<AppendedView>,
    /// False when the node was already revoked here.
    pub(crate) newly_revoked: bool,
}

/// A certificate reload.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reloaded {
    /// Always true (a refusal is an error).
    pub(crate) reloaded: bool,
    /// The certificate now presented.
    pub(crate) certificate: Option<CertificateStatus>,
}

/// A rebuild from the log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rebuilt {
    /// The index holds every op through this LSN.
    pub(crate) ops_indexed_through_lsn: u64,
    /// Ops the projection applied.
    pub(crate) ops_projected: usize,
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Health {
    /// `ok`.
    pub(crate) status: String,
}

/// The node's status with its sync endpoint and its peers' schedules.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatusView {
    /// The store's status.
    #[serde(flatten)]
    pub(crate) node: NodeStatus,
    /// The QUIC address this node syncs on.
    pub(crate) sync_addr: String,
    /// Each known peer's schedule.
    pub(crate) peers: Vec<PeerSchedule>,
}

/// The check's report as found, and what the node repaired.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckView {
    /// The report as found.
    #[serde(flatten)]
    pub(crate) found: CheckReport,
    /// Present when damage in a part derived from the log was rebuilt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) repair: Option<Repair>,
}

/// A known peer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PeerView {
    /// Its address, node id and source.
    #[serde(flatten)]
    pub(crate) peer: PeerInfo,
    /// The cluster CA revoked its node id (its handshakes are refused).
    pub(crate) revoked: bool,
    /// Its schedule and what the last session found (null before the schedule has seen it).
    pub(crate) sync: Option<PeerSchedule>,
}

/// The description's frame: its title, description and the token it asks for.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "feral-memory node API",
        description = "The HTTP API of `feral-node run`: JSON in and out, on loopback TCP with \
            the bearer token of `<data>/api.token`, and on the Unix socket `<data>/api.sock` \
            without one. Every request passes the host, origin and content-type checks \
            (docs/security.md). Every error is `{\"error\": code, \"message\": text}`; \
            docs/api.md lists the codes.",
        license(name = "MIT OR Apache-2.0"),
    ),
    security(("token" = [])),
)]
pub(crate) struct Doc;

/// Completes the description once every route is in: the token's scheme, and the error
/// answer every operation may give (`default`: any status the operation does not list).
pub(crate) fn finish(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).build()),
    );
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), <ErrorBody as utoipa::PartialSchema>::schema());
    let error: RefOr<Response> = ResponseBuilder::new()
        .description(
            "An error: 400 bad input, 401 no or a wrong token, 403 a foreign host or origin, \
             404, 405, 408 a slow body, 413, 415 not JSON, 503 busy or paused, 507 disk full",
        )
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody")))),
        )
        .build()
        .into();
    for item in doc.paths.paths.values_mut() {
        for op in
            [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete].into_iter().flatten()
        {
            op.responses.responses.entry("default".into()).or_insert_with(|| error.clone());
        }
    }
}
