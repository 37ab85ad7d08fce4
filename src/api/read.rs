//! The read endpoints beyond one episode: full-text search (`GET /v1/search`). Every query
//! parameter is known or refused (400 `invalid_query` naming it), every limit has a maximum
//! that is refused past, never capped, and pages are reached by an opaque `cursor` given back
//! as `next_cursor`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use feral_materializer::limits::LIST_LIMIT_MAX;
use feral_materializer::{ListQuery, SearchQuery};
use serde::Deserialize;

use super::schema::{Count, EpisodesPage, ErrorBody, HistoryPage, RowsPage, SearchPage, Tables};
use super::{Api, ApiError, ApiResult, blocking, json_response};

/// Episodes per page unless `limit` says otherwise.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// Hits per search page unless `limit` says otherwise.
pub const SEARCH_LIMIT_DEFAULT: usize = 10;
/// Half life of the recency boost unless `half_life_days` says otherwise.
pub const HALF_LIFE_DAYS_DEFAULT: f64 = 30.0;

/// A place among the bounded few of one kind of long request (a stream held open), or 503
/// `busy` with `why` (which names the bound): never a queue of waiting requests.
pub(crate) fn place(
    places: &std::sync::Arc<tokio::sync::Semaphore>,
    why: impl FnOnce() -> String,
) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
    places
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", why()))
}

pub(crate) fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// A page's position, bound to the query it pages through: hex of `<kind>:<position>:<query
/// hash>`. Opaque to clients; a cursor of another query, or a damaged one, is refused.
pub(crate) struct Cursor;

impl Cursor {
    pub(crate) fn encode(kind: &str, position: &str, query: &str) -> String {
        let text = format!("{kind}:{position}:{:016x}", fnv(query));
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// The position written into `cursor`, if it is a cursor of `kind` for `query`.
    pub(crate) fn decode(cursor: &str, kind: &str, query: &str) -> ApiResult<String> {
        let bad = || invalid_query(format!("cursor {cursor:?} is not a cursor of this {kind}"));
        if !cursor.len().is_multiple_of(2) || cursor.len() > 512 {
            return Err(bad());
        }
        let bytes: Option<Vec<u8>> = (0..cursor.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
            .collect();
        let text = bytes.and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
        let mut parts = text.splitn(3, ':');
        let (k, position, hash) = (parts.next(), parts.next(), parts.next());
        match (k, position, hash) {
            (Some(k), Some(p), Some(h)) if k == kind && h == format!("{:016x}", fnv(query)) => {
                Ok(p.to_string())
            }
            (Some(k), Some(_), Some(_)) if k == kind => Err(invalid_query(format!(
                "cursor {cursor:?} belongs to another query (a cursor pages the query that gave it)"
            ))),
            _ => Err(bad()),
        }
    }
}

/// Binds a cursor to its query (not a secret: a cursor is no credential).
fn fnv(text: &str) -> u64 {
    feral_materializer::projection::fnv1a(text.bytes())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// The words to find (BM25 over summary and detail).
    q: String,
    /// Only this session's episodes.
    session: Option<String>,
    /// Only this event type.
    event_type: Option<String>,
    /// Only episodes this participant took part in.
    participant: Option<String>,
    /// Only episodes created at or after (unix seconds).
    since: Option<f64>,
    /// Only episodes created before (unix seconds).
    until: Option<f64>,
    /// Only episodes at least this important.
    min_importance: Option<f64>,
    /// Weight of importance in the score (0 by default: off).
    boost_importance: Option<f64>,
    /// Weight of recency in the score (0 by default: off).
    boost_recency: Option<f64>,
    /// Half life of the recency boost in days (30 by default).
    half_life_days: Option<f64>,
    /// Hits per page (10 by default).
    limit: Option<usize>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

impl SearchParams {
    /// What a cursor is bound to: every parameter but the cursor and the page size.
    fn fingerprint(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.q,
            self.session,
            self.event_type,
            self.participant,
            self.since,
            self.until,
            self.min_importance,
            self.boost_importance,
            self.boost_recency,
            self.half_life_days
        )
    }
}

/// `GET /v1/search?q=…`: episodes ranked by BM25 over summary and detail, with filters,
/// optional boosts, each hit's score and its parts, and `next_cursor` while more follow.
#[utoipa::path(get, path = "/v1/search", tag = "episodes", params(SearchParams),
    responses((status = 200, description = "A page of hits, best first", body = super::schema::SearchPage)))]
pub(crate) async fn search(
    State(api): State<Api>,
    Query(params): Query<SearchParams>,
) -> ApiResult<Response> {
    let fingerprint = params.fingerprint();
    let offset = match &params.cursor {
        None => 0,
        Some(c) => Cursor::decode(c, "search", &fingerprint)?
            .parse::<usize>()
            .map_err(|_| invalid_query(format!("cursor {c:?} is damaged")))?,
    };
    let limit = params.limit.unwrap_or(SEARCH_LIMIT_DEFAULT);
    let node = api.service.node.clone();
    let query = SearchQuery {
        text: params.q,
        session: params.session,
        event_type: params.event_type,
        participant: params.participant,
        since: params.since,
        until: params.until,
        min_importance: params.min_importance,
        boost_importance: params.boost_importance.unwrap_or(0.0),
        boost_recency: params.boost_recency.unwrap_or(0.0),
        half_life_days: params.half_life_days.unwrap_or(HALF_LIFE_DAYS_DEFAULT),
        now_s: node.now_ms() as f64 / 1000.0,
        limit,
        offset,
    };
    let (hits, more) = blocking(move || node.search(&query)).await??;
    let next = (offset + hits.len()).to_string();
    let next_cursor = more.then(|| Cursor::encode("search", &next, &fingerprint));
    Ok(json_response(StatusCode::OK, &SearchPage { hits, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Episodes per page (50 by default, at most 1,000).
    limit: Option<usize>,
    /// Only this session's episodes.
    session: Option<String>,
    /// Only this event type.
    event_type: Option<String>,
    /// Only episodes created at or after (unix seconds).
    since: Option<f64>,
    /// Only episodes created before (unix seconds).
    until: Option<f64>,
    /// Only episodes at least this important.
    min_importance: Option<f64>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// `GET /v1/episodes`: live episodes, newest `created_at` first, with filters; pages by
/// `cursor` (`next_cursor` while more follow).
#[utoipa::path(get, path = "/v1/episodes", tag = "episodes", params(ListParams),
    responses((status = 200, description = "A page of episodes", body = super::schema::EpisodesPage)))]
pub(crate) async fn list_episodes(
    State(api): State<Api>,
    Query(p): Query<ListParams>,
) -> ApiResult<Response> {
    let limit = p.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(invalid_query(format!(
            "limit {limit} is not within 1..={LIST_LIMIT_MAX} (page with cursor for more)"
        )));
    }
    let fingerprint = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        p.session, p.event_type, p.since, p.until, p.min_importance
    );
    let after = match &p.cursor {
        None => None,
        Some(c) => {
            let position = Cursor::decode(c, "episodes", &fingerprint)?;
            let damaged = || invalid_query(format!("cursor {c:?} is damaged"));
            let (created, writer) = position.split_once('.').ok_or_else(damaged)?;
            Some((
                u64::from_str_radix(created, 16).map_err(|_| damaged())?,
                u128::from_str_radix(writer, 16).map_err(|_| damaged())?,
            ))
        }
    };
    let query = ListQuery {
        session: p.session,
        event_type: p.event_type,
        since: p.since,
        until: p.until,
        min_importance: p.min_importance,
        limit,
        after,
    };
    let node = api.service.node.clone();
    let (episodes, next) = blocking(move || node.episodes_page(&query)).await??;
    let next_cursor = next.map(|(created, writer)| {
        Cursor::encode("episodes", &format!("{created:x}.{writer:x}"), &fingerprint)
    });
    Ok(json_response(StatusCode::OK, &EpisodesPage { episodes, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CountParams {
    /// Count only this session's episodes.
    session: Option<String>,
}

/// `GET /v1/counts[?session=S]`: live episodes, overall or of one session.
#[utoipa::path(get, path = "/v1/counts", tag = "episodes", params(CountParams),
    responses((status = 200, description = "The count", body = Count)))]
pub(crate) async fn counts(
    State(api): State<Api>,
    Query(p): Query<CountParams>,
) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let session = p.session.clone();
    let n = blocking(move || node.episode_count(session.as_deref())).await??;
    Ok(json_response(StatusCode::OK, &Count { episodes: n, session: p.session }))
}

/// Rows per page of a table unless `limit` says otherwise.
pub const ROWS_LIMIT_DEFAULT: usize = 100;
/// Ops per page of a row's history unless `limit` says otherwise, and at most.
pub const HISTORY_LIMIT_DEFAULT: usize = 100;
/// Largest `limit` of a row's history.
pub const HISTORY_LIMIT_MAX: usize = 1_000;

fn limit_within(limit: Option<usize>, default: usize, max: usize) -> ApiResult<usize> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(invalid_query(format!("limit {limit} is not within 1..={max}")));
    }
    Ok(limit)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Items per page (100 by default; rows at most 1,000, history at most 1,000).
    limit: Option<usize>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// `GET /v1/tables`: every table with its live rows.
#[utoipa::path(get, path = "/v1/tables", tag = "tables",
    responses((status = 200, description = "The tables", body = Tables)))]
pub(crate) async fn tables(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let tables = blocking(move || node.tables()).await??;
    Ok(json_response(StatusCode::OK, &Tables { tables }))
}

/// `GET /v1/tables/{table}/rows`: live rows in row id order, paged by cursor.
#[utoipa::path(get, path = "/v1/tables/{table}/rows", tag = "tables",
    params(("table" = String, Path, description = "The table (not `episodes`)"), PageParams),
    responses((status = 200, description = "A page of rows", body = RowsPage)))]
pub(crate) async fn table_rows(
    State(api): State<Api>,
    axum::extract::Path(table): axum::extract::Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Response> {
    if table == feral_materializer::TABLE {
        return Err(invalid_query(
            "episodes are listed by GET /v1/episodes (newest first, with filters and a cursor)",
        ));
    }
    let limit = limit_within(p.limit, ROWS_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let after = p.cursor.as_deref().map(|c| Cursor::decode(c, "rows", &table)).transpose()?;
    let node = api.service.node.clone();
    let name = table.clone();
    let (rows, next) = blocking(move || node.rows(&name, after.as_deref(), limit)).await??;
    let next_cursor = next.map(|id| Cursor::encode("rows", &id, &table));
    Ok(json_response(StatusCode::OK, &RowsPage { rows, next_cursor }))
}

/// `GET /v1/tables/{table}/rows/{row_id}`: one live row, or 404.
#[utoipa::path(get, path = "/v1/tables/{table}/rows/{row_id}", tag = "tables",
    params(("table" = String, Path, description = "The table"),
        ("row_id" = String, Path, description = "The row")),
    responses((status = 200, description = "The row", body = crate::rows::RowView),
        (status = 404, description = "No live row has the id", body = ErrorBody)))]
pub(crate) async fn table_row(
    State(api): State<Api>,
    axum::extract::Path((table, row_id)): axum::extract::Path<(String, String)>,
) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let (t, r) = (table.clone(), row_id.clone());
    match blocking(move || node.row(&t, &r)).await?? {
        Some(row) => Ok(json_response(StatusCode::OK, &row)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no live row {row_id:?} in table {table:?}"),
        )),
    }
}

async fn history_of(api: Api, table: String, row_id: String, p: PageParams) -> ApiResult<Response> {
    let limit = limit_within(p.limit, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?;
    let bound = format!("{table}\u{0}{row_id}");
    let after = match &p.cursor {
        None => 0,
        Some(c) => Cursor::decode(c, "history", &bound)?
            .parse::<u64>()
            .map_err(|_| invalid_query(format!("cursor {c:?} is damaged")))?,
    };
    let node = api.service.node.clone();
    let (ops, next) = blocking(move || node.history(&table, &row_id, after, limit)).await??;
    let next_cursor = next.map(|lsn| Cursor::encode("history", &lsn.to_string(), &bound));
    Ok(json_response(StatusCode::OK, &HistoryPage { ops, next_cursor }))
}

/// `GET /v1/tables/{table}/rows/{row_id}/history`: every op that touched the row.
#[utoipa::path(get, path = "/v1/tables/{table}/rows/{row_id}/history", tag = "tables",
    params(("table" = String, Path, description = "The table"),
        ("row_id" = String, Path, description = "The row"), PageParams),
    responses((status = 200, description = "A page of the row's ops, oldest first", body = HistoryPage)))]
pub(crate) async fn row_history(
    State(api): State<Api>,
    axum::extract::Path((table, row_id)): axum::extract::Path<(String, String)>,
    Query(p): Query<PageParams>,
) -> ApiResult<Response> {
    history_of(api, table, row_id, p).await
}

/// `GET /v1/episodes/{id}/history`: every op that touched the episode.
#[utoipa::path(get, path = "/v1/episodes/{id}/history", tag = "episodes",
    params(("id" = String, Path, description = "The episode's row id"), PageParams),
    responses((status = 200, description = "A page of the episode's ops, oldest first", body = HistoryPage)))]
pub(crate) async fn episode_history(
    State(api): State<Api>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Response> {
    history_of(api, feral_materializer::TABLE.to_string(), id, p).await
}
