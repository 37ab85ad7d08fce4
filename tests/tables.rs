//! Every table readable, with each row's history: rows of another table written through
//! `POST /v1/ops` on node A are read back on node B after a real sync (two `feral-node run`
//! processes over QUIC), last writer wins and tombstones hold, pages follow the cursor, and
//! a row's history lists the ops of both nodes with the node that wrote each.

mod common;

use common::RunningNode;
use feral_memory::client::ApiClient;
use serde_json::{Value, json};

fn get(api: &ApiClient, path: &str) -> (u16, Value) {
    api.call("GET", path, None).expect("answer")
}

fn post(api: &ApiClient, path: &str, body: &Value) -> Value {
    let (status, answer) = api.call("POST", path, Some(body)).expect("answer");
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

fn sync(from: &ApiClient, peer: &RunningNode) {
    let results = post(from, "/v1/sync", &json!({"peer": peer.sync_addr.to_string()}));
    assert_eq!(results[0]["success"], true, "{results}");
}

#[test]
fn rows_written_on_a_are_read_on_b_after_sync_with_their_history() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = RunningNode::start(&root.path().join("a"), &[]);
    let b = RunningNode::start(&root.path().join("b"), &[]);
    let (api_a, api_b) = (a.api(), b.api());
    let notes = json!([
        {"table": "notes", "row_id": "n1", "data": {"text": "hello", "tags": ["x"]}},
        {"table": "notes", "row_id": "n2", "data": "plain text"},
        {"table": "notes", "row_id": "n3", "data": [1, 2, 3]},
        {"table": "people", "row_id": "p1", "data": {"name": "Ada"}},
    ]);
    post(&api_a, "/v1/ops", &notes);
    let episode =
        json!({"id": "e1", "session_id": "s", "event_type": "chat", "summary": "met Ada"});
    post(&api_a, "/v1/episodes", &episode);
    sync(&api_b, &a);

    let (status, row) = get(&api_b, "/v1/tables/notes/rows/n1");
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["data"], json!({"text": "hello", "tags": ["x"]}), "the JSON as written");
    assert!(row["hlc"].is_string() && row["op_id"].as_str().is_some_and(|s| s.len() == 32));
    assert_eq!(get(&api_b, "/v1/tables/notes/rows/n2").1["data"], "plain text");
    let (_, tables) = get(&api_b, "/v1/tables");
    let count = |name: &str| {
        tables["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["table"] == name)
            .map(|t| t["rows"].clone())
    };
    assert_eq!(
        (count("episodes"), count("notes"), count("people")),
        (Some(1.into()), Some(3.into()), Some(1.into()))
    );

    // Pages in row id order, each row once.
    let mut ids = Vec::new();
    let mut path = "/v1/tables/notes/rows?limit=1".to_string();
    loop {
        let (status, page) = get(&api_b, &path);
        assert_eq!(status, 200, "{page}");
        ids.extend(page["rows"].as_array().expect("rows").iter().map(|r| r["row_id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/tables/notes/rows?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids, ["n1", "n2", "n3"].map(Value::from));
    let (status, body) = get(&api_b, &format!("/v1/tables/people/rows?cursor={}", "6e"));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_query")), "{body}");

    // B rewrites n1 and deletes n2; A edits the episode: each side's write reaches the other.
    post(
        &api_b,
        "/v1/ops",
        &json!([
            {"table": "notes", "row_id": "n1", "data": {"text": "hello again"}},
            {"table": "notes", "row_id": "n2", "kind": "delete"},
        ]),
    );
    let (status, _) = api_b
        .call("PATCH", "/v1/episodes/e1", Some(&json!({"summary": "met Ada again"})))
        .expect("patch");
    assert_eq!(status, 200);
    sync(&api_a, &b);
    assert_eq!(get(&api_a, "/v1/tables/notes/rows/n1").1["data"], json!({"text": "hello again"}));
    assert_eq!(get(&api_a, "/v1/tables/notes/rows/n2").0, 404, "the tombstone holds");

    let node_of = |api: &ApiClient| get(api, "/v1/status").1["node_id"].clone();
    let (node_a, node_b) = (node_of(&api_a), node_of(&api_b));
    for (path, kinds) in [
        ("/v1/tables/notes/rows/n1/history", ["insert", "insert"]),
        ("/v1/tables/notes/rows/n2/history", ["insert", "delete"]),
        ("/v1/episodes/e1/history", ["insert", "insert"]),
    ] {
        let (status, history) = get(&api_a, path);
        assert_eq!(status, 200, "{history}");
        let ops = history["ops"].as_array().expect("ops");
        let seen: Vec<&str> = ops.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(seen, kinds, "{path}: {history}");
        let writers: Vec<Value> = ops.iter().map(|o| o["node_id"].clone()).collect();
        assert_eq!(writers, [node_a.clone(), node_b.clone()], "{path}: written by A, then by B");
        assert!(ops.iter().all(|o| o["origin"].as_str().is_some_and(|s| s.len() == 32)));
    }
    let (_, history) = get(&api_a, "/v1/episodes/e1/history");
    assert_eq!(history["ops"][1]["data"]["summary"], "met Ada again");
    assert!(a.stop() && b.stop());
}
