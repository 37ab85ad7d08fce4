//! `GET /v1/changes`: the change feed (SPEC 10), every op this node's log holds in local log
//! order, from a cursor. As newline-delimited JSON (one change per line, then
//! `{"next_cursor", "more"}`), with a long poll (`wait=SECONDS`) when nothing is there yet; or
//! as server-sent events (`Accept: text/event-stream`), one event per change whose id is its
//! cursor, so a client that reconnects with `Last-Event-ID` resumes exactly.
//!
//! Memory per follower is one page: changes are read from the log when the follower's stream
//! is polled, so a follower that stops reading stops costing reads and never slows writes; the
//! API's idle timeout closes its connection, and it resumes from its last cursor. Followers at
//! once are capped ([`CHANGES_SUBSCRIBERS_MAX`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::read::invalid_query;
use super::schema::{ErrorBody, FeedEnd};
use super::{Api, ApiResult, blocking};
use crate::changes::{ChangeCursor, ChangeView};
use crate::limits::{
    CHANGES_HEARTBEAT, CHANGES_LIMIT_DEFAULT, CHANGES_LIMIT_MAX, CHANGES_SUBSCRIBERS_MAX,
    CHANGES_WAIT_MAX,
};
use crate::node::Node;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChangesParams {
    /// Where to start: a cursor (`next_cursor`, a change's `cursor`), `0` for the start of the
    /// log, or `now` for only what comes next. The start by default.
    since: Option<String>,
    /// Only these tables (comma-separated, at most 16).
    table: Option<String>,
    /// Changes per page (newline-delimited JSON).
    limit: Option<usize>,
    /// Seconds to wait for a change when there is none yet (newline-delimited JSON only).
    wait: Option<f64>,
}

/// The feed's followers at once.
pub(crate) fn subscribers() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(CHANGES_SUBSCRIBERS_MAX))
}

/// The change feed: every op the log holds, in local log order, from a cursor. Without
/// `Accept: text/event-stream`, a page as newline-delimited JSON: one change per line, then
/// `{"next_cursor", "more"}`. With it, server-sent events (`change`, whose id is its cursor;
/// `Last-Event-ID` resumes) until the client goes.
#[utoipa::path(get, path = "/v1/changes", tag = "changes", params(ChangesParams),
    responses((status = 200, description = "Newline-delimited JSON (each line one of these, the last an end line), or server-sent events each carrying a change as data",
        content(
            (super::schema::FeedLine = "application/x-ndjson"),
            (crate::changes::ChangeView = "text/event-stream"),
        ))))]
pub(crate) async fn changes(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(p): Query<ChangesParams>,
) -> ApiResult<Response> {
    let permit = super::read::place(&api.subscribers, || {
        format!("{CHANGES_SUBSCRIBERS_MAX} change-feed followers already; retry shortly")
    })?;
    let stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let node = api.service.node.clone();
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    // An EventSource reconnects to the URL it was made with, so on a stream the Last-Event-ID
    // it adds (the newer position) wins over the URL's `since`.
    let since = if stream { last_event.or(p.since.as_deref()) } else { p.since.as_deref() };
    let cursor = ChangeCursor::parse_since(since, &node).map_err(invalid_query)?;
    let tables = crate::changes::parse_tables(p.table.as_deref()).map_err(invalid_query)?;
    let limit = p.limit.unwrap_or(CHANGES_LIMIT_DEFAULT);
    if limit == 0 || limit > CHANGES_LIMIT_MAX {
        return Err(invalid_query(format!("limit {limit} is not within 1..={CHANGES_LIMIT_MAX}")));
    }
    let wait = match p.wait {
        Some(_) if stream => {
            return Err(invalid_query(
                "wait is for newline-delimited JSON; an event stream waits by itself",
            ));
        }
        None => std::time::Duration::ZERO,
        Some(w) if w.is_finite() && (0.0..=CHANGES_WAIT_MAX.as_secs_f64()).contains(&w) => {
            std::time::Duration::from_secs_f64(w)
        }
        Some(w) => {
            return Err(invalid_query(format!(
                "wait {w} is not within 0..={} seconds",
                CHANGES_WAIT_MAX.as_secs()
            )));
        }
    };
    let feed =
        Feed { node, tables, limit, cursor, stopping: api.service.stopping(), _permit: permit };
    if stream { Ok(feed.events()) } else { feed.long_poll(wait).await }
}

/// One follower.
struct Feed {
    node: Arc<Node>,
    tables: Vec<String>,
    limit: usize,
    cursor: ChangeCursor,
    stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    async fn page(&mut self) -> ApiResult<(Vec<ChangeView>, bool)> {
        let (node, tables, cursor, limit) =
            (self.node.clone(), self.tables.clone(), self.cursor, self.limit);
        let page = blocking(move || node.changes(cursor, &tables, limit)).await??;
        self.cursor = page.next;
        Ok((page.changes, page.more))
    }

    /// Newline-delimited JSON: what is there, or what comes within `wait`.
    async fn long_poll(mut self, wait: std::time::Duration) -> ApiResult<Response> {
        // Subscribed before the first read, so a write between the two is not missed.
        let mut written = self.node.subscribe_writes();
        let deadline = tokio::time::Instant::now() + wait;
        let (mut changes, mut more) = self.page().await?;
        while changes.is_empty() && !more && !wait.is_zero() {
            tokio::select! {
                changed = written.changed() => if changed.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
                _ = self.stopping.wait_for(|s| *s) => break,
            }
            (changes, more) = self.page().await?;
        }
        let mut body = String::new();
        for change in &changes {
            body.push_str(&serde_json::to_string(change).unwrap_or_default());
            body.push('\n');
        }
        let end = FeedEnd { next_cursor: self.cursor.to_string(), more };
        body.push_str(&serde_json::to_string(&end).unwrap_or_default());
        body.push('\n');
        Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
    }

    /// Server-sent events until the client goes or the node stops.
    fn events(self) -> Response {
        let mut written = self.node.subscribe_writes();
        written.mark_changed();
        let state = (self, written, VecDeque::<ChangeView>::new(), false);
        let stream = futures_util::stream::unfold(
            state,
            |(mut feed, mut written, mut pending, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(change) = pending.pop_front() {
                        let event = Event::default()
                            .id(change.cursor.clone())
                            .event("change")
                            .json_data(&change)
                            .unwrap_or_else(|_| Event::default().comment("unencodable change"));
                        return Some((Ok::<_, Infallible>(event), (feed, written, pending, false)));
                    }
                    let (changes, more) = match feed.page().await {
                        Ok(page) => page,
                        Err(e) => {
                            // The stream ends with the reason; the client resumes from the id of
                            // the last change it got.
                            let reason = ErrorBody { error: e.code, message: e.message };
                            let event = Event::default()
                                .event("error")
                                .json_data(&reason)
                                .unwrap_or_else(|_| Event::default().event("error"));
                            return Some((Ok(event), (feed, written, pending, true)));
                        }
                    };
                    pending.extend(changes);
                    if !pending.is_empty() || more {
                        continue;
                    }
                    tokio::select! {
                        changed = written.changed() => if changed.is_err() { return None },
                        _ = feed.stopping.wait_for(|s| *s) => return None,
                    }
                }
            },
        );
        Sse::new(stream).keep_alive(KeepAlive::new().interval(CHANGES_HEARTBEAT)).into_response()
    }
}
