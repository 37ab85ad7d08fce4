//! The change feed (`GET /v1/changes`) of a real `feral-node run`: pages of newline-delimited
//! JSON resumed from their cursor see every op once, in log order, written here or arrived by
//! sync; an event stream cut midway and reopened with `Last-Event-ID` misses nothing and
//! repeats nothing; a long poll answers when a write lands; a follower that stops reading does
//! not hold up writes or the other followers.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{RunningNode, wait_for};
use feral_memory::client::ApiClient;
use serde_json::{Value, json};

fn post(api: &ApiClient, path: &str, body: &Value) {
    let (status, answer) = api.call("POST", path, Some(body)).expect("answer");
    assert_eq!(status, 200, "{path}: {answer}");
}

fn episodes(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"id": format!("{prefix}-{i}"), "session_id": "s", "event_type": "chat", "summary": "x"}))
            .collect(),
    )
}

/// One NDJSON page: the changes and the final line.
fn page(api: &ApiClient, query: &str) -> (Vec<Value>, Value) {
    let answer = api
        .send_blocking(feral_memory::client::Call::new("GET", &format!("/v1/changes?{query}")))
        .expect("answer");
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("content-type"), Some("application/x-ndjson"));
    let mut lines: Vec<Value> = String::from_utf8_lossy(&answer.body)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let end = lines.pop().expect("the final line");
    (lines, end)
}

/// Follows the feed from `since` in pages of `limit` until it has `want` changes.
fn follow(api: &ApiClient, since: &str, limit: usize, want: usize) -> (Vec<Value>, String) {
    let (mut got, mut cursor) = (Vec::new(), since.to_string());
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want {
        assert!(Instant::now() < deadline, "only {} of {want} changes", got.len());
        let (changes, end) = page(api, &format!("since={cursor}&limit={limit}&wait=5"));
        got.extend(changes);
        cursor = end["next_cursor"].as_str().expect("next_cursor").to_string();
    }
    (got, cursor)
}

/// An event stream over a raw socket from `GET /v1/changes?{query}`, resumed from
/// `last_event_id` when given; its reader past the status line.
fn open_stream(
    node: &RunningNode,
    query: &str,
    last_event_id: Option<&str>,
) -> BufReader<TcpStream> {
    let token =
        std::fs::read_to_string(node.data.join(feral_memory::api::TOKEN_FILE)).expect("token");
    let mut socket = TcpStream::connect(node.api_addr).expect("connect");
    let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    write!(
        socket,
        "GET /v1/changes?{query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
        node.api_addr,
        token.trim()
    )
    .expect("request");
    socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut reader = BufReader::new(socket);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains(" 200 "), "{status}");
    reader
}

/// The next `n` change events: (id, data).
fn events(reader: &mut BufReader<TcpStream>, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut id = None;
    while out.len() < n {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0, "the stream ended");
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            let data: Value = serde_json::from_str(v).expect("event data");
            out.push((id.take().expect("an id before the data"), data));
        }
    }
    out
}

fn op_ids(changes: &[Value]) -> Vec<String> {
    changes.iter().map(|c| c["op_id"].as_str().expect("op_id").to_string()).collect()
}

#[test]
fn pages_and_streams_resume_from_their_cursor_and_see_every_op_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = RunningNode::start(&root.path().join("a"), &[]);
    let b = RunningNode::start(&root.path().join("b"), &["--peers", &a.sync_addr.to_string()]);
    let (api_a, api_b) = (a.api(), b.api());
    post(&api_a, "/v1/episodes", &episodes("a", 40));
    post(&api_a, "/v1/ops", &json!([{"table": "notes", "row_id": "n1", "data": "hi"}]));
    // Written on B, pushed to A.
    post(&api_b, "/v1/episodes", &episodes("b", 40));
    let total = 81;

    // Pages of 7, followed to the end: every op once, in LSN order.
    let (all, end) = follow(&api_a, "", 7, total);
    assert_eq!(all.len(), total);
    let lsns: Vec<u64> = all.iter().map(|c| c["lsn"].as_u64().expect("lsn")).collect();
    assert!(lsns.windows(2).all(|w| w[0] + 1 == w[1]), "log order without gaps: {lsns:?}");
    let from_b = all.iter().filter(|c| c["row_id"].as_str().is_some_and(|r| r.starts_with("b-")));
    assert_eq!(from_b.count(), 40, "ops that arrived by sync are in the feed");
    assert!(
        all.iter()
            .all(|c| c["cursor"].is_string() && c["hlc"].is_string() && c["origin"].is_string())
    );
    // Cut midway: the cursor of change 30 resumes at change 31.
    let (rest, _) = follow(&api_a, all[29]["cursor"].as_str().expect("cursor"), 100, total - 30);
    assert_eq!(op_ids(&rest), op_ids(&all[30..]), "resumed exactly after the cursor");
    // A table filter.
    let (notes, _) = page(&api_a, "table=notes");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["row_id"], "n1");
    // Bad input is refused, never ignored.
    for bad in ["limit=0", "limit=1001", "since=zz", "since=ffff.0.0", "wait=61", "colour=red"] {
        let answer = api_a
            .send_blocking(feral_memory::client::Call::new("GET", &format!("/v1/changes?{bad}")))
            .expect("answer");
        assert_eq!(answer.status, 400, "{bad}: {}", String::from_utf8_lossy(&answer.body));
    }

    // A long poll at the end answers when a write lands, not at the end of its wait.
    let started = Instant::now();
    let writer = {
        let api = a.api();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            post(&api, "/v1/episodes", &episodes("late", 1));
        })
    };
    let (late, _) = page(&api_a, &format!("since={end}&wait=30"));
    writer.join().expect("writer");
    assert_eq!(late.len(), 1, "{late:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "the long poll answered on the write");

    // An event stream, cut after 20 events and reopened with the last id it saw. An
    // EventSource reconnects to the same URL: the `Last-Event-ID` it adds wins over the URL's
    // older `since`.
    let mut stream = open_stream(&a, "", None);
    let first = events(&mut stream, 20);
    drop(stream);
    let mut stream = open_stream(&a, &format!("since={}", first[0].0), Some(&first[19].0));
    let second = events(&mut stream, total + 1 - 20);
    let streamed: Vec<Value> = first.iter().chain(&second).map(|(_, d)| d.clone()).collect();
    assert_eq!(op_ids(&streamed[..total]), op_ids(&all), "no op missed or repeated");
    assert!(first.iter().chain(&second).all(|(id, d)| d["cursor"] == id.as_str()));
    // Live: a write now arrives on the open stream.
    post(&api_b, "/v1/episodes", &episodes("live", 1));
    let live = events(&mut stream, 1);
    assert_eq!(live[0].1["row_id"], "live-0");
    assert!(a.stop() && b.stop());
}

#[test]
fn a_follower_that_stops_reading_holds_up_neither_writes_nor_other_followers() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = RunningNode::start(&root.path().join("a"), &[]);
    let api = a.api();
    // Opened and never read again: its socket buffers fill, its stream stops being polled.
    let stalled = open_stream(&a, "", None);
    let n = 4000;
    for batch in 0..n / 500 {
        post(&api, "/v1/episodes", &episodes(&format!("w{batch}"), 500));
    }
    wait_for("every write acknowledged and readable", Duration::from_secs(20), || {
        api.call("GET", "/v1/counts", None).expect("answer").1["episodes"].as_u64()
            == Some(n as u64)
    });
    let mut other = open_stream(&a, "", None);
    assert_eq!(events(&mut other, n).len(), n, "another follower reads everything");
    // `feral-node watch --once` prints the same feed through the running node.
    let printed = common::feral_node()
        .arg("--data")
        .arg(&a.data)
        .args(["watch", "--once", "--json", "--table", "episodes"])
        .output()
        .expect("watch");
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let lines = String::from_utf8_lossy(&printed.stdout).lines().count();
    assert_eq!(lines, n, "one line per change");
    drop(stalled);
    assert!(a.stop());
}
