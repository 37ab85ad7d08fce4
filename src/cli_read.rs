//! `feral-node episodes` and `feral-node search`: the same listing and search as
//! `GET /v1/episodes` and `GET /v1/search`, on a stopped store or through the running node's
//! API, printed as lines or one JSON object per row. A listing that stops before the end says
//! so on stderr; `--all` pages through every row.

use clap::Args;
use feral_materializer::{ListQuery, SearchQuery};
use serde_json::Value;

use crate::cli_remote::{Remote, segment};
use crate::out::out;
use crate::{Outcome, fail};
use feral_memory::api::read::{HALF_LIFE_DAYS_DEFAULT, LIST_LIMIT_DEFAULT, SEARCH_LIMIT_DEFAULT};

/// Rows per page when `--all` pages without `--limit`.
const ALL_PAGE_ROWS: usize = 1_000;

/// Which episodes to list.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Rows per page (at most 10,000; default 50, or 1,000 with --all).
    #[arg(long)]
    limit: Option<usize>,
    /// Every row, page after page.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filters: Filters,
    /// One JSON object per episode.
    #[arg(long)]
    json: bool,
}

/// The filters the episode listing and search share.
#[derive(Debug, Args)]
pub(crate) struct Filters {
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    /// Only this event type.
    #[arg(long)]
    event_type: Option<String>,
    /// created_at at or after (unix seconds).
    #[arg(long)]
    since: Option<f64>,
    /// created_at before (unix seconds).
    #[arg(long)]
    until: Option<f64>,
    /// importance at least.
    #[arg(long)]
    min_importance: Option<f64>,
}

impl Filters {
    /// The filters as query parameters (`&name=value…`).
    fn query_string(&self) -> String {
        let mut out = String::new();
        for (name, value) in [("session", &self.session), ("event_type", &self.event_type)] {
            if let Some(v) = value {
                out.push_str(&format!("&{name}={}", segment(v)));
            }
        }
        let numbers =
            [("since", self.since), ("until", self.until), ("min_importance", self.min_importance)];
        for (name, value) in numbers {
            if let Some(v) = value {
                out.push_str(&format!("&{name}={v}"));
            }
        }
        out
    }
}

impl ListArgs {
    fn page_rows(&self) -> usize {
        self.limit.unwrap_or(if self.all { ALL_PAGE_ROWS } else { LIST_LIMIT_DEFAULT })
    }
}

fn print_episode(e: &Value, json: bool) {
    if json {
        out!("{e}");
        return;
    }
    out!(
        "{}\t{}\t{}\t{}\t{}",
        e["id"].as_str().unwrap_or(""),
        e["session_id"].as_str().unwrap_or(""),
        e["created_at"],
        e["event_type"].as_str().unwrap_or(""),
        e["summary"].as_str().unwrap_or("")
    );
}

fn more_follow() {
    eprintln!("feral-node: more episodes follow; --all lists every one");
}

/// Lists a stopped store's episodes.
pub(crate) fn list_local(node: &feral_memory::Node, args: ListArgs) -> Outcome {
    let mut query = ListQuery {
        session: args.filters.session.clone(),
        event_type: args.filters.event_type.clone(),
        since: args.filters.since,
        until: args.filters.until,
        min_importance: args.filters.min_importance,
        limit: args.page_rows(),
        after: None,
    };
    loop {
        let (rows, next) = node.episodes_page(&query)?;
        for row in &rows {
            print_episode(
                &serde_json::to_value(row).map_err(|e| fail(1, e.to_string()))?,
                args.json,
            );
        }
        match next {
            Some(position) if args.all => query.after = Some(position),
            Some(_) => {
                more_follow();
                return Ok(0);
            }
            None => return Ok(0),
        }
    }
}

/// Lists episodes through the running node's API.
pub(crate) fn list_remote(remote: &Remote, args: ListArgs) -> Outcome {
    let base = format!("/v1/episodes?limit={}{}", args.page_rows(), args.filters.query_string());
    let mut path = base.clone();
    loop {
        let page = remote.expect_ok("GET", &path, None)?;
        for e in page["episodes"].as_array().into_iter().flatten() {
            print_episode(e, args.json);
        }
        match page["next_cursor"].as_str() {
            Some(cursor) if args.all => path = format!("{base}&cursor={}", segment(cursor)),
            Some(_) => {
                more_follow();
                return Ok(0);
            }
            None => return Ok(0),
        }
    }
}

/// What to search for, and how.
#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// The words to look for (every word counts; no operators).
    query: String,
    #[command(flatten)]
    filters: Filters,
    /// Only episodes with this participant.
    #[arg(long)]
    participant: Option<String>,
    /// Multiply scores by 1 + W × importance.
    #[arg(long, default_value_t = 0.0)]
    boost_importance: f64,
    /// Multiply scores by 1 + W × 0.5^(age / half life).
    #[arg(long, default_value_t = 0.0)]
    boost_recency: f64,
    /// Half life of the recency boost, in days.
    #[arg(long, default_value_t = HALF_LIFE_DAYS_DEFAULT)]
    half_life_days: f64,
    /// Hits to show.
    #[arg(long, default_value_t = SEARCH_LIMIT_DEFAULT)]
    limit: usize,
    /// One JSON object per hit.
    #[arg(long)]
    json: bool,
}

/// Searches a stopped store.
pub(crate) fn local(node: &feral_memory::Node, args: SearchArgs) -> Outcome {
    let query = SearchQuery {
        text: args.query,
        session: args.filters.session,
        event_type: args.filters.event_type,
        participant: args.participant,
        since: args.filters.since,
        until: args.filters.until,
        min_importance: args.filters.min_importance,
        boost_importance: args.boost_importance,
        boost_recency: args.boost_recency,
        half_life_days: args.half_life_days,
        now_s: node.now_ms() as f64 / 1000.0,
        limit: args.limit,
        offset: 0,
    };
    let (hits, _) = node.search(&query)?;
    let hits = serde_json::to_value(&hits).map_err(|e| fail(1, e.to_string()))?;
    print(&hits, args.json)
}

/// Searches through the running node's API.
pub(crate) fn remote(remote: &Remote, args: SearchArgs) -> Outcome {
    let mut path = format!(
        "/v1/search?q={}&limit={}{}",
        segment(&args.query),
        args.limit,
        args.filters.query_string()
    );
    if let Some(p) = &args.participant {
        path.push_str(&format!("&participant={}", segment(p)));
    }
    let numbers = [
        ("boost_importance", Some(args.boost_importance)),
        ("boost_recency", Some(args.boost_recency)),
        ("half_life_days", Some(args.half_life_days)),
    ];
    for (name, value) in numbers {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={v}"));
        }
    }
    let page = remote.expect_ok("GET", &path, None)?;
    print(&page["hits"], args.json)
}

fn print(hits: &Value, json: bool) -> Outcome {
    for hit in hits.as_array().into_iter().flatten() {
        if json {
            out!("{hit}");
            continue;
        }
        out!(
            "{:.3}\t{}\t{}\t{}\t{}",
            hit["score"]["total"].as_f64().unwrap_or(0.0),
            hit["id"].as_str().unwrap_or(""),
            hit["session_id"].as_str().unwrap_or(""),
            hit["created_at"],
            hit["summary"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}
