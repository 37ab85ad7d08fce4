//! The HTTP API (JSON in and out) the assistant calls from any language: episodes, generic
//! ops, status, check, resume, sync, peers, health and Prometheus `/metrics`, on loopback TCP
//! (bearer token from `<data>/api.token`) and on the Unix socket `<data>/api.sock` (no token:
//! its 0600 mode in the 0700 data directory is the credential). Every request passes the
//! guard (`guard.rs`) first; the listeners and their bounds are in `serve.rs`. Every error,
//! the framework's own included, is `{"error": code, "message": text}` with a stable code; a
//! full disk is 507.

mod changes;
mod export;
mod guard;
mod metrics;
pub mod read;
mod schema;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use feral_log::{Appended, OpDraft, OpId, OpKind};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Code, Error};
use crate::limits::{
    API_BODY_BYTES_DEFAULT, API_BODY_TIMEOUT, API_CONNECTIONS_MAX, API_ERROR_BODY_BYTES_MAX,
    API_HEADER_TIMEOUT, API_IDLE_TIMEOUT, API_PEER_LOOKUP_TIMEOUT, API_REQUESTS_IN_FLIGHT_MAX,
};
use crate::service::Service;
use schema::{AppendedList, AppendedView, ErrorBody};
pub use serve::{Listener, ServeLimits};

/// The token file in a data directory (0600).
pub const TOKEN_FILE: &str = "api.token";
/// The Unix socket in a data directory.
pub const SOCKET_FILE: &str = "api.sock";
/// `FERAL_API_TOKEN`: a token that overrides the data directory's for clients.
pub const TOKEN_ENV: &str = "FERAL_API_TOKEN";

/// What the API accepts, and its bounds.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Host names accepted beside `localhost`, `127.0.0.1` and `[::1]` (`api_hosts`).
    pub hosts: Vec<String>,
    /// Origins whose pages may call the API (`api_origins`; empty by default).
    pub origins: Vec<String>,
    /// Largest request body (`api_body_bytes_max`; 4 MiB by default).
    pub body_bytes_max: usize,
    /// Requests handled at once across listeners.
    pub requests_in_flight_max: usize,
    /// Each listener's connection cap and timeouts.
    pub limits: ServeLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            hosts: Vec::new(),
            origins: Vec::new(),
            body_bytes_max: API_BODY_BYTES_DEFAULT,
            requests_in_flight_max: API_REQUESTS_IN_FLIGHT_MAX,
            limits: ServeLimits {
                connections_max: API_CONNECTIONS_MAX,
                header_timeout: API_HEADER_TIMEOUT,
                idle_timeout: API_IDLE_TIMEOUT,
            },
        }
    }
}

#[derive(Clone)]
pub(crate) struct Api {
    service: Arc<Service>,
    body_bytes_max: usize,
    /// Change-feed followers at once (both listeners).
    subscribers: Arc<tokio::sync::Semaphore>,
    /// Exports at once (both listeners).
    exports: Arc<tokio::sync::Semaphore>,
}

/// An API error: status and `{"error", "message"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.into(), message: message.into() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = e.code();
        let status = match code {
            Code::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            Code::InvalidEpisode
            | Code::InvalidOp
            | Code::InvalidRevocation
            | Code::InvalidQuery => StatusCode::BAD_REQUEST,
            Code::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::OpIdConflict | Code::SplitBrain => StatusCode::CONFLICT,
            Code::IoPaused | Code::EpisodesUnavailable | Code::Locked => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, code.as_str(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrorBody { error: self.code, message: self.message }))
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    (status, axum::Json(serde_json::to_value(value).unwrap_or(Value::Null))).into_response()
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Reads a request body within the size limit and the body timeout. A declared length over
/// the limit is refused before a byte is read.
async fn read_body(api: &Api, headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
    let max = api.body_bytes_max;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds the {max}-byte limit (api_body_bytes_max)"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if declared.and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(API_BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {} s", API_BODY_TIMEOUT.as_secs()),
        )),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(too_large())
        }
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("reading the body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Parses a body as JSON (called on a blocking thread: a large body takes a while).
fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

fn take_op_id(doc: &mut Value) -> ApiResult<Option<OpId>> {
    match doc.as_object_mut().and_then(|m| m.remove("op_id")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => OpId::parse(&s).map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_episode",
                "field `op_id`: must be 32 hex characters",
            )
        }),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_episode",
            "field `op_id`: must be a string",
        )),
    }
}

fn views(appended: &[Appended]) -> Vec<AppendedView> {
    appended
        .iter()
        .map(|a| AppendedView {
            op_id: a.op_id.to_string(),
            hlc: a.hlc.to_string(),
            duplicate: a.duplicate,
        })
        .collect()
}

/// Appends one episode or an array; all are parsed and validated (on a blocking thread)
/// before any is appended (one group commit, all or nothing).
#[utoipa::path(post, path = "/v1/episodes", tag = "episodes",
    request_body = schema::EpisodesBody,
    responses((status = 200, description = "Every episode appended (or already held)", body = AppendedList)))]
async fn post_episodes(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&api, &headers, body).await?;
    let node = api.service.node.clone();
    let appended = blocking(move || -> ApiResult<Vec<Appended>> {
        let docs = match parse_body(&body)? {
            Value::Array(items) => items,
            Value::Null => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_episode",
                    "empty body",
                ));
            }
            one => vec![one],
        };
        let mut batch = Vec::with_capacity(docs.len());
        for (i, mut doc) in docs.into_iter().enumerate() {
            let with_index =
                |e: ApiError| ApiError { message: format!("episode {i}: {}", e.message), ..e };
            let op_id = take_op_id(&mut doc).map_err(with_index)?;
            let episode = node.prepare_episode(&doc, op_id).map_err(|e| with_index(e.into()))?;
            batch.push((episode, op_id));
        }
        Ok(node.append_episodes(batch)?)
    })
    .await??;
    api.service
        .metrics
        .ops_appended
        .fetch_add(appended.iter().filter(|a| !a.duplicate).count() as u64, Ordering::Relaxed);
    Ok(json_response(StatusCode::OK, &AppendedList { appended: views(&appended) }))
}

/// One live episode.
#[utoipa::path(get, path = "/v1/episodes/{id}", tag = "episodes",
    params(("id" = String, Path, description = "The episode's row id")),
    responses((status = 200, description = "The episode", body = crate::node::EpisodeView),
        (status = 404, description = "No live episode has the id", body = ErrorBody)))]
async fn get_episode(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let shown = id.clone();
    match blocking(move || node.episode(&id)).await?? {
        Some(view) => Ok(json_response(StatusCode::OK, &view)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("episode {shown:?} not found"),
        )),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteParams {
    /// The op's id (32 hex), made by the caller so a retried delete is the same op.
    op_id: Option<String>,
}

/// `DELETE /v1/episodes/{id}[?op_id=HEX]`: a tombstone; with an `op_id`, a retried delete is
/// the same op (answered as a duplicate).
#[utoipa::path(delete, path = "/v1/episodes/{id}", tag = "episodes",
    params(("id" = String, Path, description = "The episode's row id"), DeleteParams),
    responses((status = 200, description = "The tombstone written", body = AppendedView)))]
async fn delete_episode(
    State(api): State<Api>,
    Path(id): Path<String>,
    axum::extract::Query(p): axum::extract::Query<DeleteParams>,
) -> ApiResult<Response> {
    let op_id = p
        .op_id
        .map(|s| OpId::parse(&s))
        .transpose()
        .map_err(|_| read::invalid_query("op_id: must be 32 hex characters"))?;
    let node = api.service.node.clone();
    let done = blocking(move || node.delete_episode(&id, op_id)).await??;
    Ok(json_response(StatusCode::OK, &views(&[done])[0]))
}

/// `PATCH /v1/episodes/{id}`: merges the body's fields into the live episode and writes the
/// result as one whole-row op (last writer wins, as any write). An `op_id` in the body makes
/// a retry idempotent. 404 when no live episode has the id.
#[utoipa::path(patch, path = "/v1/episodes/{id}", tag = "episodes",
    params(("id" = String, Path, description = "The episode's row id")),
    request_body = schema::EpisodePatch,
    responses((status = 200, description = "The op written", body = AppendedView),
        (status = 404, description = "No live episode has the id", body = ErrorBody)))]
async fn patch_episode(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&api, &headers, body).await?;
    let node = api.service.node.clone();
    let shown = id.clone();
    let done = blocking(move || -> ApiResult<Option<Appended>> {
        let mut patch = parse_body(&body)?;
        let op_id = take_op_id(&mut patch)?;
        Ok(node.patch_episode(&id, &patch, op_id)?)
    })
    .await??;
    match done {
        Some(done) => Ok(json_response(StatusCode::OK, &views(&[done])[0])),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("episode {shown:?} not found"),
        )),
    }
}

/// A generic op of any table. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OpInput {
    /// The table (`episodes` only through `/v1/episodes`).
    table: String,
    /// The row.
    row_id: String,
    /// `insert` (the default) or `delete`.
    #[serde(default)]
    #[schema(value_type = Option<schema::OpKindInput>)]
    kind: Option<String>,
    /// Any JSON: stored as its JSON text (a string as its own bytes).
    #[serde(default)]
    data: Value,
    /// The op's id (32 hex), made by the caller so a retry is the same op.
    #[serde(default)]
    op_id: Option<String>,
}

/// One generic op from its JSON input.
fn op_draft(i: usize, item: Value) -> ApiResult<OpDraft> {
    let bad =
        |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_op", format!("op {i}: {m}"));
    let input: OpInput = serde_json::from_value(item).map_err(|e| bad(e.to_string()))?;
    let kind = match input.kind.as_deref() {
        None | Some("insert") => OpKind::Insert,
        Some("delete") => OpKind::Delete,
        Some(other) => return Err(bad(format!("kind {other:?} is not insert or delete"))),
    };
    let data = match input.data {
        Value::Null => Vec::new(),
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let op_id = input.op_id.map(|s| OpId::parse(&s)).transpose().map_err(|e| bad(e.to_string()))?;
    Ok(OpDraft { op_id, table: input.table, row_id: input.row_id, kind, data })
}

/// Generic ops: `{"table","row_id","kind":"insert"|"delete","data": any JSON,"op_id"?}` or an
/// array of them. `data` is stored as its JSON text (a string as its own bytes).
#[utoipa::path(post, path = "/v1/ops", tag = "tables",
    request_body = schema::OpsBody,
    responses((status = 200, description = "Every op appended (or already held)", body = AppendedList)))]
async fn post_ops(State(api): State<Api>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let body = read_body(&api, &headers, body).await?;
    let node = api.service.node.clone();
    let appended = blocking(move || -> ApiResult<Vec<Appended>> {
        let items = match parse_body(&body)? {
            Value::Array(items) => items,
            one => vec![one],
        };
        let drafts = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| op_draft(i, item))
            .collect::<ApiResult<_>>()?;
        Ok(node.append_ops(drafts)?)
    })
    .await??;
    Ok(json_response(StatusCode::OK, &AppendedList { appended: views(&appended) }))
}

/// A revocation statement of the cluster CA (`feral-node certs revoke` makes it): checked
/// against the CA certificates here, written to the log so it travels to every peer, and taken
/// at once. Answers the op written and whether the node was newly revoked here.
#[utoipa::path(post, path = "/v1/revocations", tag = "operations",
    request_body = crate::revocation::Statement,
    responses((status = 200, description = "The revocation taken", body = schema::RevocationTaken)))]
async fn post_revocations(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&api, &headers, body).await?;
    let statement: crate::revocation::Statement = serde_json::from_value(parse_body(&body)?)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_revocation", e.to_string()))?;
    let node = api.service.node.clone();
    let (appended, newly) = blocking(move || node.revoke(&statement)).await??;
    let view = views(std::slice::from_ref(&appended)).pop();
    Ok(json_response(
        StatusCode::OK,
        &schema::RevocationTaken { appended: view, newly_revoked: newly },
    ))
}

/// Resolves the conflict quarantined for an origin by keeping this node's branch (what
/// `feral-node conflicts resolve ORIGIN` does; it goes through here while a node runs).
/// Answers the conflict, now with `resolved_at_ms`; 404 `not_found` when none is held for it.
#[utoipa::path(post, path = "/v1/conflicts/{origin}/resolve", tag = "operations",
    params(("origin" = String, Path, description = "The quarantined origin (32 hex)")),
    responses((status = 200, description = "The conflict, resolved", body = crate::quarantine::Conflict),
        (status = 404, description = "No conflict is quarantined for the origin", body = ErrorBody)))]
async fn resolve_conflict(
    State(api): State<Api>,
    Path(origin): Path<String>,
) -> ApiResult<Response> {
    let parsed = feral_log::Origin::parse(&origin)
        .map_err(|_| invalid_request(format!("{origin:?} is not an origin (32 hex characters)")))?;
    let node = api.service.node.clone();
    let resolved = blocking(move || node.resolve_conflict(&parsed)).await??;
    let resolved = resolved.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no conflict is quarantined for origin {origin}"),
        )
    })?;
    Ok(json_response(StatusCode::OK, &resolved))
}

/// The node's status: its log, pause, damage, refusal counters, projection, certificate,
/// sync endpoint and each peer's schedule.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, description = "The status", body = schema::StatusView)))]
async fn status(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let status = blocking(move || node.status()).await?;
    let view = schema::StatusView {
        node: status,
        sync_addr: api.service.local_addr().to_string(),
        peers: api.service.schedule(),
    };
    Ok(json_response(StatusCode::OK, &view))
}

/// The check's report as found; when it found damage in a part derived from the log (the log
/// itself intact), the node rebuilds that part and adds `repair`: what it rebuilt and the
/// check after.
#[utoipa::path(get, path = "/v1/check", tag = "operations",
    responses((status = 200, description = "The report (damage is `ok: false`, not an error status)", body = schema::CheckView)))]
async fn check(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let (found, repair) = blocking(move || node.check_and_repair()).await?;
    Ok(json_response(StatusCode::OK, &schema::CheckView { found, repair }))
}

/// Verifies the store again and takes writes once it checks out; answers the check.
#[utoipa::path(post, path = "/v1/resume", tag = "operations",
    responses((status = 200, description = "The check the resume made (`ok: false` while still faulted)", body = crate::report::CheckReport)))]
async fn resume(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let report = blocking(move || node.resume()).await?;
    Ok(json_response(StatusCode::OK, &report))
}

/// An online backup into `to`, an absolute path to an absent or empty directory outside the
/// data directory: the node keeps serving while it is taken (see `Node::backup`). Answers the
/// manifest.
#[utoipa::path(post, path = "/v1/backup", tag = "operations",
    request_body = schema::BackupRequest,
    responses((status = 200, description = "The backup's manifest", body = crate::backup::Manifest)))]
async fn backup(State(api): State<Api>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let body = read_body(&api, &headers, body).await?;
    let request: schema::BackupRequest = serde_json::from_value(parse_body(&body)?)
        .map_err(|e| invalid_request(format!("body must be {{\"to\":\"/absolute/path\"}}: {e}")))?;
    let to = std::path::PathBuf::from(request.to);
    let node = api.service.node.clone();
    if !to.is_absolute() {
        return Err(invalid_request(format!("{} is not an absolute path", to.display())));
    }
    if to.starts_with(node.dir()) || node.dir().starts_with(&to) {
        return Err(invalid_request(format!(
            "{} overlaps the data directory {}",
            to.display(),
            node.dir().display()
        )));
    }
    if to.read_dir().is_ok_and(|mut d| d.next().is_some()) || (to.exists() && !to.is_dir()) {
        return Err(invalid_request(format!(
            "{} exists and is not an empty directory",
            to.display()
        )));
    }
    let manifest = blocking(move || node.backup(&to)).await??;
    Ok(json_response(StatusCode::OK, &manifest))
}

/// Takes the certificate now in the data directory (`node.pem` and `ca.pem`, as `certs renew`
/// or `certs install` wrote them) without a restart: checked (for this node's key, chained to
/// its CA, of the same cluster), then presented by every session from now on.
#[utoipa::path(post, path = "/v1/certs/reload", tag = "operations",
    responses((status = 200, description = "The certificate now presented", body = schema::Reloaded)))]
async fn reload_certificate(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let creds = blocking(move || -> Result<_, ApiError> {
        let read = |name: &str| {
            let path = node.dir().join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| invalid_request(format!("{}: {e}", path.display())))
        };
        let (cert, ca) = (
            read(feral_transport::tls::NODE_CERT_FILE)?,
            read(feral_transport::tls::CA_CERT_FILE)?,
        );
        feral_transport::tls::Credentials::from_pem(&cert, node.key(), &ca)
            .map_err(|e| invalid_request(format!("the certificate in the data directory: {e}")))
    })
    .await??;
    api.service
        .renew(&creds)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_certificate", e.to_string()))?;
    let node = api.service.node.clone();
    let status = blocking(move || node.status()).await?;
    Ok(json_response(
        StatusCode::OK,
        &schema::Reloaded { reloaded: true, certificate: status.certificate },
    ))
}

/// Recreates the index, the projection and the search index from the log while the node
/// runs: appends wait while the index is rebuilt, reads and the projection's applier while
/// the projection is (the node keeps its connections and its sessions).
#[utoipa::path(post, path = "/v1/rebuild", tag = "operations",
    responses((status = 200, description = "What was rebuilt", body = schema::Rebuilt)))]
async fn rebuild(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let (indexed, projected) = blocking(move || node.rebuild()).await??;
    Ok(json_response(
        StatusCode::OK,
        &schema::Rebuilt { ops_indexed_through_lsn: indexed, ops_projected: projected },
    ))
}

/// Liveness: answers while the process serves, without a token and without any data.
#[utoipa::path(get, path = "/v1/health", tag = "operations", security(()),
    responses((status = 200, description = "The node serves", body = schema::Health)))]
async fn health() -> Response {
    json_response(StatusCode::OK, &schema::Health { status: "ok".into() })
}

fn invalid_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// The peer named in a sync request, resolved without blocking a worker and within a timeout.
async fn resolve_peer(text: &str) -> ApiResult<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let lookup = tokio::time::timeout(API_PEER_LOOKUP_TIMEOUT, tokio::net::lookup_host(text));
    match lookup.await {
        Err(_) => Err(invalid_request(format!(
            "resolving {text:?} took longer than {} s",
            API_PEER_LOOKUP_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(invalid_request(format!("{text:?} is not host:port: {e}"))),
        Ok(Ok(mut addrs)) => {
            addrs.next().ok_or_else(|| invalid_request(format!("{text:?} resolves to no address")))
        }
    }
}

/// `{"peer":"host:port"}` syncs with that peer now; an empty body syncs with every known peer.
/// Answers one result per peer (a failed session is `success: false` with its code).
#[utoipa::path(post, path = "/v1/sync", tag = "sync",
    request_body(content = Option<schema::SyncRequest>, description = "A peer, or no body for every known peer"),
    responses((status = 200, description = "One result per peer", body = Vec<feral_transport::peer::SyncResult>)))]
async fn sync(State(api): State<Api>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let body = read_body(&api, &headers, body).await?;
    let peers: Vec<SocketAddr> = match parse_body(&body)? {
        Value::Null => api.service.peers().iter().map(|p| p.addr).collect(),
        value => {
            let request: schema::SyncRequest = serde_json::from_value(value).map_err(|e| {
                invalid_request(format!("body must be {{\"peer\":\"host:port\"}} or empty: {e}"))
            })?;
            vec![resolve_peer(&request.peer).await?]
        }
    };
    let mut results = Vec::with_capacity(peers.len());
    for peer in peers {
        let result = api.service.sync_now(peer).await.map_err(|e| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_peers", e.to_string())
        })?;
        results.push(result);
    }
    Ok(json_response(StatusCode::OK, &results))
}

/// Known peers, each with `revoked` (true when the cluster CA revoked its node id: its
/// handshakes are refused) and `sync`: its schedule and what the last session found (null
/// before the schedule has seen it).
#[utoipa::path(get, path = "/v1/peers", tag = "sync",
    responses((status = 200, description = "The known peers", body = Vec<schema::PeerView>)))]
async fn peers(State(api): State<Api>) -> ApiResult<Response> {
    let revoked: std::collections::HashSet<String> =
        api.service.node.revoked().into_iter().map(|r| r.node_id).collect();
    let mut schedule: std::collections::HashMap<SocketAddr, _> =
        api.service.schedule().into_iter().map(|s| (s.addr, s)).collect();
    let list: Vec<schema::PeerView> = api
        .service
        .peers()
        .into_iter()
        .map(|peer| schema::PeerView {
            revoked: peer.node_id.as_ref().is_some_and(|id| revoked.contains(id)),
            sync: schedule.remove(&peer.addr),
            peer,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &list))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Rewrites an error the framework answered itself (a bad query string, 405, an extractor's
/// refusal) into the JSON error shape with a stable code.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_query",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let body = http_body_util::Limited::new(response.into_body(), API_ERROR_BODY_BYTES_MAX);
    let text = match body.collect().await {
        Ok(bytes) => String::from_utf8_lossy(&bytes.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

/// The routers of the two listeners: TCP (token required but for the health check) and the
/// Unix socket (none). They share one cap on requests in flight.
pub fn routers(service: Arc<Service>, config: &ApiConfig, token: String) -> (Router, Router) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(config.requests_in_flight_max));
    let api = Api {
        service,
        body_bytes_max: config.body_bytes_max,
        subscribers: changes::subscribers(),
        exports: export::exports(),
    };
    let guard = |token: Option<Arc<str>>| {
        Arc::new(guard::Guard {
            hosts: config.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            origins: config.origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
            token,
            in_flight: in_flight.clone(),
        })
    };
    let tcp = router(api.clone(), guard(Some(Arc::from(token))));
    let unix = router(api, guard(None));
    (tcp, unix)
}

/// Every route with its OpenAPI operation, declared once: `routes!` registers a handler and
/// its `#[utoipa::path]` together, so the description cannot leave a route out.
fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(schema::Doc::openapi())
        .routes(routes!(health))
        .routes(routes!(post_episodes, read::list_episodes))
        .routes(routes!(get_episode, delete_episode, patch_episode))
        .routes(routes!(read::episode_history))
        .routes(routes!(read::counts))
        .routes(routes!(read::search))
        .routes(routes!(read::tables))
        .routes(routes!(read::table_rows))
        .routes(routes!(read::table_row))
        .routes(routes!(read::row_history))
        .routes(routes!(post_ops))
        .routes(routes!(changes::changes))
        .routes(routes!(export::export))
        .routes(routes!(status))
        .routes(routes!(check))
        .routes(routes!(resume))
        .routes(routes!(backup))
        .routes(routes!(rebuild))
        .routes(routes!(post_revocations))
        .routes(routes!(resolve_conflict))
        .routes(routes!(reload_certificate))
        .routes(routes!(sync))
        .routes(routes!(peers))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 description of this API, made from the routes and their answer types:
/// what `GET /v1/openapi.json` serves and docs/openapi.json holds.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    schema::finish(&mut doc);
    doc
}

/// This API's OpenAPI 3.1 description (docs/openapi.json is a copy, checked in CI).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description", body = Object)))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOC.get_or_init(|| openapi().to_pretty_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

fn router(api: Api, guard: Arc<guard::Guard>) -> Router {
    let (routes, _) = routes().split_for_parts();
    routes
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(guard, guard::check))
        .layer(middleware::from_fn(json_errors))
        .with_state(api)
}

/// The data directory's API token: read, or created (random, 0600) on first use.
pub fn token_for(data_dir: &std::path::Path) -> Result<String, Error> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    let mut bytes = [0u8; 32];
    feral_log::op::random_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    feral_log::private::write_atomic(&path, token.as_bytes()).map_err(|e| Error::io(&path, e))?;
    Ok(token)
}

/// Binds the Unix socket at `path` (a stale one left by a crash is replaced: the data
/// directory's lock says no node serves it) and makes it 0600.
pub fn bind_socket(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    feral_log::private::restrict(path)?;
    Ok(listener)
}
