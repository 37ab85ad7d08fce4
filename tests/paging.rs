//! Paging and filters on the episode listing: 25,000 episodes (many sharing a `created_at`)
//! paged while writes go on, each seen exactly once; filters exact; counts; and through a
//! real `feral-node run`, `next_cursor`, the refusals of bad limits and cursors, and
//! `feral-node episodes --all` streaming every row.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{RunningNode, feral_node, open};
use feral_materializer::ListQuery;
use serde_json::{Value, json};

fn episode(i: usize, created_at: f64) -> Value {
    json!({"id": format!("e{i:05}"), "session_id": format!("s{}", i % 7),
           "event_type": if i.is_multiple_of(3) { "note" } else { "chat" }, "summary": "x",
           "created_at": created_at, "importance": (i % 10) as f64 / 10.0})
}

#[test]
fn paging_25000_episodes_while_writes_go_on_returns_each_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(open(dir.path()));
    const N: usize = 25_000;
    for start in (0..N).step_by(1000) {
        let batch = (start..start + 1000)
            .map(|i| (node.prepare_episode(&episode(i, (i / 10) as f64), None).expect("ok"), None))
            .collect();
        node.append_episodes(batch).expect("append");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (node, stop) = (node.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = N;
            while !stop.load(Ordering::Relaxed) {
                // Old and new created_at alike: some land before the cut, some after.
                let at = if i.is_multiple_of(2) { 5.0 } else { 1e6 + i as f64 };
                node.append_episode(&episode(i, at), None).expect("append");
                i += 1;
            }
            i - N
        })
    };
    let mut seen = HashSet::new();
    let mut query = ListQuery { limit: 997, ..ListQuery::default() };
    let mut pages = 0;
    loop {
        let (rows, next) = node.episodes_page(&query).expect("page");
        pages += 1;
        for row in rows {
            assert!(seen.insert(row.episode.id.clone()), "{} listed twice", row.episode.id);
        }
        match next {
            Some(position) => query.after = Some(position),
            None => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(pages >= N / 997, "{pages} pages");
    let originals = (0..N).filter(|i| seen.contains(&format!("e{i:05}"))).count();
    assert_eq!(originals, N, "every episode there before paging began is on one page");
    assert!(written > 0, "writes went on while paging");

    // Filters are exact, on every page.
    let mut query = ListQuery {
        session: Some("s3".into()),
        event_type: Some("note".into()),
        since: Some(100.0),
        until: Some(2000.0),
        min_importance: Some(0.5),
        limit: 50,
        after: None,
    };
    let mut filtered = 0;
    loop {
        let (rows, next) = node.episodes_page(&query).expect("page");
        for row in &rows {
            let e = &row.episode;
            assert!(e.session_id == "s3" && e.event_type == "note", "{e:?}");
            assert!((100.0..2000.0).contains(&e.created_at) && e.importance >= 0.5, "{e:?}");
        }
        filtered += rows.len();
        match next {
            Some(position) => query.after = Some(position),
            None => break,
        }
    }
    let expected = (0..N)
        .filter(|i| i % 7 == 3 && i % 3 == 0 && (1000..20_000).contains(i) && i % 10 >= 5)
        .count();
    assert_eq!(filtered, expected);
    assert_eq!(node.episode_count(None).expect("count"), (N + written) as u64);
    let s3 = (0..N + written).filter(|i| i % 7 == 3).count() as u64;
    assert_eq!(node.episode_count(Some("s3")).expect("count"), s3);
}

#[test]
fn cursors_limits_and_the_cli_through_a_running_node() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("store");
    let node = RunningNode::start(&data, &[]);
    let api = node.api();
    let docs: Vec<Value> = (0..120).map(|i| episode(i, i as f64)).collect();
    let (status, body) = api.call("POST", "/v1/episodes", Some(&Value::Array(docs))).expect("post");
    assert_eq!(status, 200, "{body}");
    let mut ids = Vec::new();
    let mut path = "/v1/episodes?limit=50&event_type=chat".to_string();
    loop {
        let (status, page) = api.call("GET", &path, None).expect("page");
        assert_eq!(status, 200, "{page}");
        ids.extend(page["episodes"].as_array().expect("rows").iter().map(|e| e["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/episodes?limit=50&event_type=chat&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 80, "the chat episodes, each once");
    assert_eq!(ids[0], "e00119", "newest first");
    let (_, counts) = api.call("GET", "/v1/counts?session=s1", None).expect("counts");
    assert_eq!(counts["episodes"], (0..120).filter(|i| i % 7 == 1).count());
    let (_, page) = api.call("GET", "/v1/episodes?limit=10", None).expect("page");
    let cursor = page["next_cursor"].as_str().expect("more");
    let refused = [
        ("/v1/episodes?limit=10001".to_string(), "10000"),
        ("/v1/episodes?limit=0".to_string(), "limit"),
        ("/v1/episodes?cursor=abc".to_string(), "cursor"),
        (format!("/v1/episodes?session=s2&cursor={cursor}"), "another query"),
        ("/v1/episodes?sort=old".to_string(), "sort"),
    ];
    for (path, names) in refused {
        let (status, body) = api.call("GET", &path, None).expect("answer");
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_query")),
            "{path}: {body}"
        );
        assert!(body["message"].as_str().expect("message").contains(names), "{path}: {body}");
    }
    let listed = |args: &[&str]| {
        let out = feral_node().arg("--data").arg(&data).arg("episodes").args(args).output();
        out.expect("episodes")
    };
    let all = listed(&["--all", "--limit", "7", "--json"]);
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
    assert_eq!(
        String::from_utf8_lossy(&all.stdout).lines().count(),
        120,
        "--all streams every row"
    );
    let one = listed(&["--limit", "7"]);
    assert_eq!(String::from_utf8_lossy(&one.stdout).lines().count(), 7);
    assert!(String::from_utf8_lossy(&one.stderr).contains("--all"), "a cut listing says so");
    assert!(node.stop());
}
