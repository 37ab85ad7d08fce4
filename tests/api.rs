//! The HTTP API over a real socket: every endpoint's success and error cases, the token
//! enforced when required, and (as root, on a real tmpfs) a full disk answered with 507 while
//! reads keep working.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Tmpfs, doc, fill_device, open};
use feral_memory::api::{self, ApiConfig, Listener, serve::serve};
use feral_memory::client::{ApiClient, Call, Endpoint};
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::tls::{Ca, Credentials};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request through the API client; returns (status, body as JSON or text).
async fn call(client: &ApiClient, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = Call::new(method, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let answer = client.send(request).await.expect("an answer");
    (answer.status, answer.json())
}

struct Running {
    service: Arc<Service>,
    /// TCP with the token.
    api: ApiClient,
    /// The Unix socket, no token.
    unix: ApiClient,
    addr: SocketAddr,
    token: String,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

async fn start(ca: &Ca, dir: &std::path::Path) -> Running {
    let node = Arc::new(open(dir));
    let cert = ca.issue_default(node.key()).expect("issue");
    std::fs::write(dir.join(feral_transport::tls::NODE_CERT_FILE), &cert).expect("install cert");
    let creds = Credentials::from_pem(&cert, node.key(), &ca.cert_pem).expect("creds");
    let config = ServiceConfig {
        timeouts: Default::default(),
        scrub: Default::default(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        sync_interval: Duration::from_secs(3600),
        mdns: false,
        static_peers: vec![],
    };
    let service = Arc::new(Service::start(node, &creds, config).expect("service"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let socket = dir.join(api::SOCKET_FILE);
    let unix_listener = api::bind_socket(&socket).expect("bind the socket");
    let token = api::token_for(dir).expect("token");
    let config = ApiConfig::default();
    let (tcp, unix) = api::routers(service.clone(), &config, token.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve(Listener::Tcp(listener), tcp, config.limits, stopped.clone()));
    tasks.spawn(serve(Listener::Unix(unix_listener), unix, config.limits, stopped));
    Running {
        service,
        api: ApiClient::new(Endpoint::Tcp(addr), Some(token.clone())),
        unix: ApiClient::new(Endpoint::Unix(socket), None),
        addr,
        token,
        stop,
        tasks,
    }
}

async fn stop(mut r: Running) {
    let _ = r.stop.send(true);
    while r.tasks.join_next().await.is_some() {}
    r.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_and_errors_have_stable_codes() {
    let ca = Ca::generate().expect("ca");
    let (da, db) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let a = start(&ca, da.path()).await;
    let b = start(&ca, db.path()).await;
    let at = &a.api;
    // Append one, then an array; list, get, delete.
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&doc("e1", "s1", 1.0))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["appended"].as_array().map(Vec::len), Some(1));
    let batch = json!([doc("e2", "s1", 2.0), doc("e3", "s2", 3.0)]);
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&batch)).await;
    assert_eq!((s, v["appended"].as_array().map(Vec::len)), (200, Some(2)));
    // An array over the intake bound: 413 naming the bound, nothing written.
    let max = feral_log::limits::SUBMIT_OPS_MAX;
    let tiny = |i: usize| json!({"id": format!("{i:x}"), "session_id": "t", "event_type": "c", "summary": "x"});
    let over = Value::Array((0..=max).map(tiny).collect());
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&over)).await;
    assert_eq!((s, v["error"].as_str()), (413, Some("batch_too_large")), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains(&max.to_string())), "{v}");
    let (s, v) = call(at, "GET", "/v1/episodes?limit=10&session=t", None).await;
    assert_eq!((s, v["episodes"].as_array().map(Vec::len)), (200, Some(0)), "nothing was written");
    let (s, v) = call(at, "GET", "/v1/episodes?limit=10&session=s1", None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> =
        v["episodes"].as_array().expect("list").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["e2", "e1"]);
    let (s, v) = call(at, "GET", "/v1/episodes/e3", None).await;
    assert_eq!((s, v["summary"].as_str()), (200, Some("summary of e3")));
    let (s, _) = call(at, "DELETE", "/v1/episodes/e3", None).await;
    assert_eq!(s, 200);
    let (s, v) = call(at, "GET", "/v1/episodes/e3", None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
    // Errors: a bad field, bad JSON, a reused op_id, an unknown endpoint.
    let mut bad = doc("e4", "s", 1.0);
    bad["importance"] = json!(3);
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&bad)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_episode")));
    assert!(v["message"].as_str().is_some_and(|m| m.contains("`importance`")), "{v}");
    let mut stream_bad = tokio::net::TcpStream::connect(a.addr).await.expect("connect");
    let head = format!(
        "POST /v1/episodes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 3\r\n\r\n{{x}}",
        a.token
    );
    stream_bad.write_all(head.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream_bad.read_to_string(&mut raw).await.expect("read");
    assert!(raw.starts_with("HTTP/1.1 400") && raw.contains("invalid_json"), "{raw}");
    let mut with_id = doc("e5", "s", 1.0);
    with_id["op_id"] = json!("00112233445566778899aabbccddeeff");
    assert_eq!(call(at, "POST", "/v1/episodes", Some(&with_id)).await.0, 200);
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&with_id)).await;
    assert_eq!(
        (s, v["appended"][0]["duplicate"].as_bool()),
        (200, Some(true)),
        "a retry is a no-op"
    );
    let mut other = doc("e6", "s", 1.0);
    other["op_id"] = json!("00112233445566778899aabbccddeeff");
    let (s, v) = call(at, "POST", "/v1/episodes", Some(&other)).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("op_id_conflict")));
    assert_eq!(call(at, "GET", "/v1/nothing", None).await.0, 404);
    // Generic ops.
    let op = json!({"table": "notes", "row_id": "n1", "data": {"text": "hi"}});
    let (s, v) = call(at, "POST", "/v1/ops", Some(&op)).await;
    assert_eq!((s, v["appended"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = call(at, "POST", "/v1/ops", Some(&json!({"table": "notes"}))).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_op")));
    // Status, check, resume.
    let (s, v) = call(at, "GET", "/v1/status", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["io_paused"], false);
    assert!(v["node_id"].as_str().is_some_and(|n| n.len() == 32));
    assert!(v["certificate"]["expires_in_days"].as_i64().is_some_and(|d| d > 300), "{v}");
    let (s, v) = call(at, "GET", "/v1/check", None).await;
    assert_eq!((s, v["ok"].as_bool(), v["episodes"].as_str()), (200, Some(true), Some("ok")));
    let (s, v) = call(at, "POST", "/v1/resume", None).await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)));
    // Sync with a named peer, then with every known peer; peers; metrics.
    let peer = json!({"peer": b.service.local_addr().to_string()});
    let _ = &b.unix;
    let (s, v) = call(at, "POST", "/v1/sync", Some(&peer)).await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["success"], true, "{v}");
    let (s, v) = call(at, "POST", "/v1/sync", None).await;
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = call(at, "POST", "/v1/sync", Some(&json!({"peer": "nonsense"}))).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    let (s, v) = call(at, "GET", "/v1/peers", None).await;
    assert_eq!((s, v[0]["source"].as_str()), (200, Some("manual")));
    let (s, v) = call(at, "GET", "/metrics", None).await;
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
async fn the_token_is_required_on_tcp_and_the_socket_needs_none() {
    let ca = Ca::generate().expect("ca");
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("store");
    let r = start(&ca, &store).await;
    assert_eq!(r.token.len(), 64, "32 random bytes in hex");
    assert_eq!(api::token_for(&store).expect("token"), r.token, "the token is kept");
    let bare = ApiClient::new(Endpoint::Tcp(r.addr), None);
    let (s, v) = call(&bare, "GET", "/v1/status", None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "no token on loopback");
    let wrong = ApiClient::new(Endpoint::Tcp(r.addr), Some("wrong".into()));
    assert_eq!(call(&wrong, "GET", "/v1/status", None).await.0, 401);
    let (s, v) = call(&bare, "GET", "/v1/health", None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "health is open");
    assert_eq!(call(&r.api, "GET", "/v1/status", None).await.0, 200);
    let (s, v) = call(&r.unix, "POST", "/v1/episodes", Some(&doc("u1", "s", 1.0))).await;
    assert_eq!(s, 200, "the Unix socket needs no token: {v}");
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("meta").permissions())
            & 0o777
    };
    assert_eq!(mode(&store.join(api::SOCKET_FILE)), 0o600);
    assert_eq!(mode(&store.join(api::TOKEN_FILE)), 0o600);
    stop(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_and_reads_keep_working() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let ca = Ca::generate().expect("ca");
    let r = start(&ca, &fs.path().join("store")).await;
    assert_eq!(call(&r.api, "POST", "/v1/episodes", Some(&doc("before", "s", 1.0))).await.0, 200);
    let filler = fill_device(fs.path());
    let mut status = 0;
    let mut big = doc("x", "s", 1.0);
    big["detail"] = json!("d".repeat(10_000));
    for i in 0..2000 {
        big["id"] = json!(format!("x{i}"));
        let (s, v) = call(&r.api, "POST", "/v1/episodes", Some(&big)).await;
        if s != 200 {
            assert_eq!(v["error"].as_str(), Some("disk_full"), "{v}");
            status = s;
            break;
        }
    }
    assert_eq!(status, 507, "a full disk is HTTP 507");
    let (s, v) = call(&r.api, "GET", "/v1/episodes/before", None).await;
    assert_eq!((s, v["id"].as_str()), (200, Some("before")), "reads keep working");
    let (s, v) = call(&r.api, "GET", "/v1/status", None).await;
    assert_eq!((s, v["io_paused"].as_bool()), (200, Some(true)));
    std::fs::remove_file(filler).expect("free space");
    let (s, v) = call(&r.api, "POST", "/v1/resume", None).await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(call(&r.api, "POST", "/v1/episodes", Some(&doc("after", "s", 1.0))).await.0, 200);
    stop(r).await;
}
