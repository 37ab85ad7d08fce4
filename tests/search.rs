//! Full-text search over episodes: ranking on a fixed corpus (the best match first, filters
//! exact, a deleted episode never found, an updated one found by its new words only, accents
//! and CJK), read-your-writes through a real `feral-node run`, paging with a cursor, refusals
//! of bad queries, and a kill between the projection's commit and the search index's commit
//! (failpoint + SIGKILL) after which search equals a fresh rebuild.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use common::{RunningNode, feral_node, open};
use feral_materializer::SearchQuery;
use feral_memory::Node;
use serde_json::{Value, json};

fn episode(id: &str, session: &str, event: &str, summary: &str, detail: &str, at: f64) -> Value {
    json!({"id": id, "session_id": session, "event_type": event, "summary": summary,
           "detail": detail, "created_at": at, "importance": 0.5, "participants": ["user"]})
}

fn query(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        half_life_days: 30.0,
        now_s: 1_000_000.0,
        limit: 10,
        ..SearchQuery::default()
    }
}

fn ids(node: &Node, q: &SearchQuery) -> Vec<String> {
    let (hits, _) = node.search(q).expect("search");
    hits.into_iter().map(|h| h.episode.episode.id).collect()
}

fn corpus(node: &Node) {
    let docs = [
        episode(
            "lyon-train",
            "trip",
            "plan",
            "Train to Lyon on Friday",
            "Booked the 8am TGV to Lyon",
            100.0,
        ),
        episode(
            "lyon-food",
            "trip",
            "chat",
            "Dinner ideas",
            "A bouchon in Lyon serves quenelles",
            200.0,
        ),
        episode(
            "paris-train",
            "trip",
            "plan",
            "Train to Paris",
            "Back from Paris on Sunday",
            300.0,
        ),
        episode("cafe", "daily", "chat", "Café au lait", "Morning coffee at the café", 400.0),
        episode("tokyo", "daily", "note", "東京都に行く", "新幹線で", 500.0),
        episode("garden", "home", "note", "Planting tomatoes", "The garden needs water", 600.0),
        episode(
            "gone",
            "trip",
            "chat",
            "Lyon museum closed",
            "The Lyon museum of fine arts",
            700.0,
        ),
        episode(
            "moved",
            "home",
            "note",
            "Lyon flat viewing",
            "Saw a flat near Lyon station",
            800.0,
        ),
    ];
    for d in &docs {
        node.append_episode(d, None).expect("append");
    }
    node.delete_episode("gone", None).expect("delete");
    // The update replaces the row: its old words no longer find it.
    let updated = episode("moved", "home", "note", "Grenoble flat viewing", "Saw a flat", 800.0);
    node.append_episode(&updated, None).expect("update");
}

#[test]
fn ranking_and_filters_on_a_fixed_corpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    corpus(&node);
    // Both words in summary and detail rank first; the word alone in detail ranks after.
    let found = ids(&node, &query("lyon train"));
    assert_eq!(found.first().map(String::as_str), Some("lyon-train"), "{found:?}");
    assert!(found.contains(&"paris-train".to_string()) && found.contains(&"lyon-food".into()));
    let lyon = ids(&node, &query("Lyon"));
    assert_eq!(lyon.len(), 2, "the deleted and the updated episode are not found: {lyon:?}");
    assert!(!lyon.contains(&"gone".into()) && !lyon.contains(&"moved".into()));
    assert_eq!(ids(&node, &query("grenoble")), ["moved"], "the update's new words find it");
    // Filters are exact.
    let only = |f: &dyn Fn(&mut SearchQuery)| {
        let mut q = query("train lyon");
        f(&mut q);
        let mut found = ids(&node, &q);
        found.sort();
        found
    };
    assert_eq!(only(&|q| q.event_type = Some("chat".into())), ["lyon-food"]);
    assert_eq!(only(&|q| q.session = Some("home".into())), Vec::<String>::new());
    assert_eq!(only(&|q| q.since = Some(200.0)), ["lyon-food", "paris-train"]);
    assert_eq!(only(&|q| q.until = Some(200.0)), ["lyon-train"]);
    assert_eq!(only(&|q| q.min_importance = Some(0.6)), Vec::<String>::new());
    assert_eq!(only(&|q| q.participant = Some("user".into())).len(), 3);
    // Accents fold both ways; CJK is found by its bigrams.
    assert_eq!(ids(&node, &query("cafe")), ["cafe"]);
    assert_eq!(ids(&node, &query("CAFÉ")), ["cafe"]);
    assert_eq!(ids(&node, &query("東京")), ["tokyo"]);
    assert_eq!(ids(&node, &query("新幹線")), ["tokyo"]);
    // The score shows its parts: total = bm25 × importance × recency.
    let mut boosted = query("train");
    boosted.boost_recency = 4.0;
    boosted.half_life_days = 0.001;
    boosted.now_s = 300.0;
    let (hits, _) = node.search(&boosted).expect("search");
    assert_eq!(hits[0].episode.episode.id, "paris-train", "recency lifts the newest");
    let s = hits[0].score;
    assert!((s.total - s.bm25 * s.importance * s.recency).abs() < 1e-3 * s.total, "{s:?}");
    assert!(s.recency > 1.0 && (s.importance - 1.0).abs() < 1e-9, "{s:?}");
    // Search finds what a rebuild of the search index from the projection finds (the order
    // may move: a rebuild drops the deleted documents' share of the term statistics).
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let before = sorted(ids(&node, &query("lyon train paris cafe grenoble")));
    assert!(node.rebuild_search().expect("rebuild") > 0);
    assert_eq!(sorted(ids(&node, &query("lyon train paris cafe grenoble"))), before);
    assert!(node.check().ok, "{:?}", node.check());
}

#[test]
fn a_search_right_after_each_acknowledged_append_finds_it_through_the_api() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("store");
    let node = RunningNode::start(&data, &[]);
    let api = node.api();
    for i in 0..40 {
        let word = format!("marker{i}");
        let doc = episode(&format!("e{i}"), "s", "chat", &word, "", 10.0 + i as f64);
        let (status, body) = api.call("POST", "/v1/episodes", Some(&doc)).expect("append");
        assert_eq!(status, 200, "{body}");
        let (status, page) = api.call("GET", &format!("/v1/search?q={word}"), None).expect("q");
        assert_eq!(status, 200, "{page}");
        let hits = page["hits"].as_array().expect("hits");
        assert_eq!(hits.len(), 1, "write {i} is searchable at once: {page}");
        assert_eq!(hits[0]["id"], format!("e{i}"));
        assert!(hits[0]["score"]["bm25"].as_f64().expect("bm25") > 0.0);
    }
    // Paging: every hit once, in score order, through next_cursor.
    let mut seen = Vec::new();
    let mut path = "/v1/search?q=chat%20marker1%20marker2%20marker3&limit=1".to_string();
    loop {
        let (status, page) = api.call("GET", &path, None).expect("page");
        assert_eq!(status, 200, "{page}");
        seen.extend(page["hits"].as_array().expect("hits").iter().map(|h| h["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => {
                path = format!("/v1/search?q=chat%20marker1%20marker2%20marker3&limit=1&cursor={c}")
            }
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by_key(|v| v.to_string());
    assert_eq!(sorted, ["e1", "e2", "e3"].map(Value::from), "each hit on one page only: {seen:?}");
    // Refusals name the problem, and nothing is silently ignored.
    let refused = [
        ("/v1/search?q=x&colour=red", "colour"),
        ("/v1/search?q=x&limit=1001", "1000"),
        ("/v1/search?q=%2C%3B", "no words"),
        ("/v1/search?q=x&cursor=zz", "cursor"),
        ("/v1/search", "q"),
    ];
    for (path, names) in refused {
        let (status, body) = api.call("GET", path, None).expect("answer");
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_query")),
            "{path}: {body}"
        );
        assert!(body["message"].as_str().expect("message").contains(names), "{path}: {body}");
    }
    let (_, two) = api.call("GET", "/v1/search?q=marker1%20marker2&limit=1", None).expect("p");
    let cursor = two["next_cursor"].as_str().expect("a next page");
    let (status, body) =
        api.call("GET", &format!("/v1/search?q=marker3&cursor={cursor}"), None).expect("answer");
    assert_eq!(status, 400, "a cursor of another query is refused: {body}");
    assert!(body["message"].as_str().expect("message").contains("another query"), "{body}");
    // PATCH merges into the row (one whole-row op): the new words find it, the old do not.
    let patch = json!({"summary": "renamed quokka", "importance": 0.9});
    let (status, body) = api.call("PATCH", "/v1/episodes/e5", Some(&patch)).expect("patch");
    assert_eq!(status, 200, "{body}");
    let (_, got) = api.call("GET", "/v1/episodes/e5", None).expect("get");
    assert_eq!(
        (got["summary"].as_str(), got["importance"].as_f64()),
        (Some("renamed quokka"), Some(0.9))
    );
    assert_eq!(got["session_id"], "s", "fields not in the patch are kept");
    let found = |q: &str| {
        let (_, page) = api.call("GET", &format!("/v1/search?q={q}"), None).expect("search");
        page["hits"].as_array().expect("hits").iter().map(|h| h["id"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(found("quokka"), [Value::from("e5")]);
    assert!(found("marker5").is_empty(), "the old summary is gone from the index");
    let (status, body) =
        api.call("PATCH", "/v1/episodes/e5", Some(&json!({"id": "other"}))).expect("patch");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_episode")), "{body}");
    let (status, _) = api.call("PATCH", "/v1/episodes/nope", Some(&patch)).expect("patch");
    assert_eq!(status, 404);
    // DELETE with an op_id: a retry is the same op.
    let op = "0123456789abcdef0123456789abcdef";
    let path = format!("/v1/episodes/e6?op_id={op}");
    let (status, first) = api.call("DELETE", &path, None).expect("delete");
    assert_eq!((status, first["duplicate"].as_bool()), (200, Some(false)), "{first}");
    let (status, again) = api.call("DELETE", &path, None).expect("delete");
    assert_eq!((status, again["duplicate"].as_bool()), (200, Some(true)), "{again}");
    assert_eq!(again["op_id"], op);
    assert!(found("marker6").is_empty(), "a deleted episode is never found");
    // The CLI goes through the running node.
    let out = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["search", "marker7", "--json"])
        .output()
        .expect("search");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON hit");
    assert_eq!(line["id"], "e7");
    assert!(node.stop());
}

/// Appends `docs` with `feral-node append`, armed at `failpoint` when given: waits for the
/// point and kills the process there.
fn append(data: &Path, docs: &[Value], failpoint: Option<&str>) {
    let mut cmd = feral_node();
    cmd.arg("--data").arg(data).arg("append");
    if let Some(point) = failpoint {
        cmd.env(feral_log::failpoint::ENV, point);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn append");
    let mut stdin = child.stdin.take().expect("stdin");
    for d in docs {
        writeln!(stdin, "{d}").expect("write");
    }
    drop(stdin);
    if failpoint.is_none() {
        assert!(child.wait().expect("wait").success());
        return;
    }
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let reached = stderr.lines().map_while(Result::ok).any(|l| l.contains("failpoint"));
    assert!(reached, "the failpoint was reached");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
}

#[test]
fn a_kill_between_the_projection_and_the_search_commit_then_search_equals_a_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = feral_node().arg("--data").arg(&data).arg("init").output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let word = |i: usize| ["apple", "pear", "plum", "fig"][i % 4];
    let first: Vec<Value> = (0..300)
        .map(|i| episode(&format!("a{i}"), "s", "chat", word(i), &format!("n{i}"), i as f64))
        .collect();
    append(&data, &first, None);
    // Second round: new rows and a rewrite of the first 50, killed as the search commits.
    let second: Vec<Value> = (0..300)
        .map(|i| {
            let id = if i < 50 { format!("a{i}") } else { format!("b{i}") };
            episode(&id, "s", "chat", word(i + 1), "second", 1000.0 + i as f64)
        })
        .collect();
    append(&data, &second, Some("search.commit@450"));
    let node = open(&data);
    let queries = ["apple", "pear plum", "fig second", "n3 n7 n49 n51"];
    let mut q = query("");
    q.limit = 1000;
    let results: Vec<Vec<String>> = queries
        .iter()
        .map(|text| ids(&node, &SearchQuery { text: (*text).into(), ..q.clone() }))
        .collect();
    assert!(node.check().ok, "{:?}", node.check());
    node.rebuild_search().expect("rebuild");
    for (text, before) in queries.iter().zip(&results) {
        let after = ids(&node, &SearchQuery { text: (*text).into(), ..q.clone() });
        let (mut a, mut b) = (after.clone(), before.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "{text}: the caught-up index finds what a rebuild finds");
    }
    assert!(results[2].len() > 50, "second-round rows are found: {}", results[2].len());
    assert!(!results[3].contains(&"a3".to_string()), "rewritten rows lost their old words");
}

/// Rebuilding the search index while its writer still merges segments: the old writer's
/// merge threads are waited for, so emptying the directory never races them ("Directory not
/// empty") and no file of theirs lands in the new index. Commits of 2,000 episodes (one per
/// search) make segments that tantivy merges eight at a time, so a merge is running when the
/// rebuild starts.
#[test]
fn rebuilding_while_merges_run_gives_the_same_hits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    // One episode in 500 has "lyon": every hit fits in one page, ties and all.
    let mut wide = query("lyon");
    wide.limit = 1000;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let per_commit = 2000;
    for round in 0..3 {
        for commit in 0..8 {
            let batch = (0..per_commit)
                .map(|i| {
                    let n = (round * 8 + commit) * per_commit + i;
                    let word = if n % 500 == 0 { "lyon" } else { "paris" };
                    let summary = format!("{word} trip {n}");
                    let doc = episode(&format!("e{n}"), "s", "chat", &summary, "notes", n as f64);
                    (feral_materializer::Episode::from_input(&doc, 2e9).expect("valid"), None)
                })
                .collect();
            node.append_episodes(batch).expect("append");
            // The search commits what the writer holds: one segment per batch.
            assert!(!ids(&node, &query("trip")).is_empty());
        }
        let before = sorted(ids(&node, &wide));
        assert_eq!(before.len(), (round + 1) * 8 * per_commit / 500, "round {round}");
        let rows = node.rebuild_search().expect("rebuild while merges run");
        assert_eq!(rows, (round + 1) * 8 * per_commit, "round {round}");
        assert_eq!(sorted(ids(&node, &wide)), before, "round {round}: the same hits");
    }
}

/// A damaged search index in a running node: `GET /v1/check` reports what it found, rebuilds
/// the index from the log by itself (`repair`), and the check after it, and the next one, are
/// clean; searches find every episode again.
#[test]
fn a_running_node_rebuilds_a_search_index_its_check_finds_damaged() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("store");
    let node = RunningNode::start(&data, &[]);
    let api = node.api();
    // One batch, one search commit: one tantivy segment, so no merge replaces the file below.
    let docs: Vec<Value> = (0..300)
        .map(|i| episode(&format!("e{i}"), "s", "chat", &format!("walnut {i}"), "", i as f64))
        .collect();
    let (status, body) = api.call("POST", "/v1/episodes", Some(&Value::from(docs))).expect("add");
    assert_eq!(status, 200, "{body}");
    let count = |api: &feral_memory::client::ApiClient| {
        let (status, page) = api.call("GET", "/v1/search?q=walnut&limit=1000", None).expect("q");
        assert_eq!(status, 200, "{page}");
        page["hits"].as_array().expect("hits").len()
    };
    assert_eq!(count(&api), 300);
    let (_, clean) = api.call("GET", "/v1/check", None).expect("check");
    assert_eq!((clean["ok"].as_bool(), clean.get("repair")), (Some(true), None), "{clean}");
    // Flip one byte in the middle of the largest file of the index (the node keeps running).
    let dir = data.join(feral_materializer::SEARCH_DIR);
    let largest = std::fs::read_dir(&dir)
        .expect("search dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e != "json" && e != "lock"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a segment file");
    let mut bytes = std::fs::read(&largest).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&largest, &bytes).expect("write");

    let (status, found) = api.call("GET", "/v1/check", None).expect("check");
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (found["ok"].as_bool(), found["wal"].as_str(), found["search"].as_str()),
        (Some(false), Some("ok"), Some("corruption")),
        "{} byte {at} flipped: {found}",
        largest.display()
    );
    assert_eq!(found["repair"]["rebuilt"], json!(["search"]), "{found}");
    assert_eq!(found["repair"]["check"]["ok"], true, "{found}");
    let (_, again) = api.call("GET", "/v1/check", None).expect("check");
    assert_eq!((again["ok"].as_bool(), again.get("repair")), (Some(true), None), "{again}");
    assert_eq!(count(&api), 300, "every episode is found again");
    // Writes went on: a new episode is searchable at once.
    let new = episode("late", "s", "chat", "walnut late", "", 1000.0);
    let (status, body) = api.call("POST", "/v1/episodes", Some(&new)).expect("add");
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&api), 301);
}
