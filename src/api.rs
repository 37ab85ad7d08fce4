//! The HTTP API (JSON in and out) the assistant calls from any language: episodes, generic
//! ops, status, check, resume, sync, peers, and Prometheus `/metrics`. Loopback by default; a
//! bearer token (generated into the data directory) is required when bound anywhere else.
//! Errors are `{"error": code, "message": text}` with a stable code; a full disk is 507.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use feral_log::{Appended, OpDraft, OpId, OpKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;
use crate::service::Service;

/// The token file in a data directory.
pub const TOKEN_FILE: &str = "api.token";
/// Largest request body.
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Clone)]
struct Api {
    service: Arc<Service>,
    token: Option<Arc<str>>,
}

/// An API error: status and `{"error", "message"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.into(), message: message.into() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = e.code();
        let status = match code {
            "disk_full" => StatusCode::INSUFFICIENT_STORAGE,
            "invalid_episode" | "invalid_op" => StatusCode::BAD_REQUEST,
            "op_id_conflict" | "split_brain" => StatusCode::CONFLICT,
            "io_paused" | "episodes_unavailable" | "locked" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.code, "message": self.message})))
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

fn parse_body(body: &Bytes) -> ApiResult<Value> {
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

#[derive(Serialize)]
struct AppendedView {
    op_id: String,
    hlc: String,
    duplicate: bool,
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

/// One episode or an array; all are validated before any is appended (one group commit).
async fn post_episodes(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let docs = match parse_body(&body)? {
        Value::Array(items) => items,
        Value::Null => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_episode", "empty body"));
        }
        one => vec![one],
    };
    let node = api.service.node.clone();
    let appended = blocking(move || -> ApiResult<Vec<Appended>> {
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
    Ok(json_response(StatusCode::OK, &json!({"appended": views(&appended)})))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    session: Option<String>,
}

async fn list_episodes(State(api): State<Api>, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let list =
        blocking(move || node.episodes(q.limit.unwrap_or(50), q.session.as_deref())).await??;
    Ok(json_response(StatusCode::OK, &list))
}

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

async fn delete_episode(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let done = blocking(move || node.delete_episode(&id, None)).await??;
    Ok(json_response(StatusCode::OK, &views(&[done])[0]))
}

#[derive(Deserialize)]
struct OpInput {
    table: String,
    row_id: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    op_id: Option<String>,
}

/// Generic ops: `{"table","row_id","kind":"insert"|"delete","data": any JSON,"op_id"?}` or an
/// array of them. `data` is stored as its JSON text (a string as its own bytes).
async fn post_ops(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let items = match parse_body(&body)? {
        Value::Array(items) => items,
        one => vec![one],
    };
    let mut drafts = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let bad = |m: String| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_op", format!("op {i}: {m}"))
        };
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
        let op_id =
            input.op_id.map(|s| OpId::parse(&s)).transpose().map_err(|e| bad(e.to_string()))?;
        drafts.push(OpDraft { op_id, table: input.table, row_id: input.row_id, kind, data });
    }
    let node = api.service.node.clone();
    let appended = blocking(move || node.append_ops(drafts)).await??;
    Ok(json_response(StatusCode::OK, &json!({"appended": views(&appended)})))
}

async fn status(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let status = blocking(move || node.status()).await?;
    let mut value = serde_json::to_value(&status).unwrap_or(Value::Null);
    value["sync_addr"] = json!(api.service.local_addr().to_string());
    value["peers"] = serde_json::to_value(api.service.schedule()).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::OK, &value))
}

async fn check(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let report = blocking(move || node.check()).await?;
    Ok(json_response(StatusCode::OK, &report))
}

async fn resume(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let report = blocking(move || node.resume()).await?;
    Ok(json_response(StatusCode::OK, &report))
}

/// `{"peer":"host:port"}` syncs with that peer now; an empty body syncs with every known peer.
async fn sync(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let peers: Vec<SocketAddr> = match parse_body(&body)? {
        Value::Null => api.service.peers().iter().map(|p| p.addr).collect(),
        value => {
            let text = value.get("peer").and_then(Value::as_str).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "body must be {\"peer\":\"host:port\"} or empty",
                )
            })?;
            let addrs = feral_transport::discovery::parse_static_peers(text);
            let addr = addrs.first().copied().ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("{text:?} is not host:port"),
                )
            })?;
            vec![addr]
        }
    };
    let mut results = Vec::with_capacity(peers.len());
    for peer in peers {
        results.push(api.service.sync_now(peer).await);
    }
    Ok(json_response(StatusCode::OK, &results))
}

async fn peers(State(api): State<Api>) -> ApiResult<Response> {
    Ok(json_response(StatusCode::OK, &api.service.peers()))
}

async fn metrics(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let status = blocking(move || node.status()).await?;
    let m = &api.service.metrics;
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP feral_{name} {help}\n# TYPE feral_{name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("feral_{name}{labels} {v}\n"));
        }
    };
    line(
        "ops_appended_total",
        "counter",
        "Ops appended through the API.",
        vec![(String::new(), m.ops_appended.load(Ordering::Relaxed))],
    );
    line(
        "ops_applied",
        "gauge",
        "Ops applied to the episodes projection.",
        vec![(String::new(), status.projection.applied_lsn)],
    );
    line(
        "ops_received_total",
        "counter",
        "Ops received by sync sessions this node started.",
        vec![(String::new(), m.ops_received.load(Ordering::Relaxed))],
    );
    line(
        "runtime_alive_tasks",
        "gauge",
        "Tasks alive in the node's async runtime (a leak shows as growth).",
        vec![(String::new(), tokio::runtime::Handle::current().metrics().num_alive_tasks() as u64)],
    );
    let sessions = m.sessions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    line(
        "sync_sessions_total",
        "counter",
        "Sync sessions this node started, by result.",
        sessions.into_iter().map(|(k, v)| (format!("{{result=\"{k}\"}}"), v)).collect(),
    );
    line(
        "sync_bytes_sent_total",
        "counter",
        "Sync stream bytes sent.",
        vec![(String::new(), m.bytes_sent.load(Ordering::Relaxed))],
    );
    line(
        "sync_bytes_received_total",
        "counter",
        "Sync stream bytes received.",
        vec![(String::new(), m.bytes_received.load(Ordering::Relaxed))],
    );
    let lag = api
        .service
        .schedule()
        .into_iter()
        .map(|p| (format!("{{peer=\"{}\"}}", p.addr), p.last_sync_secs_ago.unwrap_or(u64::MAX)))
        .collect();
    line(
        "peer_seconds_since_sync",
        "gauge",
        "Seconds since the last successful sync per peer.",
        lag,
    );
    line(
        "io_paused",
        "gauge",
        "1 while writes are refused.",
        vec![(String::new(), u64::from(status.io_paused))],
    );
    line(
        "drift_refusals_total",
        "counter",
        "Remote clocks refused for drift.",
        vec![(String::new(), status.drift_refusals)],
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

async fn require_token(
    State(api): State<Api>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &api.token {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(&format!("Bearer {token}")) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required off loopback",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The router; `token` is required on every request when set.
pub fn router(service: Arc<Service>, token: Option<String>) -> Router {
    let api = Api { service, token: token.map(Arc::from) };
    Router::new()
        .route("/v1/episodes", post(post_episodes).get(list_episodes))
        .route("/v1/episodes/{id}", get(get_episode).delete(delete_episode))
        .route("/v1/ops", post(post_ops))
        .route("/v1/status", get(status))
        .route("/v1/check", get(check))
        .route("/v1/resume", post(resume))
        .route("/v1/sync", post(sync))
        .route("/v1/peers", get(peers))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(api.clone(), require_token))
        .with_state(api)
}

/// The token for a non-loopback bind: read from the data directory, created (random, 0600)
/// on first use. None on loopback.
pub fn token_for(bind: SocketAddr, data_dir: &std::path::Path) -> Result<Option<String>, Error> {
    if bind.ip().is_loopback() {
        return Ok(None);
    }
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(Some(token.trim().to_string()));
    }
    let mut bytes = [0u8; 24];
    feral_log::op::random_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(|e| Error::io(&path, e))?;
    Ok(Some(token))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
