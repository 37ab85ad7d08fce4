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
use serde_json::json;

use super::{Api, ApiError, ApiResult, blocking, json_response};

/// Episodes per page unless `limit` says otherwise.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// Hits per search page unless `limit` says otherwise.
pub const SEARCH_LIMIT_DEFAULT: usize = 10;
/// Half life of the recency boost unless `half_life_days` says otherwise.
pub const HALF_LIFE_DAYS_DEFAULT: f64 = 30.0;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    q: String,
    session: Option<String>,
    event_type: Option<String>,
    participant: Option<String>,
    since: Option<f64>,
    until: Option<f64>,
    min_importance: Option<f64>,
    boost_importance: Option<f64>,
    boost_recency: Option<f64>,
    half_life_days: Option<f64>,
    limit: Option<usize>,
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
    Ok(json_response(StatusCode::OK, &json!({"hits": hits, "next_cursor": next_cursor})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    limit: Option<usize>,
    session: Option<String>,
    event_type: Option<String>,
    since: Option<f64>,
    until: Option<f64>,
    min_importance: Option<f64>,
    cursor: Option<String>,
}

/// `GET /v1/episodes`: live episodes, newest `created_at` first, with filters; pages by
/// `cursor` (`next_cursor` while more follow).
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
    Ok(json_response(StatusCode::OK, &json!({"episodes": episodes, "next_cursor": next_cursor})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CountParams {
    session: Option<String>,
}

/// `GET /v1/counts[?session=S]`: live episodes, overall or of one session.
pub(crate) async fn counts(
    State(api): State<Api>,
    Query(p): Query<CountParams>,
) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let session = p.session.clone();
    let n = blocking(move || node.episode_count(session.as_deref())).await??;
    Ok(json_response(StatusCode::OK, &json!({"episodes": n, "session": p.session})))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/tables`: every table with its live rows.
pub(crate) async fn tables(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let tables = blocking(move || node.tables()).await??;
    Ok(json_response(StatusCode::OK, &json!({"tables": tables})))
}

/// `GET /v1/tables/{table}/rows`: live rows in row id order, paged by cursor.
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
    Ok(json_response(StatusCode::OK, &json!({"rows": rows, "next_cursor": next_cursor})))
}

/// `GET /v1/tables/{table}/rows/{row_id}`: one live row, or 404.
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
    Ok(json_response(StatusCode::OK, &json!({"ops": ops, "next_cursor": next_cursor})))
}

/// `GET /v1/tables/{table}/rows/{row_id}/history`: every op that touched the row.
pub(crate) async fn row_history(
    State(api): State<Api>,
    axum::extract::Path((table, row_id)): axum::extract::Path<(String, String)>,
    Query(p): Query<PageParams>,
) -> ApiResult<Response> {
    history_of(api, table, row_id, p).await
}

/// `GET /v1/episodes/{id}/history`: every op that touched the episode.
pub(crate) async fn episode_history(
    State(api): State<Api>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Response> {
    history_of(api, feral_materializer::TABLE.to_string(), id, p).await
}
