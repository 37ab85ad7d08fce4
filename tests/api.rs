//! The HTTP API over a real socket: every endpoint's success and error cases, the token
//! enforced when required, and (as root, on a real tmpfs) a full disk answered with 507 while
//! reads keep working.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Tmpfs, doc, fill_device, open};
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::tls::{Ca, Credentials};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request; returns (status, body as JSON or text).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let payload = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let body = dechunk(body);
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// Undoes chunked transfer encoding when present.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else { return body.to_string() };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { return body.to_string() };
        if n == 0 {
            return out;
        }
        if after.len() < n {
            return body.to_string();
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

struct Running {
    service: Arc<Service>,
    api: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(ca: &Ca, dir: &std::path::Path, token: Option<String>) -> Running {
    let node = Arc::new(open(dir));
    let cert = ca.issue_default(node.key()).expect("issue");
    std::fs::write(dir.join(feral_transport::tls::NODE_CERT_FILE), &cert).expect("install cert");
    let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).expect("creds");
    let config = ServiceConfig {
        timeouts: Default::default(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        sync_interval: Duration::from_secs(3600),
        mdns: false,
        static_peers: vec![],
    };
    let service = Arc::new(Service::start(node, &creds, config).expect("service"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = feral_memory::api::router(service.clone(), token);
    let task = tokio::spawn(feral_memory::api::serve_api(listener, router, async {
        let _ = stopped.await;
    }));
    Running { service, api, stop, task }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    r.task.await.expect("api task").expect("api");
    r.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_and_errors_have_stable_codes() {
    let ca = Ca::generate().expect("ca");
    let (da, db) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let a = start(&ca, da.path(), None).await;
    let b = start(&ca, db.path(), None).await;
    let at = a.api;
    // Append one, then an array; list, get, delete.
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&doc("e1", "s1", 1.0)), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["appended"].as_array().map(Vec::len), Some(1));
    let batch = json!([doc("e2", "s1", 2.0), doc("e3", "s2", 3.0)]);
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&batch), None).await;
    assert_eq!((s, v["appended"].as_array().map(Vec::len)), (200, Some(2)));
    let (s, v) = call(at, "GET", "/v1/episodes?limit=10&session=s1", None, None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> =
        v.as_array().expect("list").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["e2", "e1"]);
    let (s, v) = call(at, "GET", "/v1/episodes/e3", None, None).await;
    assert_eq!((s, v["summary"].as_str()), (200, Some("summary of e3")));
    let (s, _) = call(at, "DELETE", "/v1/episodes/e3", None, None).await;
    assert_eq!(s, 200);
    let (s, v) = call(at, "GET", "/v1/episodes/e3", None, None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
    // Errors: a bad field, bad JSON, a reused op_id, an unknown endpoint.
    let mut bad = doc("e4", "s", 1.0);
    bad["importance"] = json!(3);
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&bad), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_episode")));
    assert!(v["message"].as_str().is_some_and(|m| m.contains("`importance`")), "{v}");
    let mut stream_bad = tokio::net::TcpStream::connect(at).await.expect("connect");
    stream_bad
        .write_all(b"POST /v1/episodes HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\n{x}")
        .await
        .expect("write");
    let mut raw = String::new();
    stream_bad.read_to_string(&mut raw).await.expect("read");
    assert!(raw.starts_with("HTTP/1.1 400") && raw.contains("invalid_json"), "{raw}");
    let mut with_id = doc("e5", "s", 1.0);
    with_id["op_id"] = json!("00112233445566778899aabbccddeeff");
    assert_eq!(call(at, "POST", "/v1/episodes", Some(&with_id), None).await.0, 200);
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&with_id), None).await;
    assert_eq!(
        (s, v["appended"][0]["duplicate"].as_bool()),
        (200, Some(true)),
        "a retry is a no-op"
    );
    let mut other = doc("e6", "s", 1.0);
    other["op_id"] = json!("00112233445566778899aabbccddeeff");
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&other), None).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("op_id_conflict")));
    assert_eq!(call(at, "GET", "/v1/nothing", None, None).await.0, 404);
    // Generic ops.
    let op = json!({"table": "notes", "row_id": "n1", "data": {"text": "hi"}});
    let (s, v) = call(at, "POST", "/v1/ops", Some(&op), None).await;
    assert_eq!((s, v["appended"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = call(at, "POST", "/v1/ops", Some(&json!({"table": "notes"})), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_op")));
    // Status, check, resume.
    let (s, v) = call(at, "GET", "/v1/status", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["io_paused"], false);
    assert!(v["node_id"].as_str().is_some_and(|n| n.len() == 32));
    assert!(v["certificate"]["expires_in_days"].as_i64().is_some_and(|d| d > 300), "{v}");
    let (s, v) = call(at, "GET", "/v1/check", None, None).await;
    assert_eq!((s, v["ok"].as_bool(), v["episodes"].as_str()), (200, Some(true), Some("ok")));
    let (s, v) = call(at, "POST", "/v1/resume", None, None).await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)));
    // Sync with a named peer, then with every known peer; peers; metrics.
    let peer = json!({"peer": b.service.local_addr().to_string()});
    let (s, v) = call(at, "POST", "/v1/sync", Some(&peer), None).await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["success"], true, "{v}");
    let (s, v) = call(at, "POST", "/v1/sync", None, None).await;
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = call(at, "POST", "/v1/sync", Some(&json!({"peer": "nonsense"})), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    let (s, v) = call(at, "GET", "/v1/peers", None, None).await;
    assert_eq!((s, v[0]["source"].as_str()), (200, Some("manual")));
    let (s, v) = call(at, "GET", "/metrics", None, None).await;
    let text = v.as_str().unwrap_or_default().to_string();
    assert_eq!(s, 200);
    for name in [
        "feral_ops_appended_total",
        "feral_sync_sessions_total{result=\"ok\"} 2",
        "feral_io_paused 0",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert_eq!(
        a.service.node.digest().expect("digest"),
        b.service.node.digest().expect("digest"),
        "the API's sync converged the two nodes"
    );
    stop(a).await;
    stop(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_enforced_when_set() {
    let ca = Ca::generate().expect("ca");
    let dir = tempfile::tempdir().expect("dir");
    let token = feral_memory::api::token_for("0.0.0.0:7412".parse().expect("addr"), dir.path())
        .expect("token");
    assert!(token.as_ref().is_some_and(|t| t.len() == 48));
    assert_eq!(
        feral_memory::api::token_for("127.0.0.1:7412".parse().expect("addr"), dir.path())
            .expect("token"),
        None,
        "loopback needs no token"
    );
    let r = start(&ca, &dir.path().join("store"), token.clone()).await;
    let (s, v) = call(r.api, "GET", "/v1/status", None, None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
    assert_eq!(call(r.api, "GET", "/v1/status", None, Some("wrong")).await.0, 401);
    assert_eq!(call(r.api, "GET", "/v1/status", None, token.as_deref()).await.0, 200);
    stop(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_and_reads_keep_working() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let ca = Ca::generate().expect("ca");
    let r = start(&ca, &fs.path().join("store"), None).await;
    assert_eq!(
        call(r.api, "POST", "/v1/episodes", Some(&doc("before", "s", 1.0)), None).await.0,
        200
    );
    let filler = fill_device(fs.path());
    let mut status = 0;
    let mut big = doc("x", "s", 1.0);
    big["detail"] = json!("d".repeat(10_000));
    for i in 0..2000 {
        big["id"] = json!(format!("x{i}"));
        let (s, v) = call(r.api, "POST", "/v1/episodes", Some(&big), None).await;
        if s != 200 {
            assert_eq!(v["error"].as_str(), Some("disk_full"), "{v}");
            status = s;
            break;
        }
    }
    assert_eq!(status, 507, "a full disk is HTTP 507");
    let (s, v) = call(r.api, "GET", "/v1/episodes/before", None, None).await;
    assert_eq!((s, v["id"].as_str()), (200, Some("before")), "reads keep working");
    let (s, v) = call(r.api, "GET", "/v1/status", None, None).await;
    assert_eq!((s, v["io_paused"].as_bool()), (200, Some(true)));
    std::fs::remove_file(filler).expect("free space");
    let (s, v) = call(r.api, "POST", "/v1/resume", None, None).await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(
        call(r.api, "POST", "/v1/episodes", Some(&doc("after", "s", 1.0)), None).await.0,
        200
    );
    stop(r).await;
}
