//! `feral-node search`: the same search as `GET /v1/search`, on a stopped store or through
//! the running node's API, printed as lines (score, id, session, created_at, summary) or
//! JSON.

use clap::Args;
use feral_materializer::SearchQuery;
use serde_json::Value;

use crate::cli_remote::{Remote, segment};
use crate::out::out;
use crate::{Outcome, fail};
use feral_memory::api::read::{HALF_LIFE_DAYS_DEFAULT, SEARCH_LIMIT_DEFAULT};

/// What to search for, and how.
#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// The words to look for (every word counts; no operators).
    query: String,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    /// Only this event type.
    #[arg(long)]
    event_type: Option<String>,
    /// Only episodes with this participant.
    #[arg(long)]
    participant: Option<String>,
    /// created_at at or after (unix seconds).
    #[arg(long)]
    since: Option<f64>,
    /// created_at before (unix seconds).
    #[arg(long)]
    until: Option<f64>,
    /// importance at least.
    #[arg(long)]
    min_importance: Option<f64>,
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
        session: args.session,
        event_type: args.event_type,
        participant: args.participant,
        since: args.since,
        until: args.until,
        min_importance: args.min_importance,
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
    let mut path = format!("/v1/search?q={}&limit={}", segment(&args.query), args.limit);
    let texts = [
        ("session", &args.session),
        ("event_type", &args.event_type),
        ("participant", &args.participant),
    ];
    for (name, value) in texts {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={}", segment(v)));
        }
    }
    let numbers = [
        ("since", args.since),
        ("until", args.until),
        ("min_importance", args.min_importance),
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
